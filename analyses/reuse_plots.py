"""Plot the feature-reuse results of :mod:`repscope.analyses.reuse`; each function returns a
:class:`matplotlib.figure.Figure` and writes nothing.

The inputs are :func:`repscope.analyses.reuse.summarize_tasks` datasets (means and
t intervals over independent tasks), as computed or read back from netCDF.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from .errors import AnalysisError
from .plots import step_axis
from .reuse import BODY_THRESHOLD, HEAD_THRESHOLD

__all__ = ["plot_layer_similarity", "plot_similarity_over_checkpoints"]

_LABEL = {"svcca": "SVCCA", "pwcca": "PWCCA", "cka_linear": "linear CKA"}


def _measures(summary: xr.Dataset) -> list[str]:
    names = [str(v) for v in summary.data_vars if {"layer", "statistic"} <= set(summary[v].dims)]
    if not names:
        raise AnalysisError("No feature-reuse summary to plot (expected variables with dims layer and "
                            f"statistic); variables: {sorted(map(str, summary.data_vars))}")
    return names


def _thresholds(ax) -> None:
    ax.axhline(BODY_THRESHOLD, color="0.5", ls="--", lw=0.8)
    ax.axhline(HEAD_THRESHOLD, color="0.5", ls=":", lw=0.8)


def plot_layer_similarity(summaries: Mapping[str, xr.Dataset], checkpoint: int | None = None) -> Figure:
    """Raghu et al.'s Figure 2: per layer, similarity before vs after the inner loop.

    One panel per measure, one line per run (e.g. MAML and ANIL), mean over
    independent tasks with its t interval as error bars, at ``checkpoint`` (default:
    each run's last); dashed and dotted lines mark 0.9 (R1) and 0.5 (R2).

    Examples
    --------
    >>> s = xr.Dataset({"svcca": (("layer", "checkpoint", "statistic"), np.full((2, 1, 3), 0.9))},
    ...                coords={"layer": ["conv1", "head"], "checkpoint": [750],
    ...                        "statistic": ["mean", "lower", "upper"]})
    >>> plot_layer_similarity({"maml": s}).axes[0].get_ylabel()
    'SVCCA similarity'
    """
    if not summaries:
        raise AnalysisError("plot_layer_similarity needs at least one run's summary")
    names = _measures(next(iter(summaries.values())))
    fig = Figure(figsize=(4 * len(names) + 1.5, 3.8), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    where = []
    for k, (run, s) in enumerate(summaries.items()):
        ck = int(s["checkpoint"].values[-1]) if checkpoint is None else int(checkpoint)
        where.append(f"{run}: checkpoint {ck}")
        layers = [str(x) for x in s["layer"].values]
        xs = np.arange(len(layers)) + (k - (len(summaries) - 1) / 2) * 0.08
        for ax, name in zip(axes, names):
            d = s[name].sel(checkpoint=ck)
            m = d.sel(statistic="mean").values
            err = np.abs(np.stack([m - d.sel(statistic="lower").values, d.sel(statistic="upper").values - m]))
            ax.errorbar(xs, m, yerr=np.nan_to_num(err), marker="o", capsize=3, label=run)
            ax.set_xticks(np.arange(len(layers)), layers)
    for ax, name in zip(axes, names):
        _thresholds(ax)
        ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
        ax.set_ylabel(f"{_LABEL.get(name, name)} similarity")
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes[-1].legend(title="run", fontsize="small", loc="lower left")
    first = next(iter(summaries.values()))
    fig.suptitle(f"Similarity of inner step {first.attrs.get('before', 0)} vs {first.attrs.get('after', 'last')} "
                 f"({'; '.join(where)}; mean, {first.attrs.get('interval', 'CI over tasks')})", fontsize="small")
    return fig


def plot_similarity_over_checkpoints(summary: xr.Dataset, run: str = "") -> Figure:
    """Similarity before vs after the inner loop over meta-training, per layer (one run).

    One panel per measure, one line per layer with its t interval as a band.

    Examples
    --------
    >>> v = np.random.default_rng(0).uniform(0.5, 1, (2, 3, 1)) * [1, 0.95, 1.05]
    >>> s = xr.Dataset({"cka_linear": (("layer", "checkpoint", "statistic"), v)},
    ...                coords={"layer": ["conv1", "head"], "checkpoint": [0, 10, 20],
    ...                        "statistic": ["mean", "lower", "upper"]})
    >>> plot_similarity_over_checkpoints(s, "maml").axes[0].get_xlabel()
    'meta-training step'
    """
    names = _measures(summary)
    fig = Figure(figsize=(4 * len(names) + 1.5, 3.8), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    xs = summary["checkpoint"].values
    for ax, name in zip(axes, names):
        for layer in summary["layer"].values:
            d = summary[name].sel(layer=layer)
            line, = ax.plot(xs, d.sel(statistic="mean"), marker=".", label=str(layer))
            lo, hi = d.sel(statistic="lower").values, d.sel(statistic="upper").values
            if np.isfinite(lo).any():
                ax.fill_between(xs, lo, hi, alpha=0.2, color=line.get_color())
        _thresholds(ax)
        step_axis(ax, xs)
        ax.set_xlim(xs.min(), xs.max())
        ax.set_ylabel(f"{_LABEL.get(name, name)} similarity")
        ax.grid(alpha=0.3)
    axes[-1].legend(title="layer", fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"{run + ': ' if run else ''}similarity of inner step {summary.attrs.get('before', 0)} vs "
                 f"{summary.attrs.get('after', 'last')} over meta-training (mean, "
                 f"{summary.attrs.get('interval', 'CI over tasks')})", fontsize="small")
    return fig
