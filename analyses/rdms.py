"""Representational dissimilarity matrices (RSA), computed with rsatoolbox.

First-order RDMs come from :func:`rsatoolbox.rdm.calc_rdm`, called once over the list
of all :class:`rsatoolbox.data.Dataset` objects of a labelled representation (one per
combination of its non-stimulus dims). Second-order dissimilarity is
``1 - Spearman`` from :func:`rsatoolbox.rdm.compare` (``method="spearman"``).

RDM methods (``method=``):

``"euclidean"``
    rsatoolbox's Euclidean RDM: the **squared** Euclidean distance divided by the
    number of units (channels). It is a monotone transform of the plain Euclidean
    distance, so Spearman comparisons are unaffected; Pearson or cosine comparisons
    of RDMs are not.
``"correlation"``
    ``1 - Pearson correlation`` between stimulus patterns (the paper's 2021 code).
``"cosine"``
    ``1 - cosine similarity``. rsatoolbox 0.3 has no cosine RDM, so the patterns are
    scaled to unit norm and rsatoolbox's Euclidean RDM is multiplied by
    ``n_units / 2`` (``|a - b|**2 = 2 - 2 cos`` for unit vectors).

Labelled RDMs are DataArrays with the input's other dims plus ``pair`` (the upper
triangle, row-major as in :func:`scipy.spatial.distance.squareform`), with per-pair
coordinates ``<coord>_i`` / ``<coord>_j`` for every stimulus coordinate.

An RDM needs at least 2 stimuli, a second-order comparison (``1 - Spearman``) at
least 3 (with 2 stimuli an RDM has one entry and Spearman is undefined). Labelled RDMs
are aligned on their stimuli before they are compared (:func:`repscope.analyses.dims.align_pairs`).
"""
from __future__ import annotations

import numpy as np
import xarray as xr
from rsatoolbox.data import Dataset
from rsatoolbox.rdm import RDMs, calc_rdm
from rsatoolbox.rdm import compare as _rsa_compare

from .dims import (PAIR, STIMULUS, align_pairs, condition_matrix, map_cells, pair_coords,
                   pair_labels, paired, require_stimuli, stimuli_of_pairs, stimulus_labels,
                   unit_dim)
from .errors import AnalysisError

__all__ = ["RDM_METHODS", "rdms", "to_rsatoolbox", "from_rsatoolbox", "rdm_dissimilarity",
           "rdm_matrix", "spearman_dissimilarity", "spearman_matrix"]

RDM_METHODS = ("euclidean", "correlation", "cosine")
MIN_STIMULI = 3  # a second-order comparison; a first-order RDM needs 2
_CHUNK = 256


def _check_method(method: str) -> None:
    if method not in RDM_METHODS:
        raise AnalysisError(f"Unknown RDM method {method!r}. Expected one of {sorted(RDM_METHODS)}")


def _rdm_vectors(batch: np.ndarray, method: str, descriptors=None, obs=None) -> RDMs:
    """One rsatoolbox ``calc_rdm`` over a batch (B, n, d) of complete patterns."""
    _check_method(method)
    batch = np.asarray(batch, dtype=np.float64)
    if method == "cosine":
        norms = np.linalg.norm(batch, axis=2, keepdims=True)
        if (norms == 0).any():
            raise AnalysisError("Cosine RDM is undefined for an all-zero stimulus pattern")
        batch = batch / norms
    if method == "correlation":
        sd = batch.std(axis=2)
        if (sd == 0).any():
            raise AnalysisError(
                "Correlation RDM is undefined: a stimulus pattern is constant across "
                f"units (in {int((sd == 0).any(1).sum())} representation(s))"
            )
    descriptors = descriptors or [{} for _ in range(len(batch))]
    obs = obs if obs is not None else {STIMULUS: np.arange(batch.shape[1])}
    datasets = [Dataset(x, descriptors=dsc, obs_descriptors=obs) for x, dsc in zip(batch, descriptors)]
    out = calc_rdm(datasets, method="correlation" if method == "correlation" else "euclidean")
    if method == "cosine":
        out.dissimilarities = out.dissimilarities * batch.shape[2] / 2
        out.dissimilarity_measure = "cosine"
    return out


def rdms(da: xr.DataArray, method: str = "correlation") -> xr.DataArray:
    """First-order RDMs of a labelled representation, computed by rsatoolbox.

    Parameters
    ----------
    da : xarray.DataArray
        A layer variable: dims ``stimulus``, one ``unit_*`` dim, and any others
        (``checkpoint``, ``task``, ``inner_step``, ...). All-NaN combinations are
        missing and give NaN RDMs.
    method : {"euclidean", "correlation", "cosine"}
        See the module docstring (rsatoolbox's euclidean is squared / n units).

    Returns
    -------
    xarray.DataArray
        Dims: the other dims, then ``pair``.

    Examples
    --------
    >>> x = xr.DataArray([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]], dims=("stimulus", "unit_fc"),
    ...                  coords={"stimulus": [0, 1, 2]})
    >>> rdms(x, "euclidean").values  # squared distances / 2 units
    array([12.5,  0.5,  9. ])
    """
    _check_method(method)
    unit_dim(da)
    n = da.sizes[STIMULUS]
    require_stimuli(n, 2, "An RDM")
    res = map_cells(da, lambda batch: _rdm_vectors(batch, method).get_vectors(), PAIR, n * (n - 1) // 2,
                    pair_coords(stimulus_labels(da), n))
    res.attrs = {"rdm_method": method, "engine": "rsatoolbox.rdm.calc_rdm",
                 "note": "euclidean = squared distance / n units (rsatoolbox)"}
    return res


def to_rsatoolbox(rdm: xr.DataArray) -> RDMs:
    """Export labelled RDMs to an :class:`rsatoolbox.rdm.RDMs` object.

    Coordinates of the other dims become ``rdm_descriptors``; the per-pair
    ``<coord>_i/_j`` coordinates become ``pattern_descriptors``, so rsatoolbox's
    inference and plotting apply.

    Examples
    --------
    >>> x = xr.DataArray(np.random.default_rng(0).normal(size=(2, 4, 3)),
    ...                  dims=("task", "stimulus", "unit_fc"),
    ...                  coords={"task": [7, 8], "stimulus": np.arange(4)})
    >>> r = to_rsatoolbox(rdms(x))
    >>> r.n_rdm, r.n_cond, list(r.rdm_descriptors["task"])
    (2, 4, [7, 8])
    """
    if PAIR not in rdm.dims:
        raise AnalysisError(f"Expected labelled RDMs with a {PAIR!r} dim; got dims {rdm.dims}")
    others = [d for d in rdm.dims if d != PAIR]
    vals = rdm.transpose(*others, PAIR).values.reshape(-1, rdm.sizes[PAIR])
    grid = np.meshgrid(*[rdm[d].values for d in others], indexing="ij") if others else []
    rdm_desc = {d: g.ravel().tolist() for d, g in zip(others, grid)}
    pattern = pair_labels(rdm)
    return RDMs(vals, dissimilarity_measure=rdm.attrs.get("rdm_method"),
                rdm_descriptors=rdm_desc or None, pattern_descriptors=pattern or None)


def from_rsatoolbox(r: RDMs, dims: list[str] | None = None) -> xr.DataArray:
    """Labelled RDMs from an :class:`rsatoolbox.rdm.RDMs` object.

    Parameters
    ----------
    r : rsatoolbox.rdm.RDMs
    dims : list of str, optional
        ``rdm_descriptors`` that form a full grid and become dims (default: all
        except rsatoolbox's ``index``). Without dims the RDMs lie along ``rdm``.

    Examples
    --------
    >>> r = RDMs(np.arange(6.0).reshape(2, 3), rdm_descriptors={"task": [0, 1]})
    >>> from_rsatoolbox(r).dims
    ('task', 'pair')
    """
    dims = [d for d in r.rdm_descriptors if d != "index"] if dims is None else list(dims)
    labels = {k: v for k, v in r.pattern_descriptors.items() if k != "index"}
    flat = xr.DataArray(r.get_vectors(), dims=("rdm", PAIR), coords=pair_coords(labels, r.n_cond))
    if not dims:
        return flat
    flat = flat.assign_coords({d: ("rdm", np.asarray(r.rdm_descriptors[d])) for d in dims})
    try:
        if len(dims) == 1:
            if len(np.unique(flat[dims[0]].values)) != flat.sizes["rdm"]:
                raise ValueError(f"{dims[0]!r} has repeated values")
            out = flat.swap_dims(rdm=dims[0])
        else:
            out = flat.set_index(rdm=dims).unstack("rdm")
    except ValueError as err:
        raise AnalysisError(f"rdm_descriptors {dims} do not form a grid of unique values ({err})") from None
    out = out.transpose(*dims, PAIR)
    out.attrs["rdm_method"] = r.dissimilarity_measure
    return out


def spearman_dissimilarity(va: np.ndarray, vb: np.ndarray) -> np.ndarray:
    """``1 - Spearman`` between paired RDM vectors, via :func:`rsatoolbox.rdm.compare`.

    rsatoolbox compares every RDM of one set with every RDM of the other; paired
    comparisons are done in chunks of 256 and the diagonal kept. The RDMs must come from
    at least 3 stimuli.

    Examples
    --------
    >>> spearman_dissimilarity(np.array([[1.0, 2, 3]]), np.array([[3.0, 2, 1]]))
    array([2.])
    """
    va, vb = np.atleast_2d(va), np.atleast_2d(vb)
    require_stimuli(stimuli_of_pairs(va.shape[1]), MIN_STIMULI, "1 - Spearman between RDMs")
    out = np.empty(len(va))
    for s in range(0, len(va), _CHUNK):
        sim = _rsa_compare(va[s:s + _CHUNK], vb[s:s + _CHUNK], method="spearman")
        out[s:s + _CHUNK] = 1 - np.diagonal(sim)
    return out


def rdm_dissimilarity(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    """Second-order dissimilarity ``1 - Spearman`` between paired labelled RDMs.

    The RDMs are aligned on their stimuli (``<coord>_i/_j``; see
    :func:`repscope.analyses.dims.align_pairs`). Shared dims must have identical
    coordinates; other dims broadcast, so e.g. the inner_step-0 RDMs (checkpoint)
    against the last-step RDMs (checkpoint, task) gives (checkpoint, task).

    Examples
    --------
    >>> x = xr.DataArray(np.random.default_rng(0).normal(size=(3, 5, 4)),
    ...                  dims=("task", "stimulus", "unit_fc"))
    >>> r = rdms(x)
    >>> rdm_dissimilarity(r, r).values
    array([0., 0., 0.])
    """
    a, b = align_pairs(a, b)
    return paired(a, b, PAIR, spearman_dissimilarity, "RDMs")


def spearman_matrix(vectors: np.ndarray) -> np.ndarray:
    """``1 - Spearman`` between every pair of RDM vectors (rows), one rsatoolbox call.

    Examples
    --------
    >>> spearman_matrix(np.array([[1.0, 2, 3], [3.0, 2, 1]])).round(12)
    array([[0., 2.],
           [2., 0.]])
    """
    require_stimuli(stimuli_of_pairs(vectors.shape[1]), MIN_STIMULI, "1 - Spearman between RDMs")
    return 1 - _rsa_compare(vectors, vectors, method="spearman")


def rdm_matrix(rdm: xr.DataArray, dim: str = "condition") -> xr.DataArray:
    """RDM of RDMs: ``1 - Spearman`` between every pair of RDMs, one rsatoolbox call.

    Parameters
    ----------
    rdm : xarray.DataArray
        Labelled RDMs; all dims except ``pair`` are stacked into ``dim``.
    dim : str
        Name of the condition dim; the result has dims (``dim``, ``dim + "_b"``) and
        both carry the stacked coordinates as non-dim coordinates.

    Examples
    --------
    >>> x = xr.DataArray(np.random.default_rng(0).normal(size=(3, 5, 4)),
    ...                  dims=("task", "stimulus", "unit_fc"), coords={"task": [1, 2, 3]})
    >>> m = rdm_matrix(rdms(x))
    >>> m.dims, float(m[0, 0])
    (('condition', 'condition_b'), 0.0)
    """
    out = condition_matrix(rdm, PAIR, spearman_matrix, dim).rename("rdm_of_rdms")
    out.attrs = {"measure": "1 - spearman", "rdm_method": rdm.attrs.get("rdm_method", "")}
    return out
