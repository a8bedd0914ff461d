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
from matplotlib.ticker import FuncFormatter

from .errors import AnalysisError
from .uncertainty import BANDS, mean_band

__all__ = ["step_axis", "plot_inner_loop_change", "plot_meta_change", "plot_training_change",
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


def step_axis(ax, steps, label: str = "meta-training step") -> None:
    """Label an x axis of training steps; symlog when they span more than two decades.

    Checkpoints are saved log-spaced early in training (0, 1, 2, 5, 10, ...) and evenly
    later; on a linear axis the early ones pile up at 0. On the symlog axis the range
    up to the first non-zero step is linear, so step 0 stays visible.

    Examples
    --------
    >>> ax = Figure().subplots()
    >>> step_axis(ax, np.array([0, 1, 2, 5, 10, 100, 1000]))
    >>> ax.get_xscale(), ax.get_xlabel()
    ('symlog', 'meta-training step (symlog scale)')
    """
    steps = np.asarray(steps, dtype=float)
    pos = steps[steps > 0]
    if pos.size and pos.max() / pos.min() > 100:
        ax.set_xscale("symlog", linthresh=float(pos.min()), linscale=0.5)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        label += " (symlog scale)"
    ax.set_xlabel(label)


def _legend_outside(ax, title: str) -> None:
    """The legend right of the axes, where it never covers data (constrained layout
    makes room for it)."""
    ax.legend(title=title or None, fontsize="small", loc="upper left",
              bbox_to_anchor=(1.02, 1.0), borderaxespad=0)


def _as_change(da: xr.DataArray) -> tuple[xr.DataArray, bool]:
    """A similarity as ``1 - similarity`` (up = more change, as dissimilarities read),
    and whether it was flipped."""
    flip = da.attrs.get("direction") == "similarity"
    return (1 - da if flip else da), flip


def _band_axes(fig: Figure, res: xr.Dataset, x: str, title: str, yscale: str = "linear",
               as_change: bool = False, band: str = "std", xlabel: str = "meta-training step"):
    """Per measure one panel, per layer a line: the mean over tasks with a band where
    the tasks differ; ``as_change`` shows similarities as ``1 - similarity`` so that
    every panel reads the same way (up = more change)."""
    names = _measures(res)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        da, flip = _as_change(res[name]) if as_change else (res[name], False)
        for layer in da["layer"].values:
            d = da.sel(layer=layer)
            xs = d[x].values
            if "task" in d.dims and d.sizes["task"] > 1:
                b = mean_band(d, "task", kind=band)
                line, = ax.plot(xs, b["mean"], marker=".", label=str(layer))
                spread = np.asarray(b["upper"] - b["lower"])
                if np.nanmax(spread, initial=0) > 0:  # no band where every task is the same
                    ax.fill_between(xs, b["lower"], b["upper"], alpha=0.2, color=line.get_color())
            else:
                d = d.squeeze(drop=True) if "task" in d.dims else d
                ax.plot(xs, d.values, marker=".", label=str(layer))
        step_axis(ax, da[x].values, xlabel)
        ax.set_ylabel(("1 - " if flip else "") + _LABEL.get(name, name)
                      + (" (up: more change)" if as_change else ""))
        if yscale == "symlog":
            pos = da.values[np.isfinite(da.values) & (da.values > 0)]
            ax.set_yscale("symlog", linthresh=10 ** np.floor(np.log10(pos.min())) if pos.size else 1e-6)
        elif yscale != "linear":
            ax.set_yscale(yscale)
        ax.grid(alpha=0.3)
    _legend_outside(axes[-1], "layer")
    fig.suptitle(title)
    return axes


def _spread_text(res: xr.Dataset, band: str) -> str:
    """What the lines and bands of figures 1a/1b show, for the title."""
    if "task" not in res.dims:
        n = res.attrs.get("identical_over_tasks")
        return f"the same for all {n} tasks (no spread)" if n else "one task"
    return f"mean over {res.sizes['task']} tasks, {_BAND_TEXT[band]}"


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
    'meta-training step'
    """
    if "inner_step" in res.dims:
        inner_step = int(res["inner_step"].values[-1]) if inner_step is None else inner_step
        res = res.sel(inner_step=inner_step)
    fig = Figure(figsize=(5 * len(_measures(res)) + 1, 4), layout="constrained")
    after = inner_step if inner_step is not None else res.attrs.get("after", "last")
    band = _band_kind(res, band)
    _band_axes(fig, res, "checkpoint",
               f"Fig. 1a: change in the inner loop, inner step {res.attrs.get('before', 0)} vs "
               f"{after} ({_spread_text(res, band)})", as_change=True, band=band)
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
    'Fig. 1b: change from the previous checkpoint (median gap 50 steps) at inner step 0; mean over 3 tasks, +- 1 std over tasks'
    """
    if yscale not in ("symlog", "log", "linear"):
        raise AnalysisError(f"Unknown yscale {yscale!r}. Expected one of ['linear', 'log', 'symlog']")
    fig = Figure(figsize=(5 * len(_measures(res)) + 1, 4), layout="constrained")
    prev = res["previous"].values if "previous" in res.coords else None
    gap = int(np.median(res["checkpoint"].values - prev)) if prev is not None and len(prev) else "?"
    band = _band_kind(res, band)
    _band_axes(fig, res, "checkpoint",
               f"Fig. 1b: change from the previous checkpoint (median gap {gap} steps) at "
               f"inner step {res.attrs.get('inner_step', 0)}; {_spread_text(res, band)}",
               yscale, as_change=True, band=band)
    return fig


def plot_training_change(res: xr.Dataset) -> Figure:
    """Figure 2: supervised control, each training step vs initialisation, per layer."""
    fig = Figure(figsize=(5 * len(_measures(res)) + 1, 4), layout="constrained")
    _band_axes(fig, res, "checkpoint",
               f"Fig. 2: supervised MNIST, change from step "
               f"{res.attrs.get('reference_checkpoint', 0)} to each training step",
               as_change=True, xlabel="training step")
    return fig


def _blocks(values) -> list[tuple[int, int, object]]:
    """Runs of equal values: ``[(start, stop, value), ...]``."""
    values = list(values)
    runs, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            runs.append((start, i, values[start]))
            start = i
    return runs


def _label_condition_blocks(ax, rdm: xr.DataArray) -> None:
    """Checkpoint blocks (solid lines, labelled on the y axis) and task blocks (thin
    lines, labelled on the x axis) of a condition x condition heat map."""
    ck = rdm["checkpoint"].values if "checkpoint" in rdm.coords else None
    task = rdm["task"].values if "task" in rdm.coords else None
    steps = rdm["inner_step"].values if "inner_step" in rdm.coords else None
    n = rdm.sizes["condition"]
    if ck is None or len(ck) != n:
        ax.set_xticks([])
        ax.set_yticks([])
        return
    ck_runs = _blocks(ck)
    for start, _, _ in ck_runs[1:]:
        for line in (ax.axhline, ax.axvline):
            line(start - 0.5, color="white", lw=1.2)
    ax.set_yticks([(a + b - 1) / 2 for a, b, _ in ck_runs], [f"{v}" for _, _, v in ck_runs],
                  fontsize="x-small")
    ax.set_ylabel("checkpoint (meta-training step)")
    if task is not None and len(task) == n:
        t_runs = _blocks(list(zip(ck, task)))
        for start, _, _ in t_runs[1:]:
            for line in (ax.axhline, ax.axvline):
                line(start - 0.5, color="white", lw=0.3, alpha=0.7)
        ax.set_xticks([(a + b - 1) / 2 for a, b, _ in t_runs], [f"{v[1]}" for _, _, v in t_runs],
                      fontsize=5)
        within = (f"; inner steps {', '.join(str(s) for s in dict.fromkeys(steps.tolist()))}"
                  if steps is not None and len(steps) == n else "")
        ax.set_xlabel(f"task within each checkpoint{within}", fontsize="small")
    else:
        ax.set_xticks([])


def plot_rdm_of_rdms(rdm: xr.DataArray, emb: xr.DataArray, title: str = "Fig. 3") -> Figure:
    """Figures 3, 5, 6: per layer, heat map of the RDM of RDMs and its 2-D MDS.

    The heat map's conditions are ordered by checkpoint, then task, then inner step;
    the blocks are labelled. MDS points are coloured by checkpoint and sized by inner
    step (both legends right of the panel); each task's inner steps at one checkpoint
    are linked by a dotted line.

    Parameters
    ----------
    rdm : xarray.DataArray
        (layer, condition, condition_b) from :func:`repscope.analyses.figure_data.rdm_of_rdms`.
    emb : xarray.DataArray
        (layer, condition, mds_axis) from :func:`repscope.analyses.mds.mds_embedding`.
    """
    layers = rdm["layer"].values
    fig = Figure(figsize=(11, 4.2 * len(layers)), layout="constrained")
    axes = fig.subplots(len(layers), 2, squeeze=False)
    ck = emb["checkpoint"].values
    uniq = np.unique(ck)
    colors = mpl.colormaps["viridis"](np.linspace(0, 0.9, len(uniq)))
    for (ax_h, ax_m), layer in zip(axes, layers):
        r = rdm.sel(layer=layer)
        im = ax_h.imshow(r.values, cmap="viridis")
        fig.colorbar(im, ax=ax_h, shrink=0.8, label=rdm.attrs.get("second_order", "dissimilarity"))
        ax_h.set_title(f"{layer}: RDM of RDMs")
        _label_condition_blocks(ax_h, r)
        e = emb.sel(layer=layer)
        steps = e["inner_step"].values

        def size(s):
            return 15 + 60 * (s - steps.min()) / max(1, np.ptp(steps))

        for ci, c in enumerate(uniq):
            for t in np.unique(e["task"].values):
                m = (ck == c) & (e["task"].values == t)
                order = np.argsort(steps[m])
                pts = e.values[m][order]
                ax_m.plot(pts[:, 0], pts[:, 1], ":", color=colors[ci], lw=1)
            m = ck == c
            ax_m.scatter(e.values[m, 0], e.values[m, 1], s=size(steps[m]), color=colors[ci],
                         label=f"{c}")
        ax_m.set_title(f"{layer}: MDS ({emb.attrs.get('mode', '')})")
        ax_m.set_xlabel("MDS dimension 1")
        ax_m.set_ylabel("MDS dimension 2")
        ax_m.set_aspect("equal", adjustable="datalim")
        colour = ax_m.legend(title="checkpoint", fontsize="x-small", title_fontsize="x-small",
                             loc="upper left", bbox_to_anchor=(1.02, 1.0))
        ax_m.add_artist(colour)
        sizes = [ax_m.scatter([], [], s=size(s), color="0.5", label=f"{s}")
                 for s in np.unique(steps)]
        ax_m.legend(handles=sizes, title="inner step", fontsize="x-small",
                    title_fontsize="x-small", loc="lower left", bbox_to_anchor=(1.02, 0.0))
    fig.suptitle(f"{title}: second-order dissimilarity of the recorded conditions "
                 "(checkpoint x task x inner step); dotted: one task's inner steps")
    return fig


def plot_accuracy(acc: xr.Dataset) -> Figure:
    """Figure 4: analysed tasks' accuracy and the eval-task mean with its 95% CI."""
    fig = Figure(figsize=(8.5, 4), layout="constrained")
    ax = fig.subplots()
    xs = acc["checkpoint"].values
    for t in acc["task"].values:
        ax.plot(xs, acc["accuracy"].sel(task=t), lw=1, alpha=0.7, label=f"task {t}")
    if "eval_mean" in acc:
        steps = acc.attrs.get("eval_inner_steps", "?")
        ax.plot(xs, acc["eval_mean"], color="k", lw=2,
                label=f"mean over {int(acc['eval_count'].max())} held-out tasks ({steps} inner steps)")
        ax.fill_between(xs, acc["eval_lower"], acc["eval_upper"], color="k", alpha=0.2, label="95% CI")
    step_axis(ax, xs)
    ax.set_ylabel(f"accuracy (tasks: after {acc.attrs.get('inner_step', '?')} inner steps)")
    ax.grid(alpha=0.3)
    _legend_outside(ax, "")
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
    fig = Figure(figsize=(5 * len(names) + 1, 4), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    seeds = [int(s) for s in res["seed"].values]
    for ax, name in zip(axes, names):
        da, flip = _as_change(res[name])
        for layer in da["layer"].values:
            d = da.sel(layer=layer)
            xs = d["checkpoint"].values
            line, = ax.plot(xs, d.mean("seed"), marker=".", lw=2, label=str(layer))
            for s in seeds:
                ax.plot(xs, d.sel(seed=s), lw=0.8, alpha=0.45, color=line.get_color())
        step_axis(ax, da["checkpoint"].values)
        ax.set_ylabel(("1 - " if flip else "") + _LABEL.get(name, name) + " (up: more change)")
        ax.grid(alpha=0.3)
    _legend_outside(axes[-1], "layer")
    which = str(res.attrs.get("figure", "")).replace("_seeds", "") or "?"
    fig.suptitle(f"Fig. {which} over {len(seeds)} seeds ({', '.join(map(str, seeds))})\nthin: each seed's "
                 "mean over tasks; thick: mean over seeds")
    return fig
