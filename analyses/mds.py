"""Two-dimensional MDS of an RDM of RDMs (figures 3, 5, 6).

Modes:

``"paper"``
    As the paper's code: min-max scale each column of the RDM of RDMs, then run
    :class:`sklearn.manifold.MDS` (2 components, ``random_state=0``) on the rows as
    feature vectors (Euclidean distances between rows, not the dissimilarities
    themselves). ``n_init=4`` and random init reproduce the scikit-learn defaults of
    the paper's time.
``"precomputed"``
    Metric MDS on the dissimilarities themselves (``metric="precomputed"``): the
    principled choice.
"""
from __future__ import annotations

import inspect
import warnings

import numpy as np
import xarray as xr
from sklearn.manifold import MDS

from .errors import AnalysisError

__all__ = ["MDS_MODES", "mds_embedding"]

MDS_MODES = ("paper", "precomputed")


def _mds(precomputed: bool, seed: int) -> MDS:
    params = inspect.signature(MDS).parameters
    kw = {"n_components": 2, "random_state": seed, "n_init": 4}
    if "init" in params:
        kw["init"] = "random"
    if "metric_mds" in params:  # scikit-learn >= 1.8
        kw["metric"] = "precomputed" if precomputed else "euclidean"
    else:
        kw["dissimilarity"] = "precomputed" if precomputed else "euclidean"
    return MDS(**kw)


def _embed_one(mat: np.ndarray, mode: str, seed: int) -> np.ndarray:
    if mode == "paper":
        lo, hi = mat.min(0), mat.max(0)
        span = np.where(hi > lo, hi - lo, 1.0)
        with warnings.catch_warnings():  # rows as feature vectors is the point here
            warnings.filterwarnings("ignore", message="The provided input is a square matrix")
            return _mds(False, seed).fit_transform((mat - lo) / span)
    sym = (mat + mat.T) / 2
    np.fill_diagonal(sym, 0)
    return _mds(True, seed).fit_transform(np.clip(sym, 0, None))


def mds_embedding(rdm: xr.DataArray, mode: str = "paper", seed: int = 0) -> xr.DataArray:
    """2-D MDS coordinates of each condition of an RDM of RDMs.

    Parameters
    ----------
    rdm : xarray.DataArray
        Dims (..., condition, condition_b), e.g. from
        :func:`repscope.analyses.figure_data.rdm_of_rdms`; leading dims (``layer``) are
        embedded separately.
    mode : {"paper", "precomputed"}
    seed : int

    Returns
    -------
    xarray.DataArray
        Dims (..., condition, mds_axis) with the condition coordinates.

    Examples
    --------
    >>> pts = np.array([[0.0, 0], [1, 0], [0, 2], [3, 3]])
    >>> d = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    >>> rdm = xr.DataArray(d, dims=("condition", "condition_b"))
    >>> e = mds_embedding(rdm, "precomputed")
    >>> e.dims, e.shape
    (('condition', 'mds_axis'), (4, 2))
    """
    if mode not in MDS_MODES:
        raise AnalysisError(f"Unknown MDS mode {mode!r}. Expected one of {sorted(MDS_MODES)}")
    if not {"condition", "condition_b"} <= set(rdm.dims):
        raise AnalysisError(f"Expected dims 'condition' and 'condition_b'; got {rdm.dims}")
    lead = [d for d in rdm.dims if d not in ("condition", "condition_b")]
    r = rdm.transpose(*lead, "condition", "condition_b")
    vals = r.values.reshape((-1,) + r.shape[-2:])
    emb = np.stack([_embed_one(m, mode, seed) for m in vals])
    coords = {k: v for k, v in r.coords.items() if "condition_b" not in v.dims}
    out = xr.DataArray(emb.reshape(r.shape[:-1] + (2,)), dims=lead + ["condition", "mds_axis"],
                       coords={**coords, "mds_axis": [0, 1]}, name="mds")
    out.attrs = {"mode": mode, "seed": seed}
    return out
