"""Error bars over tasks: mean +- z SEM bands and bootstrap confidence intervals."""
from __future__ import annotations

import numpy as np
import xarray as xr

from repscope.analyses.errors import AnalysisError

__all__ = ["mean_band", "bootstrap_ci", "check_n_boot", "BANDS"]

#: Error bands of :func:`mean_band`, ``std`` (+- 1 standard deviation over tasks, the
#: published figures) and ``sem`` (+- z standard errors, the paper's later code).
BANDS = ("std", "sem")


def _check_dim(da: xr.DataArray, dim: str) -> None:
    if dim not in da.dims:
        raise AnalysisError(f"Cannot reduce over {dim!r}: {da.name!r} has dims {da.dims}")


def check_n_boot(n_boot, level: float = 0.95) -> None:
    """Refuse a bootstrap too small for its CI: each tail must hold a resample.

    A percentile CI at ``level`` reads the ``(1 - level) / 2`` quantiles of the
    resampled means, so it needs at least ``2 / (1 - level)`` resamples (40 at 95%);
    with fewer (one, say) the interval collapses to a point.

    Examples
    --------
    >>> check_n_boot(2000)
    >>> check_n_boot(1)
    Traceback (most recent call last):
    ...
    repscope.analyses.errors.AnalysisError: a 95% percentile bootstrap CI needs a whole number of at least 40 resamples (each tail must hold one); got 1. The default is 2000
    """
    if not 0 < level < 1:
        raise AnalysisError(f"level must lie in (0, 1); got {level}")
    minimum = int(np.ceil(2 / (1 - level) - 1e-9))
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < minimum:
        raise AnalysisError(f"a {level:.0%} percentile bootstrap CI needs a whole number of at least "
                            f"{minimum} resamples (each tail must hold one); got {n_boot!r}. The default is 2000")


def mean_band(da: xr.DataArray, dim: str = "task", z: float = 1.96, kind: str = "sem") -> xr.Dataset:
    """Mean with a ``mean +- z * SEM`` band (``kind="sem"``) or a ``mean +- 1 std``
    band (``kind="std"``, as the published figure 1 drew it) over ``dim``.

    NaN entries (missing) are skipped; SEM uses the sample standard deviation
    (``ddof=1``) and is NaN where fewer than two values exist; ``std`` is numpy's
    default population standard deviation (``ddof=0``), as the paper's code.

    Returns
    -------
    xarray.Dataset
        Variables ``mean``, ``sem``, ``lower``, ``upper``, ``count``.

    Examples
    --------
    >>> da = xr.DataArray([[1.0, 3.0]], dims=("checkpoint", "task"))
    >>> b = mean_band(da)
    >>> float(b["mean"][0]), float(b["sem"][0])
    (2.0, 1.0)
    >>> float(mean_band(da, kind="std")["upper"][0])
    3.0
    """
    _check_dim(da, dim)
    if kind not in BANDS:
        raise AnalysisError(f"Unknown band {kind!r}. Expected one of {list(BANDS)}")
    count = da.count(dim)
    mean = da.mean(dim)
    sem = da.std(dim, ddof=1) / np.sqrt(count)
    sem = sem.where(count >= 2)
    half, text = (z * sem, f"mean +- {z} SEM over {dim}") if kind == "sem" else (
        da.std(dim, ddof=0), f"mean +- 1 std over {dim}")
    return xr.Dataset({"mean": mean, "sem": sem, "lower": mean - half,
                       "upper": mean + half, "count": count},
                      attrs={"band": text, "z": z, "kind": kind})


def bootstrap_ci(da: xr.DataArray, dim: str = "task", n_boot: int = 2000,
                 level: float = 0.95, seed: int = 0) -> xr.Dataset:
    """Percentile bootstrap CI of the mean over ``dim`` (resampling its entries).

    The same resampling indices are used for every other coordinate, so differences
    computed afterwards stay paired. NaN entries are skipped within each resample.

    Returns
    -------
    xarray.Dataset
        Variables ``mean``, ``lower``, ``upper``; attrs ``level``, ``n_boot``, ``seed``.

    Examples
    --------
    >>> da = xr.DataArray(np.arange(10.0), dims="task")
    >>> ci = bootstrap_ci(da)
    >>> float(ci["mean"]), bool(ci["lower"] < 4.5 < ci["upper"])
    (4.5, True)
    """
    _check_dim(da, dim)
    check_n_boot(n_boot, level)
    n = da.sizes[dim]
    if n < 2:
        raise AnalysisError(f"Bootstrap over {dim!r} needs at least 2 entries; got {n}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    arr = da.transpose(dim, ...).values
    boots = np.nanmean(arr[idx], axis=1)  # (n_boot, ...)
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(boots, [alpha, 1 - alpha], axis=0)
    tmpl = da.isel({dim: 0}, drop=True)
    tmpl = tmpl.drop_vars([c for c in tmpl.coords if dim in tmpl[c].dims])
    tmpl = tmpl.transpose(*[d for d in da.dims if d != dim])
    return xr.Dataset({"mean": da.mean(dim), "lower": tmpl.copy(data=lo),
                       "upper": tmpl.copy(data=hi)},
                      attrs={"level": level, "n_boot": n_boot, "seed": seed,
                             "method": f"percentile bootstrap over {dim}"})
