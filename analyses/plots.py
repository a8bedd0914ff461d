"""Plot saved figure results; every function returns a :class:`matplotlib.figure.Figure`.

The inputs are the labelled results of :mod:`repscope.analyses.figure_data` (or the same
read back from netCDF); nothing here computes similarities or writes files. Figures
are built on :class:`~matplotlib.figure.Figure` directly, without pyplot's global state.
"""
from __future__ import annotations

import matplotlib as mpl
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from repscope.analyses.errors import AnalysisError
from repscope.analyses.uncertainty import BANDS, mean_band

__all__ = ["plot_inner_loop_change", "plot_meta_change", "plot_training_change",
           "plot_rdm_of_rdms", "plot_accuracy", "plot_seed_spread"]

_LABEL = {"rsa": "RSA dissimilarity (1 - Spearman)", "cka_linear": "linear CKA",
          "cka_rbf": "RBF CKA", "cka_linear_debiased": "debiased linear CKA",
          "cka_rbf_debiased": "debiased RBF CKA", "cka_linear_minibatch": "minibatch linear CKA"}


def _measures(res: xr.Dataset) -> list[str]:
    names = [str(v) for v in res.data_vars if "layer" in res[v].dims]
    if not names:
        raise AnalysisError(f"No per-layer results to plot; variables: {sorted(map(str, res.data_vars))}")
    return names


_BAND_TEXT = {"std": "+- 1 std over tasks", "sem": "+- 1.96 SEM over tasks"}


def _band_kind(res: xr.Dataset, band: str | None) -> str:
    band = band if band is not None else res.attrs.get("band", "std")
    if band not in BANDS:
        raise AnalysisError(f"Unknown band {band!r}. Expected one of {list(BANDS)}")
    return band


def _band_axes(fig: Figure, res: xr.Dataset, x: str, title: str, yscale: str = "linear",
               as_change: bool = False, band: str = "std"):
    names = _measures(res)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        da = res[name]
        flip = as_change and da.attrs.get("direction") == "similarity"
        if flip:  # small changes show on a log axis only as 1 - similarity
            da = 1 - da
        for layer in da["layer"].values:
            d = da.sel(layer=layer)
            xs = d[x].values
            if "task" in d.dims and d.sizes["task"] > 1:
                b = mean_band(d, "task", kind=band)
                line, = ax.plot(xs, b["mean"], marker=".", label=str(layer))
                ax.fill_between(xs, b["lower"], b["upper"], alpha=0.2, color=line.get_color())
            else:
                d = d.squeeze(drop=True) if "task" in d.dims else d
                ax.plot(xs, d.values, marker=".", label=str(layer))
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(("1 - " if flip else "") + _LABEL.get(name, name))
        if yscale == "symlog":
            pos = da.values[np.isfinite(da.values) & (da.values > 0)]
            ax.set_yscale("symlog", linthresh=10 ** np.floor(np.log10(pos.min())) if pos.size else 1e-6)
        elif yscale != "linear":
            ax.set_yscale(yscale)
        ax.grid(alpha=0.3)
    axes[-1].legend(title="layer", fontsize="small")
    fig.suptitle(title)
    return axes


def plot_inner_loop_change(res: xr.Dataset, inner_step: int | None = None,
                           band: str | None = None) -> Figure:
    """Figure 1a: before vs after the inner loop, mean over tasks with an error band.

    Parameters
    ----------
    res : xarray.Dataset
        From :func:`repscope.analyses.figure_data.inner_loop_change`, dims (layer, checkpoint,
        task[, inner_step]).
    inner_step : int, optional
        The "after" step when ``res`` holds several (default: the last).
    band : {"std", "sem"}, optional
        +- 1 std over tasks (the published figure) or +- 1.96 SEM; default the
        result's ``band`` attr, else ``std``. The title says which.

    Examples
    --------
    >>> r = xr.Dataset({"rsa": (("layer", "checkpoint", "task"), np.random.default_rng(0).random((2, 3, 4)))},
    ...                coords={"layer": ["a", "b"], "checkpoint": [0, 1, 2]})
    >>> plot_inner_loop_change(r).axes[0].get_xlabel()
    'checkpoint'
    """
    if "inner_step" in res.dims:
        inner_step = int(res["inner_step"].values[-1]) if inner_step is None else inner_step
        res = res.sel(inner_step=inner_step)
    fig = Figure(figsize=(5 * len(_measures(res)), 4), layout="constrained")
    after = inner_step if inner_step is not None else res.attrs.get("after", "last")
    band = _band_kind(res, band)
    _band_axes(fig, res, "checkpoint",
               f"Fig. 1a: inner step {res.attrs.get('before', 0)} vs {after} (mean, {_BAND_TEXT[band]})",
               band=band)
    return fig


def plot_meta_change(res: xr.Dataset, yscale: str = "symlog", band: str | None = None) -> Figure:
    """Figure 1b: inner_step-0 representation at checkpoint t vs the previous one.

    On a log or symlog axis, similarity measures are shown as ``1 - similarity``.

    Parameters
    ----------
    res : xarray.Dataset
        From :func:`repscope.analyses.figure_data.meta_change`.
    yscale : {"symlog", "log", "linear"}
    band : {"std", "sem"}, optional
        As :func:`plot_inner_loop_change`.

    Examples
    --------
    >>> r = xr.Dataset({"rsa": (("layer", "checkpoint", "task"), np.full((1, 2, 3), 0.1))},
    ...                coords={"layer": ["a"], "checkpoint": [50, 100], "previous": ("checkpoint", [0, 50])})
    >>> plot_meta_change(r)._suptitle.get_text()
    'Fig. 1b: checkpoint t vs the previous one (median gap 50 steps, inner step 0; mean, +- 1 std over tasks)'
    """
    if yscale not in ("symlog", "log", "linear"):
        raise AnalysisError(f"Unknown yscale {yscale!r}. Expected one of ['linear', 'log', 'symlog']")
    fig = Figure(figsize=(5 * len(_measures(res)), 4), layout="constrained")
    prev = res["previous"].values if "previous" in res.coords else None
    gap = int(np.median(res["checkpoint"].values - prev)) if prev is not None and len(prev) else "?"
    band = _band_kind(res, band)
    _band_axes(fig, res, "checkpoint",
               f"Fig. 1b: checkpoint t vs the previous one (median gap {gap} steps, inner step 0; "
               f"mean, {_BAND_TEXT[band]})", yscale, as_change=yscale != "linear", band=band)
    return fig


def plot_training_change(res: xr.Dataset) -> Figure:
    """Figure 2: supervised control, each training step vs initialisation, per layer."""
    fig = Figure(figsize=(5 * len(_measures(res)), 4), layout="constrained")
    _band_axes(fig, res, "checkpoint",
               f"Fig. 2: supervised MNIST, step {res.attrs.get('reference_checkpoint', 0)} vs step s")
    for ax in fig.axes:
        ax.set_xlabel("training step")
    return fig


def plot_rdm_of_rdms(rdm: xr.DataArray, emb: xr.DataArray, title: str = "Fig. 3") -> Figure:
    """Figures 3, 5, 6: per layer, heat map of the RDM of RDMs and its 2-D MDS.

    Points are coloured by checkpoint and sized by inner step; each task's inner
    steps at one checkpoint are linked by a dotted line.

    Parameters
    ----------
    rdm : xarray.DataArray
        (layer, condition, condition_b) from :func:`repscope.analyses.figure_data.rdm_of_rdms`.
    emb : xarray.DataArray
        (layer, condition, mds_axis) from :func:`repscope.analyses.mds.mds_embedding`.
    """
    layers = rdm["layer"].values
    fig = Figure(figsize=(9, 4 * len(layers)), layout="constrained")
    axes = fig.subplots(len(layers), 2, squeeze=False)
    ck = emb["checkpoint"].values
    uniq = np.unique(ck)
    colors = mpl.colormaps["viridis"](np.linspace(0, 0.9, len(uniq)))
    for (ax_h, ax_m), layer in zip(axes, layers):
        im = ax_h.imshow(rdm.sel(layer=layer).values, cmap="viridis")
        fig.colorbar(im, ax=ax_h, shrink=0.8, label=rdm.attrs.get("second_order", "dissimilarity"))
        ax_h.set_title(f"{layer}: RDM of RDMs")
        ax_h.set_xticks([])
        ax_h.set_yticks([])
        e = emb.sel(layer=layer)
        steps = e["inner_step"].values
        size = 15 + 60 * (steps - steps.min()) / max(1, np.ptp(steps))
        for ci, c in enumerate(uniq):
            for t in np.unique(e["task"].values):
                m = (ck == c) & (e["task"].values == t)
                order = np.argsort(steps[m])
                pts = e.values[m][order]
                ax_m.plot(pts[:, 0], pts[:, 1], ":", color=colors[ci], lw=1)
            m = ck == c
            ax_m.scatter(e.values[m, 0], e.values[m, 1], s=size[m], color=colors[ci], label=f"{c}")
        ax_m.set_title(f"{layer}: MDS ({emb.attrs.get('mode', '')})")
        ax_m.legend(title="checkpoint", fontsize="x-small")
    fig.suptitle(f"{title}: point size = inner step; dotted: one task's inner steps")
    return fig


def plot_accuracy(acc: xr.Dataset) -> Figure:
    """Figure 4: analysed tasks' accuracy and the eval-task mean with its 95% CI."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    xs = acc["checkpoint"].values
    for t in acc["task"].values:
        ax.plot(xs, acc["accuracy"].sel(task=t), lw=1, alpha=0.7, label=f"task {t}")
    if "eval_mean" in acc:
        steps = acc.attrs.get("eval_inner_steps", "?")
        ax.plot(xs, acc["eval_mean"], color="k", lw=2,
                label=f"mean over {int(acc['eval_count'].max())} held-out tasks ({steps} inner steps)")
        ax.fill_between(xs, acc["eval_lower"], acc["eval_upper"], color="k", alpha=0.2, label="95% CI")
    ax.set_xlabel("meta-training step")
    ax.set_ylabel(f"accuracy (tasks: after {acc.attrs.get('inner_step', '?')} inner steps)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    fig.suptitle("Fig. 4: accuracy over meta-training")
    return fig



def plot_seed_spread(res: xr.Dataset, inner_step: int | None = None) -> Figure:
    """Figure 1a or 1b over several seeds: each seed's mean over tasks (thin lines) and
    the mean over seeds (thick), one colour per layer.

    Parameters
    ----------
    res : xarray.Dataset
        From :func:`repscope.analyses.replication.seed_spread`: dims (seed, layer,
        checkpoint[, inner_step]), attr ``figure`` "1a_seeds" or "1b_seeds".
    inner_step : int, optional
        The "after" step when ``res`` holds several (default: the last).

    Examples
    --------
    >>> r = xr.Dataset({"rsa": (("seed", "layer", "checkpoint"), np.random.default_rng(0).random((3, 2, 4)))},
    ...                coords={"seed": [0, 1, 2], "layer": ["a", "b"], "checkpoint": [0, 1, 2, 3]},
    ...                attrs={"figure": "1a_seeds"})
    >>> print(plot_seed_spread(r)._suptitle.get_text())
    Fig. 1a over 3 seeds (0, 1, 2)
    thin: each seed's mean over tasks; thick: mean over seeds
    """
    if "seed" not in res.dims:
        raise AnalysisError(f"plot_seed_spread needs a 'seed' dim; got dims {tuple(res.dims)}")
    if "inner_step" in res.dims:
        inner_step = int(res["inner_step"].values[-1]) if inner_step is None else inner_step
        res = res.sel(inner_step=inner_step)
    names = _measures(res)
    fig = Figure(figsize=(5 * len(names), 4), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    seeds = [int(s) for s in res["seed"].values]
    for ax, name in zip(axes, names):
        da = res[name]
        for layer in da["layer"].values:
            d = da.sel(layer=layer)
            xs = d["checkpoint"].values
            line, = ax.plot(xs, d.mean("seed"), marker=".", lw=2, label=str(layer))
            for s in seeds:
                ax.plot(xs, d.sel(seed=s), lw=0.8, alpha=0.45, color=line.get_color())
        ax.set_xlabel("checkpoint")
        ax.set_ylabel(_LABEL.get(name, name))
        ax.grid(alpha=0.3)
    axes[-1].legend(title="layer", fontsize="small")
    which = str(res.attrs.get("figure", "")).replace("_seeds", "") or "?"
    fig.suptitle(f"Fig. {which} over {len(seeds)} seeds ({', '.join(map(str, seeds))})\nthin: each seed's "
                 "mean over tasks; thick: mean over seeds")
    return fig
