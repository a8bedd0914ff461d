"""Do our runs support the paper's claims F1-F3? Numbers with bootstrap CIs.

All functions take saved figure results (:mod:`repscope.analyses.figure_data`) and return plain
dicts; :func:`findings_markdown` turns them into a short report. "Change" is the
measure's dissimilarity: the RSA value itself, ``1 - CKA`` for CKA measures.

F1
    Early layers change less than late layers: ``change(last layer) - change(first
    layer)`` after the inner loop, per checkpoint, CI over tasks; and in the supervised
    control, per training step.
F2
    The inner loop changes more than meta-training does over ~1000 steps:
    ``change(inner loop) - change(checkpoint t vs t - gap)`` averaged over checkpoints,
    per layer, CI over tasks.
F3
    Most of the inner-loop change happens in the first step:
    ``change(step 0 vs 1) / change(step 0 vs last)``, per layer, CI over tasks.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from repscope.analyses.errors import AnalysisError
from repscope.analyses.uncertainty import bootstrap_ci

__all__ = ["change", "finding_f1", "finding_f2", "finding_f3", "findings_markdown"]


def change(da: xr.DataArray) -> xr.DataArray:
    """Amount of change: RSA dissimilarity as is, ``1 - similarity`` for CKA.

    Examples
    --------
    >>> round(float(change(xr.DataArray(0.9, attrs={"direction": "similarity"}))), 12)
    0.1
    """
    direction = da.attrs.get("direction")
    if direction not in ("similarity", "dissimilarity"):
        raise AnalysisError(f"Result {da.name!r} has no 'direction' attr (similarity or dissimilarity)")
    return 1 - da if direction == "similarity" else da


def _ci(da: xr.DataArray, n_boot: int, seed: int) -> dict:
    """Mean and bootstrap CI over ``task`` of a 1-D (task) array."""
    vals = da.values[~np.isnan(da.values)]
    if vals.size >= 2:
        ci = bootstrap_ci(xr.DataArray(vals, dims="task"), "task", n_boot=n_boot, seed=seed)
        return {"mean": float(ci["mean"]), "lower": float(ci["lower"]), "upper": float(ci["upper"]),
                "n": int(vals.size)}
    return {"mean": float(vals.mean()) if vals.size else float("nan"), "lower": float("nan"),
            "upper": float("nan"), "n": int(vals.size)}


def _last_step(inner: xr.DataArray) -> xr.DataArray:
    if "inner_step" in inner.dims:
        return inner.sel(inner_step=inner["inner_step"].values.max())
    return inner


def _verdict(flags: list[bool]) -> str:
    if not flags:
        return "not testable"
    return "supported" if all(flags) else ("partly supported" if any(flags) else "not supported")


def finding_f1(inner: xr.DataArray | None, supervised: xr.DataArray | None = None,
               n_boot: int = 2000, seed: int = 0) -> dict:
    """F1: late-minus-early change after the inner loop, per checkpoint (CI over tasks).

    Parameters
    ----------
    inner : xarray.DataArray
        One measure of :func:`repscope.analyses.figure_data.inner_loop_change` (layer,
        checkpoint, task[, inner_step]).
    supervised : xarray.DataArray, optional
        The same measure of :func:`repscope.analyses.figure_data.training_change` (layer,
        checkpoint).
    """
    if inner is None and supervised is None:
        raise AnalysisError("finding_f1 needs an inner-loop result, a supervised result, or both")
    out, flags = {"per_checkpoint": [], "layer_means": {}}, []
    if inner is not None:
        ch = change(_last_step(inner))
        layers = [str(x) for x in ch["layer"].values]
        early, late = layers[0], layers[-1]
        diff = ch.sel(layer=late) - ch.sel(layer=early)
        rows = [{"checkpoint": int(c), **_ci(diff.sel(checkpoint=c), n_boot, seed)}
                for c in diff["checkpoint"].values]
        flags = [r["lower"] > 0 if not np.isnan(r["lower"]) else r["mean"] > 0 for r in rows]
        out = {"early": early, "late": late, "per_checkpoint": rows,
               "layer_means": {layer: float(ch.sel(layer=layer).mean()) for layer in layers}}
    if supervised is not None:
        sc = change(supervised)
        sd = (sc.sel(layer=sc["layer"].values[-1]) - sc.sel(layer=sc["layer"].values[0]))
        sd = sd.isel(checkpoint=slice(1, None))
        out["supervised"] = {"late_minus_early": [float(v) for v in sd.values],
                             "checkpoints": [int(c) for c in sd["checkpoint"].values],
                             "fraction_positive": float((sd > 0).mean()) if sd.size else float("nan")}
        flags.append(bool(sd.size) and bool((sd > 0).all()))
    out["verdict"] = _verdict(flags)
    return out


def finding_f2(inner: xr.DataArray, meta: xr.DataArray, n_boot: int = 2000, seed: int = 0) -> dict:
    """F2: inner-loop change minus change over the meta-training gap, per layer.

    Parameters
    ----------
    inner : xarray.DataArray
        As in :func:`finding_f1`.
    meta : xarray.DataArray
        One measure of :func:`repscope.analyses.figure_data.meta_change` (layer, checkpoint,
        task) with the ``previous`` coordinate.
    """
    ch_in = change(_last_step(inner))
    ch_meta = change(meta)
    ck = [c for c in ch_meta["checkpoint"].values if c in ch_in["checkpoint"].values]
    if not ck:
        raise AnalysisError("inner-loop and meta-change results share no checkpoint")
    gap = int(np.median(meta["checkpoint"].values - meta["previous"].values))
    diff = (ch_in.sel(checkpoint=ck) - ch_meta.sel(checkpoint=ck)).mean("checkpoint")
    rows = []
    for layer in diff["layer"].values:
        r = _ci(diff.sel(layer=layer), n_boot, seed)
        inner_m = float(ch_in.sel(checkpoint=ck, layer=layer).mean())
        meta_m = float(ch_meta.sel(checkpoint=ck, layer=layer).mean())
        rows.append({"layer": str(layer), "inner": inner_m, "meta": meta_m,
                     "ratio": inner_m / meta_m if meta_m > 0 else float("inf"), **r})
    flags = [r["lower"] > 0 if not np.isnan(r["lower"]) else r["mean"] > 0 for r in rows]
    return {"gap_steps": gap, "checkpoints": [int(c) for c in ck], "per_layer": rows,
            "verdict": _verdict(flags)}


def finding_f3(inner: xr.DataArray, n_boot: int = 2000, seed: int = 0, threshold: float = 0.5) -> dict:
    """F3: fraction of the inner-loop change done by step 1, per layer (CI over tasks)."""
    if "inner_step" not in inner.dims or 1 not in inner["inner_step"].values:
        return {"verdict": "not testable", "reason": "inner step 1 not recorded", "per_layer": []}
    ch = change(inner)
    last = ch.sel(inner_step=ch["inner_step"].values.max())
    frac = (ch.sel(inner_step=1) / last.where(last > 1e-12)).mean("checkpoint")
    rows = [{"layer": str(layer), **_ci(frac.sel(layer=layer), n_boot, seed)} for layer in frac["layer"].values]
    flags = [r["lower"] > threshold if not np.isnan(r["lower"]) else r["mean"] > threshold for r in rows]
    return {"threshold": threshold, "last_step": int(ch["inner_step"].values.max()),
            "per_layer": rows, "verdict": _verdict(flags)}


def _fmt(r: dict) -> str:
    if np.isnan(r["lower"]):
        return f"{r['mean']:.4g} (n={r['n']}, no CI)"
    return f"{r['mean']:.4g} [{r['lower']:.4g}, {r['upper']:.4g}]"


def findings_markdown(f1: dict | None, f2: dict | None, f3: dict | None, *, measure: str,
                      title: str = "Findings", level: float = 0.95) -> str:
    """A short markdown summary of F1-F3 with numbers and CIs.

    Examples
    --------
    >>> f3 = {"verdict": "supported", "threshold": 0.5, "last_step": 10,
    ...       "per_layer": [{"layer": "conv1", "mean": 0.8, "lower": 0.7, "upper": 0.9, "n": 4}]}
    >>> print(findings_markdown(None, None, f3, measure="rsa").splitlines()[-1])
    | conv1 | 0.8 [0.7, 0.9] |
    """
    pct = int(round(level * 100))
    lines = [f"# {title}", "", f"Measure: `{measure}` (change = "
             + ("dissimilarity" if measure == "rsa" else "1 - similarity")
             + f"); brackets: {pct}% percentile bootstrap CI over tasks.", ""]
    if f1:
        lines += [f"## F1: early layers change less than late layers: **{f1['verdict']}**", ""]
        if f1["per_checkpoint"]:
            lines += [f"Change after the inner loop, `{f1['late']}` minus `{f1['early']}` (positive = "
                      "late layer changes more):", "", "| checkpoint | late - early |", "| --- | --- |"]
            lines += [f"| {r['checkpoint']} | {_fmt(r)} |" for r in f1["per_checkpoint"]]
            lines += ["", "Mean change per layer: " + ", ".join(
                f"`{k}` {v:.4g}" for k, v in f1["layer_means"].items()), ""]
        if "supervised" in f1:
            s = f1["supervised"]
            lines += [f"Supervised MNIST control: late - early > 0 at "
                      f"{s['fraction_positive']:.0%} of {len(s['checkpoints'])} training steps "
                      f"(last step {s['checkpoints'][-1] if s['checkpoints'] else '-'}: "
                      f"{s['late_minus_early'][-1] if s['late_minus_early'] else float('nan'):.4g}).", ""]
    if f2:
        lines += [f"## F2: the inner loop changes more than {f2['gap_steps']} meta-training steps: "
                  f"**{f2['verdict']}**", "",
                  f"Averaged over checkpoints {f2['checkpoints'][0]}..{f2['checkpoints'][-1]}:", "",
                  "| layer | inner loop | meta (gap) | ratio | inner - meta |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['layer']} | {r['inner']:.4g} | {r['meta']:.4g} | {r['ratio']:.3g} | {_fmt(r)} |"
                  for r in f2["per_layer"]]
        lines += [""]
    if f3:
        lines += [f"## F3: most of the inner-loop change happens in step 1: **{f3['verdict']}**", ""]
        if not f3["per_layer"]:
            lines += [f"Not testable: {f3.get('reason', '')}.", ""]
        else:
            lines += [f"Fraction of the step-0-to-{f3['last_step']} change reached after step 1 "
                      f"(supported when the CI lies above {f3['threshold']}):", "",
                      "| layer | fraction |", "| --- | --- |"]
            lines += [f"| {r['layer']} | {_fmt(r)} |" for r in f3["per_layer"]]
    return "\n".join(lines).rstrip() + "\n"
