"""Helpers for labelled representations: find the stimulus and unit dimensions,
flatten the other dimensions into one batch and back."""
from __future__ import annotations

import numpy as np
import xarray as xr

from repscope.analyses.errors import AnalysisError

STIMULUS = "stimulus"
UNIT_PREFIX = "unit_"


def _unit_dim(da: xr.DataArray) -> str:
    """The one ``unit_*`` dimension of a layer variable."""
    units = [d for d in da.dims if str(d).startswith(UNIT_PREFIX)]
    if len(units) != 1 or STIMULUS not in da.dims:
        raise AnalysisError(
            f"Representation {da.name!r} has dims {da.dims}; expected a "
            f"{STIMULUS!r} dim and exactly one unit dim starting with {UNIT_PREFIX!r}"
        )
    return units[0]


def _other_dims(da: xr.DataArray) -> list[str]:
    """Dims other than stimulus and unit, in order."""
    unit = _unit_dim(da)
    return [d for d in da.dims if d not in (STIMULUS, unit)]


def _to_batch(da: xr.DataArray) -> tuple[np.ndarray, list[str]]:
    """Array (batch, n, d) over the other dims (row-major), and those dims."""
    others = _other_dims(da)
    arr = da.transpose(*others, STIMULUS, _unit_dim(da)).values
    return arr.reshape((-1,) + arr.shape[-2:]), others


def _template(da: xr.DataArray, others: list[str]) -> xr.DataArray:
    """An all-NaN DataArray over ``others`` carrying ``da``'s coordinates there."""
    sub = da.isel({d: 0 for d in da.dims if d not in others}, drop=True)
    sub = sub.drop_vars([c for c in sub.coords if set(sub[c].dims) - set(others)])
    return xr.full_like(sub.transpose(*others), np.nan, dtype=float)


def _missing(arr: np.ndarray, name) -> np.ndarray:
    """Mask of batch entries that are entirely NaN (missing combinations).

    Partially NaN entries are an error: a record is either complete or missing.
    """
    nan = np.isnan(arr.reshape(arr.shape[0], -1))
    full, some = nan.all(1), nan.any(1)
    if (some & ~full).any():
        raise AnalysisError(
            f"Representation {name!r} has NaN in {int((some & ~full).sum())} "
            "combination(s) that are not entirely missing; expected complete "
            "responses or all-NaN (missing) combinations"
        )
    return full


def _paired(a: xr.DataArray, b: xr.DataArray, core: str, fn, name: str) -> xr.DataArray:
    """Apply ``fn(va, vb) -> (B,)`` to aligned, broadcast pairs of feature vectors.

    ``a`` and ``b`` carry the core dimension ``core`` (RDM pairs or Gram entries)
    plus any other dims; shared dims must have identical coordinates. Scalar
    coordinates are dropped (``a`` may be ``inner_step=0`` and ``b`` the last step).
    Entirely-NaN entries (missing combinations) give NaN.
    """
    a = a.drop_vars([c for c in a.coords if a[c].ndim == 0])
    b = b.drop_vars([c for c in b.coords if b[c].ndim == 0])
    try:
        a, b = xr.align(a, b, join="exact", exclude=[core])
    except ValueError as err:
        shared = sorted(set(a.dims) & set(b.dims) - {core})
        raise AnalysisError(
            f"Cannot pair {name}: the shared dims {shared} must have identical "
            f"coordinates in both inputs ({err})"
        ) from None
    if a.sizes[core] != b.sizes[core]:
        raise AnalysisError(
            f"Cannot pair {name}: {core!r} has size {a.sizes[core]} in the first input "
            f"and {b.sizes[core]} in the second (different numbers of stimuli?)"
        )
    a, b = xr.broadcast(a, b, exclude=[core])
    others = [d for d in a.dims if d != core]
    b = b.transpose(*others, core)
    a = a.transpose(*others, core)
    va = a.values.reshape(-1, a.sizes[core])
    vb = b.values.reshape(-1, b.sizes[core])
    miss = np.isnan(va).all(1) | np.isnan(vb).all(1)
    out = np.full(va.shape[0], np.nan)
    if (~miss).any():
        out[~miss] = np.asarray(fn(va[~miss], vb[~miss]), dtype=float)
    tmpl = a.isel({core: 0}, drop=True)
    tmpl = tmpl.drop_vars([c for c in tmpl.coords if core in tmpl[c].dims])
    return tmpl.copy(data=out.reshape(tmpl.shape))
