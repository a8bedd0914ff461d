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
=========================  ==============  ===============================================

CKA measures also take ``device`` (e.g. "cuda") and ``dtype``.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr

from repscope.analyses._labels import STIMULUS, _missing, _other_dims, _paired, _to_batch, _unit_dim
from repscope.analyses.cka import cka_features
from repscope.analyses.errors import AnalysisError
from repscope.analyses.lazy import features_by_chunk, is_lazy
from repscope.analyses.rdms import PAIR, rdm_matrix, rdms, spearman_dissimilarity

__all__ = ["MEASURES", "Measure", "get_measure", "features", "compare", "compare_all"]

GRAM = "gram_entry"
_CHUNK_BYTES = 512 * 2**20  # float64 bytes of representation read at once


@dataclass(frozen=True)
class Measure:
    """A registered measure: its direction and defaults.

    Attributes
    ----------
    name : str
    direction : {"dissimilarity", "similarity"}
    description : str
    defaults : dict
        Options and their default values; no other options are accepted.
    """

    name: str
    direction: str
    description: str
    defaults: dict = field(default_factory=dict)

    @property
    def family(self) -> str:
        """``"rsa"`` or ``"cka"``."""
        return "rsa" if self.name == "rsa" else "cka"


_CKA_COMMON = {"device": None, "dtype": "float64"}
MEASURES: dict[str, Measure] = {
    m.name: m for m in [
        Measure("rsa", "dissimilarity", "1 - Spearman between first-order RDMs (rsatoolbox)",
                {"rdm_method": "correlation"}),
        Measure("cka_linear", "similarity", "linear CKA (biased HSIC)", dict(_CKA_COMMON)),
        Measure("cka_rbf", "similarity", "RBF CKA (biased HSIC)",
                {"bandwidth": "paper", "threshold": 1.0, **_CKA_COMMON}),
        Measure("cka_linear_debiased", "similarity", "linear CKA (unbiased HSIC)", dict(_CKA_COMMON)),
        Measure("cka_rbf_debiased", "similarity", "RBF CKA (unbiased HSIC)",
                {"bandwidth": "paper", "threshold": 1.0, **_CKA_COMMON}),
        Measure("cka_linear_minibatch", "similarity", "minibatch linear CKA (unbiased HSIC)",
                {"batch_size": 10, **_CKA_COMMON}),
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
    return m, {**m.defaults, **options}


def _cka_kwargs(m: Measure, opts: dict) -> dict:
    dtype = getattr(torch, opts["dtype"]) if isinstance(opts["dtype"], str) else opts["dtype"]
    kw = {"kernel": "rbf" if "rbf" in m.name else "linear", "device": opts["device"], "dtype": dtype,
          "debiased": m.name.endswith(("debiased", "minibatch"))}
    if "bandwidth" in opts:
        kw.update(bandwidth=opts["bandwidth"], threshold=opts["threshold"])
    if "batch_size" in opts:
        kw["batch_size"] = opts["batch_size"]
    return kw


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
    m, opts = _resolve(measure, options)
    if is_lazy(da):  # dask-backed (larger than memory): reduced chunk by chunk
        return features_by_chunk(features, da, (STIMULUS, _unit_dim(da)), measure=measure, **options)
    others = _other_dims(da)
    if others and da.size * 8 > _CHUNK_BYTES and da.sizes[others[0]] > 1:
        # Large records (the paper's: 60 checkpoints x 50 tasks x 4 steps of 12544
        # units) are read and reduced a slice at a time; the features are small.
        step = max(1, int(da.sizes[others[0]] * _CHUNK_BYTES // (da.size * 8)))
        parts = [features(da.isel({others[0]: slice(i, i + step)}), measure, **options)
                 for i in range(0, da.sizes[others[0]], step)]
        return xr.concat(parts, others[0], combine_attrs="override")
    if m.family == "rsa":
        return rdms(da, opts["rdm_method"])
    batch, others = _to_batch(da)
    miss = _missing(batch, da.name)
    n = batch.shape[1]
    width = n * n if "batch_size" not in opts else (n // opts["batch_size"]) * opts["batch_size"] ** 2
    out = np.full((batch.shape[0], width), np.nan)
    if (~miss).any():
        try:
            f = cka_features(batch[~miss], **_cka_kwargs(m, opts))
        except AnalysisError as err:
            raise AnalysisError(f"{measure} on {da.name!r}: {err}") from None
        out[~miss] = f.cpu().numpy()
    sub = da.isel({_unit_dim(da): 0, STIMULUS: 0}, drop=True)
    sub = sub.drop_vars([c for c in sub.coords if set(sub[c].dims) - set(others)])
    res = xr.DataArray(out.reshape(sub.shape + (width,)), dims=others + [GRAM],
                       coords=dict(sub.coords), name=da.name)
    res.attrs = {"measure": measure}
    return res


def _cosine(va: np.ndarray, vb: np.ndarray, device=None) -> np.ndarray:
    a = torch.as_tensor(va, device=device)
    b = torch.as_tensor(vb, device=device)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    if (na == 0).any() or (nb == 0).any():
        raise AnalysisError(
            "CKA is undefined for a constant representation (zero centred Gram matrix)"
        )
    return ((a * b).sum(1) / (na * nb)).cpu().numpy()


def compare(a: xr.DataArray, b: xr.DataArray, measure: str = "rsa", **options) -> xr.DataArray:
    """Compare paired labelled representations with a registered measure.

    Parameters
    ----------
    a, b : xarray.DataArray
        Layer variables (``stimulus``, one ``unit_*`` dim, any other dims). Shared
        dims must have identical coordinates; the rest broadcast. The unit dims may
        differ (different layers). Scalar coordinates are dropped.
    measure : str
        A name in :data:`MEASURES`.
    **options
        The measure's options (see the module docstring).

    Returns
    -------
    xarray.DataArray
        Over the union of the other dims; attrs ``measure`` and ``direction``.

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
    m, opts = _resolve(measure, options)
    fa, fb = features(a, measure, **options), features(b, measure, **options)
    if m.family == "rsa":
        out = _paired(fa, fb, PAIR, spearman_dissimilarity, "RDMs")
    else:
        out = _paired(fa, fb, GRAM, lambda x, y: _cosine(x, y, opts["device"]), "centred Grams")
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
    m, opts = _resolve(measure, options)
    f = features(da, measure, **options)
    if m.family == "rsa":
        out = rdm_matrix(f, dim)
    else:
        others = [d for d in f.dims if d != GRAM]
        flat = f.stack({dim: others}) if others else f.expand_dims(dim)
        flat = flat.transpose(dim, GRAM)
        flat = flat.isel({dim: ~np.isnan(flat.values).all(1)})
        t = torch.as_tensor(flat.values, device=opts["device"])
        nrm = t.norm(dim=1)
        if (nrm == 0).any():
            raise AnalysisError("CKA is undefined for a constant representation")
        mat = ((t @ t.T) / (nrm[:, None] * nrm[None, :])).cpu().numpy()
        coords = {}
        for d in others:
            coords[d] = (dim, flat[d].values)
            coords[f"{d}_b"] = (f"{dim}_b", flat[d].values)
        out = xr.DataArray(mat, dims=(dim, f"{dim}_b"), coords=coords)
    out.name = measure
    out.attrs.update({"measure": measure, "direction": m.direction})
    return out
