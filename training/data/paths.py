"""Where data sets are read from and where downloads and caches go.

Resolution order for the data folder: an explicit ``root`` argument, then the
``REPSCOPE_DATA`` environment variable, then ``cache_dir() / "data"``. The data folder holds
``omniglot/*.zip``, ``mnist/*-idx?-ubyte[.gz]`` and
optionally ``miniimagenet/``. Downloads always go to ``cache_dir() / "data"`` so that a
read-only data folder is never written to.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError

__all__ = ["data_root", "cache_dir", "download_dir"]

DATA_ENV = "REPSCOPE_DATA"
CACHE_ENV = "REPSCOPE_CACHE"


def cache_dir() -> Path:
    """Return the cache folder (not created here).

    ``$REPSCOPE_CACHE`` if set, else ``$XDG_CACHE_HOME/repscope``, else
    ``~/.cache/repscope``. Downloads go to ``cache_dir() / "data"``, preprocessed arrays
    to ``cache_dir() / "preprocessed"``.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import os
    >>> saved = os.environ.get("REPSCOPE_CACHE")
    >>> os.environ["REPSCOPE_CACHE"] = "/tmp/repscope-example-cache"
    >>> str(cache_dir())
    '/tmp/repscope-example-cache'
    >>> if saved is None: del os.environ["REPSCOPE_CACHE"]
    ... else: os.environ["REPSCOPE_CACHE"] = saved
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "repscope"


def download_dir() -> Path:
    """Return the folder that downloads are written to: ``cache_dir() / "data"``.

    Examples
    --------
    >>> download_dir().name
    'data'
    """
    return cache_dir() / "data"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Resolve the data folder: ``root`` > ``$REPSCOPE_DATA`` > ``cache_dir() / "data"``.

    Parameters
    ----------
    root : str or path-like, optional
        An explicit data folder (``omniglot/``, ``mnist/``, optionally ``miniimagenet/``).

    Returns
    -------
    pathlib.Path
        The folder. The default cache folder need not exist yet (it is created by the
        first download); an explicit ``root`` or ``$REPSCOPE_DATA`` must exist.

    Raises
    ------
    DataError
        If ``root`` or ``$REPSCOPE_DATA`` names a folder that does not exist.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     data_root(d) == Path(d)
    True
    >>> data_root("/no/such/folder")
    Traceback (most recent call last):
    ...
    repscope.training.errors.DataError: Data folder '/no/such/folder' (from the root argument) does not exist. ...
    """
    if root is not None:
        path, origin = Path(root).expanduser(), "the root argument"
    elif os.environ.get(DATA_ENV):
        path, origin = Path(os.environ[DATA_ENV]).expanduser(), f"${DATA_ENV}"
    else:
        return download_dir()
    if not path.is_dir():
        raise DataError(
            f"Data folder {str(path)!r} (from {origin}) does not exist. Expected a folder "
            "with the subfolders omniglot/ and mnist/, or leave root and "
            f"${DATA_ENV} unset to download into {str(download_dir())!r}."
        )
    return path
