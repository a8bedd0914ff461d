"""Sanity checks of the similarity measures on trained networks (compute only).

Two checks from the literature, run on any records of networks of one architecture:

:func:`layer_identification`
    Kornblith et al. (2019), Table 2: for each layer of one network, is the most
    similar layer of another, independently seeded network the corresponding one? The
    share of (network pair, layer) trials where it is. A measure that cannot pass this
    cannot be trusted to say which layers changed.
:func:`pc_removal`
    Ding et al. (2021), sensitivity: remove a layer's top principal components one by
    one; a measure's distance to the original should grow as the information a linear
    probe can read falls. Returns both, per network.

Both take plain labelled arrays (one ``(stimulus, unit_*)`` DataArray per layer) and
return :class:`xarray.Dataset` objects; reading records and writing files is
:mod:`repscope.analyses.sanity`'s job, plotting :mod:`repscope.analyses.measure_check_plots`'s.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import xarray as xr
from scipy.stats import spearmanr

from .dims import STIMULUS, unit_dim
from .errors import AnalysisError
from .measures import compare, features, get_measure

__all__ = ["DEFAULT_MEASURES", "layer_identification", "pc_removal", "as_distance", "tracking"]

DEFAULT_MEASURES = ("cka_linear", "cka_rbf", "rsa", "svcca", "pwcca", "procrustes")


def as_distance(value, direction: str):
    """A measure's value as a distance: ``1 - similarity`` or the dissimilarity itself.

    Examples
    --------
    >>> as_distance(0.8, "similarity"), as_distance(0.3, "dissimilarity")
    (0.19999999999999996, 0.3)
    """
    return 1 - value if direction == "similarity" else value


def _similarity_matrix(reps: Sequence[xr.DataArray], measure: str) -> np.ndarray:
    """Every representation with every other, as a distance matrix (features computed once)."""
    m = get_measure(measure)
    feats = np.stack([features(r, measure).values for r in reps])
    return as_distance(np.asarray(m.matrix(feats, **m.defaults)), m.direction)


def layer_identification(nets: Sequence[Mapping[str, xr.DataArray]], measures: Sequence[str] = DEFAULT_MEASURES,
                         n_stimuli: Sequence[int] = (20, 100)) -> xr.Dataset:
    """Kornblith et al.'s layer identification over every ordered pair of networks.

    Parameters
    ----------
    nets : sequence of dict
        One dict per network: layer name -> DataArray ``(stimulus, unit_*)``; the
        same layers and stimuli in every network.
    measures : sequence of str
        Registered measures, with their default options.
    n_stimuli : sequence of int
        Use the first n stimuli (each value a separate check).

    Returns
    -------
    xarray.Dataset
        ``correct`` (measure, n_stimuli, net, other_net, layer): 1 when layer ``layer``
        of ``net`` is closest to the same layer of ``other_net``, NaN for ``net ==
        other_net``; ``share`` (measure, n_stimuli): the mean over trials; ``trials``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> def net():
    ...     x = rng.normal(size=(30, 8))
    ...     return {"a": xr.DataArray(x, dims=("stimulus", "unit_a")),
    ...             "b": xr.DataArray(np.tanh(x @ rng.normal(size=(8, 6))), dims=("stimulus", "unit_b"))}
    >>> ds = layer_identification([net(), net()], ["cka_linear"], [30])
    >>> ds["share"].dims, int(ds["trials"])
    (('measure', 'n_stimuli'), 4)
    """
    if len(nets) < 2:
        raise AnalysisError(f"layer_identification needs at least 2 networks; got {len(nets)}")
    layers = list(nets[0])
    if any(list(n) != layers for n in nets):
        raise AnalysisError(f"Every network must have the layers {layers}; got {[list(n) for n in nets]}")
    total = nets[0][layers[0]].sizes[STIMULUS]
    if max(n_stimuli) > total:
        raise AnalysisError(f"n_stimuli={list(n_stimuli)} but the records hold {total} stimuli")
    k, nl = len(nets), len(layers)
    correct = np.full((len(measures), len(n_stimuli), k, k, nl), np.nan)
    for a, measure in enumerate(measures):
        for b, n in enumerate(n_stimuli):
            reps = [net[layer].isel({STIMULUS: slice(0, n)}) for net in nets for layer in layers]
            dist = _similarity_matrix(reps, measure).reshape(k, nl, k, nl)
            for i in range(k):
                for j in range(k):
                    if i != j:
                        correct[a, b, i, j] = dist[i, :, j, :].argmin(1) == np.arange(nl)
    ds = xr.Dataset(
        {"correct": (("measure", "n_stimuli", "net", "other_net", "layer"), correct)},
        coords={"measure": list(measures), "n_stimuli": list(n_stimuli), "net": np.arange(k),
                "other_net": np.arange(k), "layer": layers})
    ds["share"] = ds["correct"].mean(("net", "other_net", "layer"))
    ds["trials"] = k * (k - 1) * nl
    ds["share"].attrs["description"] = ("share of (network pair, layer) trials whose closest layer in the other "
                                        "network is the corresponding one (Kornblith et al., 2019, Table 2)")
    return ds


def _remove_top_pcs(x: np.ndarray, r: int) -> np.ndarray:
    xc = x - x.mean(0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    return xc - (u[:, :r] * s[:r]) @ vt[:r]


def _probe_accuracy(x: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, x, labels, cv=cv).mean())


def pc_removal(layers: Sequence[xr.DataArray], labels, measures: Sequence[str] = DEFAULT_MEASURES,
               max_removed: int = 10, folds: int = 5, seed: int = 0) -> xr.Dataset:
    """Ding et al.'s sensitivity check: remove top principal components one by one.

    Parameters
    ----------
    layers : sequence of DataArray
        The same layer of each network, ``(stimulus, unit_*)``.
    labels : array_like
        Class of each stimulus, for the linear probe.
    measures : sequence of str
    max_removed : int
        Remove 0, 1, ..., ``max_removed`` leading principal components.
    folds, seed
        Stratified ``folds``-fold cross-validated accuracy of a logistic-regression probe
        (standardised inputs), folds drawn with ``seed``.

    Returns
    -------
    xarray.Dataset
        ``distance`` (measure, net, removed): the measure's distance (1 - similarity, or
        the dissimilarity) between the layer and its reduced copy; ``accuracy`` (net,
        removed); ``tracking`` (measure): see :func:`tracking`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat(np.arange(3), 20)
    >>> x = xr.DataArray(rng.normal(size=(60, 6)) + y[:, None], dims=("stimulus", "unit_a"))
    >>> ds = pc_removal([x], y, ["cka_linear"], max_removed=2, folds=3)
    >>> ds["distance"].shape, round(float(ds["distance"][0, 0, 0]), 12)
    ((1, 1, 3), 0.0)
    """
    labels = np.asarray(labels)
    dist = np.full((len(measures), len(layers), max_removed + 1), np.nan)
    acc = np.full((len(layers), max_removed + 1), np.nan)
    for i, da in enumerate(layers):
        x = da.transpose(STIMULUS, unit_dim(da)).values.astype(np.float64)
        if max_removed >= min(x.shape):
            raise AnalysisError(f"max_removed={max_removed} but {da.name!r} has only {min(x.shape)} components")
        for r in range(max_removed + 1):
            reduced = da.copy(data=_remove_top_pcs(x, r)) if r else da
            acc[i, r] = _probe_accuracy(reduced.values, labels, folds, seed)
            for a, measure in enumerate(measures):
                dist[a, i, r] = as_distance(float(compare(da, reduced, measure)), get_measure(measure).direction)
    ds = xr.Dataset({"distance": (("measure", "net", "removed"), dist), "accuracy": (("net", "removed"), acc)},
                    coords={"measure": list(measures), "net": np.arange(len(layers)),
                            "removed": np.arange(max_removed + 1)})
    ds["tracking"] = tracking(ds)
    return ds


def tracking(ds: xr.Dataset) -> xr.DataArray:
    """Per measure: Spearman correlation of its distance with the probe's accuracy loss.

    Pooled over networks and removal steps (the loss is the accuracy on the full layer
    minus that after the removal). 1: the distance orders the reduced copies exactly as
    their loss of decodable information; near 0 or NaN (a constant distance): it does not
    see the loss.

    Examples
    --------
    >>> ds = xr.Dataset({"distance": (("measure", "net", "removed"), [[[0.0, 0.2, 0.5]]]),
    ...                  "accuracy": (("net", "removed"), [[0.9, 0.8, 0.6]])}, coords={"measure": ["m"]})
    >>> float(tracking(ds).sel(measure="m"))
    1.0
    """
    loss = (ds["accuracy"].isel(removed=0) - ds["accuracy"]).values.ravel()
    rho = []
    for m in ds["measure"].values:
        d = ds["distance"].sel(measure=m).values.ravel()
        rho.append(np.nan if np.ptp(d) == 0 else spearmanr(d, loss)[0])
    return xr.DataArray(rho, dims="measure", coords={"measure": ds["measure"].values},
                        attrs={"description": "Spearman correlation of distance and probe accuracy loss"})
