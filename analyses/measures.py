"""One registry of representation-similarity measures and one dispatcher.

Every measure turns each representation (stimulus x unit) into a feature vector once
(an RDM for RSA, a centred Gram matrix for CKA) and then combines pairs of vectors:
:func:`compare` pairs two labelled inputs (broadcasting over their other dims),
:func:`compare_all` compares every condition with every other in one matrix operation.

=========================  ==============  ===============================================
name                       direction       what
=========================  ==============  ===============================================
``rsa``                    dissimilarity   1 - Spearman between RDMs (rsatoolbox); option
                                           ``rdm_method`` in {"correlation", "euclidean",
                                           "cosine"}, default "correlation"
``cka_linear``             similarity      linear CKA, biased HSIC
``cka_rbf``                similarity      RBF CKA, biased HSIC; options ``bandwidth``
                                           ("paper" or "kornblith"), ``threshold``
``cka_linear_debiased``    similarity      linear CKA, unbiased HSIC (n >= 4)
``cka_rbf_debiased``       similarity      RBF CKA, unbiased HSIC (n >= 4)
``cka_linear_minibatch``   similarity      minibatch linear CKA; option ``batch_size``
``svcca``                  similarity      mean canonical correlation after an SVD keeping
                                           ``variance`` (default 0.99) of each
                                           representation's variance, at most (n - 1) // 2
                                           dims; or exactly ``dims``
``pwcca``                  similarity      projection-weighted CCA (Morcos et al., 2018);
                                           same reduction options as ``svcca``
``procrustes``             dissimilarity   angular orthogonal Procrustes distance in
                                           [0, pi/2] (Williams et al., 2021)
=========================  ==============  ===============================================

CKA, CCA and Procrustes measures also take ``device`` (e.g. "cuda") and ``dtype``. Why
CCA needs the reduction on few stimuli and what ``variance=None`` does:
:mod:`repscope.analyses.cca`.

Each :class:`Measure` holds its behaviour: the function that turns a representation
into feature vectors, the one that compares paired vectors, the one that compares every
vector with every other, and the fewest stimuli it needs. Labelled inputs are aligned
on their ``stimulus`` coordinate first (:func:`repscope.analyses.dims.align_stimuli`):
the order of the stimuli never changes a value; different stimuli are an error.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np
import torch
import xarray as xr

from .cka import MIN_STIMULI as CKA_MIN_STIMULI
from .cca import MIN_STIMULI as CCA_MIN_STIMULI
from .cca import cca_features, feature_width, pairs_matrix, pwcca_pairs, svcca_pairs
from .procrustes import MIN_STIMULI as PROCRUSTES_MIN_STIMULI
from .procrustes import procrustes_features, procrustes_pairs
from .cka import cka_features, feature_cosine
from .dims import (PAIR, STIMULUS, align_stimuli, condition_matrix, map_cells, other_dims,
                   paired, require_stimuli, unit_dim)
from .errors import AnalysisError
from .lazy import features_by_chunk, is_lazy
from .rdms import MIN_STIMULI as RSA_MIN_STIMULI
from .rdms import rdms, spearman_dissimilarity, spearman_matrix

__all__ = ["MEASURES", "Measure", "get_measure", "features", "compare", "compare_all"]

GRAM = "gram_entry"
BASIS = "basis_entry"
ROOT_GRAM = "root_gram_entry"
_CHUNK_BYTES = 512 * 2**20  # float64 bytes of representation read at once


def _rsa_features(da: xr.DataArray, rdm_method: str) -> xr.DataArray:
    return rdms(da, rdm_method)


def _rsa_paired(va, vb, **_) -> np.ndarray:
    return spearman_dissimilarity(va, vb)


def _rsa_matrix(v, **_) -> np.ndarray:
    return spearman_matrix(v)


def _cka_features(da: xr.DataArray, *, kernel: str, debiased: bool, device, dtype,
                  bandwidth: str = "paper", threshold: float = 1.0, batch_size: int | None = None) -> xr.DataArray:
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    n = da.sizes[STIMULUS]
    width = n * n if batch_size is None else (n // batch_size) * batch_size ** 2

    def fn(batch):
        return cka_features(batch, kernel, debiased=debiased, batch_size=batch_size, bandwidth=bandwidth,
                            threshold=threshold, device=device, dtype=dtype).cpu().numpy()
    return map_cells(da, fn, GRAM, width)


def _cka_paired(va, vb, *, device=None, **_) -> np.ndarray:
    return feature_cosine(torch.as_tensor(va, device=device), vb).cpu().numpy()


def _cka_matrix(v, *, device=None, **_) -> np.ndarray:
    return feature_cosine(torch.as_tensor(v, device=device), pairwise=False).cpu().numpy()


def _dtype(dtype):
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def _cca_features(da: xr.DataArray, *, variance, dims, device, dtype, what: str) -> xr.DataArray:
    def fn(batch):
        return cca_features(batch, variance=variance, dims=dims, device=device, dtype=_dtype(dtype),
                            what=what).cpu().numpy()
    return map_cells(da, fn, BASIS, feature_width(da.sizes[STIMULUS]))


def _torch_paired(pair_fn, va, vb, *, device=None, **_) -> np.ndarray:
    return pair_fn(torch.as_tensor(va, device=device), torch.as_tensor(vb, device=device)).cpu().numpy()


def _torch_matrix(pair_fn, v, *, device=None, **_) -> np.ndarray:
    return pairs_matrix(pair_fn, torch.as_tensor(v, device=device)).cpu().numpy()


def _procrustes_features(da: xr.DataArray, *, device, dtype) -> xr.DataArray:
    def fn(batch):
        return procrustes_features(batch, device=device, dtype=_dtype(dtype)).cpu().numpy()
    return map_cells(da, fn, ROOT_GRAM, da.sizes[STIMULUS] ** 2)


@dataclass(frozen=True)
class Measure:
    """A registered measure: its direction, options and behaviour.

    Attributes
    ----------
    name : str
    direction : {"dissimilarity", "similarity"}
    description : str
    family : {"rsa", "cka", "cca", "procrustes"}
    core : str
        The dim of its feature vectors: ``pair`` (RDM entries), ``gram_entry``,
        ``basis_entry`` (CCA) or ``root_gram_entry`` (Procrustes).
    min_stimuli : int
        Fewest stimuli for a defined value.
    features : callable
        ``features(da, **options) -> DataArray`` over the other dims and ``core``.
    pair : callable
        ``pair(va, vb, **options) -> (cells,)``: paired feature vectors compared.
    matrix : callable
        ``matrix(v, **options) -> (c, c)``: every feature vector with every other.
    defaults : dict
        Options and their default values; no other options are accepted.
    """

    name: str
    direction: str
    description: str
    family: str
    core: str
    min_stimuli: int
    features: Callable = field(repr=False)
    pair: Callable = field(repr=False)
    matrix: Callable = field(repr=False)
    defaults: dict = field(default_factory=dict)


def _rsa(name, description) -> Measure:
    return Measure(name, "dissimilarity", description, "rsa", PAIR, RSA_MIN_STIMULI, _rsa_features,
                   _rsa_paired, _rsa_matrix, {"rdm_method": "correlation"})


def _cka(name, description, kernel, debiased, **defaults) -> Measure:
    return Measure(name, "similarity", description, "cka", GRAM, CKA_MIN_STIMULI[debiased],
                   partial(_cka_features, kernel=kernel, debiased=debiased), _cka_paired, _cka_matrix,
                   {**defaults, "device": None, "dtype": "float64"})


def _cca(name, description, pair_fn) -> Measure:
    return Measure(name, "similarity", description, "cca", BASIS, CCA_MIN_STIMULI,
                   partial(_cca_features, what=name), partial(_torch_paired, pair_fn),
                   partial(_torch_matrix, pair_fn),
                   {"variance": 0.99, "dims": None, "device": None, "dtype": "float64"})


_RBF = {"bandwidth": "paper", "threshold": 1.0}
MEASURES: dict[str, Measure] = {
    m.name: m for m in [
        _rsa("rsa", "1 - Spearman between first-order RDMs (rsatoolbox)"),
        _cka("cka_linear", "linear CKA (biased HSIC)", "linear", False),
        _cka("cka_rbf", "RBF CKA (biased HSIC)", "rbf", False, **_RBF),
        _cka("cka_linear_debiased", "linear CKA (unbiased HSIC)", "linear", True),
        _cka("cka_rbf_debiased", "RBF CKA (unbiased HSIC)", "rbf", True, **_RBF),
        _cka("cka_linear_minibatch", "minibatch linear CKA (unbiased HSIC)", "linear", True, batch_size=10),
        _cca("svcca", "SVCCA: mean canonical correlation after an SVD step", svcca_pairs),
        _cca("pwcca", "PWCCA: projection-weighted canonical correlations (Morcos et al., 2018)", pwcca_pairs),
        Measure("procrustes", "dissimilarity", "angular orthogonal Procrustes distance (radians)", "procrustes",
                ROOT_GRAM, PROCRUSTES_MIN_STIMULI, _procrustes_features, partial(_torch_paired, procrustes_pairs),
                partial(_torch_matrix, procrustes_pairs), {"device": None, "dtype": "float64"}),
    ]
}


def get_measure(name: str) -> Measure:
    """Look a measure up by name.

    Examples
    --------
    >>> get_measure("rsa").direction
    'dissimilarity'
    >>> get_measure("cka")
    Traceback (most recent call last):
    ...
    repscope.analyses.errors.AnalysisError: Unknown measure 'cka'. Expected one of [...]; close matches: [...]
    """
    if name not in MEASURES:
        close = difflib.get_close_matches(str(name), MEASURES, n=3, cutoff=0.4)
        raise AnalysisError(
            f"Unknown measure {name!r}. Expected one of {sorted(MEASURES)}"
            + (f"; close matches: {close}" if close else "")
        )
    return MEASURES[name]


def _resolve(name: str, options: dict) -> tuple[Measure, dict]:
    m = get_measure(name)
    bad = sorted(set(options) - set(m.defaults))
    if bad:
        raise AnalysisError(
            f"Measure {name!r} got unknown option(s) {bad}. Allowed: {sorted(m.defaults)}"
        )
    if "dtype" in options:
        _check_dtype(name, options["dtype"])
    return m, {**m.defaults, **options}


_FLOATS = ("float32", "float64")


def _check_dtype(name: str, dtype) -> None:
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not (isinstance(resolved, torch.dtype) and resolved.is_floating_point):
        raise AnalysisError(f"Measure {name!r}: dtype {dtype!r} is not a floating-point dtype. "
                            f"Expected one of {list(_FLOATS)} (or a floating torch.dtype)")


def _check_input(x, which: str, fn: str = "compare()") -> None:
    """The inputs of the public functions: labelled layer variables, nothing else."""
    if isinstance(x, xr.DataArray):
        return
    if isinstance(x, xr.Dataset):
        layers = sorted(map(str, x.data_vars))
        raise AnalysisError(
            f"{fn} takes one layer variable (xarray.DataArray) per input, but {which} is an "
            f"xarray.Dataset with variables {layers[:8]}: pass one of them, e.g. "
            f"ds[{(layers or ['layer'])[0]!r}]")
    raise AnalysisError(
        f"{fn} takes labelled layer variables (xarray.DataArray), but {which} is a "
        f"{type(x).__name__}. Label an array first, e.g. xr.DataArray(x, dims=('stimulus', 'unit_fc')) "
        "for a (stimulus, unit) array, or use repscope.analyses.cka / cka_matrix on plain arrays")


def _refuse_missing(f: xr.DataArray, core: str, name) -> None:
    """compare()'s default: no entirely NaN (missing or diverged) cell passes silently."""
    others = [d for d in f.dims if d != core]
    vals = f.transpose(*others, core).values.reshape(-1, f.sizes[core])
    miss = np.flatnonzero(np.isnan(vals).all(1))
    if not len(miss):
        return
    shape = [f.sizes[d] for d in others]

    def cell(k):
        idx = np.unravel_index(k, shape)
        return ", ".join(f"{d}={f[d].values[i]}" for d, i in zip(others, idx)) or "the only cell"
    shown = "; ".join(cell(k) for k in miss[:5]) + (f"; and {len(miss) - 5} more" if len(miss) > 5 else "")
    raise AnalysisError(
        f"{name!r} has non-finite values in {len(miss)} cell(s): {shown} (all NaN). NaN activations "
        "come from a diverged training run (non-finite losses: see the run's metrics.jsonl) or a "
        "damaged record; analyse earlier checkpoints or retrain. If those cells were never recorded "
        "(a record with missing combinations), pass allow_missing=True to get NaN there")


def features(da: xr.DataArray, measure: str = "rsa", **options) -> xr.DataArray:
    """Per-representation feature vectors of a measure (RDMs or centred Grams).

    Returns
    -------
    xarray.DataArray
        The input's other dims plus ``pair`` (RSA) or ``gram_entry`` (CKA).

    Examples
    --------
    >>> x = xr.DataArray(np.random.default_rng(0).normal(size=(2, 5, 3)),
    ...                  dims=("task", "stimulus", "unit_fc"))
    >>> features(x, "cka_linear").dims
    ('task', 'gram_entry')
    """
    _check_input(da, "its input", "features()")
    m, opts = _resolve(measure, options)
    others = other_dims(da)
    require_stimuli(da.sizes[STIMULUS], m.min_stimuli, measure)
    if is_lazy(da):  # dask-backed (larger than memory): reduced chunk by chunk
        return features_by_chunk(features, da, (STIMULUS, unit_dim(da)), measure=measure, **options)
    if others and da.size * 8 > _CHUNK_BYTES and da.sizes[others[0]] > 1:
        # Large records (the paper's: 60 checkpoints x 50 tasks x 4 steps of 12544
        # units) are read and reduced a slice at a time; the features are small.
        step = max(1, int(da.sizes[others[0]] * _CHUNK_BYTES // (da.size * 8)))
        parts = [features(da.isel({others[0]: slice(i, i + step)}), measure, **options)
                 for i in range(0, da.sizes[others[0]], step)]
        return xr.concat(parts, others[0], combine_attrs="override")
    try:
        res = m.features(da, **opts)
    except AnalysisError as err:
        raise AnalysisError(f"{measure} on {da.name!r}: {err}") from None
    res.attrs = {**res.attrs, "measure": measure}
    return res


def compare(a: xr.DataArray, b: xr.DataArray, measure: str = "rsa", *, allow_missing: bool = False,
            **options) -> xr.DataArray:
    """Compare paired labelled representations with a registered measure.

    Parameters
    ----------
    a, b : xarray.DataArray
        Layer variables (``stimulus``, one ``unit_*`` dim, any other dims). They are
        aligned on their ``stimulus`` coordinate (``b`` is reordered to ``a``); both
        must hold the same stimuli, and ``image_id`` / ``label`` coordinates carried by
        both must agree (without a ``stimulus`` coordinate on either, by position).
        Shared other dims must have identical coordinates; the rest broadcast. The
        unit dims may differ (different layers). Scalar coordinates are dropped.
    measure : str
        A name in :data:`MEASURES`.
    allow_missing : bool
        Whether an entirely NaN cell is a combination never recorded, giving NaN.
        By default it is an error naming the cell, as on the command line: NaN
        activations usually come from a diverged run.
    **options
        The measure's options (see the module docstring).

    Returns
    -------
    xarray.DataArray
        Over the union of the other dims; attrs ``measure`` and ``direction``.

    Raises
    ------
    AnalysisError
        For inputs that are not DataArrays, unknown measures or options, a non-float
        ``dtype``, different stimuli, too few stimuli, and non-finite values (naming the
        layer and the cells).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = xr.DataArray(rng.normal(size=(3, 6, 4)), dims=("task", "stimulus", "unit_a"))
    >>> y = xr.DataArray(rng.normal(size=(6, 5)), dims=("stimulus", "unit_b"))
    >>> compare(x, x, "cka_linear").values
    array([1., 1., 1.])
    >>> compare(x, y, "rsa").dims
    ('task',)
    """
    _check_input(a, "the first input")
    _check_input(b, "the second input")
    m, opts = _resolve(measure, options)
    a, b = align_stimuli(a, b)
    fa, fb = features(a, measure, **options), features(b, measure, **options)
    if not allow_missing:
        _refuse_missing(fa, m.core, a.name)
        _refuse_missing(fb, m.core, b.name)
    out = paired(fa, fb, m.core, partial(m.pair, **opts), f"{measure} features")
    out.name = measure
    out.attrs = {"measure": measure, "direction": m.direction,
                 "options": repr({k: v for k, v in opts.items() if k != "device"})}
    return out


def compare_all(da: xr.DataArray, measure: str = "rsa", dim: str = "condition", **options) -> xr.DataArray:
    """Compare every condition with every other (e.g. an RDM of RDMs).

    All dims except stimulus and unit are stacked into ``dim``; all-NaN (missing)
    conditions are dropped. The result has dims (``dim``, ``dim + "_b"``) with the
    stacked coordinates on both. For ``rsa`` this is ``1 - Spearman`` from one
    :func:`rsatoolbox.rdm.compare` call; for CKA one matrix product.

    Examples
    --------
    >>> x = xr.DataArray(np.random.default_rng(0).normal(size=(3, 6, 4)),
    ...                  dims=("task", "stimulus", "unit_a"), coords={"task": [0, 1, 2]})
    >>> compare_all(x, "cka_linear").shape
    (3, 3)
    """
    _check_input(da, "its input", "compare_all()")
    m, opts = _resolve(measure, options)
    out = condition_matrix(features(da, measure, **options), m.core, partial(m.matrix, **opts), dim)
    out.name = measure
    out.attrs.update({"measure": measure, "direction": m.direction})
    return out
