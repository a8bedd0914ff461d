"""Omniglot image preprocessing as in Finn et al. (2017): 28x28, inverted, float32.

Two resampling modes, because the MAML code's intent and its effect differ:

``"lanczos"`` (default)
    Convert the 1-bit 105x105 drawing to 8-bit grey, then resize with a LANCZOS filter.
    Grey levels at stroke edges survive. This is what ``resize_images.py`` of cbfinn/maml
    asks for (``im.resize((28, 28), resample=Image.LANCZOS)``).
``"finn"``
    Exactly that call on the image as decoded (mode ``"1"``). Pillow ignores the filter
    for 1-bit images and resizes with NEAREST, so the images MAML was trained on are
    binary. Choose this mode to reproduce the original pixels.

Both invert so that strokes are 1 and the background 0.
"""
from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

__all__ = ["RESAMPLE_MODES", "preprocess_omniglot", "decode_png"]

RESAMPLE_MODES = ("lanczos", "finn")


#: Omniglot drawings are 105x105; an image declaring a side longer than this is refused
#: before its pixels are decoded.
MAX_SIDE = 1024


_PNG = b"\x89PNG\r\n\x1a\n"


def _check_size(size: tuple, where: str) -> None:
    if max(size) > MAX_SIDE:
        raise DataError(f"Image {where!r} declares {size[0]}x{size[1]} pixels; Omniglot images are "
                        f"105x105 and none may be larger than {MAX_SIDE}x{MAX_SIDE}. The file is damaged "
                        "or not an Omniglot drawing: restore it from the archive")


def decode_png(data: bytes, where: str) -> Image.Image:
    """Decode image bytes with Pillow; :class:`DataError` names ``where`` on failure.

    The size the image declares is checked before its pixels are decoded: sides longer
    than ``MAX_SIDE`` (1024) are refused, so a damaged or hostile file cannot fill the memory.

    Examples
    --------
    >>> decode_png(b"not a png", "x.png")
    Traceback (most recent call last):
    ...
    repscope.training.errors.DataError: Cannot decode image 'x.png': ...
    """
    if data[:8] == _PNG and data[12:16] == b"IHDR":  # before Pillow opens it
        _check_size(struct.unpack(">II", data[16:24]), where)
    try:
        image = Image.open(io.BytesIO(data))
        _check_size(image.size, where)
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"Cannot decode image {where!r}: {err}. Expected a PNG "
                        "drawing.") from err
    return image


def preprocess_omniglot(image: Image.Image, size: int = 28,
                        resample: str = "lanczos") -> np.ndarray:
    """Resize an Omniglot drawing and invert it so that strokes are 1.

    Parameters
    ----------
    image : PIL.Image.Image
        A decoded drawing (mode ``"1"`` as published, or ``"L"``): strokes dark on white.
    size : int
        Output side length.
    resample : {"lanczos", "finn"}
        See the module docstring.

    Returns
    -------
    numpy.ndarray
        float32 ``(size, size)`` in [0, 1], strokes 1.

    Examples
    --------
    >>> drawing = Image.new("1", (105, 105), 1)          # white page
    >>> drawing.paste(0, (40, 0, 65, 105))                # one dark vertical stroke
    >>> x = preprocess_omniglot(drawing)
    >>> x.shape, x.dtype, float(x.min()), float(x.max())
    ((28, 28), dtype('float32'), 0.0, 1.0)
    >>> x[:, 14].tolist() == [1.0] * 28, float(x[0, 0])
    (True, 0.0)
    >>> sorted(set(preprocess_omniglot(drawing, resample="finn").ravel().tolist()))
    [0.0, 1.0]
    """
    if resample not in RESAMPLE_MODES:
        raise DataError(f"Unknown resample mode {resample!r}. Expected one of "
                        f"{list(RESAMPLE_MODES)}")
    if resample == "lanczos":
        resized = image.convert("L").resize((size, size), resample=Image.LANCZOS)
    else:
        resized = image.resize((size, size), resample=Image.LANCZOS).convert("L")
    return 1.0 - np.asarray(resized, dtype=np.float32) / np.float32(255.0)
