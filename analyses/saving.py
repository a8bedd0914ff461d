"""Atomic writes of results: netCDF, figures (PNG + PDF) and text.

Every file is written through :func:`repscope.probes.files.atomic_path` (a temporary in
the target folder, flushed, renamed), so nothing half-written survives a crash.
"""
from __future__ import annotations

from pathlib import Path

import xarray as xr
from matplotlib.figure import Figure

from ..probes.files import atomic_write, atomic_write_text, run_lock
from .errors import AnalysisError

__all__ = ["save_netcdf", "load_netcdf", "save_figure", "save_text", "writing_results"]


def save_netcdf(obj: xr.Dataset | xr.DataArray, path) -> Path:
    """Write a Dataset or DataArray to netCDF atomically.

    Examples
    --------
    >>> import tempfile
    >>> p = save_netcdf(xr.Dataset({"a": ("x", [1.0])}), Path(tempfile.mkdtemp()) / "r.nc")
    >>> float(load_netcdf(p)["a"][0])
    1.0
    """
    ds = obj.to_dataset(name=obj.name or "value") if isinstance(obj, xr.DataArray) else obj
    ds = ds.compute()  # results are small; a lazy one is read here, not by cluster workers
    return atomic_write(path, lambda tmp: ds.to_netcdf(tmp))


def load_netcdf(path) -> xr.Dataset:
    """Read a saved result fully into memory (the file is closed afterwards)."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"No saved result at {path}")
    with xr.open_dataset(path) as ds:
        return ds.load()


def save_figure(fig: Figure, stem, formats=("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.pdf`` (atomically)."""
    stem = Path(stem)
    return [atomic_write(stem.with_suffix(f".{fmt}"), lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=dpi))
            for fmt in formats]


def save_text(text: str, path) -> Path:
    """Write text atomically."""
    return atomic_write_text(path, text)


def writing_results(folder, log=print):
    """Hold ``folder`` for one analysis while the block writes it (a context manager).

    A second analysis writing the same folder is refused, naming the one that holds it,
    before it writes anything; a read-only or full disk met inside the block is an
    :class:`AnalysisError` naming the path and the cause
    (:func:`repscope.probes.files.run_lock`). ``log`` receives a note when a lock left
    by a killed analysis is taken over.

    Examples
    --------
    >>> import tempfile
    >>> with writing_results(Path(tempfile.mkdtemp()) / "results") as folder:
    ...     save_text("# findings", folder / "findings.md").name
    'findings.md'
    """
    return run_lock(folder, "python analyses/layer_similarity.py", AnalysisError,
                    log=lambda line: log(f"[layer_similarity] {line}") if log else None)
