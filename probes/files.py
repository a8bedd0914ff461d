"""Files written whole or not at all: atomic writes, temporary names, stale temporaries.

Every file repscope writes (activation records, training states, run configurations,
metrics, analysis results and figures, caches) goes through :func:`atomic_path`:

1. the writer writes a temporary ``.NAME.tmp-PID`` in the target's own folder (same
   file system, so the rename below is atomic; the leading dot hides it from listings
   and globs such as ``checkpoint_*.nc``);
2. the temporary is flushed to disk (``fsync``), then renamed onto ``NAME`` with
   :func:`os.replace`, then the folder is flushed too.

So a crash, a kill or a power cut at any moment leaves either the previous ``NAME``
(untouched) or the complete new one, never half a file, and once a write has returned
its file survives a power cut. The flushes are decided here, once, for every writer:
both always. They cost one ``fsync`` of the file and one of its folder per write, small
beside what repscope writes (a training state, a whole activation file) and rare
(scheduled checkpoints, one file per recorded checkpoint, one per result).

An exception inside the block removes the temporary and leaves ``NAME`` as it was. A
SIGKILL between writing and renaming cannot run that clean-up and leaves the temporary
behind: :func:`clean_stale_temporaries` removes those whose process no longer runs,
and nothing else. One process writes a given file from one thread at a time (the
temporary's name holds the process id only).

This module imports nothing of repscope's, so every package may use it.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

__all__ = ["temporary_path", "temporary_owner", "atomic_path", "atomic_write",
           "atomic_write_text", "clean_stale_temporaries"]

PathLike = Union[str, os.PathLike]
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)$")


def temporary_path(final: PathLike) -> Path:
    """The temporary name a write to ``final`` goes through: ``.NAME.tmp-PID``.

    Examples
    --------
    >>> import os
    >>> temporary_path("runs/x/state.pt").name == f".state.pt.tmp-{os.getpid()}"
    True
    """
    final = Path(final)
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


def temporary_owner(path: PathLike) -> Optional[int]:
    """The process id in a temporary's name (``.NAME.tmp-PID``), or None for other names.

    Examples
    --------
    >>> temporary_owner("runs/x/.state.pt.tmp-4242"), temporary_owner("runs/x/state.pt")
    (4242, None)
    """
    m = _TEMPORARY.match(Path(path).name)
    return int(m.group("pid")) if m else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except (OverflowError, OSError):  # not a valid process id: no such process
        return False
    return True


def _fsync_folder(folder: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # Windows: folders cannot be opened
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(final: PathLike) -> Iterator[Path]:
    """Yield the temporary path of a write to ``final``; on success it becomes ``final``.

    The block writes the file at the yielded path (with any writer that takes a path).
    When the block returns, the file is flushed to disk, renamed onto ``final`` and its
    folder flushed. When the block raises, the temporary is removed, ``final`` is left
    as it was, and the exception propagates. The folder of ``final`` is created if
    missing.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "x.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> with atomic_path(d / "x.txt") as tmp:
    ...     _ = tmp.write_text("half")
    ...     raise ValueError("boom")
    Traceback (most recent call last):
    ...
    ValueError: boom
    >>> (d / "x.txt").read_text(), sorted(p.name for p in d.iterdir())
    ('done', ['x.txt'])
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(final)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)  # gone after a successful rename
    _fsync_folder(final.parent)


def atomic_write(final: PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(path)`` on a temporary and rename it onto ``final`` (:func:`atomic_path`).

    Returns ``final`` as a :class:`~pathlib.Path`.

    Examples
    --------
    >>> import tempfile
    >>> p = atomic_write(Path(tempfile.mkdtemp()) / "a" / "b.bin", lambda tmp: tmp.write_bytes(b"ok"))
    >>> p.name, p.read_bytes()
    ('b.bin', b'ok')
    """
    with atomic_path(final) as tmp:
        write(tmp)
    return Path(final)


def atomic_write_text(final: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``final`` atomically; return ``final``.

    Examples
    --------
    >>> import tempfile
    >>> atomic_write_text(Path(tempfile.mkdtemp()) / "config.json", "{}").read_text()
    '{}'
    """
    return atomic_write(final, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def clean_stale_temporaries(folder: PathLike) -> list[Path]:
    """Delete the temporaries in ``folder`` whose writer no longer runs; return them.

    Only regular files named ``.NAME.tmp-PID`` (see :func:`temporary_path`) whose
    process is gone are removed. A live process's temporary (a concurrent writer), a
    symbolic link, a folder and every other name are left alone; so are subfolders.
    A missing folder holds none.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / ".checkpoint_00000005.nc.tmp-999999999").write_bytes(b"half a file")
    >>> _ = temporary_path(d / "live.nc").write_bytes(b"being written")  # this process
    >>> _ = (d / "notes.tmp").write_text("someone else's")
    >>> [p.name for p in clean_stale_temporaries(d)], len(list(d.iterdir()))
    (['.checkpoint_00000005.nc.tmp-999999999'], 2)
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        pid = temporary_owner(path)
        if pid is None or path.is_symlink() or not path.is_file() or _alive(pid):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed
