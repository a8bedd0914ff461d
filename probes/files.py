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

One writer per folder: :func:`run_lock` holds an exclusive lock on the folder a command
writes (a ``.repscope.lock`` file naming the holder), so a second writer is refused before
it writes anything; inside it, a read-only or full disk is an error of the caller's class
that names the path and the cause (:func:`environment_message`). :func:`remove_own`
removes what repscope wrote in a folder, and nothing else, for ``--overwrite``.

This module imports nothing of repscope's, so every package may use it.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shlex
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Union

try:
    import fcntl
except ImportError:  # Windows: the lock file alone (created exclusively) marks the holder
    fcntl = None

__all__ = ["temporary_path", "temporary_owner", "atomic_path", "atomic_write",
           "atomic_write_text", "clean_stale_temporaries", "run_lock",
           "environment_message", "remove_own"]

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
    except Exception as exc:
        # Writers that do not say why they failed (torch.save: "unexpected pos", netCDF:
        # "HDF error") on a full disk: say it, naming the file.
        if not isinstance(exc, OSError) and _free_bytes(final.parent) < _FULL:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(final)) from exc
        if isinstance(exc, OSError) and exc.errno in _CAUSES and not exc.filename:
            raise OSError(exc.errno, exc.strerror, str(final)) from exc  # name the file
        raise
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


# ----------------------------------------------------------------------------- environment

#: Below this many free bytes a failed write is taken for a full disk.
_FULL = 1 << 20
_CAUSES = {
    errno.EROFS: ("the file system is read-only", "choose a folder on a writable disk"),
    errno.EACCES: ("permission denied", "choose a folder you may write to, or change its "
                   "permissions"),
    errno.EPERM: ("operation not permitted", "choose a folder you may write to, or change its "
                  "permissions"),
    errno.ENOSPC: ("the disk is full", "free some space or choose a folder on another disk"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space or choose a folder on "
                   "another disk"),
    errno.ENOTDIR: ("part of the path is a file, not a folder", "choose a folder path"),
}


def _free_bytes(folder: Path) -> int:
    for where in (folder, *folder.parents):
        try:
            return shutil.disk_usage(where).free
        except OSError:
            continue
    return _FULL


def _final_name(path: str) -> str:
    """The file a temporary ``.NAME.tmp-PID`` stands for (other paths unchanged)."""
    m = _TEMPORARY.match(Path(path).name)
    return str(Path(path).with_name(m.group("name"))) if m else str(path)


def environment_message(exc: OSError, folder: Optional[PathLike] = None) -> Optional[str]:
    """What a failed write says to a user: the path, the cause and the fix (None: not the
    environment's doing, such as a programming error).

    A read-only file system, a refused permission, a full disk or quota, and a file where
    a folder is expected are the environment's; the path is the file being written (a
    temporary is named by the file it was to become), else ``folder`` when given.

    Examples
    --------
    >>> import errno
    >>> environment_message(OSError(errno.EROFS, "Read-only file system", "runs/x/.config.json.tmp-7"))
    "Cannot write 'runs/x/config.json': the file system is read-only; choose a folder on a writable disk"
    >>> environment_message(OSError(errno.EINVAL, "Invalid argument")) is None
    True
    """
    if exc.errno not in _CAUSES:
        return None
    cause, fix = _CAUSES[exc.errno]
    where = (f" {_final_name(exc.filename)!r}" if exc.filename else
             f" in {str(folder)!r}" if folder is not None else "")
    return f"Cannot write{where}: {cause}; {fix}"


# ----------------------------------------------------------------------------- one writer

#: The lock file :func:`run_lock` keeps in a folder while a command writes it.
LOCK_NAME = ".repscope.lock"


def _holder_text(info: dict) -> str:
    if not info:
        return "a process that has not yet written its name into the lock"
    return (f"pid {info.get('pid')} on host {info.get('host')!r}, started "
            f"{info.get('started')}: {info.get('command') or info.get('what')}")


def _read_lock(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
        info = json.loads(text) if text.strip() else {}
        return info if isinstance(info, dict) else {"command": repr(text[:200])}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}


def _acquire(path: Path, what: str, error, log) -> int:
    """Open and lock ``path``; return its descriptor. Raises ``error`` when held."""
    me = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
          "command": " ".join([what, *map(shlex.quote, sys.argv[1:])]),
          "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    held = (f"{str(path.parent)!r} is being written by another repscope process")
    fix = ("Wait for it to finish or stop it, or write somewhere else: two writers in one "
           "folder would mix their files")
    for _ in range(20):  # a holder releasing (unlinking) while we open: try again
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    info = _read_lock(path)
                    if not info:  # the holder has just created it; let it write its name
                        time.sleep(0.2)
                        info = _read_lock(path)
                    raise error(f"{held} ({_holder_text(info)}). {fix}") from None
                except OSError as exc:  # a file system without flock: the file alone decides
                    if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                        raise
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # locked a file its holder had just removed
                os.close(fd)
                continue
            previous = _read_lock(path)
            if previous and previous.get("pid") != os.getpid():
                if previous.get("host") != me["host"]:
                    raise error(
                        f"{held} on another host, or was until it stopped without releasing "
                        f"its lock ({_holder_text(previous)}); this host cannot tell which. If "
                        f"that process no longer runs, delete {str(path)!r}")
                if fcntl is None and _alive(int(previous.get("pid", 0) or 0)):
                    raise error(f"{held} ({_holder_text(previous)}). {fix}")
                if log:
                    log(f"note: taking over the lock of {str(path.parent)!r} from "
                        f"{_holder_text(previous)}, which ended without releasing it")
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(me).encode(), 0)
                os.fsync(fd)
            except OSError as exc:  # a full disk: name the file, leave none
                with contextlib.suppress(OSError):
                    path.unlink()
                raise OSError(exc.errno, exc.strerror, str(path)) from exc
            return fd
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
    raise error(f"{held}: its lock file {str(path)!r} keeps changing. {fix}")


def _release(path: Path, fd: int) -> None:
    try:
        if os.fstat(fd).st_ino == os.stat(path).st_ino:
            path.unlink()  # while still locked: a waiting opener sees another file
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def run_lock(folder: PathLike, what: str, error: type = RuntimeError,
             log: Optional[Callable[[str], object]] = None) -> Iterator[Path]:
    """Hold the one-writer lock of ``folder`` while the block writes it; yield the folder.

    ``folder`` (and its parents) is created if missing, and removed again on exit if the
    block left it empty. The lock is ``folder/.repscope.lock``, created and locked with
    ``flock`` (released by the kernel when the process dies, however it dies) and naming
    its holder: process id, host, command and start time. It is removed on exit, also on
    an exception or Ctrl-C.

    A second writer gets ``error`` naming the holder, before it has written anything.
    A lock left by a process of this host that no longer holds it (killed) is taken over
    with a note through ``log``; one left by another host is reported, not broken (this
    host cannot tell whether that process still runs).

    Inside the block, an :class:`OSError` of the environment (read-only file system,
    permission, full disk or quota; :func:`environment_message`) becomes ``error`` naming
    the path and the cause; others propagate unchanged. ``what`` names the writer
    (e.g. the command) in the lock file.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()) / "run"
    >>> with run_lock(d, "example", ValueError):
    ...     with run_lock(d, "a second writer", ValueError):
    ...         pass
    Traceback (most recent call last):
    ...
    ValueError: '.../run' is being written by another repscope process (pid ...). Wait for it ...
    >>> d.exists()  # created for the lock, empty again, removed
    False
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise error(f"{str(folder)!r} is a file, not a folder: name a folder to write into "
                    "(a new one, or one this command wrote)")
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    fd = None
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = _acquire(folder / LOCK_NAME, what, error, log)
        except OSError as exc:
            message = environment_message(exc, folder)
            if message is None:
                raise
            raise error(message) from exc
        try:
            yield folder
        except OSError as exc:
            message = environment_message(exc, folder)
            if message is None:
                raise
            raise error(message) from exc
    finally:
        if fd is not None:
            _release(folder / LOCK_NAME, fd)
        for path in created:  # innermost first
            try:
                path.rmdir()  # only when empty
            except OSError:
                break


# ----------------------------------------------------------------------------- --overwrite

def remove_own(folder: PathLike, own: Mapping[str, str], error: type = RuntimeError) -> list[Path]:
    r"""Delete the files repscope wrote in ``folder``, and nothing else; return them.

    ``own`` maps a subfolder (``""``: the folder itself) to a regular expression of the
    names repscope writes there (matched whole). Temporaries of dead writers
    (``.NAME.tmp-PID``) in those folders go too; every other file stays, and a subfolder
    is removed only when nothing else is left in it.

    All or nothing: everything is checked before the first deletion. A symbolic link where
    a subfolder or one of those names is expected (which repscope never writes, and which
    may lead out of the folder), or a folder under a file's name, raises ``error``
    naming it, and nothing is deleted.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> (d / "checkpoints").mkdir()
    >>> for name in ("config.json", "checkpoints/step_00000000.pt", "checkpoints/mine.bin"):
    ...     _ = (d / name).write_text("x")
    >>> own = {"": r"config\.json", "checkpoints": r"step_\d{8}\.pt"}
    >>> [p.name for p in remove_own(d, own)], sorted(p.name for p in (d / "checkpoints").iterdir())
    (['config.json', 'step_00000000.pt'], ['mine.bin'])
    """
    folder = Path(folder)
    doomed, folders = [], []
    for sub, pattern in own.items():
        where = folder / sub if sub else folder
        if where.is_symlink():
            raise error(f"{str(where)!r} is a symbolic link (to {os.readlink(where)!r}); "
                        "repscope never writes one and does not delete through it. Nothing "
                        "was removed: move it away yourself, or choose another folder")
        if not where.exists():
            continue
        if not where.is_dir():
            raise error(f"{str(where)!r} is a file where repscope keeps a folder. Nothing was "
                        "removed: move it away yourself, or choose another folder")
        if sub:
            folders.append(where)
        name = re.compile(pattern)
        for path in sorted(where.iterdir()):
            pid = temporary_owner(path)
            if name.fullmatch(path.name) is None and (pid is None or _alive(pid)):
                continue
            if path.is_symlink() or not path.is_file():
                kind = "a symbolic link" if path.is_symlink() else "not a regular file"
                raise error(f"{str(path)!r} is {kind}, which repscope never writes under that "
                            "name. Nothing was removed: move it away yourself, or choose "
                            "another folder")
            doomed.append(path)
    for path in doomed:
        path.unlink(missing_ok=True)
    for where in folders:
        with contextlib.suppress(OSError):
            where.rmdir()  # only when empty
    return doomed
