"""Error bars over tasks: mean +- z SEM bands, bootstrap CIs, and the calibrated
t, two-sample and Fieller intervals of the findings."""
from __future__ import annotations

import numpy as np
import xarray as xr

from .errors import AnalysisError

__all__ = ["mean_band", "bootstrap_ci", "check_n_boot", "BANDS", "t_interval", "difference_interval",
           "fieller_interval", "unit_values"]

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


# ----------------------------------------------------------------- calibrated intervals
#
# The findings' intervals: Student t over independent units (each unit first reduced to
# one number, the mean of its cells), a two-sample difference from two t intervals, and
# Fieller's interval for a ratio of paired means. All work on the last axis and
# broadcast over leading ones, so a simulation of many records is one call.

def _t_quantile(level: float, df):
    from scipy.stats import t as student_t

    if not 0 < level < 1:
        raise AnalysisError(f"level must lie in (0, 1); got {level}")
    return student_t.ppf((1 + level) / 2, df)


def t_interval(x, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and two-sided Student-t CI over the last axis (the independent units).

    Exact when the unit values are normal, and close for means of several cells per
    unit; one side of a 95% interval errs 2.5% of the time. Needs at least 2 units
    (NaN otherwise); a unit set with no spread gives the point.

    Examples
    --------
    >>> m, lo, hi = t_interval([1.0, 2.0, 3.0])
    >>> float(m), round(float(lo), 3), round(float(hi), 3)
    (2.0, -0.484, 4.484)
    """
    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    m = x.mean(-1)
    if n < 2:
        nan = np.full(m.shape, np.nan)
        return m, nan, nan
    half = _t_quantile(level, n - 1) * x.std(-1, ddof=1) / np.sqrt(n)
    return m, m - half, m + half


def difference_interval(x, y, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``mean(x) - mean(y)`` of two independent samples, with a CI that never errs more
    than its level.

    ``x`` and ``y`` lie along their last axes (for F2: tasks for the inner-loop change,
    disjoint checkpoint pairs for the meta-training change). Each mean gets its own
    Student-t interval at half the error, and the bounds are combined (lower of ``x``
    minus upper of ``y``): by the union bound each side errs at most ``(1 - level) / 2``
    whatever the two variances. Welch's approximate df errs up to 6.5% instead of 2.5%
    with 2 pairs and 30 tasks. Each sample needs at least 2 values.

    Examples
    --------
    >>> d, lo, hi = difference_interval([1.0, 1.2, 0.9, 1.1], [0.1, 0.2, 0.15])
    >>> round(float(d), 3), bool(lo > 0)
    (0.9, True)
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    half_level = 1 - (1 - level) / 2
    mx, lx, ux = t_interval(x, half_level)
    my, ly, uy = t_interval(y, half_level)
    return mx - my, lx - uy, ux - ly


def fieller_interval(num, den, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ratio ``mean(num) / mean(den)`` of paired unit values with Fieller's CI.

    The interval holds every ``theta`` that the paired t-test of ``num - theta * den``
    does not reject, so "upper bound < theta" is exactly that one-sided test. When the
    denominator's mean is not clearly above 0 the set is unbounded: ``(-inf, inf)``.

    Examples
    --------
    >>> r, lo, hi = fieller_interval([0.1, 0.12, 0.08, 0.1], [1.0, 1.1, 0.9, 1.0])
    >>> round(float(r), 3), bool(lo < 0.1 < hi < 0.5)
    (0.1, True)
    """
    a, b = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    n = a.shape[-1]
    ma, mb = a.mean(-1), b.mean(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = ma / mb
    if n < 2:
        nan = np.full(ratio.shape, np.nan)
        return ratio, nan, nan
    t2 = _t_quantile(level, n - 1) ** 2
    ca = a - ma[..., None]
    cb = b - mb[..., None]
    saa, sbb = (ca * ca).sum(-1) / (n - 1) / n, (cb * cb).sum(-1) / (n - 1) / n
    sab = (ca * cb).sum(-1) / (n - 1) / n
    # (ma - th mb)^2 <= t2 (saa - 2 th sab + th^2 sbb)  <=>  A th^2 + B th + C <= 0
    qa, qb, qc = mb ** 2 - t2 * sbb, -2 * (ma * mb - t2 * sab), ma ** 2 - t2 * saa
    disc = qb ** 2 - 4 * qa * qc
    bounded = (qa > 0) & (disc >= 0)
    root = np.sqrt(np.where(bounded, disc, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(bounded, (-qb - root) / (2 * np.where(bounded, qa, 1)), -np.inf)
        hi = np.where(bounded, (-qb + root) / (2 * np.where(bounded, qa, 1)), np.inf)
    return ratio, lo, hi


def unit_values(da: xr.DataArray, unit: str = "task") -> xr.DataArray:
    """One value per resampling unit: the mean of every other cell within the unit.

    The findings' intervals are hierarchical by reduction: cells that share a unit
    (checkpoints, checkpoint pairs, inner steps of one task) are averaged before the
    units are compared, so correlated cells never count as independent. A higher
    level slots in above: with a ``seed`` dim, ``unit_values(da, "seed")`` averages
    each seed's tasks and the interval runs over seeds.

    Examples
    --------
    >>> da = xr.DataArray(np.arange(6.0).reshape(2, 3), dims=("checkpoint", "task"))
    >>> unit_values(da).values.tolist()
    [1.5, 2.5, 3.5]
    """
    _check_dim(da, unit)
    if da.isnull().any():
        raise AnalysisError(f"Missing (NaN) cells in {da.name!r} (dims {da.dims}); every compared cell must hold a value")
    return da.mean([d for d in da.dims if d != unit]).transpose(unit)
