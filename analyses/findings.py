"""Do a run's records support the paper's claims F1-F3? Verdicts with their cells and CIs.

"Change" is the measure's dissimilarity: the RSA value itself, ``1 - CKA`` for CKA.
Each rule compares named cells of the record (layers, checkpoints, inner steps) and
returns a plain dict that says which cells it used, the effect with its CI, an outcome
per comparison, and a verdict:

``supported``
    every judged comparison clears its effect-size floor with its whole CI;
``not supported``
    some comparison is reversed with its whole CI (the record contradicts the claim);
``inconclusive``
    neither;
``not testable with this run``
    the record cannot answer (with the reason): no plateau, no checkpoints the right
    gap apart after it, too few independent tasks, missing inner steps.

Calibration. Every interval is a Student-t interval over independent units (tasks
whose characters are disjoint, :mod:`repscope.analyses.task_units`), each unit first
reduced to one value, the mean of its cells (checkpoints, checkpoint pairs), so cells
that share a unit never count as independent
(:func:`repscope.analyses.uncertainty.unit_values`; seeds slot in above tasks the same
way). At ``level`` 0.95 each bound errs
2.5%; a verdict that needs several comparisons to hold at once (every pair, every
layer) errs at most as often as one of them, so P(supported | claim false) <= 2.5%
for each verdict at any number of units >= :data:`~repscope.analyses.findings.MIN_UNITS`; the test suite shows it
on simulated null records.

The rules (``floor``: :data:`~repscope.analyses.findings.FLOOR`, a relative difference of 10%):

F1 (:func:`depth_order`, :func:`depth_order_test`)
    The conv layers (every layer but the head) are ordered by depth: for each adjacent
    pair, the deeper layer's inner-loop change exceeds ``(1 + floor)`` times the
    shallower one's, per task averaged over all checkpoints; every pair must hold and
    no checkpoint may show a pair reversed. The head is reported beside them, not in
    the statistic (its labels are task-specific, so it must change).
F2 (:func:`inner_vs_meta`, :func:`gap_test`, :func:`gap_curve`)
    After the plateau (:func:`repscope.analyses.plateau.find_plateau`), the inner loop
    changes a layer by more than ``(1 + floor)`` times the change of ``gap`` steps of
    meta-training. Inner change: per task, averaged over the later checkpoints of the
    pairs; meta change: one value per checkpoint pair, over pairs whose intervals do
    not overlap (:func:`repscope.analyses.plateau.disjoint_pairs`), at least 2. The two
    samples are independent; their difference gets the union-bound interval of
    :func:`repscope.analyses.uncertainty.difference_interval`. Reported over every gap
    the run allows after the plateau, with the verdict at the paper's 1000 steps, at
    1000/60000 of the run (scale-relative), and the smallest gap at which it reverses.
    The Figure-3 statement is the same curve on the early layers, read at 10000 steps
    and 10000/60000 of the run.
F3 (:func:`first_step`, :func:`first_step_test`)
    The later inner steps change a layer little against step 1:
    ``d(step 1, last) / d(step 0, step 1)`` (per task averaged over the last two thirds
    of the checkpoints) has its Fieller CI below :data:`~repscope.analyses.findings.F3_THRESHOLD` (0.5) in every
    layer; a CI above 1 contradicts it. Beside it, the share ``d(0, 1) / d(0, last)``.
    RSA distances do not add along a path, so the share is reported, not tested.

:func:`assess` runs every rule on a record; :func:`findings_markdown` writes the report.
"""
from __future__ import annotations

import json
from typing import Mapping, Sequence

import numpy as np
import xarray as xr

from . import figure_data as fd
from .errors import AnalysisError
from .plateau import (PAPER_RUN_STEPS, available_gaps, disjoint_pairs, find_plateau, gap_pairs,
                      scaled_gap)
from .task_units import independent_tasks
from .uncertainty import difference_interval, fieller_interval, t_interval, unit_values

__all__ = ["change", "depth_order", "depth_order_test", "supervised_depth_order", "inner_vs_meta",
           "gap_test", "gap_curve", "gap_curve_dataset", "first_step", "first_step_test", "assess", "findings_markdown",
           "MIN_UNITS", "FLOOR", "F3_THRESHOLD", "NOT_TESTABLE", "METHOD"]

#: Fewest independent units for a verdict (a t interval needs 2; with 3 it has 2 df).
MIN_UNITS = 3
#: Effect-size floor of F1 and F2; the larger change must exceed the smaller by 10% of it.
FLOOR = 0.10
#: F3 holds when d(1, last) / d(0, 1) lies below this with its whole CI; the later steps
#: together move a layer at most half as far as step 1. Were the steps alike (no
#: first-step dominance) the ratio would be about 4 for 5 steps and 9 for 10 on a
#: straight path; below 0.5, step 1 carries at least two thirds of such a path.
F3_THRESHOLD = 0.5
NOT_TESTABLE = "not testable with this run"
#: How the CIs are made (printed in findings.md).
METHOD = ("Student-t intervals over independent tasks, each task first averaged over its "
          "cells (checkpoints, checkpoint pairs); F2 adds disjoint checkpoint pairs as a second, "
          "independent sample (union-bound difference of two t intervals); F3's ratio by Fieller's method")
PAPER_META_GAP = 1000
PAPER_FIG3_GAP = 10000
PAPER_INNER_STEPS = 5


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


def _outcomes(supported, contradicted) -> np.ndarray:
    return np.where(supported, "supported", np.where(contradicted, "contradicted", "inconclusive"))


def _verdict(outcomes: Sequence[str]) -> str:
    if not outcomes or NOT_TESTABLE in outcomes:
        return NOT_TESTABLE
    if "contradicted" in outcomes:
        return "not supported"
    return "supported" if all(o == "supported" for o in outcomes) else "inconclusive"


def _ci(m, lo, hi, **extra) -> dict:
    return {"mean": float(m), "lower": float(lo), "upper": float(hi), **extra}


def _untestable(reason: str, **extra) -> dict:
    return {"verdict": NOT_TESTABLE, "reason": reason, **extra}


def _too_few(units: Sequence[int]) -> str | None:
    if len(units) < MIN_UNITS:
        return (f"only {len(units)} independent task(s) (need {MIN_UNITS} for a t interval); record "
                "more tasks over more held-out characters, or pass ci_unit='task' to treat "
                "overlapping tasks as independent")
    return None


# ----------------------------------------------------------------------------- F1

def depth_order_test(change, *, level: float = 0.95, floor: float = FLOOR) -> dict:
    """F1's decision on arrays: conv layers ordered by depth, adjacent pair by pair.

    Parameters
    ----------
    change : numpy.ndarray
        Shape (..., layer, checkpoint, unit).
        Inner-loop change of the conv layers in depth order (no head); leading axes
        are independent records.

    Returns
    -------
    dict
        ``pair`` (mean, lower, upper of ``deeper - (1 + floor) * shallower`` per unit
        averaged over checkpoints, shape (..., pair)), ``reversed`` (the plain
        difference's upper bound < 0, per pair), ``per_checkpoint`` (outcome strings
        (..., checkpoint)) and ``verdict`` (strings (...)).

    Examples
    --------
    >>> x = np.array([0.1, 0.2, 0.4])[:, None, None] * np.ones((3, 2, 5))
    >>> x = x + np.random.default_rng(0).normal(0, 0.01, x.shape)
    >>> str(depth_order_test(x)["verdict"])
    'supported'
    """
    x = np.asarray(change, dtype=float)
    if x.shape[-3] < 2:
        raise AnalysisError(f"F1 needs at least 2 conv layers; got {x.shape[-3]}")
    d = x[..., 1:, :, :] - (1 + floor) * x[..., :-1, :, :]        # (..., pair, checkpoint, unit)
    plain = x[..., 1:, :, :] - x[..., :-1, :, :]
    m, lo, hi = t_interval(d.mean(-2), level)
    rev = t_interval(plain.mean(-2), level)[2] < 0
    _, clo, _ = t_interval(d, level)
    crev = t_interval(plain, level)[2] < 0                        # (..., pair, checkpoint)
    per_ck = _outcomes((clo > 0).all(-2), crev.any(-2))
    ok = (lo > 0).all(-1) & ~crev.any((-2, -1))
    verdict = np.where(ok, "supported", np.where(rev.any(-1), "not supported", "inconclusive"))
    return {"pair": (m, lo, hi), "reversed": rev, "per_checkpoint": per_ck, "verdict": verdict}


def depth_order(after: xr.DataArray, units: Sequence[int], *, level: float = 0.95,
                floor: float = FLOOR) -> dict:
    """F1 on a meta-learning record: conv layers ordered by depth, the head beside them.

    Parameters
    ----------
    after : xarray.DataArray
        Change before vs after the inner loop, dims (layer, checkpoint, task), layers
        in network order, the head last.
    units : list of int
        Independent tasks (:func:`repscope.analyses.task_units.independent_tasks`).

    Returns
    -------
    dict
        ``conv`` (the ordered layers), ``head``, ``pairs`` (per adjacent pair: the
        layers, means and the CI of ``deeper - (1 + floor) * shallower``, outcome),
        ``per_checkpoint`` (layer means, head mean, outcome), ``verdict``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> vals = np.array([0.01, 0.1, 0.2, 0.4, 0.8])[:, None, None] + rng.uniform(0, .01, (5, 2, 6))
    >>> after = xr.DataArray(vals, dims=("layer", "checkpoint", "task"), coords={
    ...     "layer": ["conv1", "conv2", "conv3", "conv4", "head"], "checkpoint": [0, 100]})
    >>> depth_order(after, range(6))["verdict"]
    'supported'
    """
    layers = [str(x) for x in after["layer"].values]
    if len(layers) < 3:
        raise AnalysisError(f"F1 needs at least 2 conv layers and the head; got {layers}")
    conv, head = layers[:-1], layers[-1]
    units = [int(u) for u in units]
    ck = [int(c) for c in after["checkpoint"].values]
    out = {"conv": conv, "head": head, "layers": layers, "units": units, "checkpoints": ck,
           "floor": floor, "per_checkpoint": [], "pairs": []}
    if _too_few(units):
        return {**out, **_untestable(_too_few(units))}
    a = after.sel(task=units)
    if a.isnull().any():
        raise AnalysisError("Missing (NaN) cells among F1's compared values")
    x = a.sel(layer=conv).transpose("layer", "checkpoint", "task").values
    res = depth_order_test(x, level=level, floor=floor)
    m, lo, hi = res["pair"]
    per_layer = x.mean((1, 2))
    for k in range(len(conv) - 1):
        oc = "supported" if lo[k] > 0 else ("contradicted" if res["reversed"][k] else "inconclusive")
        out["pairs"].append({"shallow": conv[k], "deep": conv[k + 1], "shallow_mean": float(per_layer[k]),
                             "deep_mean": float(per_layer[k + 1]),
                             "deep_minus_floored": _ci(m[k], lo[k], hi[k]), "outcome": oc})
    hv = a.sel(layer=head).transpose("checkpoint", "task").values
    hm, hlo, hhi = t_interval(hv.mean(0), level)
    out["head_change"] = _ci(hm, hlo, hhi)
    for j, c in enumerate(ck):
        out["per_checkpoint"].append({"checkpoint": c, "layer_means": [float(v) for v in x[:, j].mean(-1)],
                                      "head_mean": float(hv[j].mean()), "outcome": str(res["per_checkpoint"][j])})
    out["verdict"] = str(res["verdict"])
    bad = [r["checkpoint"] for r in out["per_checkpoint"] if r["outcome"] == "contradicted"]
    if bad and out["verdict"] == "inconclusive":
        out["note"] = f"an adjacent pair is reversed at checkpoints {bad}"
    return out


def supervised_depth_order(curve: xr.DataArray) -> dict:
    """F1 in the supervised control: at each training step after the first, is change
    ordered by depth over the conv layers (every adjacent pair)? Descriptive: one
    network, so no CI; the head is reported beside.

    ``curve`` is one measure of :func:`repscope.analyses.figure_data.training_change`
    (layer, checkpoint), with its ``direction`` attr.

    Examples
    --------
    >>> c = xr.DataArray(np.array([[0, .01, .02], [0, .1, .3], [0, .5, .9]]), dims=("layer", "checkpoint"),
    ...                  coords={"layer": ["conv1", "conv4", "head"], "checkpoint": [0, 5, 10]},
    ...                  attrs={"direction": "dissimilarity"})
    >>> supervised_depth_order(c)["holds"]
    '2 of 2 steps'
    """
    layers = [str(x) for x in curve["layer"].values]
    if len(layers) < 3:
        raise AnalysisError(f"F1 needs at least 2 conv layers and the head; got {layers}")
    conv = layers[:-1]
    curve = change(curve).transpose("layer", "checkpoint").isel(checkpoint=slice(1, None))
    m = curve.sel(layer=conv).values
    ok = (np.diff(m, axis=0) > 0).all(0)
    return {"conv": conv, "head": layers[-1], "early": conv[0], "late": conv[-1],
            "checkpoints": [int(c) for c in curve["checkpoint"].values],
            "layer_means": [[float(v) for v in col] for col in m.T],
            "holds": f"{int(ok.sum())} of {ok.size} steps", "all_hold": bool(ok.all()) and ok.size > 0}


# ----------------------------------------------------------------------------- F2

def gap_test(inner, meta, *, level: float = 0.95, floor: float = FLOOR) -> dict:
    """F2's decision on arrays: inner-loop change against ``(1 + floor)`` x meta change.

    Parameters
    ----------
    inner : numpy.ndarray
        Shape (..., unit).
        Inner-loop change per independent task (averaged over its checkpoints).
    meta : numpy.ndarray
        Shape (..., block).
        Meta-training change per disjoint checkpoint pair (at least 2).

    Returns
    -------
    dict
        ``difference`` (mean, lower, upper of ``inner - (1 + floor) * meta``),
        ``reversed`` (the plain difference's upper bound < 0) and ``outcome`` strings.

    Examples
    --------
    >>> str(gap_test([0.30, 0.32, 0.28, 0.31], [0.05, 0.06, 0.05])["outcome"])
    'supported'
    """
    inner, meta = np.asarray(inner, dtype=float), np.asarray(meta, dtype=float)
    m, lo, hi = difference_interval(inner, (1 + floor) * meta, level)
    rev = difference_interval(inner, meta, level)[2] < 0
    return {"difference": (m, lo, hi), "reversed": rev, "outcome": _outcomes(lo > 0, rev)}


def inner_vs_meta(inner: xr.DataArray, meta: xr.DataArray, units: Sequence[int], *,
                  layers: Sequence[str] | None = None, level: float = 0.95, floor: float = FLOOR) -> dict:
    """F2 (and the Figure-3 statement) at one gap: inner-loop change against meta-training.

    Parameters
    ----------
    inner : xarray.DataArray
        Change before vs after the inner loop, dims (layer, checkpoint, task).
    meta : xarray.DataArray
        Change of the meta-initialised representation over checkpoint pairs of one gap,
        dims (layer, checkpoint, task) with the earlier checkpoint as coordinate
        ``previous`` (:func:`repscope.analyses.figure_data.meta_change` with ``pairs``).
        Only pairs whose intervals do not overlap are used (the first of overlapping
        ones, in order); the inner change is taken at their later checkpoints.
    units : list of int
    layers : list of str, optional
        Layers judged (default all).

    Examples
    --------
    >>> ck = [1000, 1050, 1100, 1150]
    >>> inner = xr.DataArray(0.3 + np.arange(24.0).reshape(2, 4, 3) / 1000, dims=("layer", "checkpoint", "task"),
    ...                      coords={"layer": ["conv1", "head"], "checkpoint": ck})
    >>> meta = xr.DataArray(0.1 + np.arange(18.0).reshape(2, 3, 3) / 1000, dims=("layer", "checkpoint", "task"),
    ...                     coords={"layer": ["conv1", "head"], "checkpoint": ck[1:],
    ...                             "previous": ("checkpoint", ck[:-1])})
    >>> r = inner_vs_meta(inner, meta, range(3))
    >>> r["verdict"], r["pairs"]
    ('supported', [[1000, 1050], [1050, 1100], [1100, 1150]])
    """
    units = [int(u) for u in units]
    all_pairs = [(int(a), int(b)) for a, b in zip(meta["previous"].values, meta["checkpoint"].values)]
    blocks = disjoint_pairs(all_pairs)
    layers = [str(x) for x in (meta["layer"].values if layers is None else layers)]
    out = {"pairs": [list(p) for p in blocks], "overlapping_pairs_left_out": [list(p) for p in all_pairs
                                                                            if p not in blocks],
           "layers": layers, "units": units, "floor": floor, "per_layer": []}
    if _too_few(units):
        return {**out, **_untestable(_too_few(units))}
    if len(blocks) < 2:
        return {**out, **_untestable(
            f"{len(blocks)} checkpoint pair(s) with disjoint intervals ({all_pairs}); meta-training's "
            "variation over the run needs at least 2")}
    later = [b for _, b in blocks]
    for layer in layers:
        i = unit_values(inner.sel(layer=layer, checkpoint=later, task=units, drop=True), "task").values
        mb = meta.sel(layer=layer, task=units, checkpoint=later).drop_vars("previous", errors="ignore")
        m = unit_values(mb, "checkpoint").values
        res = gap_test(i, m, level=level, floor=floor)
        d = res["difference"]
        out["per_layer"].append({"layer": layer, "inner": float(i.mean()), "meta": float(m.mean()),
                                 "inner_minus_floored_meta": _ci(*d), "outcome": str(res["outcome"])})
    out["verdict"] = _verdict([r["outcome"] for r in out["per_layer"]])
    return out


def gap_curve(ds: xr.Dataset, spec: dict, after: xr.DataArray, units: Sequence[int], start: int, *,
              layers: Sequence[str], level: float = 0.95, floor: float = FLOOR) -> list[dict]:
    """:func:`inner_vs_meta` at every gap between saved checkpoints at or after ``start``.

    Returns one dict per gap (ascending), as :func:`inner_vs_meta` returns, plus ``gap``.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(4, 3, 2, 6, 8))  # checkpoint, task, step, stimulus, unit
    >>> ds = xr.Dataset({"fc": (("checkpoint", "task", "inner_step", "stimulus", "unit_fc"), x,
    ...                         {"role": "layer"})},
    ...                 coords={"checkpoint": [0, 100, 200, 300], "task": range(3), "inner_step": [0, 1]},
    ...                 attrs={"layers": '["fc"]'})
    >>> after = change(fd.inner_loop_change(ds, ["rsa"], after=1)["rsa"])
    >>> rows = gap_curve(ds, {"rsa": {}}, after, range(3), 100, layers=["fc"])
    >>> [(r["gap"], r["pairs"]) for r in rows]
    [(100, [[100, 200], [200, 300]]), (200, [[100, 300]])]
    >>> rows[1]["verdict"]
    'not testable with this run'
    """
    rows = []
    for gap in available_gaps(ds["checkpoint"].values, start):
        pairs = gap_pairs(ds["checkpoint"].values, gap, start=start)
        meta = change(fd.meta_change(ds, spec, pairs=pairs, layers=layers)[next(iter(spec))])
        rows.append({"gap": int(gap), **inner_vs_meta(after, meta, units, layers=layers, level=level,
                                                      floor=floor)})
    return rows


def gap_curve_dataset(rows: Sequence[dict]) -> xr.Dataset:
    """The F2 curve of :func:`gap_curve` (or ``assess(...)["gap_curve"]``) as a Dataset.

    Returns
    -------
    xarray.Dataset
        Dims (gap, layer): ``inner``, ``meta``, ``difference`` (inner - (1 + floor) x
        meta) with ``lower`` and ``upper``, and ``outcome``; ``n_pairs`` (disjoint pairs
        per gap). Gaps that cannot be tested hold NaN and the outcome "not testable".

    Examples
    --------
    >>> row = {"gap": 40, "pairs": [[0, 40], [40, 80]], "per_layer": [
    ...     {"layer": "conv1", "inner": 0.3, "meta": 0.1, "outcome": "supported",
    ...      "inner_minus_floored_meta": {"mean": 0.19, "lower": 0.1, "upper": 0.28}}]}
    >>> ds = gap_curve_dataset([row, {"gap": 80, "pairs": [[0, 80]], "verdict": NOT_TESTABLE}])
    >>> ds["outcome"].values.tolist(), float(ds["lower"].sel(gap=40, layer="conv1"))
    ([['supported'], ['not testable']], 0.1)
    """
    layers = list(dict.fromkeys(r["layer"] for row in rows for r in row.get("per_layer", [])))
    gaps = [int(row["gap"]) for row in rows]
    shape = (len(gaps), len(layers))
    vals = {k: np.full(shape, np.nan) for k in ("inner", "meta", "difference", "lower", "upper")}
    outcome = np.full(shape, "not testable", dtype=object)
    for i, row in enumerate(rows):
        for r in row.get("per_layer", []):
            j = layers.index(r["layer"])
            d = r["inner_minus_floored_meta"]
            for k, v in (("inner", r["inner"]), ("meta", r["meta"]), ("difference", d["mean"]),
                         ("lower", d["lower"]), ("upper", d["upper"])):
                vals[k][i, j] = v
            outcome[i, j] = r["outcome"]
    dims = ("gap", "layer")
    return xr.Dataset({**{k: (dims, v) for k, v in vals.items()}, "outcome": (dims, outcome),
                       "n_pairs": ("gap", [len(row.get("pairs", [])) for row in rows])},
                      coords={"gap": gaps, "layer": layers})


def _restrict(row: dict, layers: Sequence[str]) -> dict:
    """A gap-curve row judged on a subset of its layers."""
    if "per_layer" not in row or row.get("verdict") == NOT_TESTABLE:
        return {**row, "layers": list(layers)}
    per = [r for r in row["per_layer"] if r["layer"] in layers]
    return {**row, "layers": list(layers), "per_layer": per, "verdict": _verdict([r["outcome"] for r in per])}


# ----------------------------------------------------------------------------- F3

def first_step_test(first, rest, *, level: float = 0.95, threshold: float = F3_THRESHOLD) -> dict:
    """F3's decision on arrays: ``d(1, last) / d(0, 1)`` below ``threshold``.

    Parameters
    ----------
    first, rest : numpy.ndarray
        Shape (..., unit).
        ``d(step 0, step 1)`` and ``d(step 1, last step)`` per independent task.

    Returns
    -------
    dict
        ``ratio`` (Fieller: ratio of means, lower, upper) and ``outcome`` strings:
        supported when the upper bound is below ``threshold``, contradicted when the
        lower bound is above 1 (the later steps moved the layer further than step 1).

    Examples
    --------
    >>> str(first_step_test([0.40, 0.42, 0.38, 0.41], [0.05, 0.06, 0.04, 0.05])["outcome"])
    'supported'
    """
    r, lo, hi = fieller_interval(rest, first, level)
    return {"ratio": (r, lo, hi), "outcome": _outcomes(hi < threshold, lo > 1)}


def first_step(first: xr.DataArray, rest: xr.DataArray, units: Sequence[int], *,
               total: xr.DataArray | None = None, level: float = 0.95,
               threshold: float = F3_THRESHOLD) -> dict:
    """F3 per layer, each task averaged over the given checkpoints.

    Parameters
    ----------
    first, rest : xarray.DataArray
        Change from step 0 to 1 and from step 1 to the last step, dims (layer,
        checkpoint, task), on the same checkpoints.
    units : list of int
    total : xarray.DataArray, optional
        Change from step 0 to the last step; gives the share ``d(0, 1) / d(0, last)``.

    Examples
    --------
    >>> dims, co = ("layer", "checkpoint", "task"), {"layer": ["conv1"], "checkpoint": [500]}
    >>> first = xr.DataArray(0.4 + np.arange(5.0).reshape(1, 1, 5) / 100, dims=dims, coords=co)
    >>> rest = xr.DataArray(0.05 + np.arange(5.0)[::-1].reshape(1, 1, 5) / 100, dims=dims, coords=co)
    >>> first_step(first, rest, range(5))["per_layer"][0]["outcome"]
    'supported'
    """
    units = [int(u) for u in units]
    ck = [int(c) for c in first["checkpoint"].values]
    out = {"checkpoints": ck, "units": units, "threshold": threshold, "per_layer": []}
    if _too_few(units):
        return {**out, **_untestable(_too_few(units))}
    for layer in first["layer"].values:
        a = unit_values(first.sel(layer=layer, task=units, drop=True), "task").values
        b = unit_values(rest.sel(layer=layer, checkpoint=ck, task=units, drop=True), "task").values
        res = first_step_test(a, b, level=level, threshold=threshold)
        row = {"layer": str(layer), "step_0_to_1": float(a.mean()), "step_1_to_last": float(b.mean()),
               "ratio": _ci(*res["ratio"]), "outcome": str(res["outcome"])}
        if total is not None:
            tot = unit_values(total.sel(layer=layer, checkpoint=ck, task=units, drop=True), "task").values
            row["share_after_step_1"] = _ci(*fieller_interval(a, tot, level))
        out["per_layer"].append(row)
    out["verdict"] = _verdict([r["outcome"] for r in out["per_layer"]])
    return out


# ----------------------------------------------------------------------------- a record

def _run_facts(ds: xr.Dataset) -> dict:
    try:
        run = json.loads(ds.attrs.get("config", "{}")).get("run", {})
    except ValueError:
        run = {}
    ck = ds["checkpoint"].values
    steps = run.get("steps")
    return {"meta_inner_steps": run.get("inner_steps"),
            "run_steps": int(steps) if steps is not None else int(ck.max()),
            "run_steps_source": "run config" if steps is not None else "last recorded checkpoint",
            "checkpoints": [int(c) for c in ck], "inner_steps_recorded": [int(s) for s in ds["inner_step"].values]}


def _late_checkpoints(ck: Sequence[int]) -> list[int]:
    """The last two thirds of the recorded checkpoints (the paper's Figure 3 reads 20k-60k)."""
    ck = sorted(int(c) for c in ck)
    return ck[int(np.floor(len(ck) / 3)):] if len(ck) > 2 else ck


def _at_gap(curve: list[dict], gap: int, layers, plateau: dict, label: str, ck, scaled_from=None) -> dict:
    base = {"gap": int(gap), "label": label, "plateau_start": plateau.get("start")}
    if scaled_from is not None:
        base["scaled_from"] = scaled_from
    if plateau.get("start") is None:
        return _untestable(f"no plateau: {plateau.get('reason')}", **base)
    row = next((r for r in curve if r["gap"] == gap), None)
    if row is None:
        after_start = [int(c) for c in ck if c >= plateau["start"]]
        return _untestable(f"no two saved checkpoints exactly {gap} steps apart at or after the "
                           f"plateau start {plateau['start']} (checkpoints there: {after_start})", **base)
    return {**_restrict(row, layers), **base}


def _reverses_at(curve: list[dict], layers) -> int | None:
    for row in curve:
        if any(r["outcome"] == "contradicted" for r in _restrict(row, layers).get("per_layer", [])):
            return int(row["gap"])
    return None


def assess(ds: xr.Dataset, measure: str = "rsa", options: Mapping | None = None, *,
           meta_gap: int = PAPER_META_GAP, fig3_gap: int = PAPER_FIG3_GAP,
           inner_step: int | None = None, ci_unit: str = "disjoint",
           early_layers: Sequence[str] | None = None, inner: xr.DataArray | None = None,
           supervised: xr.DataArray | None = None, level: float = 0.95, floor: float = FLOOR,
           f3_threshold: float = F3_THRESHOLD, tolerance: float | None = None) -> dict:
    """Every rule on one meta-learning record, with one measure.

    Parameters
    ----------
    ds : xarray.Dataset
        Activation record (checkpoint, task, inner_step, ...) with accuracy metrics.
    measure, options : str, dict
        A measure of :data:`repscope.analyses.MEASURES` and its options.
    meta_gap, fig3_gap : int
        Meta-training gaps of F2 (the paper: 1000) and of the Figure-3 statement
        (10000); each is also read scaled to the run (``gap * run_steps / 60000``).
    inner_step : int, optional
        "After the inner loop" for F1 and F2; default the number of inner steps the run
        was meta-trained with when recorded, else the last recorded step.
    ci_unit : {"disjoint", "task"}
        Independent units of the CIs (:func:`repscope.analyses.task_units.independent_tasks`).
    early_layers : list of str, optional
        Layers of the Figure-3 statement (default the first half of the layers before
        the head).
    inner : xarray.DataArray, optional
        This measure of :func:`repscope.analyses.figure_data.inner_loop_change` with
        ``after="all"`` (figure 1a), reused instead of recomputed.
    supervised : xarray.DataArray, optional
        This measure of :func:`repscope.analyses.figure_data.training_change` of the
        supervised control.
    level, floor, f3_threshold, tolerance
        CI coverage (0.95: each verdict errs at most 2.5%), :data:`~repscope.analyses.findings.FLOOR`,
        :data:`~repscope.analyses.findings.F3_THRESHOLD`, and the plateau's tolerance
        (:func:`repscope.analyses.plateau.find_plateau`).

    Returns
    -------
    dict
        ``measure``, ``facts``, ``units``, ``plateau``, ``f1``, ``f2``, ``f2_scaled``,
        ``fig3``, ``fig3_scaled``, ``f3`` (dicts as returned by the rules, plus the
        cells used), ``gap_curve`` (F2 at every gap after the plateau, all layers; as a
        Dataset with :func:`gap_curve_dataset`) and
        ``f2_reverses_at``, ``fig3_reverses_at`` (smallest reversed gap, or None).

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(2, 5, 2, 6, 8))  # checkpoint, task, step, stimulus, unit
    >>> ds = xr.Dataset({n: (("checkpoint", "task", "inner_step", "stimulus", f"unit_{n}"), x, {"role": "layer"})
    ...                  for n in ("conv1", "conv2", "head")},
    ...                 coords={"checkpoint": [0, 100], "task": range(5), "inner_step": [0, 1]},
    ...                 attrs={"layers": '["conv1", "conv2", "head"]'})
    >>> r = assess(ds, "rsa")
    >>> r["f2"]["verdict"], r["f2"]["reason"][:60]
    ('not testable with this run', 'no plateau: The record holds neither eval_accuracy nor accur')
    >>> r["units"]["description"]
    'all 5 analysed tasks, treated as independent: the record does not say which characters its tasks use'
    >>> print(findings_markdown(r).splitlines()[0])
    # Findings
    """
    spec = {measure: dict(options or {})}
    facts = _run_facts(ds)
    steps = facts["inner_steps_recorded"]
    if inner_step is None:
        trained = facts["meta_inner_steps"]
        inner_step = int(trained) if trained is not None and int(trained) in steps and int(trained) > 0 \
            else steps[-1]
    elif inner_step not in steps or inner_step == 0:
        raise AnalysisError(f"inner_step {inner_step} is not a recorded step after 0; recorded: {steps}")
    facts["inner_step"] = inner_step
    units, unit_text = independent_tasks(ds, ci_unit)
    out = {"measure": measure, "options": {k: str(v) for k, v in spec[measure].items()},
           "facts": facts, "units": {"tasks": units, "description": unit_text, "ci_unit": ci_unit},
           "level": level, "floor": floor, "f3_threshold": f3_threshold, "method": METHOD,
           "plateau": {"start": None, "reason": "not looked for"}, "gap_curve": [],
           "f2_reverses_at": None, "fig3_reverses_at": None}
    if inner_step == 0:
        why = f"no inner step after 0 is recorded (recorded: {steps})"
        return {**out, "f1": _untestable(why), "f3": _untestable(why, meta_inner_steps=facts["meta_inner_steps"],
                                                                 paper_inner_steps=PAPER_INNER_STEPS),
                **{k: _untestable(why, gap=0, label=k) for k in ("f2", "f2_scaled", "fig3", "fig3_scaled")}}
    layers = fd.layer_names(ds)
    if inner is None or "inner_step" not in inner.dims:
        inner = fd.inner_loop_change(ds, spec, after="all")[measure]
    ch = change(inner)
    after = ch.sel(inner_step=inner_step, drop=True)
    kw = dict(level=level, floor=floor)
    out["f1"] = depth_order(after, units, **kw) if len(layers) >= 3 else _untestable(
        f"F1 needs at least 2 conv layers and the head; the record has {layers}")
    if supervised is not None:
        out["f1"]["supervised"] = supervised_depth_order(supervised)
    try:
        plateau = find_plateau(ds, tolerance=tolerance, level=level)
    except AnalysisError as err:
        plateau = {"start": None, "reason": str(err)}
    out["plateau"] = plateau
    body = layers[:-1] if len(layers) > 1 else layers
    early = list(early_layers) if early_layers is not None else body[:max(1, len(body) // 2)]
    ck = ds["checkpoint"].values
    curve = []
    if plateau.get("start") is not None and not _too_few(units):
        curve = gap_curve(ds, spec, after, units, plateau["start"], layers=layers, **kw)
    out["gap_curve"] = curve
    run = facts["run_steps"]
    for key, gap, judged in (("f2", meta_gap, layers), ("fig3", fig3_gap, early)):
        out[key] = _at_gap(curve, gap, judged, plateau, "exact", ck)
        g = scaled_gap(gap, run)
        out[key + "_scaled"] = _at_gap(curve, g, judged, plateau,
                                       f"scale-relative: {gap}/{PAPER_RUN_STEPS} of this run's {run} steps",
                                       ck, scaled_from=gap)
        if _too_few(units) and plateau.get("start") is not None:
            for k in (key, key + "_scaled"):
                out[k] = _untestable(_too_few(units), **{x: out[k][x] for x in ("gap", "label")})
        out[key + "_reverses_at"] = _reverses_at(curve, judged)
    out["fig3_layers"] = early
    out["f3"] = _f3(ds, spec, ch, units, facts, level=level, threshold=f3_threshold)
    return out


def _f3(ds, spec, ch, units, facts, **kw) -> dict:
    steps = facts["inner_steps_recorded"]
    trained = facts["meta_inner_steps"]
    note = {"meta_inner_steps": trained, "paper_inner_steps": PAPER_INNER_STEPS}
    if 0 not in steps or 1 not in steps or steps[-1] <= 1:
        return _untestable(f"needs inner steps 0, 1 and a later one; recorded {steps}", **note)
    last = steps[-1]
    ck = _late_checkpoints(ds["checkpoint"].values)
    first = ch.sel(inner_step=1, checkpoint=ck, drop=True)
    total = ch.sel(inner_step=last, checkpoint=ck, drop=True)
    rest = change(fd.inner_loop_change(ds.sel(checkpoint=ck), spec, before=1, after=last)[next(iter(spec))])
    return {**note, "last_step": int(last), **first_step(first, rest, units, total=total, **kw)}


# ----------------------------------------------------------------------------- report

def _trained(k) -> str:
    return "an unrecorded number of" if k is None else str(k)


def _fmt(ci: dict) -> str:
    if not np.isfinite(ci["lower"]) and not np.isfinite(ci["upper"]) and np.isnan(ci["lower"]):
        return f"{ci['mean']:.4g} (no CI)"
    return f"{ci['mean']:.4g} [{ci['lower']:.4g}, {ci['upper']:.4g}]"


def _gap_section(title: str, r: dict, facts: dict, measure: str, floor: float) -> list[str]:
    lines = [f"### {title} ({r['label']}, gap {r['gap']} steps): **{r['verdict']}**", ""]
    if r["verdict"] == NOT_TESTABLE:
        return lines + [f"Not testable: {r['reason']}.", ""]
    pairs = ", ".join(f"{a}->{b}" for a, b in r["pairs"])
    left = r.get("overlapping_pairs_left_out") or []
    lines += [f"Cells: layers {', '.join(r['layers'])}; tasks {r['units']}; inner change = `{measure}` "
              f"between inner step 0 and {facts['inner_step']} at each later checkpoint; meta change = "
              f"`{measure}` between the inner-step-0 representations of checkpoint pairs {pairs}"
              + (f" (overlapping pairs left out: {', '.join(f'{a}->{b}' for a, b in left)})" if left else "")
              + f"; supported where inner - {1 + floor:g} x meta > 0.", "",
              f"| layer | inner loop | meta-training | inner - {1 + floor:g} x meta (CI) | outcome |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {x['layer']} | {x['inner']:.4g} | {x['meta']:.4g} | {_fmt(x['inner_minus_floored_meta'])} | "
              f"{x['outcome']} |" for x in r["per_layer"]]
    return lines + [""]


def _curve_section(result: dict) -> list[str]:
    curve = result.get("gap_curve") or []
    if not curve:
        return []
    layers = curve[0]["layers"]
    lines = ["### Over every gap after the plateau", "",
             "Inner - " + f"{1 + result['floor']:g}" + " x meta per layer (mean [CI]), one row per gap "
             "between saved checkpoints after the plateau.", "",
             "| gap | disjoint pairs | " + " | ".join(layers) + " | verdict |",
             "| --- | --- | " + " | ".join("---" for _ in layers) + " | --- |"]
    for row in curve:
        cells = {r["layer"]: f"{_fmt(r['inner_minus_floored_meta'])} {r['outcome']}" for r in row.get("per_layer", [])}
        lines.append(f"| {row['gap']} | {len(row['pairs'])} | "
                     + " | ".join(cells.get(l, "-") for l in layers) + f" | {row['verdict']} |")
    for key, name in (("f2_reverses_at", "F2 (all layers)"), ("fig3_reverses_at", "The Figure-3 statement")):
        at = result.get(key)
        lines += ["", f"{name}: " + (f"reverses (meta change larger with its whole CI) from a gap of {at} steps."
                                     if at is not None else "reversed at no gap.")]
    return lines + [""]


def findings_markdown(result: dict, *, title: str = "Findings") -> str:
    """A markdown report of :func:`assess`: each verdict with its cells and CI.

    Examples
    --------
    >>> res = {"measure": "rsa", "level": 0.95, "units": {"description": "5 tasks"},
    ...        "facts": {"meta_inner_steps": 5, "inner_step": 5, "run_steps": 3000,
    ...                  "run_steps_source": "run config", "checkpoints": [0, 3000]},
    ...        "plateau": {"start": None, "reason": "still rising", "curve": []},
    ...        "f1": {"verdict": "not testable with this run", "reason": "too few tasks"}}
    >>> print(findings_markdown(res).splitlines()[0])
    # Findings
    """
    m, facts, pct = result["measure"], result["facts"], int(round(result["level"] * 100))
    floor = result.get("floor", FLOOR)
    err = (1 - result["level"]) / 2
    change_text = "dissimilarity" if m == "rsa" else "1 - similarity"
    lines = [f"# {title}", "",
             f"Measure `{m}`{' ' + json.dumps(result['options']) if result.get('options') else ''} "
             f"(change = {change_text}). Run: "
             f"{facts['run_steps']} meta-steps ({facts['run_steps_source']}), meta-trained with "
             f"{_trained(facts['meta_inner_steps'])} inner steps (the paper: {PAPER_INNER_STEPS}); \"after the inner loop\" = inner step "
             f"{facts['inner_step']}.", "",
             f"CIs: {pct}% {result.get('method', METHOD)}. Each verdict says \"supported\" for a false "
             f"claim at most {err:.1%} of the time. Effect-size floor: a larger change must exceed the "
             f"smaller by {floor:.0%} of it (F1, F2); F3 needs d(1, last) / d(0, 1) below "
             f"{result.get('f3_threshold', F3_THRESHOLD):g}. Independent tasks: {result['units']['description']}.", ""]
    p = result["plateau"]
    curve = ", ".join(f"{c}: {v:.3f}" for c, v in p.get("curve", []))
    if p.get("start") is None:
        lines += [f"Plateau: none found ({p.get('reason')}).", ""]
    else:
        lines += [f"Plateau: from checkpoint {p['start']} (level {p['level']:.3f}; rise over the rest of "
                  f"the run {p['rise']:+.3f} [{p['rise_ci'][0]:+.3f}, {p['rise_ci'][1]:+.3f}], step into it "
                  f"[{p['step_ci'][0]:+.3f}, {p['step_ci'][1]:+.3f}], both inside +-{p['tolerance']:.3f}; "
                  f"{p['source']}).", ""]
    if curve:
        lines += [f"Accuracy per checkpoint: {curve}.", ""]
    f1 = result["f1"]
    lines += [f"## F1: early layers change less than late layers: **{f1['verdict']}**", ""]
    if f1["verdict"] == NOT_TESTABLE:
        lines += [f"Not testable: {f1['reason']}.", ""]
    else:
        lines += [f"Cells: conv layers {', '.join(f1['conv'])} (adjacent pairs; the head `{f1['head']}` "
                  f"beside them, not in the test); change between inner step 0 and {facts['inner_step']}; "
                  f"tasks {f1['units']}, each averaged over checkpoints {f1['checkpoints']}; supported where "
                  f"deeper - {1 + floor:g} x shallower > 0 for every pair and no checkpoint reverses a pair.", "",
                  f"| pair | shallower | deeper | deeper - {1 + floor:g} x shallower (CI) | outcome |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['shallow']} < {r['deep']} | {r['shallow_mean']:.4g} | {r['deep_mean']:.4g} | "
                  f"{_fmt(r['deep_minus_floored'])} | {r['outcome']} |" for r in f1["pairs"]]
        lines += ["", f"Head `{f1['head']}` (beside): change {_fmt(f1['head_change'])}.", "",
                  "| checkpoint | " + " | ".join(f1["conv"]) + f" | {f1['head']} | outcome |",
                  "| --- | " + " | ".join("---" for _ in f1["conv"]) + " | --- | --- |"]
        lines += [f"| {r['checkpoint']} | " + " | ".join(f"{v:.4g}" for v in r["layer_means"])
                  + f" | {r['head_mean']:.4g} | {r['outcome']} |" for r in f1["per_checkpoint"]]
        if f1.get("note"):
            lines += ["", f"Note: {f1['note']}."]
        lines += [""]
    if "supervised" in f1:
        s = f1["supervised"]
        lines += [f"Supervised MNIST control (descriptive, one network, no CI): conv layers "
                  f"{', '.join(s['conv'])} ordered by depth at {s['holds']} after step 0.", ""]
    gap = result.get("f2", {}).get("gap") or PAPER_META_GAP
    lines += [f"## F2: the inner loop changes more than {gap} meta-training steps", ""]
    for key, name in (("f2", "F2"), ("f2_scaled", "F2"), ("fig3", "Figure-3 statement (early layers)"),
                      ("fig3_scaled", "Figure-3 statement (early layers)")):
        if key in result:
            lines += _gap_section(name, result[key], facts, m, floor)
    lines += _curve_section(result)
    f3 = result.get("f3")
    if f3:
        lines += [f"## F3: most of the inner-loop change happens in step 1: **{f3['verdict']}**", "",
                  f"Meta-trained with {_trained(f3['meta_inner_steps'])} inner steps; the paper's claim "
                  f"is about {f3['paper_inner_steps']}.", ""]
        if f3["verdict"] == NOT_TESTABLE:
            lines += [f"Not testable: {f3['reason']}.", ""]
        else:
            last = f3["last_step"]
            lines += [f"Cells: checkpoints {f3['checkpoints']} (last two thirds, as the paper's "
                      f"Figure 3); tasks {f3['units']}; `{m}` between inner steps 0 and 1, and between 1 and "
                      f"{last}; supported where the CI of d(1,{last}) / d(0,1) lies below {f3['threshold']:g}, "
                      f"contradicted where it lies above 1. The share d(0,1) / d(0,{last}) is descriptive.", "",
                      f"| layer | d(0,1) | d(1,{last}) | d(1,{last}) / d(0,1) (CI) | d(0,1) / d(0,{last}) (CI) | outcome |",
                      "| --- | --- | --- | --- | --- | --- |"]
            lines += [f"| {r['layer']} | {r['step_0_to_1']:.4g} | {r['step_1_to_last']:.4g} | "
                      f"{_fmt(r['ratio'])} | {_fmt(r['share_after_step_1']) if 'share_after_step_1' in r else '-'} | "
                      f"{r['outcome']} |" for r in f3["per_layer"]]
    return "\n".join(lines).rstrip() + "\n"
