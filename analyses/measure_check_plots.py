"""Plot the measure sanity checks of :mod:`repscope.analyses.measure_checks`.

Takes the saved results (or the same read back from netCDF) and returns a
:class:`~matplotlib.figure.Figure`; computes nothing and writes nothing.
"""
from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

__all__ = ["plot_measure_checks"]


def plot_measure_checks(ident: xr.Dataset, removal: xr.Dataset) -> Figure:
    """Left: layer-identification share per measure and stimulus count. Middle: each
    measure's distance against the number of top principal components removed (mean
    over networks). Right: the linear probe's accuracy on the same reduced layers.

    Examples
    --------
    >>> from repscope.analyses.measure_checks import layer_identification, pc_removal
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat(np.arange(3), 10)
    >>> x = xr.DataArray(rng.normal(size=(30, 5)) + y[:, None], dims=("stimulus", "unit_a"))
    >>> ident = layer_identification([{"a": x, "b": x ** 2}, {"a": x + 1, "b": x ** 3}], ["rsa"], [30])
    >>> fig = plot_measure_checks(ident, pc_removal([x], y, ["rsa"], max_removed=2, folds=3))
    >>> len(fig.axes)
    3
    """
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    ax_id, ax_dist, ax_acc = fig.subplots(1, 3)
    measures = [str(m) for m in ident["measure"].values]
    ns = ident["n_stimuli"].values
    width = 0.8 / len(ns)
    for b, n in enumerate(ns):
        ax_id.bar(np.arange(len(measures)) + (b - (len(ns) - 1) / 2) * width,
                  100 * ident["share"].sel(n_stimuli=n).values, width, label=f"n = {n} stimuli")
    ax_id.set_xticks(np.arange(len(measures)), measures, rotation=30, ha="right")
    ax_id.set_ylabel("corresponding layer is the closest (%)")
    ax_id.set_ylim(0, 105)
    ax_id.set_title(f"Layer identification ({ident['net'].size} networks)")
    ax_id.legend(fontsize="small")
    steps = removal["removed"].values
    for m in removal["measure"].values:
        d = removal["distance"].sel(measure=m)
        ax_dist.plot(steps, d.mean("net"), marker="o", ms=3, label=str(m))
    ax_dist.set_xlabel("top principal components removed")
    ax_dist.set_ylabel("distance to the full layer\n(1 - similarity, or dissimilarity)")
    ax_dist.set_title(f"Top-PC removal ({removal.attrs.get('layer', 'layer')})")
    ax_dist.legend(fontsize="small")
    acc = removal["accuracy"]
    ax_acc.plot(steps, 100 * acc.mean("net"), marker="o", color="k")
    ax_acc.fill_between(steps, 100 * acc.min("net"), 100 * acc.max("net"), color="k", alpha=0.15,
                        label="min-max over networks")
    ax_acc.set_xlabel("top principal components removed")
    ax_acc.set_ylabel("linear probe accuracy (%)")
    ax_acc.set_title(f"Linear probe ({removal.attrs.get('layer', 'layer')})")
    ax_acc.legend(fontsize="small")
    return fig
