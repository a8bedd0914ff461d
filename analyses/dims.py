"""The dimensions of labelled representations, handled in one place.

A representation is a DataArray with a ``stimulus`` dim, one ``unit_*`` dim and any
other dims (``checkpoint``, ``task``, ``inner_step``, ...). This module finds those
dims, checks the values (:func:`check_finite`, :func:`require_stimuli`), aligns two
inputs on their stimuli (:func:`align_stimuli`, :func:`align_pairs`), flattens the
other dims into one batch of cells and labels per-cell results again
(:func:`map_cells`, :func:`paired`), and stacks cells into conditions
(:func:`condition_matrix`). Every measure, RDM and matrix function of
:mod:`repscope.analyses` goes through these functions, so each rule (what counts as a
missing cell, which stimuli match, how many stimuli a measure needs) is written once.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import xarray as xr

from .errors import AnalysisError

__all__ = ["STIMULUS", "UNIT_PREFIX", "PAIR", "unit_dim", "other_dims", "require_stimuli",
           "check_finite", "to_cells", "stimulus_labels", "pair_labels", "pair_coords", "stimuli_of_pairs",
           "align_stimuli", "align_pairs", "map_cells", "paired", "condition_matrix"]

STIMULUS = "stimulus"
UNIT_PREFIX = "unit_"
PAIR = "pair"
_SHOWN = 5  # cells named in an error message


def unit_dim(da: xr.DataArray) -> str:
    """The one ``unit_*`` dimension of a layer variable.

    Examples
    --------
    >>> unit_dim(xr.DataArray(np.zeros((2, 3)), dims=("stimulus", "unit_fc")))
    'unit_fc'
    """
    units = [d for d in da.dims if str(d).startswith(UNIT_PREFIX)]
    if len(units) != 1 or STIMULUS not in da.dims:
        raise AnalysisError(
            f"Representation {da.name!r} has dims {da.dims}; expected a "
            f"{STIMULUS!r} dim and exactly one unit dim starting with {UNIT_PREFIX!r}"
        )
    return units[0]


def other_dims(da: xr.DataArray) -> list[str]:
    """Dims other than stimulus and unit, in order.

    Examples
    --------
    >>> other_dims(xr.DataArray(np.zeros((4, 2, 3)), dims=("task", "stimulus", "unit_fc")))
    ['task']
    """
    unit = unit_dim(da)
    return [d for d in da.dims if d not in (STIMULUS, unit)]


def require_stimuli(n: int, minimum: int, what: str) -> None:
    """The one "too few stimuli" check: refuse ``n < minimum``.

    Examples
    --------
    >>> require_stimuli(2, 3, "rsa")
    Traceback (most recent call last):
    ...
    repscope.analyses.errors.AnalysisError: rsa needs at least 3 stimuli; got n=2 (with fewer the value is undefined or always the same)
    """
    if n < minimum:
        raise AnalysisError(f"{what} needs at least {minimum} stimuli; got n={n} "
                            "(with fewer the value is undefined or always the same)")


def _cell_kind(row: np.ndarray) -> str:
    nan, inf = np.isnan(row), np.isinf(row)
    if nan.all():
        return "all NaN"
    return " and ".join(k for k, has in (("partly NaN", nan.any()), ("Inf", inf.any())) if has)


def check_finite(values: np.ndarray, name, cells: Callable[[int], str] = None, *,
                 allow_missing: bool = True) -> np.ndarray:
    """The one non-finite check: the mask of missing cells, or an error naming bad ones.

    Parameters
    ----------
    values : numpy.ndarray
        Shape (cells, ...): one entry per cell (e.g. per checkpoint, task, inner step).
    name
        What the values are (a layer name), for the message.
    cells : callable, optional
        ``cells(k)`` names cell ``k`` (e.g. ``"checkpoint=1000, task=2"``); default
        ``"cell k"``.
    allow_missing : bool
        Whether an entirely NaN cell is a missing combination (the record contract) and
        not an error.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the missing (entirely NaN) cells.

    Raises
    ------
    AnalysisError
        For any Inf, a cell that is partly NaN, or (``allow_missing=False``) an entirely
        NaN cell, naming the first cells and what they hold.

    Examples
    --------
    >>> check_finite(np.array([[1.0, 2.0], [np.nan, np.nan]]), "head")
    array([False,  True])
    >>> check_finite(np.array([[1.0, np.inf]]), "head", lambda k: f"task={k}")
    Traceback (most recent call last):
    ...
    repscope.analyses.errors.AnalysisError: 'head' has non-finite values in 1 cell(s): task=0 (Inf). ...
    """
    flat = np.asarray(values).reshape(len(values), -1)
    with np.errstate(invalid="ignore", over="ignore"):
        suspect = np.flatnonzero(~np.isfinite(flat.sum(1)))  # a cheap filter; exact below
    missing = np.zeros(len(flat), bool)
    bad = {}
    for k in suspect:
        kind = _cell_kind(flat[k])
        if kind == "all NaN" and allow_missing:
            missing[k] = True
        elif kind:
            bad[k] = kind
    if bad:
        label = cells or (lambda k: f"cell {k}")
        shown = "; ".join(f"{label(k)} ({kind})" for k, kind in list(bad.items())[:_SHOWN])
        more = f"; and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        allowed = "finite values or entirely NaN (missing) cells" if allow_missing else "finite values in every cell"
        raise AnalysisError(
            f"{name!r} has non-finite values in {len(bad)} cell(s): {shown}{more}. Expected {allowed}. "
            "NaN or Inf activations come from a diverged training run (non-finite losses: see the "
            "run's metrics.jsonl) or a damaged record; analyse earlier checkpoints or retrain"
        )
    return missing


def _cell_namer(da: xr.DataArray, others: list[str]) -> Callable[[int], str]:
    shape = [da.sizes[d] for d in others]
    coords = [da[d].values for d in others]

    def name(k: int) -> str:
        idx = np.unravel_index(k, shape) if shape else ()
        return ", ".join(f"{d}={c[i]}" for d, c, i in zip(others, coords, idx)) or "the only cell"
    return name


def _label(da: xr.DataArray, others: list[str], values: np.ndarray, core: str, core_coords: dict) -> xr.DataArray:
    """``values`` (cells, width) as a DataArray over ``others`` + ``core`` with ``da``'s labels."""
    sub = da.isel({unit_dim(da): 0, STIMULUS: 0}, drop=True)
    sub = sub.drop_vars([c for c in sub.coords if set(sub[c].dims) - set(others)]).transpose(*others)
    return xr.DataArray(values.reshape(sub.shape + values.shape[1:]), dims=others + [core],
                        coords={**dict(sub.coords), **core_coords}, name=da.name)


def to_cells(da: xr.DataArray, *, allow_missing: bool = True) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The cells of a representation, checked: (cells, stimulus, unit) values, the other
    dims (flattened row-major into cells) and the mask of missing cells.

    Raises :class:`AnalysisError` naming the cells by their coordinates (e.g.
    ``checkpoint=1000, task=2, inner_step=1``) for any non-finite value but entirely
    NaN (missing) cells, and for those too with ``allow_missing=False``
    (:func:`check_finite`).

    Examples
    --------
    >>> x = xr.DataArray(np.ones((2, 3, 1)), dims=("task", "stimulus", "unit_fc"), coords={"task": [5, 6]})
    >>> x[1, 0, 0] = np.inf
    >>> to_cells(x)
    Traceback (most recent call last):
    ...
    repscope.analyses.errors.AnalysisError: None has non-finite values in 1 cell(s): task=6 (Inf). ...
    """
    others = other_dims(da)
    arr = da.transpose(*others, STIMULUS, unit_dim(da)).values
    batch = arr.reshape((-1,) + arr.shape[-2:])
    return batch, others, check_finite(batch, da.name, _cell_namer(da, others), allow_missing=allow_missing)


def map_cells(da: xr.DataArray, fn: Callable[[np.ndarray], np.ndarray], core: str, width: int,
              core_coords: dict | None = None) -> xr.DataArray:
    """Apply ``fn`` to the complete cells of a representation and label the result.

    The other dims are flattened into cells (row-major); ``fn`` gets the complete cells
    as one array (cells, stimulus, unit) and returns (cells, ``width``). Missing
    (entirely NaN) cells give NaN; any other non-finite value is an error naming the
    cells (:func:`check_finite`).

    Returns
    -------
    xarray.DataArray
        Dims: the other dims, then ``core``; the other dims' coordinates kept.

    Examples
    --------
    >>> x = xr.DataArray(np.ones((2, 3, 4)), dims=("task", "stimulus", "unit_fc"),
    ...                  coords={"task": [5, 6]})
    >>> map_cells(x, lambda b: b.sum(2), "total", 3).sel(task=6).values
    array([4., 4., 4.])
    """
    batch, others, miss = to_cells(da)
    out = np.full((len(batch), width), np.nan)
    if (~miss).any():
        out[~miss] = np.asarray(fn(batch[~miss]), dtype=float)
    return _label(da, others, out, core, core_coords or {})


def stimulus_labels(da: xr.DataArray) -> dict[str, np.ndarray]:
    """The coordinates along ``stimulus`` (``stimulus``, ``image_id``, ``label``, ...).

    Examples
    --------
    >>> x = xr.DataArray(np.zeros((2, 1)), dims=("stimulus", "unit_fc"),
    ...                  coords={"stimulus": [4, 9], "label": ("stimulus", [1, 0])})
    >>> {k: v.tolist() for k, v in stimulus_labels(x).items()}
    {'stimulus': [4, 9], 'label': [1, 0]}
    """
    return {str(c): da[c].values for c in da.coords if da[c].dims == (STIMULUS,)}


def stimuli_of_pairs(m: int) -> int:
    """The number of stimuli n of an RDM with ``m = n (n - 1) / 2`` pairs.

    Examples
    --------
    >>> stimuli_of_pairs(6)
    4
    """
    n = int(round((1 + np.sqrt(1 + 8 * m)) / 2))
    if n * (n - 1) // 2 != m:
        raise AnalysisError(f"{m} entries are not the upper triangle of a square RDM (n (n - 1) / 2)")
    return n


def pair_coords(labels: dict[str, np.ndarray], n: int) -> dict[str, tuple]:
    """Per-pair coordinates ``<coord>_i`` / ``<coord>_j`` (row-major upper triangle).

    Examples
    --------
    >>> pair_coords({"stimulus": np.array([7, 8, 9])}, 3)["stimulus_j"][1].tolist()
    [8, 9, 9]
    """
    i, j = np.triu_indices(n, 1)
    out = {}
    for name, vals in labels.items():
        vals = np.asarray(vals)
        out[f"{name}_i"], out[f"{name}_j"] = (PAIR, vals[i]), (PAIR, vals[j])
    return out


def pair_labels(rdm: xr.DataArray) -> dict[str, np.ndarray]:
    """The stimulus coordinates of labelled RDMs, recovered from ``<coord>_i/_j``.

    Examples
    --------
    >>> r = xr.DataArray(np.zeros(3), dims="pair", coords=pair_coords({"label": np.array([3, 1, 2])}, 3))
    >>> pair_labels(r)["label"].tolist()
    [3, 1, 2]
    """
    n = stimuli_of_pairs(rdm.sizes[PAIR])
    first = np.searchsorted(np.triu_indices(n, 1)[0], np.arange(n - 1))
    out = {}
    for c in rdm.coords:
        base = str(c)[:-2]
        if str(c).endswith("_i") and f"{base}_j" in rdm.coords and rdm[c].dims == (PAIR,):
            out[base] = np.concatenate([rdm[c].values[first], rdm[f"{base}_j"].values[-1:]])
    return out


def _order(la: dict, lb: dict, what: str) -> np.ndarray | None:
    """Positions in the second input of the first input's stimuli; None if already aligned.

    The one alignment rule: the ``stimulus`` coordinate identifies a stimulus; both
    inputs must hold the same set (no repeats); every other coordinate both carry
    (``image_id``, ``label``, ``role``) must agree stimulus by stimulus.
    """
    if (STIMULUS in la) != (STIMULUS in lb):
        has = "first" if STIMULUS in la else "second"
        raise AnalysisError(
            f"Cannot align the stimuli of {what}: only the {has} input has a {STIMULUS!r} "
            "coordinate. Label both (assign_coords(stimulus=...)) or neither (then they are "
            "compared by position)")
    if STIMULUS not in la:
        return None
    sa, sb = la[STIMULUS], lb[STIMULUS]
    for s, which in ((sa, "first"), (sb, "second")):
        if len(np.unique(s)) != len(s):
            raise AnalysisError(f"Cannot align the stimuli of {what}: the {which} input repeats "
                                f"{STIMULUS!r} ids; each stimulus must appear once")
    perm = None
    if not np.array_equal(sa, sb):
        only_a, only_b = np.setdiff1d(sa, sb), np.setdiff1d(sb, sa)
        if len(only_a) or len(only_b):
            raise AnalysisError(
                f"Cannot align the stimuli of {what}: {len(only_a)} {STIMULUS!r} id(s) only in the "
                f"first input (e.g. {only_a[:_SHOWN].tolist()}) and {len(only_b)} only in the second "
                f"(e.g. {only_b[:_SHOWN].tolist()}). Compare representations of the same stimuli")
        sorter = np.argsort(sb, kind="stable")
        perm = sorter[np.searchsorted(sb, sa, sorter=sorter)]
    for name in sorted(set(la) & set(lb) - {STIMULUS}):
        va, vb = la[name], lb[name] if perm is None else lb[name][perm]
        if not np.array_equal(va, vb):
            k = int(np.flatnonzero(va != vb)[0])
            raise AnalysisError(
                f"Cannot align the stimuli of {what}: stimulus {sa[k:k + 1].tolist()[0]!r} has {name} "
                f"{va[k:k + 1].tolist()[0]!r} in the first input but {vb[k:k + 1].tolist()[0]!r} in the second. The same stimulus ids label "
                "different images: compare representations of the same probe set")
    return perm


def align_stimuli(a: xr.DataArray, b: xr.DataArray, what: str = "two representations"):
    """Both inputs in the order of their stimulus ids, or an error for different stimuli.

    Labelled inputs are sorted by their ``stimulus`` coordinate (so a value never depends
    on the order the stimuli are stored in, not even minibatch CKA's, which batches
    consecutive stimuli). Unlabelled inputs (no ``stimulus`` coordinate on either) are
    compared by position and must have the same number of stimuli.

    Examples
    --------
    >>> a = xr.DataArray(np.arange(6.0).reshape(3, 2), dims=("stimulus", "unit_fc"),
    ...                  coords={"stimulus": [0, 1, 2]})
    >>> _, b = align_stimuli(a, a.isel(stimulus=[2, 0, 1]))
    >>> b["stimulus"].values.tolist()
    [0, 1, 2]
    """
    la = stimulus_labels(a)
    perm = _order(la, stimulus_labels(b), what)
    if STIMULUS in la:
        sort = np.argsort(la[STIMULUS], kind="stable")
        perm = sort if perm is None else perm[sort]
        if np.any(sort != np.arange(len(sort))):
            a = a.isel({STIMULUS: sort})
        if np.any(perm != np.arange(len(perm))):
            b = b.isel({STIMULUS: perm})
        return a, b
    if a.sizes[STIMULUS] != b.sizes[STIMULUS]:
        raise AnalysisError(f"Cannot pair {what}: {a.sizes[STIMULUS]} stimuli in the first input and "
                            f"{b.sizes[STIMULUS]} in the second")
    return a, b


def align_pairs(a: xr.DataArray, b: xr.DataArray, what: str = "two sets of RDMs"):
    """Labelled RDMs ``b`` reordered to ``a``'s stimuli (see :func:`align_stimuli`).

    Examples
    --------
    >>> d = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0.0]])
    >>> iu = np.triu_indices(3, 1)
    >>> def rdm(order):
    ...     return xr.DataArray(d[np.ix_(order, order)][iu], dims="pair",
    ...                         coords=pair_coords({"stimulus": np.array(order)}, 3))
    >>> _, b = align_pairs(rdm([0, 1, 2]), rdm([2, 0, 1]))
    >>> b.values.tolist()
    [1.0, 2.0, 3.0]
    """
    la, lb = pair_labels(a), pair_labels(b)
    perm = _order(la, lb, what)
    if perm is not None:
        n = len(perm)
        i, j = np.triu_indices(n, 1)
        lo, hi = np.minimum(perm[i], perm[j]), np.maximum(perm[i], perm[j])
        b = b.isel({PAIR: lo * n - lo * (lo + 1) // 2 + hi - lo - 1})
        b = b.drop_vars([c for c in b.coords if b[c].dims == (PAIR,)]).assign_coords(pair_coords(la, n))
    elif a.sizes[PAIR] != b.sizes[PAIR]:
        raise AnalysisError(f"Cannot pair {what}: {a.sizes[PAIR]} pairs in the first input and "
                            f"{b.sizes[PAIR]} in the second (different numbers of stimuli)")
    return a, b


def paired(a: xr.DataArray, b: xr.DataArray, core: str, fn, name: str) -> xr.DataArray:
    """Apply ``fn(va, vb) -> (cells,)`` to aligned, broadcast pairs of feature vectors.

    ``a`` and ``b`` carry the core dimension ``core`` (RDM pairs or Gram entries)
    plus any other dims; shared dims must have identical coordinates. Scalar
    coordinates are dropped (``a`` may be ``inner_step=0`` and ``b`` the last step).
    Entirely-NaN entries (missing combinations) give NaN.

    Examples
    --------
    >>> a = xr.DataArray(np.ones((2, 3)), dims=("task", "f"), coords={"task": [0, 1]})
    >>> paired(a, a.isel(task=0), "f", lambda x, y: (x * y).sum(1), "vectors").values
    array([3., 3.])
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
    va = a.transpose(*others, core).values.reshape(-1, a.sizes[core])
    vb = b.transpose(*others, core).values.reshape(-1, b.sizes[core])
    miss = np.isnan(va).all(1) | np.isnan(vb).all(1)
    out = np.full(va.shape[0], np.nan)
    if (~miss).any():
        out[~miss] = np.asarray(fn(va[~miss], vb[~miss]), dtype=float)
    tmpl = a.isel({core: 0}, drop=True).transpose(*others)
    tmpl = tmpl.drop_vars([c for c in tmpl.coords if core in tmpl[c].dims])
    return tmpl.copy(data=out.reshape(tmpl.shape))


def condition_matrix(f: xr.DataArray, core: str, fn, dim: str = "condition") -> xr.DataArray:
    """``fn(vectors) -> (c, c)`` over every condition: all dims but ``core`` stacked.

    Missing (entirely NaN) conditions are dropped; a partly NaN one, or none left, is
    an error. The result has dims (``dim``, ``dim + "_b"``) with the stacked
    coordinates on both.

    Examples
    --------
    >>> f = xr.DataArray(np.eye(3), dims=("task", "f"), coords={"task": [4, 5, 6]})
    >>> m = condition_matrix(f, "f", lambda v: v @ v.T)
    >>> m.dims, m["task_b"].values.tolist()
    (('condition', 'condition_b'), [4, 5, 6])
    """
    others = [d for d in f.dims if d != core]
    flat = f.drop_vars([c for c in f.coords if core in f[c].dims and c != core])
    flat = (flat.stack({dim: others}) if others else flat.expand_dims(dim)).transpose(dim, core)
    keep = ~np.isnan(flat.values).all(1)
    if not keep.any():
        raise AnalysisError(f"No condition to compare: all {len(keep)} are missing (entirely NaN)")
    flat = flat.isel({dim: keep})
    if np.isnan(flat.values).any():
        raise AnalysisError(f"Conditions with partly missing {core!r} entries cannot be compared")
    coords = {}
    for d in others:
        coords[d] = (dim, flat[d].values)
        coords[f"{d}_b"] = (f"{dim}_b", flat[d].values)
    return xr.DataArray(np.asarray(fn(flat.values)), dims=(dim, f"{dim}_b"), coords=coords)
