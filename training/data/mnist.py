"""MNIST from IDX files (gzip or raw), with checksums of the uncompressed bytes.

Files are looked up as ``mnist/<name>.gz`` or ``mnist/<name>`` in the data folder and the
download cache, and downloaded from ``https://ossci-datasets.s3.amazonaws.com/mnist/``
(or ``$REPSCOPE_DOWNLOAD_URL/mnist/``, or ``base_url``) when missing. The md5 of the
*uncompressed* bytes is checked, since mirrors wrap the files in different gzip headers.

Where only the test set exists, :func:`mnist_offline_split` trains on test images
``[100:]`` and probes on ``[0:100]``, warns, and returns a note for the caller's metadata.
"""
from __future__ import annotations

import gzip
import hashlib
import warnings
import zlib
from pathlib import Path

import numpy as np

from .sources import MNIST_FILES, locate
from ..errors import DataError

__all__ = ["read_idx", "load_mnist", "mnist_offline_split", "OfflineDataWarning",
           "MNIST_SPLITS", "MNIST_SIZES"]

MNIST_SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
           0x0E: ">f8"}


class OfflineDataWarning(UserWarning):
    """A stand-in data split is used because the canonical one is not available."""


#: Uncompressed sizes of the canonical files, in bytes; a file is never inflated past them.
MNIST_SIZES = {"train-images-idx3-ubyte": 47040016, "train-labels-idx1-ubyte": 60008,
               "t10k-images-idx3-ubyte": 7840016, "t10k-labels-idx1-ubyte": 10008}
_MAX_BYTES = 2**30  # any other IDX file: at most 1 GiB uncompressed
_CHUNK = 2**20


def _read_exactly(f, n: int) -> bytes:
    parts, left = [], n
    while left > 0:
        part = f.read(min(left, _CHUNK))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _idx_bytes(path: Path, limit: int) -> bytes:
    """The uncompressed bytes of an IDX file, inflated a chunk at a time and never past
    the size its header declares (itself at most ``limit``)."""
    with open(path, "rb") as f:
        packed = f.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if packed else open(path, "rb")) as f:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\x00\x00" or head[2] not in _DTYPES:
                raise DataError(f"{str(path)!r} is not an IDX file (magic {head.hex()}). "
                                "Expected 0x0000 followed by a type code and the number of dims.")
            dims = f.read(4 * head[3])
            shape = tuple(int.from_bytes(dims[4 * i:4 * i + 4], "big") for i in range(len(dims) // 4))
            expected = 4 + 4 * head[3] + int(np.prod(shape, dtype=object)) * np.dtype(_DTYPES[head[2]]).itemsize
            if expected > limit:
                raise DataError(f"{str(path)!r}: IDX header says shape {shape} ({expected} bytes), more "
                                f"than the {limit} bytes expected of this file.")
            body = _read_exactly(f, expected - len(head) - len(dims))
            if f.read(1):
                raise DataError(f"{str(path)!r} holds more than the {expected} bytes its IDX header "
                                f"declares (shape {shape}); it was not inflated further. Expected a "
                                "complete IDX file and nothing after it.")
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"Corrupt gzip file {str(path)!r}: {err}. Expected a complete "
                        "gzip-compressed IDX file.") from err
    data = head + dims + body
    if len(data) != expected:
        raise DataError(f"{str(path)!r}: IDX header says shape {shape} ({expected} bytes) "
                        f"but the file has {len(data)} bytes (truncated?).")
    return data


def read_idx(path, md5: str | None = None, *, max_bytes: int | None = None) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into an array.

    A gzip file is inflated a chunk at a time and never past the size its IDX header
    declares, so a damaged or hostile file cannot fill the memory.

    Parameters
    ----------
    path : path-like
    md5 : str, optional
        Expected md5 of the uncompressed bytes.
    max_bytes : int, optional
        The most uncompressed bytes the file may declare: the canonical size for the
        MNIST files (``MNIST_SIZES``, by file name), 1 GiB for others.

    Examples
    --------
    >>> import tempfile, struct
    >>> d = Path(tempfile.mkdtemp())
    >>> raw = struct.pack(">HBBIII", 0, 0x08, 3, 2, 2, 2) + bytes(range(8))
    >>> _ = (d / "x-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    >>> read_idx(d / "x-idx3-ubyte.gz").tolist()
    [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
    """
    path = Path(path)
    if max_bytes is None:
        stem = path.name[:-3] if path.name.endswith(".gz") else path.name
        max_bytes = MNIST_SIZES.get(stem, _MAX_BYTES)
    data = _idx_bytes(path, max_bytes)
    if md5 is not None and hashlib.md5(data).hexdigest() != md5:
        raise DataError(f"Checksum mismatch for {str(path)!r}: expected md5 {md5} of the "
                        f"uncompressed bytes, found {hashlib.md5(data).hexdigest()}.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[data[2]])
    return np.frombuffer(data, dtype, offset=4 + 4 * ndim).reshape(shape).astype(dtype.newbyteorder("="))


def _gunzip_md5_check(name: str, md5: str):
    def check(tmp: Path) -> None:
        found = hashlib.md5(_idx_bytes(tmp, MNIST_SIZES[name])).hexdigest()
        if found != md5:
            raise DataError(f"Checksum mismatch: expected md5 {md5} of the uncompressed "
                            f"bytes, found {found}.")
    return check


def load_mnist(root=None, split: str = "test", download: bool = True, *,
               base_url: str | None = None):
    """Load an MNIST split.

    Parameters
    ----------
    root : path-like, optional
        Data folder with ``mnist/``; see :func:`~repscope.training.data.paths.data_root`.
    split : {"train", "test"}
    download : bool
        Download missing files (``<name>.gz``) and check them.
    base_url : str, optional
        Download source, see :func:`~repscope.training.data.sources.base_url`.

    Returns
    -------
    images : numpy.ndarray
        uint8 ``(n, 28, 28)``.
    labels : numpy.ndarray
        int64 ``(n,)``.

    Examples
    --------
    >>> x, y = load_mnist(DATA, "test", download=False)
    >>> x.shape, x.dtype, np.bincount(y).tolist()[:3]
    ((10000, 28, 28), dtype('uint8'), [980, 1135, 1032])
    """
    if split not in MNIST_SPLITS:
        raise DataError(f"Unknown MNIST split {split!r}. Expected one of "
                        f"{sorted(MNIST_SPLITS)}")
    arrays = []
    for name in MNIST_SPLITS[split]:
        md5 = MNIST_FILES[name]
        path = locate("mnist", [f"{name}.gz", name], root=root, download_ok=download,
                      url=base_url, check=_gunzip_md5_check(name, md5))
        arrays.append(read_idx(path, md5=md5))
    images, labels = arrays
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"MNIST {split}: images {images.shape} and labels {labels.shape} "
                        "do not match; expected (n, 28, 28) and (n,).")
    return images, labels.astype(np.int64)


def mnist_offline_split(root=None, n_probe: int = 100, download: bool = False) -> dict:
    """Stand-in train/probe split from the MNIST *test* set, for machines without the
    training set: train on test images ``[n_probe:]``, probe on ``[:n_probe]``.

    Announces itself with an :class:`OfflineDataWarning`, and returns a ``note`` (str)
    and ``meta`` (dict) for the caller to record in its outputs.

    Returns
    -------
    dict
        ``train=(x, y)``, ``probe=(x, y)`` (uint8 images, int64 labels), ``note``, ``meta``.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     split = mnist_offline_split(DATA)
    >>> len(split["train"][0]), len(split["probe"][0]), w[0].category.__name__
    (9900, 100, 'OfflineDataWarning')
    >>> split["meta"]["train"], split["meta"]["probe"]
    ('t10k[100:]', 't10k[0:100]')
    """
    x, y = load_mnist(root, "test", download=download)
    if not 0 < n_probe < len(x):
        raise DataError(f"n_probe={n_probe} must be between 1 and {len(x) - 1}.")
    note = (f"OFFLINE MNIST: the training set is not used; training on MNIST test images "
            f"[{n_probe}:] ({len(x) - n_probe} images of t10k) and probing on test images "
            f"[0:{n_probe}]. Numbers are not comparable with a model trained on the "
            "60,000 training images.")
    warnings.warn(note, OfflineDataWarning, stacklevel=2)
    meta = {"mode": "offline-test-split", "source": "t10k", "train": f"t10k[{n_probe}:]",
            "probe": f"t10k[0:{n_probe}]", "md5_images": MNIST_FILES["t10k-images-idx3-ubyte"],
            "note": note}
    return {"train": (x[n_probe:], y[n_probe:]), "probe": (x[:n_probe], y[:n_probe]),
            "note": note, "meta": meta}
