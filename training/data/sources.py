"""Canonical download locations and known checksums, and finding a file locally.

A file is looked up in ``data_root(root) / <dataset>`` first, then in
``download_dir() / <dataset>``; if it is in neither and ``download`` is true it is
downloaded into the latter from ``base_url`` (argument) >
``$REPSCOPE_DOWNLOAD_URL/<dataset>/`` > the canonical source.

Known checksums
---------------
* Omniglot ``images_background_small1.zip``, ``images_background_small2.zip`` and
  ``all_runs.zip``: sha256 and size of the files of brendenlake/omniglot's ``python/``
  folder.
* Omniglot ``images_background.zip`` and ``images_evaluation.zip``: the md5 that
  torchvision's ``Omniglot`` data set publishes for the same URLs (no sha256 or size is
  recorded anywhere we could check). Downloads are additionally tested for zip integrity
  (every member's CRC).
* MNIST: md5 of the *uncompressed* IDX files (the gzip wrapping differs between mirrors).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .fetch import download, verify
from .paths import data_root, download_dir
from ..errors import DataError

__all__ = ["Known", "OMNIGLOT_FILES", "MNIST_FILES", "OMNIGLOT_URL", "MNIST_URL",
           "DOWNLOAD_ENV", "base_url", "locate"]

OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
DOWNLOAD_ENV = "REPSCOPE_DOWNLOAD_URL"
_CANONICAL = {"omniglot": OMNIGLOT_URL, "mnist": MNIST_URL}


@dataclass(frozen=True)
class Known:
    """What is known about a published file: checksums and size (``None`` = unknown)."""

    sha256: str | None = None
    md5: str | None = None
    size: int | None = None


OMNIGLOT_FILES = {
    "images_background_small1.zip": Known(
        sha256="f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
        size=1319022),
    "images_background_small2.zip": Known(
        sha256="3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
        size=1580917),
    "all_runs.zip": Known(
        sha256="437c1eeab0af8484112e1b4cc0f3d541ec727f7c47b9b202da738af9dfd6c325",
        size=352787),
    "images_background.zip": Known(md5="68d2efa1b9178cc56df9314c21c6e718"),
    "images_evaluation.zip": Known(md5="6b91aef0f799c5bb55b94e3f2daec811"),
}

# md5 of the uncompressed IDX files.
MNIST_FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def base_url(dataset: str, given: str | None = None) -> str:
    """The folder URL that ``dataset``'s files are downloaded from, ending in ``/``.

    ``given`` > ``$REPSCOPE_DOWNLOAD_URL/<dataset>/`` (a mirror with
    the subfolders ``omniglot/`` and ``mnist/``) > the canonical source.

    Examples
    --------
    >>> base_url("omniglot")
    'https://raw.githubusercontent.com/brendenlake/omniglot/master/python/'
    >>> base_url("mnist", "http://127.0.0.1:8000/mnist")
    'http://127.0.0.1:8000/mnist/'
    """
    if dataset not in _CANONICAL:
        raise DataError(f"Unknown dataset {dataset!r}. Expected one of {sorted(_CANONICAL)}")
    if given is None and os.environ.get(DOWNLOAD_ENV):
        given = os.environ[DOWNLOAD_ENV].rstrip("/") + f"/{dataset}/"
    url = given if given is not None else _CANONICAL[dataset]
    return url if url.endswith("/") else url + "/"


def locate(dataset: str, names: list[str], *, root=None, download_ok: bool = True,
           url: str | None = None, known: Known = Known(),
           check: Callable[[Path], None] | None = None) -> Path:
    """Find a data file locally, or download it; return its path.

    Parameters
    ----------
    dataset : str
        Sub-folder and download-source key (``"omniglot"``, ``"mnist"``).
    names : list of str
        Acceptable file or folder names, in order of preference. The first one is the
        name that is downloaded.
    root : path-like, optional
        Data folder, see :func:`~repscope.training.data.paths.data_root`.
    download_ok : bool
        Download when not found locally.
    url : str, optional
        Base URL for the download (see :func:`base_url`).
    known : Known
        Checksums and size, checked for local files and downloads alike (folders are not
        checked).
    check : callable, optional
        Extra check of the downloaded file before it is renamed into place.

    Raises
    ------
    DataError
        If the file is missing and may not be downloaded, fails its checksum, or the
        download fails.
    """
    folders = [data_root(root) / dataset, download_dir() / dataset]
    for folder in dict.fromkeys(folders):
        for name in names:
            path = folder / name
            if path.is_dir():
                return path
            if path.is_file():
                try:
                    return verify(path, sha256=known.sha256, md5=known.md5, size=known.size)
                except DataError as err:
                    hint = (" It is a download: delete it to fetch it again."
                            if folder == download_dir() / dataset else
                            " Replace it with the published file.")
                    raise DataError(f"{err}{hint}") from err
    if not download_ok:
        tried = [str(f / n) for f in dict.fromkeys(folders) for n in names]
        raise DataError(f"{dataset} file {names[0]!r} not found; looked for {tried}. "
                        "Pass download=True, or point root= / $REPSCOPE_DATA at a folder "
                        f"with a subfolder {dataset}/ that holds it.")
    target = download_dir() / dataset / names[0]
    return download(base_url(dataset, url) + names[0], target, sha256=known.sha256,
                    md5=known.md5, size=known.size, check=check)
