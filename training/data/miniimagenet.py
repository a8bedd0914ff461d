"""Mini-ImageNet in the Ravi & Larochelle (2017) layout.

The folder holds ``train.csv``, ``val.csv`` and ``test.csv`` (header ``filename,label``)
and ``images/`` with the JPEGs the CSVs name. Images are converted to RGB, resized to
``image_size`` with LANCZOS (as cbfinn/maml's ``proc_images.py``) and scaled to [0, 1].
The full train split is 64 classes x 600 images: about 3.3 GB as float32 at 84x84.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .paths import data_root
from ..errors import DataError

__all__ = ["load_miniimagenet", "find_miniimagenet", "MINIIMAGENET_SPLITS"]

MINIIMAGENET_SPLITS = ("train", "val", "test")


def find_miniimagenet(root=None) -> Path:
    """The Mini-ImageNet folder the loader reads: ``miniimagenet/`` in the data folder
    (:func:`~repscope.training.data.paths.data_root`), or the data folder itself.

    Raises
    ------
    DataError
        When neither holds the split files and ``images/``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     find_miniimagenet(d)
    Traceback (most recent call last):
    ...
    repscope.training.errors.DataError: No Mini-ImageNet found in ...
    """
    base = data_root(root)
    for candidate in (base / "miniimagenet", base):
        if (candidate / "images").is_dir() and any(
                (candidate / f"{s}.csv").is_file() for s in MINIIMAGENET_SPLITS):
            return candidate
    raise DataError(f"No Mini-ImageNet found in {str(base)!r} or "
                    f"{str(base / 'miniimagenet')!r}. Expected train.csv, val.csv, test.csv "
                    "(header 'filename,label') and an images/ folder (Ravi & Larochelle "
                    "layout).")


def _read_csv(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"Mini-ImageNet split file {str(path)!r} is missing.")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise DataError(f"{str(path)!r}: header {rows[0] if rows else None!r}; expected "
                        "['filename', 'label'].")
    by_class = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2:
            raise DataError(f"{str(path)!r} line {n}: {row!r}; expected 'filename,label'.")
        by_class.setdefault(row[1].strip(), []).append(row[0].strip())
    if not by_class:
        raise DataError(f"{str(path)!r} lists no images.")
    counts = {len(v) for v in by_class.values()}
    if len(counts) > 1:
        raise DataError(f"{str(path)!r}: classes have different numbers of images "
                        f"{sorted(counts)}; expected the same number per class.")
    return by_class


def _load_image(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except FileNotFoundError as err:
        raise DataError(f"Mini-ImageNet image {str(path)!r} is missing (listed in the "
                        "split CSV).") from err
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"Cannot decode Mini-ImageNet image {str(path)!r}: {err}.") from err
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), resample=Image.LANCZOS)
    return np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)


def load_miniimagenet(root=None, split: str = "train", image_size: int = 84):
    """Load one Mini-ImageNet split as per-class arrays for :class:`EpisodeSampler`.

    Parameters
    ----------
    root : path-like, optional
        The Mini-ImageNet folder, or a data folder holding ``miniimagenet/``.
    split : {"train", "val", "test"}
    image_size : int
        Side length after resizing (84 in MAML).

    Returns
    -------
    images : numpy.ndarray
        float32 ``(n_classes, n_per_class, 3, image_size, image_size)`` in [0, 1].
    classes : list of str
        Class (WordNet id) of each row, sorted.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> d = Path(tempfile.mkdtemp())
    >>> (d / "images").mkdir()
    >>> rows = ["filename,label"]
    >>> for c, colour in (("n01", (255, 0, 0)), ("n02", (0, 0, 255))):
    ...     for i in range(2):
    ...         Image.new("RGB", (10, 10), colour).save(d / "images" / f"{c}{i}.jpg")
    ...         rows.append(f"{c}{i}.jpg,{c}")
    >>> _ = (d / "train.csv").write_text("\\n".join(rows) + "\\n")
    >>> x, classes = load_miniimagenet(d, "train", image_size=8)
    >>> x.shape, classes, round(float(x[1, 0, 2].mean()), 1)
    ((2, 2, 3, 8, 8), ['n01', 'n02'], 1.0)
    """
    if split not in MINIIMAGENET_SPLITS:
        raise DataError(f"Unknown Mini-ImageNet split {split!r}. Expected one of "
                        f"{list(MINIIMAGENET_SPLITS)}")
    folder = find_miniimagenet(root)
    by_class = _read_csv(folder / f"{split}.csv")
    classes = sorted(by_class)
    n_per = len(by_class[classes[0]])
    images = np.empty((len(classes), n_per, 3, image_size, image_size), np.float32)
    for i, c in enumerate(classes):
        for j, name in enumerate(by_class[c]):
            images[i, j] = _load_image(folder / "images" / name, image_size)
    return images, classes
