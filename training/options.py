"""Checks of the options the three command lines share: one rule and one message each.

``python -m repscope.training.maml``, ``.record`` and ``.supervised`` validate their
configuration dataclasses in ``__post_init__`` with these functions, so a bad value is
refused before anything is written, with a message that names the option (field and
command-line flag), the value and what is allowed.

``threads`` means the same everywhere: ``N >= 1`` runs torch on ``N`` CPU threads, ``0``
keeps torch's default (usually one per core); see :func:`torch_threads`.
"""
from __future__ import annotations

import contextlib
import math
import os

from .errors import TrainingError

__all__ = ["DEVICES", "THREADS_HELP", "check_choice", "check_int", "check_positive",
           "check_threads", "check_device", "torch_threads", "available_memory"]

DEVICES = ("cpu", "cuda")
THREADS_HELP = ("torch CPU threads; 0 keeps torch's default (usually one per core). One "
                "thread is the fastest for these small convolutions, and much the fastest on "
                "a shared CPU (see the benchmarks page).")


def _name(name: str) -> str:
    return f"{name} (--{name.replace('_', '-')})"


def check_choice(name: str, value, allowed) -> None:
    """Refuse ``value`` unless it is one of ``allowed``.

    Examples
    --------
    >>> check_choice("reduce", "bogus", ("none", "spatial_mean"))
    Traceback (most recent call last):
    ...
    repscope.training.errors.TrainingError: Unknown reduce (--reduce) 'bogus'. Expected one of ['none', 'spatial_mean']
    """
    if value not in allowed:
        raise TrainingError(f"Unknown {_name(name)} {value!r}. Expected one of {list(allowed)}")


def check_int(name: str, value, minimum: int) -> None:
    """Refuse ``value`` unless it is an integer ``>= minimum`` (booleans are refused).

    Examples
    --------
    >>> check_int("n_filters", 0, 1)
    Traceback (most recent call last):
    ...
    repscope.training.errors.TrainingError: n_filters (--n-filters) must be an integer >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TrainingError(f"{_name(name)} must be an integer >= {minimum}, got {value!r}")


def check_positive(name: str, value) -> None:
    """Refuse ``value`` unless it is a finite number ``> 0``.

    Examples
    --------
    >>> check_positive("meta_lr", -1.0)
    Traceback (most recent call last):
    ...
    repscope.training.errors.TrainingError: meta_lr (--meta-lr) must be a finite number > 0, got -1.0
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise TrainingError(f"{_name(name)} must be a finite number > 0, got {value!r}")


def check_threads(value) -> int:
    """The thread count ``value`` means: ``None`` (older run files) becomes 0.

    Examples
    --------
    >>> check_threads(None), check_threads(2)
    (0, 2)
    >>> check_threads(-1)
    Traceback (most recent call last):
    ...
    repscope.training.errors.TrainingError: threads (--threads) must be an integer >= 0 (0: torch's default), got -1
    """
    value = 0 if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TrainingError(f"{_name('threads')} must be an integer >= 0 (0: torch's "
                            f"default), got {value!r}")
    return value


def check_device(value, available: bool = True) -> None:
    """Refuse an unknown device and, with ``available``, one torch cannot use.

    Examples
    --------
    >>> check_device("tpu")
    Traceback (most recent call last):
    ...
    repscope.training.errors.TrainingError: Unknown device (--device) 'tpu'. Expected one of ['cpu', 'cuda']
    """
    check_choice("device", value, DEVICES)
    if available and value == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise TrainingError(f"{_name('device')} 'cuda' was requested but this torch build "
                                "sees no CUDA device (torch.cuda.is_available() is False). "
                                "Expected one of ['cpu']")


@contextlib.contextmanager
def torch_threads(threads: int):
    """Run the block with ``threads`` torch CPU threads (0: leave torch's setting).

    Examples
    --------
    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def available_memory() -> int:
    """Bytes of memory available to a new allocation (Linux: ``MemAvailable``, which counts
    reclaimable caches; elsewhere the free pages; unknown: no limit).

    Examples
    --------
    >>> available_memory() > 0
    True
    """
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 1 << 62
