"""Download, checksum, atomic-write and safe-extract helpers.

Everything here either completes or leaves nothing behind: downloads (through
:mod:`pooch`, which also retries and shows progress) and extractions go to a temporary
name next to the target and are moved into place only after every check passed. Failures raise :class:`~repscope.training.errors.DataError` naming the file or URL, what
was expected and what was found.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
import sys
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable

from ..errors import DataError

__all__ = ["download", "verify", "safe_extract", "file_digest", "open_zip",
           "check_zip"]

_CHUNK = 1 << 20
_REFETCH = ("Delete it to download it again (when online), or copy an intact one into the "
            "data folder.")


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Return the hex digest of a file, read in 1 MiB chunks.

    Parameters
    ----------
    path : str or path-like
    algorithm : {"sha256", "md5"}

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     _ = f.write(b"abc"); f.flush()
    ...     file_digest(f.name)[:16]
    'ba7816bf8f01cfea'
    """
    h = _hasher(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _hasher(algorithm: str):
    if algorithm not in ("sha256", "md5"):
        raise DataError(f"Unknown checksum algorithm {algorithm!r}. Expected one of "
                        "['md5', 'sha256']")
    return hashlib.new(algorithm)


def verify(path: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None,
           size: int | None = None) -> Path:
    """Check a file's size and checksums; raise :class:`DataError` on any mismatch.

    Parameters
    ----------
    path : str or path-like
        The file to check.
    sha256, md5 : str, optional
        Expected hex digests (case-insensitive). ``None`` skips that check.
    size : int, optional
        Expected size in bytes.

    Returns
    -------
    pathlib.Path
        ``path``, so that calls can be chained.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     _ = f.write(b"abc"); f.flush()
    ...     _ = verify(f.name, size=3, md5="900150983cd24fb0d6963f7d28e17f72")
    ...     verify(f.name, size=4)
    Traceback (most recent call last):
    ...
    repscope.training.errors.DataError: Size mismatch for '...': expected 4 bytes, found 3 ...
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Cannot verify {str(path)!r}: no such file.")
    if size is not None and path.stat().st_size != size:
        raise DataError(f"Size mismatch for {str(path)!r}: expected {size} bytes, found "
                        f"{path.stat().st_size} (truncated or a different file). {_REFETCH}")
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected is not None:
            found = file_digest(path, algorithm)
            if found != expected.lower():
                raise DataError(f"Checksum mismatch for {str(path)!r}: expected {algorithm} "
                                f"{expected.lower()}, found {found}. {_REFETCH}")
    return path


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None,
             md5: str | None = None, size: int | None = None,
             check: Callable[[Path], None] | None = None, timeout: float = 60.0,
             retries: int = 2, progressbar: bool | None = None) -> Path:
    """Download ``url`` to ``dest`` with pooch, verify it, and move it into place.

    :mod:`pooch` streams ``http(s)://`` URLs (``file://`` URLs are copied) into a temporary
    file next to ``dest``, retries failed transfers, and moves the file to ``dest`` only
    when the download returned without an error. Before that move the temporary file
    passes :func:`verify` (size and checksums) and ``check``; on any failure nothing is
    left behind.

    Parameters
    ----------
    url : str
    dest : str or path-like
        Final file name. Its folder is created if needed.
    sha256, md5, size : optional
        Expected checksums and size, as for :func:`verify`.
    check : callable, optional
        Called with the temporary path before the move; raises :class:`DataError` to
        reject the file (e.g. :func:`check_zip`, or a checksum of decompressed bytes).
    timeout : float
        Socket timeout in seconds.
    retries : int
        Further attempts after a failed transfer (a dropped connection, a truncated
        body, a server error). A file that arrives whole but fails its checks is not
        fetched again.
    progressbar : bool, optional
        Show a progress bar on standard error; by default only when it is a terminal.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "src.bin").write_bytes(b"abc")
    >>> download((d / "src.bin").as_uri(), d / "copy.bin", size=3).read_bytes()
    b'abc'
    >>> download((d / "src.bin").as_uri(), d / "bad.bin", md5="0" * 32)
    Traceback (most recent call last):
    ...
    repscope.training.errors.DataError: Download of 'file://...src.bin' to '...bad.bin' failed: Checksum mismatch ...
    >>> (d / "bad.bin").exists()
    False
    """
    import pooch
    import requests

    dest = Path(dest)
    progress = _Progress(sys.stderr.isatty() if progressbar is None else progressbar)
    if url.startswith("file://"):
        transfer = _copy_file_url
    else:
        transfer = pooch.HTTPDownloader(progressbar=progress, timeout=timeout)

    def fetch_and_check(url_: str, output_file: str, pooch_) -> None:
        # pooch calls this with its temporary file and moves it onto dest on return
        try:
            transfer(url_, output_file, pooch_)
        except requests.exceptions.ChunkedEncodingError as err:  # pooch retries these
            received = _bytes_read(err, Path(output_file).stat().st_size)
            raise requests.exceptions.ChunkedEncodingError(
                f"transfer truncated: Content-Length {progress.total} bytes, received "
                f"{received}") from err
        verify(output_file, sha256=sha256, md5=md5, size=size)
        if check is not None:
            check(Path(output_file))

    # One registry entry: pooch.fetch adds the retries that pooch.retrieve lacks. The
    # checksums are checked by verify() above, the same code that checks local files.
    cache = pooch.create(path=dest.parent, base_url="", registry={dest.name: None},
                         urls={dest.name: url}, retry_if_failed=retries)
    try:
        if dest.exists():  # pooch would keep an existing file whose hash it does not know
            raise DataError("the target already exists. Delete it to download it again.")
        cache.fetch(dest.name, downloader=fetch_and_check)
    except DataError as err:
        raise DataError(f"Download of {url!r} to {str(dest)!r} failed: {err}") from err
    except requests.exceptions.ChunkedEncodingError as err:
        raise DataError(f"Download of {url!r} to {str(dest)!r} failed ({1 + retries} "
                        f"attempts): {err}.") from err
    except (requests.exceptions.RequestException, OSError, ValueError) as err:
        raise DataError(f"Download of {url!r} to {str(dest)!r} failed: could not read the "
                        f"URL ({err}). Without internet access, point root= or "
                        "$REPSCOPE_DATA at a folder laid out as the data guide shows."
                        ) from err
    return dest


def _bytes_read(err: BaseException, default: int) -> int:
    """The byte count of the ``IncompleteRead`` inside requests' error (urllib3 keeps
    the partial body it read in its own buffer, not in our file)."""
    todo, seen = [err], set()
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(getattr(e, "partial", None), int):
            return e.partial
        todo += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]
    return default


class _Progress:
    """pooch's progress bar protocol (``total``, ``update``, ``reset``, ``close``): a tqdm
    bar when ``show``, and the announced ``Content-Length`` for the error message."""

    def __init__(self, show: bool):
        self.show, self.bar, self._total = bool(show), None, None

    @property
    def total(self):
        return self._total

    @total.setter
    def total(self, value):  # set by pooch at the start of each attempt
        self.close()
        self._total = value
        if self.show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=value, unit="B", unit_scale=True, ncols=79, leave=True)

    def update(self, n):
        if self.bar is not None:
            self.bar.update(n)

    def reset(self):
        if self.bar is not None:
            self.bar.reset()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _copy_file_url(url: str, output_file: str, pooch_=None) -> None:
    """A pooch downloader for ``file://`` URLs (pooch speaks http, ftp, sftp and doi)."""
    path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    try:
        shutil.copyfile(path, output_file)
    except OSError as err:
        raise DataError(f"could not read the URL ({err}).") from err


def open_zip(path: str | os.PathLike) -> zipfile.ZipFile:
    """Open a zip archive, turning a corrupt or truncated file into :class:`DataError`.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(suffix=".zip") as f:
    ...     _ = f.write(b"not a zip"); f.flush()
    ...     open_zip(f.name)
    Traceback (most recent call last):
    ...
    repscope.training.errors.DataError: Cannot read zip archive '....zip': ... Expected an intact zip file...
    """
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise DataError(f"Cannot read zip archive {str(path)!r}: {err}. Expected an intact "
                        "zip file; delete it to download it again.") from err


def check_zip(path: str | os.PathLike) -> None:
    """Read every member of a zip archive and check its CRC; raise :class:`DataError`.

    Used where no published checksum exists for an archive.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with zipfile.ZipFile(d / "a.zip", "w") as z:
    ...     z.writestr("a.txt", "hello")
    >>> check_zip(d / "a.zip")
    """
    with open_zip(path) as z:
        try:
            bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as err:
            raise DataError(f"Corrupt zip archive {str(path)!r}: {err}. {_REFETCH}") from err
    if bad is not None:
        raise DataError(f"Corrupt zip archive {str(path)!r}: member {bad!r} fails its CRC "
                        f"check. {_REFETCH}")


def member_problem(info: zipfile.ZipInfo) -> str | None:
    """Say why a zip member is unsafe to extract (``None`` if it is safe).

    Rejected: absolute paths (``/x``, ``\\\\x``, ``C:x``), any ``..`` component, and
    symbolic-link entries.

    Examples
    --------
    >>> member_problem(zipfile.ZipInfo("a/b.png")) is None
    True
    >>> member_problem(zipfile.ZipInfo("../evil.txt"))
    "'..' component (would land outside the target folder)"
    """
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "'..' component (would land outside the target folder)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link entry"
    return None


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a zip archive into a new folder ``dest``, refusing unsafe members.

    Every member is checked before anything is written: absolute paths, ``..``
    components and symlink entries raise :class:`DataError`. Members are extracted into
    a temporary folder next to ``dest`` (CRCs are checked while reading) and the folder is
    renamed to ``dest`` at the end; on any failure nothing is left behind.

    Parameters
    ----------
    archive : str or path-like
        A zip file.
    dest : str or path-like
        Folder to create; it must not exist yet.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with zipfile.ZipFile(d / "a.zip", "w") as z:
    ...     z.writestr("top/a.txt", "hello")
    >>> (safe_extract(d / "a.zip", d / "out") / "top" / "a.txt").read_text()
    'hello'
    >>> with zipfile.ZipFile(d / "evil.zip", "w") as z:
    ...     z.writestr("../evil.txt", "gotcha")
    >>> safe_extract(d / "evil.zip", d / "out2")
    Traceback (most recent call last):
    ...
    repscope.training.errors.DataError: Refusing to extract '...evil.zip': member '../evil.txt' has a '..' component ...
    >>> sorted(p.name for p in d.iterdir())
    ['a.zip', 'evil.zip', 'out']
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise DataError(f"Cannot extract {str(archive)!r} into {str(dest)!r}: the target "
                        "already exists. Expected a new folder name.")
    with open_zip(archive) as z:
        infos = z.infolist()
        for info in infos:
            problem = member_problem(info)
            if problem:
                raise DataError(f"Refusing to extract {str(archive)!r}: member "
                                f"{info.filename!r} has a{'n' if problem[0] in 'a' else ''} "
                                f"{problem}.")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"))
        try:
            base = tmp.resolve()
            for info in infos:
                target = (tmp / info.filename).resolve()
                if base not in target.parents and target != base:
                    raise DataError(f"Refusing to extract {str(archive)!r}: member "
                                    f"{info.filename!r} would land outside {str(dest)!r}.")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
            os.replace(tmp, dest)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as err:
            raise DataError(f"Cannot extract {str(archive)!r}: {err}. Expected an intact "
                            "zip archive.") from err
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return dest
