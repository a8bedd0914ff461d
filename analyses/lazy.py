"""Analyses of records larger than memory: dask-backed layers, reduced chunk by chunk.

A record opened with ``repscope.probes.open_run(folder, chunks={})`` holds dask arrays
(one chunk per checkpoint file). Every measure first turns each representation
(stimulus x unit) into a small feature vector (an RDM, a centred Gram matrix); for a
dask-backed layer :func:`features_by_chunk` does that chunk by chunk, as one dask task
per chunk, and only the features are gathered. The rest of every analysis works on
features, so the whole analysis reads each chunk when it needs it and never holds the
record. The tasks run on the scheduler set in dask's configuration, which is a
``dask.distributed`` cluster when a ``distributed.Client`` is active (the workers, one
process each, then read the files); with none set they run in this thread, one chunk
after another, never in dask's default thread pool: netCDF4 and HDF5 are not
thread-safe, and reading netCDF files from several threads can crash the process.
For parallel work start a cluster (``--workers N``).

The features of a chunk are the ones the in-memory path computes for the same
representations (each representation is reduced on its own), so the numbers are
identical.

dask is optional (``pip install -e ".[dask]"`` in the repscope checkout): this module
imports it only when a dask-backed layer is reduced.
"""
from __future__ import annotations

import itertools
import os
import re
from typing import Callable

import numpy as np
import xarray as xr

from .errors import AnalysisError

__all__ = ["is_lazy", "features_by_chunk", "parse_bytes", "memory_budget"]

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def is_lazy(da: xr.DataArray) -> bool:
    """Whether ``da`` is backed by a dask array (values read when computed).

    Examples
    --------
    >>> is_lazy(xr.DataArray(np.zeros(3)))
    False
    """
    return da.chunks is not None


def _blocks(da: xr.DataArray, dims: list[str]):
    """Index slices of every dask block of ``da`` over ``dims``, in row-major order."""
    bounds = []
    for d in dims:
        sizes = da.chunksizes[d]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        bounds.append([slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])])
    return [dict(zip(dims, combo)) for combo in itertools.product(*bounds)], [len(b) for b in bounds]


def features_by_chunk(fn: Callable, da: xr.DataArray, whole: tuple[str, ...], **kwargs) -> xr.DataArray:
    """``fn(block, **kwargs)`` on every dask block of ``da``, combined into one result.

    Parameters
    ----------
    fn : callable
        Reduces an in-memory DataArray to one with the same other dims (a feature
        function such as :func:`repscope.analyses.measures.features`); must be picklable
        for a distributed cluster.
    da : xarray.DataArray
        A dask-backed layer.
    whole : tuple of str
        Dims every block must hold whole (``stimulus`` and the unit dim): a chunked one
        is joined first.

    Returns
    -------
    xarray.DataArray
        In memory; the blocks' results concatenated over the other dims.

    Examples
    --------
    >>> x = xr.DataArray(np.arange(24.0).reshape(4, 3, 2), dims=("task", "stimulus", "unit_a"))
    >>> lazy = x.chunk({"task": 1})
    >>> total = features_by_chunk(lambda b: b.sum(("stimulus", "unit_a")), lazy,
    ...                           ("stimulus", "unit_a"))
    >>> total.values.tolist() == x.sum(("stimulus", "unit_a")).values.tolist()
    True
    """
    import dask

    joined = {d: -1 for d in whole if len(da.chunksizes.get(d, ())) > 1}
    if joined:
        da = da.chunk(joined)
    others = [d for d in da.dims if d not in whole]
    split = [d for d in others if len(da.chunksizes[d]) > 1]
    blocks, shape = _blocks(da, split)
    where = _scheduler()
    parts, step = [], 1 if where == "synchronous" else _in_flight()
    for i in range(0, len(blocks), step):  # a few blocks at a time: bounded memory
        tasks = [dask.delayed(fn)(da.isel(sel), **kwargs) for sel in blocks[i:i + step]]
        parts += list(dask.compute(*tasks, scheduler=where))
    if not split:
        return parts[0]
    nested = np.empty(len(parts), dtype=object)
    nested[:] = parts
    nested = nested.reshape(shape).tolist()
    return xr.combine_nested(nested, concat_dim=split, combine_attrs="override")


def _scheduler():
    """Where the blocks run: the scheduler set in dask's configuration (a
    ``distributed.Client`` sets its cluster), else this thread, one block after another.

    Not dask's default thread pool: netCDF4 and HDF5 are not thread-safe, and reading
    netCDF files from several threads at once can crash the process (a known problem of
    netCDF4 with xarray and dask threads); one torch thread per process is also the
    fastest for these measures.
    A cluster's workers are processes, each reading its own files.
    """
    import dask

    return None if dask.config.get("scheduler", None) is not None else "synchronous"


def _in_flight() -> int:
    """Blocks computed at once: one per thread of the cluster or of this process."""
    import dask

    try:
        from distributed import default_client

        return max(1, sum(default_client().nthreads().values()))
    except (ImportError, ValueError):  # no distributed, or no client active
        return max(1, int(dask.config.get("num_workers", None) or os.cpu_count() or 1))


def parse_bytes(text: str | int) -> int:
    """A memory size: a number of bytes or a string such as ``"4GB"`` or ``"512 MiB"``.

    Examples
    --------
    >>> parse_bytes("4GB"), parse_bytes("1.5 GiB"), parse_bytes(1000)
    (4000000000, 1610612736, 1000)
    >>> parse_bytes("four")
    Traceback (most recent call last):
    ...
    repscope.analyses.errors.AnalysisError: Cannot read the memory size 'four'. Expected a number of bytes or a number with one of the units ['B', 'GB', 'GiB', 'KB', 'KiB', 'MB', 'MiB', 'TB', 'TiB'], e.g. '4GB'
    """
    if isinstance(text, (int, np.integer)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).upper() not in _UNITS:
        units = sorted({"B", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB"})
        raise AnalysisError(f"Cannot read the memory size {text!r}. Expected a number of bytes or a "
                            f"number with one of the units {units}, e.g. '4GB'")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def memory_budget() -> int:
    """A quarter of the computer's physical memory: the default budget of one record.

    An in-memory analysis holds the record and, for a layer at a time, its float64
    copy, so a record of a quarter of the memory leaves room for the rest.

    Examples
    --------
    >>> memory_budget() > 0
    True
    """
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (AttributeError, ValueError, OSError):
        return 4 * 10**9
