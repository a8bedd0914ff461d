"""Do a run's records support the paper's claims F1-F3? Verdicts with their cells and CIs.

"Change" is the measure's dissimilarity: the RSA value itself, ``1 - CKA`` for CKA.
Each rule compares named cells of the record (layers, checkpoints, inner steps) and
returns a plain dict that says which cells it used, the effect with a percentile
bootstrap CI, an outcome per layer or checkpoint, and a verdict:

``supported``
    every judged CI lies on the claimed side of 0;
``not supported``
    some CI lies on the other side (the record contradicts the claim there);
``inconclusive``
    neither: some CI includes 0;
``not testable with this run``
    the record cannot answer (with the reason): no checkpoints the right gap apart
    after the plateau, too few independent tasks, missing inner steps.

The rules:

F1 (:func:`depth_order`)
    Early layers change less in the inner loop than late layers, at every checkpoint:
    per checkpoint the Spearman correlation of change with depth over all layers and
    the difference last conv layer minus first layer, both with CIs over tasks (the
    head must change, its labels are task-specific, so head vs conv1 is no test).
F2 (:func:`inner_vs_meta`)
    After the plateau (:func:`repscope.analyses.plateau.find_plateau`), the inner loop
    changes each layer more than ``gap`` steps of meta-training: inner change at
    checkpoint ``b`` minus the change of the meta-initialised representation from
    ``b - gap`` to ``b``, over every pair of saved checkpoints exactly ``gap`` apart in
    the plateau. Reported at the paper's 1000 steps and, labelled scale-relative, at
    1000/60000 of the run. The same rule at 10000 steps (and 10000/60000) on the
    early layers is the paper's Figure-3 statement.
F3 (:func:`first_step`)
    Most of the inner-loop change happens in step 1: ``d(step 0, step 1) - d(step 1,
    last step)`` per layer (RSA distances do not add along a path, so a ratio of
    distances from step 0 would not show it).

Independent tasks: see :mod:`repscope.analyses.task_units`. :func:`assess` runs every
rule on a record; :func:`findings_markdown` writes the report.
"""
from __future__ import annotations

import json
from typing import Mapping, Sequence

import numpy as np
import xarray as xr
from scipy.stats import rankdata

from repscope.analyses import figure_data as fd
from repscope.analyses.errors import AnalysisError
from repscope.analyses.plateau import PAPER_RUN_STEPS, find_plateau, gap_pairs, scaled_gap
from repscope.analyses.task_units import independent_tasks

__all__ = ["change", "depth_order", "supervised_depth_order", "inner_vs_meta", "first_step",
           "assess", "findings_markdown", "MIN_UNITS", "NOT_TESTABLE"]

#: Fewest independent tasks for a CI (with fewer, a percentile bootstrap cannot reach 95%).
MIN_UNITS = 5
NOT_TESTABLE = "not testable with this run"
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


def _resample(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``values`` (pair, unit) over bootstrap resamples of units and pairs."""
    n_p, n_u = values.shape
    rng = np.random.default_rng(seed)
    iu = rng.integers(0, n_u, size=(n_boot, n_u))
    ip = rng.integers(0, n_p, size=(n_boot, n_p)) if n_p > 1 else np.zeros((n_boot, 1), int)
    return values[ip[:, :, None], iu[:, None, :]].mean(axis=(1, 2))


def _interval(point: float, boots: np.ndarray | None, level: float, n_units: int, n_pairs: int) -> dict:
    if boots is None:
        lo = hi = float("nan")
    else:
        lo, hi = (float(v) for v in np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]))
    return {"mean": float(point), "lower": lo, "upper": hi, "n_units": n_units, "n_pairs": n_pairs}


def _ci(values: np.ndarray, n_boot: int, seed: int, level: float) -> dict:
    """Mean of ``values`` (pair, unit) with a percentile CI resampling units (and pairs)."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    if not np.isfinite(values).all():
        raise AnalysisError(f"Missing (NaN) cells among the compared values, shape {values.shape}")
    n_p, n_u = values.shape
    boots = _resample(values, n_boot, seed) if n_u >= MIN_UNITS else None
    return _interval(values.mean(), boots, level, n_u, n_p)


def _outcome(ci: dict) -> str:
    if np.isnan(ci["lower"]):
        return NOT_TESTABLE
    return "supported" if ci["lower"] > 0 else ("contradicted" if ci["upper"] < 0 else "inconclusive")


def _verdict(outcomes: Sequence[str]) -> str:
    if not outcomes or NOT_TESTABLE in outcomes:
        return NOT_TESTABLE
    if "contradicted" in outcomes:
        return "not supported"
    return "supported" if all(o == "supported" for o in outcomes) else "inconclusive"


def _untestable(reason: str, **extra) -> dict:
    return {"verdict": NOT_TESTABLE, "reason": reason, **extra}


def _too_few(units: Sequence[int]) -> str | None:
    if len(units) < MIN_UNITS:
        return (f"only {len(units)} independent task(s) (need {MIN_UNITS} for a 95% CI); record "
                "more tasks over more held-out characters, or pass ci_unit='task' to treat "
                "overlapping tasks as independent")
    return None


def _spearman_rows(x: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of ``x`` with its column index (depth)."""
    r = rankdata(x, axis=-1)
    d = np.arange(x.shape[-1], dtype=float)
    r = r - r.mean(axis=-1, keepdims=True)
    d = d - d.mean()
    den = np.sqrt((r ** 2).sum(-1) * (d ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (r * d).sum(-1) / np.where(den > 0, den, 1), 0.0)


def _early_late(layers: Sequence[str]) -> tuple[str, str]:
    """First layer and last layer before the head (the last layer when only two)."""
    if len(layers) < 2:
        raise AnalysisError(f"F1 needs at least 2 layers; got {list(layers)}")
    return layers[0], (layers[-2] if len(layers) >= 3 else layers[-1])


def depth_order(after: xr.DataArray, units: Sequence[int], *, n_boot: int = 2000, seed: int = 0,
                level: float = 0.95) -> dict:
    """F1 on a meta-learning record: change ordered by depth at every checkpoint.

    Parameters
    ----------
    after : xarray.DataArray
        Change before vs after the inner loop, dims (layer, checkpoint, task), layers
        in network order.
    units : list of int
        Independent tasks (:func:`repscope.analyses.task_units.independent_tasks`).

    Returns
    -------
    dict
        ``early``, ``late`` (the layers whose difference is tested), ``per_checkpoint``
        rows with ``late_minus_early`` and ``rho`` (Spearman of change with depth over
        all layers) CIs and the ``outcome``, and the ``verdict``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> vals = np.array([0.01, 0.1, 0.2, 0.4, 0.8])[:, None, None] + rng.uniform(0, .01, (5, 2, 6))
    >>> after = xr.DataArray(vals, dims=("layer", "checkpoint", "task"), coords={
    ...     "layer": ["conv1", "conv2", "conv3", "conv4", "head"], "checkpoint": [0, 100]})
    >>> depth_order(after, range(6), n_boot=200)["verdict"]
    'supported'
    """
    layers = [str(x) for x in after["layer"].values]
    early, late = _early_late(layers)
    units = [int(u) for u in units]
    out = {"early": early, "late": late, "layers": layers, "units": units, "per_checkpoint": []}
    if _too_few(units):
        return {**out, **_untestable(_too_few(units))}
    rng_seed = seed
    for c in after["checkpoint"].values:
        m = after.sel(checkpoint=c, task=units).transpose("layer", "task").values
        diff = _ci((m[layers.index(late)] - m[layers.index(early)])[None], n_boot, rng_seed, level)
        idx = np.random.default_rng(rng_seed).integers(0, len(units), size=(n_boot, len(units)))
        boot_means = m[:, idx].mean(axis=2).T  # (n_boot, layer)
        rho = _interval(_spearman_rows(m.mean(axis=1)[None])[0], _spearman_rows(boot_means), level,
                        len(units), 1)
        oc = [_outcome(diff), _outcome(rho)]
        outcome = "contradicted" if "contradicted" in oc else (
            "supported" if oc == ["supported", "supported"] else "inconclusive")
        out["per_checkpoint"].append({"checkpoint": int(c), "late_minus_early": diff, "rho": rho,
                                      "layer_means": [float(v) for v in m.mean(axis=1)],
                                      "outcome": outcome})
    out["verdict"] = _verdict([r["outcome"] for r in out["per_checkpoint"]])
    return out


def supervised_depth_order(curve: xr.DataArray) -> dict:
    """F1 in the supervised control: at each training step after the first, is change
    ordered by depth? Descriptive: one network, so no CI.

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
    early, late = _early_late(layers)
    curve = change(curve).transpose("layer", "checkpoint").isel(checkpoint=slice(1, None))
    m = curve.values
    rho = _spearman_rows(m.T)
    diff = m[layers.index(late)] - m[layers.index(early)]
    ok = (rho > 0) & (diff > 0)
    return {"early": early, "late": late, "checkpoints": [int(c) for c in curve["checkpoint"].values],
            "rho": [float(v) for v in rho], "late_minus_early": [float(v) for v in diff],
            "holds": f"{int(ok.sum())} of {ok.size} steps", "all_hold": bool(ok.all()) and ok.size > 0}


def inner_vs_meta(inner: xr.DataArray, meta: xr.DataArray, units: Sequence[int], *,
                  layers: Sequence[str] | None = None, n_boot: int = 2000, seed: int = 0,
                  level: float = 0.95) -> dict:
    """F2 (and the Figure-3 statement): inner-loop change minus meta-training change.

    Parameters
    ----------
    inner : xarray.DataArray
        Change before vs after the inner loop, dims (layer, checkpoint, task).
    meta : xarray.DataArray
        Change of the meta-initialised representation over checkpoint pairs, dims
        (layer, checkpoint, task) with the earlier checkpoint as coordinate
        ``previous`` (:func:`repscope.analyses.figure_data.meta_change` with ``pairs``).
        Only these pairs are compared; the inner change is taken at each later
        checkpoint.
    units : list of int
    layers : list of str, optional
        Layers judged (default all).

    Examples
    --------
    >>> ck = [1000, 1050]
    >>> inner = xr.DataArray(np.full((2, 2, 6), 0.3), dims=("layer", "checkpoint", "task"),
    ...                      coords={"layer": ["conv1", "head"], "checkpoint": ck})
    >>> meta = xr.DataArray(np.full((2, 1, 6), 0.1), dims=("layer", "checkpoint", "task"),
    ...                     coords={"layer": ["conv1", "head"], "checkpoint": [1050],
    ...                             "previous": ("checkpoint", [1000])})
    >>> r = inner_vs_meta(inner, meta, range(6), n_boot=100)
    >>> r["verdict"], r["pairs"]
    ('supported', [[1000, 1050]])
    """
    units = [int(u) for u in units]
    pairs = [[int(a), int(b)] for a, b in zip(meta["previous"].values, meta["checkpoint"].values)]
    layers = [str(x) for x in (meta["layer"].values if layers is None else layers)]
    out = {"pairs": pairs, "layers": layers, "units": units, "per_layer": []}
    if _too_few(units):
        return {**out, **_untestable(_too_few(units))}
    later = [b for _, b in pairs]
    for layer in layers:
        i = inner.sel(layer=layer, checkpoint=later, task=units).transpose("checkpoint", "task").values
        m = meta.sel(layer=layer, task=units).transpose("checkpoint", "task").values
        ci = _ci(i - m, n_boot, seed, level)
        out["per_layer"].append({"layer": layer, "inner": float(i.mean()), "meta": float(m.mean()),
                                 "inner_minus_meta": ci, "outcome": _outcome(ci)})
    out["verdict"] = _verdict([r["outcome"] for r in out["per_layer"]])
    return out


def first_step(first: xr.DataArray, rest: xr.DataArray, units: Sequence[int], *,
               n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """F3: ``d(step 0, step 1) - d(step 1, last step)`` per layer, pooled over checkpoints.

    Parameters
    ----------
    first, rest : xarray.DataArray
        Change from step 0 to 1 and from step 1 to the last step, dims (layer,
        checkpoint, task), on the same checkpoints.
    units : list of int

    Examples
    --------
    >>> dims, co = ("layer", "checkpoint", "task"), {"layer": ["conv1"], "checkpoint": [500]}
    >>> first = xr.DataArray(np.full((1, 1, 5), 0.4), dims=dims, coords=co)
    >>> rest = xr.DataArray(np.full((1, 1, 5), 0.05), dims=dims, coords=co)
    >>> first_step(first, rest, range(5), n_boot=100)["per_layer"][0]["outcome"]
    'supported'
    """
    units = [int(u) for u in units]
    out = {"checkpoints": [int(c) for c in first["checkpoint"].values], "units": units, "per_layer": []}
    if _too_few(units):
        return {**out, **_untestable(_too_few(units))}
    for layer in first["layer"].values:
        a = first.sel(layer=layer, task=units).transpose("checkpoint", "task").values
        b = rest.sel(layer=layer, checkpoint=first["checkpoint"].values, task=units).transpose(
            "checkpoint", "task").values
        ci = _ci(a - b, n_boot, seed, level)
        out["per_layer"].append({"layer": str(layer), "step_0_to_1": float(a.mean()),
                                 "step_1_to_last": float(b.mean()), "difference": ci,
                                 "outcome": _outcome(ci)})
    out["verdict"] = _verdict([r["outcome"] for r in out["per_layer"]])
    return out


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


def _gap_test(ds, spec, after, units, gap, plateau, label, layers, n_boot, seed, level, scaled_from=None):
    base = {"gap": int(gap), "label": label, "plateau_start": plateau.get("start")}
    if scaled_from is not None:
        base["scaled_from"] = scaled_from
    if plateau.get("start") is None:
        return _untestable(f"no plateau: {plateau.get('reason')}", **base)
    pairs = gap_pairs(ds["checkpoint"].values, gap, start=plateau["start"])
    if not pairs:
        after_start = [int(c) for c in ds["checkpoint"].values if c >= plateau["start"]]
        return _untestable(f"no two saved checkpoints exactly {gap} steps apart at or after the "
                           f"plateau start {plateau['start']} (checkpoints there: {after_start})", **base)
    meta = change(fd.meta_change(ds, spec, pairs=pairs, layers=layers)[next(iter(spec))])
    res = inner_vs_meta(after, meta, units, layers=layers, n_boot=n_boot, seed=seed, level=level)
    return {**base, **res}


def assess(ds: xr.Dataset, measure: str = "rsa", options: Mapping | None = None, *,
           meta_gap: int = PAPER_META_GAP, fig3_gap: int = PAPER_FIG3_GAP,
           inner_step: int | None = None, ci_unit: str = "disjoint",
           early_layers: Sequence[str] | None = None, inner: xr.DataArray | None = None,
           supervised: xr.DataArray | None = None, n_boot: int = 2000, seed: int = 0,
           level: float = 0.95) -> dict:
    """Every rule on one meta-learning record, with one measure.

    Parameters
    ----------
    ds : xarray.Dataset
        Activation record (checkpoint, task, inner_step, ...) with accuracy metrics.
    measure, options : str, dict
        A measure of :data:`repscope.analyses.MEASURES` and its options.
    meta_gap, fig3_gap : int
        Meta-training gaps of F2 (the paper: 1000) and of the Figure-3 statement
        (10000); each is also tested scaled to the run (``gap * run_steps / 60000``).
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

    Returns
    -------
    dict
        ``measure``, ``facts``, ``units``, ``plateau``, ``f1``, ``f2``, ``f2_scaled``,
        ``fig3``, ``fig3_scaled``, ``f3`` (dicts as returned by the rules, plus the
        cells used).

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(2, 5, 2, 6, 8))  # checkpoint, task, step, stimulus, unit
    >>> ds = xr.Dataset({n: (("checkpoint", "task", "inner_step", "stimulus", f"unit_{n}"), x, {"role": "layer"})
    ...                  for n in ("conv1", "head")},
    ...                 coords={"checkpoint": [0, 100], "task": range(5), "inner_step": [0, 1]},
    ...                 attrs={"layers": '["conv1", "head"]'})
    >>> r = assess(ds, "rsa", n_boot=50)
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
           "level": level, "plateau": {"start": None, "reason": "not looked for"}}
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
    kw = dict(n_boot=n_boot, seed=seed, level=level)
    out["f1"] = depth_order(after, units, **kw)
    if supervised is not None:
        out["f1"]["supervised"] = supervised_depth_order(supervised)
    try:
        plateau = find_plateau(ds)
    except AnalysisError as err:
        plateau = {"start": None, "reason": str(err)}
    out["plateau"] = plateau
    body = layers[:-1] if len(layers) > 1 else layers
    early = list(early_layers) if early_layers is not None else body[:max(1, len(body) // 2)]
    run = facts["run_steps"]
    for key, gap, judged in (("f2", meta_gap, layers), ("fig3", fig3_gap, early)):
        out[key] = _gap_test(ds, spec, after, units, gap, plateau, "exact", judged, **kw)
        g = scaled_gap(gap, run)
        out[key + "_scaled"] = _gap_test(ds, spec, after, units, g, plateau,
                                         f"scale-relative: {gap}/{PAPER_RUN_STEPS} of this run's {run} steps",
                                         judged, scaled_from=gap, **kw)
    out["f3"] = _f3(ds, spec, ch, units, facts, **kw)
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
    rest = change(fd.inner_loop_change(ds.sel(checkpoint=ck), spec, before=1, after=last)[next(iter(spec))])
    return {**note, "last_step": int(last), **first_step(first, rest, units, **kw)}


# ----------------------------------------------------------------------------- report

def _trained(k) -> str:
    return "an unrecorded number of" if k is None else str(k)


def _fmt(ci: dict) -> str:
    if np.isnan(ci["lower"]):
        return f"{ci['mean']:.4g} (no CI)"
    return f"{ci['mean']:.4g} [{ci['lower']:.4g}, {ci['upper']:.4g}]"


def _gap_section(title: str, r: dict, facts: dict, measure: str) -> list[str]:
    lines = [f"### {title} ({r['label']}, gap {r['gap']} steps): **{r['verdict']}**", ""]
    if r["verdict"] == NOT_TESTABLE:
        return lines + [f"Not testable: {r['reason']}.", ""]
    pairs = ", ".join(f"{a}->{b}" for a, b in r["pairs"])
    lines += [f"Cells: layers {', '.join(r['layers'])}; inner change = `{measure}` between inner step 0 "
              f"and {facts['inner_step']} at each later checkpoint; meta change = `{measure}` between "
              f"the inner-step-0 representations of checkpoint pairs {pairs}.", "",
              "| layer | inner loop | meta-training | inner - meta (CI) | outcome |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {x['layer']} | {x['inner']:.4g} | {x['meta']:.4g} | {_fmt(x['inner_minus_meta'])} | "
              f"{x['outcome']} |" for x in r["per_layer"]]
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
    change_text = "dissimilarity" if m == "rsa" else "1 - similarity"
    lines = [f"# {title}", "",
             f"Measure `{m}`{' ' + json.dumps(result['options']) if result.get('options') else ''} "
             f"(change = {change_text}). Run: "
             f"{facts['run_steps']} meta-steps ({facts['run_steps_source']}), meta-trained with "
             f"{_trained(facts['meta_inner_steps'])} inner steps (the paper: {PAPER_INNER_STEPS}); \"after the inner loop\" = inner step "
             f"{facts['inner_step']}.", "",
             f"CIs: {pct}% percentile bootstrap over independent tasks (and over checkpoint pairs "
             f"where pooled); independent tasks: {result['units']['description']}.", ""]
    p = result["plateau"]
    curve = ", ".join(f"{c}: {v:.3f}" for c, v in p.get("curve", []))
    if p.get("start") is None:
        lines += [f"Plateau: none found ({p.get('reason')}).", ""]
    else:
        lines += [f"Plateau: from checkpoint {p['start']} (level {p['level']:.3f}, rise over the "
                  f"plateau {p['rise']:+.3f}, tolerance {p['tolerance']:.3f}; {p['source']}).", ""]
    if curve:
        lines += [f"Accuracy per checkpoint: {curve}.", ""]
    f1 = result["f1"]
    lines += [f"## F1: early layers change less than late layers: **{f1['verdict']}**", ""]
    if f1["verdict"] == NOT_TESTABLE:
        lines += [f"Not testable: {f1['reason']}.", ""]
    else:
        lines += [f"Cells: every checkpoint; change between inner step 0 and {facts['inner_step']} of "
                  f"layers {', '.join(f1['layers'])}; `rho` = Spearman correlation of the task-mean change "
                  f"with depth; `{f1['late']} - {f1['early']}` per task.", "",
                  f"| checkpoint | rho (CI) | {f1['late']} - {f1['early']} (CI) | outcome |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {r['checkpoint']} | {_fmt(r['rho'])} | {_fmt(r['late_minus_early'])} | {r['outcome']} |"
                  for r in f1["per_checkpoint"]]
        lines += [""]
    if "supervised" in f1:
        s = f1["supervised"]
        lines += [f"Supervised MNIST control (descriptive, one network, no CI): rho > 0 and "
                  f"`{s['late']}` > `{s['early']}` at {s['holds']} after step 0"
                  + (f" (last step {s['checkpoints'][-1]}: rho {s['rho'][-1]:.2f}, difference "
                     f"{s['late_minus_early'][-1]:.4g})." if s["checkpoints"] else "."), ""]
    gap = result.get("f2", {}).get("gap") or PAPER_META_GAP
    lines += [f"## F2: the inner loop changes more than {gap} meta-training steps", ""]
    for key, name in (("f2", "F2"), ("f2_scaled", "F2"), ("fig3", "Figure-3 statement (early layers)"),
                      ("fig3_scaled", "Figure-3 statement (early layers)")):
        if key in result:
            lines += _gap_section(name, result[key], facts, m)
    f3 = result.get("f3")
    if f3:
        lines += [f"## F3: most of the inner-loop change happens in step 1: **{f3['verdict']}**", "",
                  f"Meta-trained with {_trained(f3['meta_inner_steps'])} inner steps; the paper's claim "
                  f"is about {f3['paper_inner_steps']}.", ""]
        if f3["verdict"] == NOT_TESTABLE:
            lines += [f"Not testable: {f3['reason']}.", ""]
        else:
            lines += [f"Cells: checkpoints {f3['checkpoints']} (last two thirds, as the paper's "
                      f"Figure 3); `{m}` between inner steps 0 and 1, and between 1 and "
                      f"{f3['last_step']}; supported where d(0,1) - d(1,{f3['last_step']}) > 0.", "",
                      f"| layer | d(0,1) | d(1,{f3['last_step']}) | difference (CI) | outcome |",
                      "| --- | --- | --- | --- | --- |"]
            lines += [f"| {r['layer']} | {r['step_0_to_1']:.4g} | {r['step_1_to_last']:.4g} | "
                      f"{_fmt(r['difference'])} | {r['outcome']} |" for r in f3["per_layer"]]
    return "\n".join(lines).rstrip() + "\n"
