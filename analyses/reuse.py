"""Rapid learning or feature reuse? Raghu et al.'s (2020) analysis on one activation record.

For each layer and checkpoint, the similarity between the representation before the
inner loop (inner step 0) and after it (the last recorded inner step) is computed per
task with registered measures (:func:`repscope.analyses.figure_data.inner_loop_change`;
by default SVCCA, PWCCA and linear CKA, :data:`REUSE_MEASURES`), then summarised over
independent tasks (:mod:`repscope.analyses.task_units`) as a mean with a Student-t
interval (:func:`repscope.analyses.uncertainty.t_interval`).

Raghu et al.'s statements become three findings, each a plain dict naming the cells it
compared, the effect with its CI and a verdict (the words of
:mod:`repscope.analyses.findings`: ``supported`` only when the whole CI lies on the
claim's side, ``not supported`` when the whole CI lies on the other side,
``inconclusive`` otherwise, ``not testable with this run`` with the reason):

R1 (:func:`body_reuse`)
    Every body layer (every recorded layer but the head) keeps a similarity above
    :data:`BODY_THRESHOLD` (0.9) between inner step 0 and the last inner step, at the
    last checkpoint, with every measure.
R2 (:func:`head_change`)
    The head's similarity is below :data:`HEAD_THRESHOLD` (0.5) with every measure.
R3 (:func:`freezing_cost`)
    Adapting the head only at test time costs less than :data:`FREEZE_COST` (1
    percentage point) of accuracy against adapting every layer, paired over test tasks
    (the accuracies come from the training side's freezing test,
    :func:`repscope.training.freezing.freezing_test`, stored as a
    :func:`freezing_dataset`).

Compute only: nothing here reads or writes files or draws.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import xarray as xr

from .errors import AnalysisError
from .figure_data import inner_loop_change, layer_names
from .findings import MIN_UNITS, NOT_TESTABLE
from .findings import _outcomes, _verdict  # the verdict words of F1-F3, written once
from .task_units import independent_tasks
from .uncertainty import t_interval

__all__ = ["REUSE_MEASURES", "BODY_THRESHOLD", "HEAD_THRESHOLD", "FREEZE_COST", "STATISTICS",
           "reuse_similarity", "summarize_tasks", "threshold_test", "body_reuse", "head_change",
           "freezing_dataset", "freezing_cost", "assess_reuse", "reuse_markdown"]

#: Measures of the analysis (Raghu et al. used CCA, here SVCCA and PWCCA, and CKA).
REUSE_MEASURES = ("svcca", "pwcca", "cka_linear")
#: R1 holds when each body layer's similarity before vs after the inner loop exceeds this.
BODY_THRESHOLD = 0.9
#: R2 holds when the head's similarity stays below this.
HEAD_THRESHOLD = 0.5
#: R3 holds when freezing the body at test time costs less than this many points of accuracy.
FREEZE_COST = 1.0
#: The ``statistic`` coordinate of :func:`summarize_tasks`.
STATISTICS = ("mean", "lower", "upper")


def reuse_similarity(ds: xr.Dataset, measures: Sequence[str] = REUSE_MEASURES, *,
                     after: int | None = None, layers: Sequence[str] | None = None) -> xr.Dataset:
    """Similarity of each layer's representation before (inner step 0) and after the inner loop.

    Parameters
    ----------
    ds : xarray.Dataset
        Activation record (dims checkpoint, task, inner_step, stimulus, unit_*).
    measures : sequence of str
        Similarity measures of :data:`repscope.analyses.measures.MEASURES`.
    after : int, optional
        Inner step compared with step 0 (default: the last recorded one).
    layers : sequence of str, optional
        Layers (default: every recorded one).

    Returns
    -------
    xarray.Dataset
        One variable per measure, dims (layer, checkpoint, task); attrs ``before``
        (0) and ``after``.

    Raises
    ------
    AnalysisError
        When a measure is a dissimilarity, or step 0 and a later step are not both
        recorded.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1, 2, 2, 12, 6))
    >>> ds = xr.Dataset({"head": (("checkpoint", "task", "inner_step", "stimulus", "unit_head"), x)},
    ...                 coords={"checkpoint": [0], "task": [0, 1], "inner_step": [0, 3]},
    ...                 attrs={"layers": '["head"]'})
    >>> sim = reuse_similarity(ds, ["cka_linear"])
    >>> sim["cka_linear"].dims, sim.attrs["after"]
    (('layer', 'checkpoint', 'task'), 3)
    """
    from .measures import get_measure

    for name in measures:
        if get_measure(name).direction != "similarity":
            raise AnalysisError(f"Measure {name!r} is a dissimilarity; the feature-reuse analysis "
                                "reads similarities (e.g. svcca, pwcca, cka_linear)")
    steps = [int(s) for s in ds["inner_step"].values]
    if 0 not in steps or max(steps) == 0:
        raise AnalysisError(f"The feature-reuse analysis compares inner step 0 with a later step; the "
                            f"record holds inner steps {steps}. Record it with --inner-steps 0,...,N")
    after = max(steps) if after is None else int(after)
    if after not in steps or after == 0:
        raise AnalysisError(f"after={after!r}: expected a recorded inner step after 0, one of "
                            f"{[s for s in steps if s > 0]}")
    res = inner_loop_change(ds, list(measures), before=0, after=after, layers=layers)
    res.attrs = {"analysis": "feature reuse", "before": 0, "after": after}
    return res


def summarize_tasks(sim: xr.Dataset, units: Sequence[int], level: float = 0.95) -> xr.Dataset:
    """Mean and Student-t CI over the independent tasks ``units``, per layer and checkpoint.

    Returns
    -------
    xarray.Dataset
        Each measure with dims (layer, checkpoint, statistic), statistic in
        :data:`STATISTICS` (the bounds are NaN with fewer than 2 units); attrs
        ``units`` and ``level``.

    Examples
    --------
    >>> sim = xr.Dataset({"cka_linear": (("layer", "checkpoint", "task"), [[[0.8, 0.9, 1.0]]])},
    ...                  coords={"layer": ["conv1"], "checkpoint": [10], "task": [0, 1, 2]})
    >>> s = summarize_tasks(sim, [0, 1, 2])
    >>> round(float(s["cka_linear"].sel(statistic="mean").item()), 6)
    0.9
    """
    units = [int(u) for u in units]
    out = {}
    for name, da in sim.data_vars.items():
        values = da.sel(task=units).transpose("layer", "checkpoint", "task").values
        if np.isnan(values).any():
            raise AnalysisError(f"Missing (NaN) cells in {name!r}; every compared cell must hold a value")
        m, lo, hi = t_interval(values, level)
        out[name] = xr.DataArray(np.stack([m, lo, hi], -1), dims=("layer", "checkpoint", "statistic"),
                                 coords={"layer": da["layer"].values, "checkpoint": da["checkpoint"].values,
                                         "statistic": list(STATISTICS)}, attrs=dict(da.attrs))
    return xr.Dataset(out, attrs={**sim.attrs, "units": units, "level": level,
                                  "interval": f"{level:.0%} Student-t interval over {len(units)} independent tasks"})


def threshold_test(values, threshold: float, side: str, level: float = 0.95) -> dict:
    """Is the mean of ``values`` (independent units on the last axis) beyond ``threshold``?

    ``side="above"``: supported when the whole CI lies above ``threshold``, not supported
    when it lies below; ``side="below"`` the other way round; inconclusive otherwise.

    Returns
    -------
    dict
        ``mean``, ``lower``, ``upper`` (arrays over the leading axes), ``outcome``
        strings ("supported", "contradicted", "inconclusive").

    Examples
    --------
    >>> r = threshold_test([0.95, 0.97, 0.96, 0.98], 0.9, "above")
    >>> str(r["outcome"]), str(threshold_test([0.2, 0.3, 0.25], 0.9, "above")["outcome"])
    ('supported', 'contradicted')
    """
    if side not in ("above", "below"):
        raise AnalysisError(f"Unknown side {side!r}. Expected 'above' or 'below'")
    m, lo, hi = t_interval(np.asarray(values, dtype=float), level)
    good, bad = (lo > threshold, hi < threshold) if side == "above" else (hi < threshold, lo > threshold)
    return {"mean": m, "lower": lo, "upper": hi, "outcome": _outcomes(good, bad)}


def _too_few(units: Sequence[int], what: str = "independent task(s)",
             fix: str = "record more tasks over more held-out characters") -> str | None:
    if len(units) < MIN_UNITS:
        return f"only {len(units)} {what} (need {MIN_UNITS} for a t interval); {fix}"
    return None


def _layer_threshold(sim: xr.Dataset | None, units, layers, threshold, side, level, checkpoint,
                     why_not) -> dict:
    out = {"threshold": threshold, "side": side, "level": level, "layers": list(layers), "units": list(units)}
    if why_not:
        return {**out, "verdict": NOT_TESTABLE, "reason": why_not}
    if _too_few(units):
        return {**out, "verdict": NOT_TESTABLE, "reason": _too_few(units)}
    ck = int(sim["checkpoint"].values[-1]) if checkpoint is None else int(checkpoint)
    if ck not in [int(c) for c in sim["checkpoint"].values]:
        return {**out, "verdict": NOT_TESTABLE,
                "reason": f"checkpoint {ck} not recorded (recorded: {sim['checkpoint'].values.tolist()})"}
    rows = []
    for name, da in sim.data_vars.items():
        vals = da.sel(layer=list(layers), checkpoint=ck, task=list(units)).transpose("layer", "task").values
        if np.isnan(vals).any():
            raise AnalysisError(f"Missing (NaN) cells in {name!r} at checkpoint {ck}")
        r = threshold_test(vals, threshold, side, level)
        rows += [{"measure": str(name), "layer": str(layer), "mean": float(r["mean"][i]),
                  "lower": float(r["lower"][i]), "upper": float(r["upper"][i]),
                  "outcome": str(r["outcome"][i])} for i, layer in enumerate(layers)]
    return {**out, "checkpoint": ck, "before": sim.attrs.get("before", 0), "after": sim.attrs.get("after"),
            "measures": [str(n) for n in sim.data_vars], "rows": rows,
            "verdict": _verdict([r["outcome"] for r in rows])}


def body_reuse(sim: xr.Dataset | None, units: Sequence[int], *, checkpoint: int | None = None,
               threshold: float = BODY_THRESHOLD, level: float = 0.95, why_not: str | None = None) -> dict:
    """R1: every body layer's similarity before vs after the inner loop exceeds ``threshold``.

    Parameters
    ----------
    sim : xarray.Dataset or None
        :func:`reuse_similarity` (the head is its last layer).
    units : sequence of int
        Independent tasks.
    checkpoint : int, optional
        Checkpoint judged (default: the last recorded).
    why_not : str, optional
        Why the record cannot answer (then ``sim`` may be None): the finding is not
        testable with that reason.

    Returns
    -------
    dict
        ``rows`` (measure, layer, mean, lower, upper, outcome per cell), ``checkpoint``,
        ``before``/``after`` inner steps, ``units``, ``verdict`` (and ``reason`` when
        not testable).

    Examples
    --------
    >>> v = np.array([0.97, 0.95, 0.93, 0.92, 0.3])[:, None, None] + np.array([0, .01, -.01, .005])
    >>> sim = xr.Dataset({"svcca": (("layer", "checkpoint", "task"), v)},
    ...                  coords={"layer": ["conv1", "conv2", "conv3", "conv4", "head"],
    ...                          "checkpoint": [750], "task": [0, 1, 2, 3]})
    >>> body_reuse(sim, [0, 1, 2, 3])["verdict"]
    'supported'
    >>> body_reuse(sim, [0, 1])["verdict"]
    'not testable with this run'
    """
    layers = [] if sim is None else [str(x) for x in sim["layer"].values][:-1]
    if sim is not None and not layers and why_not is None:
        why_not = "the record holds no layer besides the head"
    return _layer_threshold(sim, [int(u) for u in units], layers, threshold, "above", level,
                            checkpoint, why_not)


def head_change(sim: xr.Dataset | None, units: Sequence[int], *, checkpoint: int | None = None,
                threshold: float = HEAD_THRESHOLD, level: float = 0.95, why_not: str | None = None) -> dict:
    """R2: the head's (last layer's) similarity before vs after the inner loop is below ``threshold``.

    Same parameters and result as :func:`body_reuse`, for the last layer only.

    Examples
    --------
    >>> sim = xr.Dataset({"pwcca": (("layer", "checkpoint", "task"), [[[0.2, 0.3, 0.25]]])},
    ...                  coords={"layer": ["head"], "checkpoint": [750], "task": [0, 1, 2]})
    >>> head_change(sim, [0, 1, 2])["verdict"]
    'supported'
    """
    layers = [] if sim is None else [str(sim["layer"].values[-1])]
    return _layer_threshold(sim, [int(u) for u in units], layers, threshold, "below", level,
                            checkpoint, why_not)


def freezing_dataset(accuracy: Mapping[str, Sequence[float]], **attrs) -> xr.Dataset:
    """The freezing test's accuracies as a labelled dataset (what the analysis stores and reads).

    Parameters
    ----------
    accuracy : mapping
        ``{adapt_layers: per-task accuracy in [0, 1]}`` on the same test tasks (e.g.
        :func:`repscope.training.freezing.freezing_test`'s ``accuracy``).
    **attrs
        Scalars stored as attributes (run, checkpoint, inner_steps, ...).

    Examples
    --------
    >>> ds = freezing_dataset({"all": [0.5, 0.6], "head": [0.5, 0.55]}, checkpoint=750)
    >>> ds["accuracy"].dims, ds.attrs["checkpoint"]
    (('adapt_layers', 'test_task'), 750)
    """
    names = list(accuracy)
    values = np.asarray([np.asarray(accuracy[n], dtype=float) for n in names])
    if values.ndim != 2:
        raise AnalysisError(f"accuracy must hold one value per test task for each of {names}, the same "
                            f"number for each; got shapes {[np.shape(accuracy[n]) for n in names]}")
    da = xr.DataArray(values, dims=("adapt_layers", "test_task"),
                      coords={"adapt_layers": names, "test_task": np.arange(values.shape[1])},
                      attrs={"units": "fraction correct on the query images after the inner loop"})
    return xr.Dataset({"accuracy": da}, attrs=dict(attrs))


def freezing_cost(freezing: xr.Dataset | None, *, threshold: float = FREEZE_COST, level: float = 0.95,
                  why_not: str | None = None) -> dict:
    """R3: adapting the head only at test time costs less than ``threshold`` points of accuracy.

    The cost of a test task is ``100 * (accuracy with every layer adapted - accuracy
    with the head alone)``; its mean gets a Student-t CI over the test tasks (each an
    independent draw of the test sampler, adapted both ways, so paired).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = rng.uniform(0.4, 0.6, 50)
    >>> ds = freezing_dataset({"all": a, "head": a - 0.002 + rng.normal(0, 0.01, 50)})
    >>> freezing_cost(ds)["verdict"]
    'supported'
    >>> freezing_cost(freezing_dataset({"all": a, "head": a - 0.05}))["verdict"]
    'not supported'
    """
    out = {"threshold": threshold, "level": level}
    if why_not is None and freezing is None:
        why_not = "no freezing test was run"
    if why_not is None:
        have = [str(x) for x in freezing["adapt_layers"].values]
        if not {"all", "head"} <= set(have):
            why_not = f"the freezing test needs accuracies for adapt_layers 'all' and 'head'; it holds {have}"
        elif freezing.attrs.get("trained_adapt_layers", "all") != "all":
            why_not = (f"the run adapted {freezing.attrs['trained_adapt_layers']!r} in meta-training; the "
                       "freezing test asks what a network trained with every layer adapted loses")
    if why_not is None:
        acc = freezing["accuracy"]
        if bool(acc.isnull().any()):
            raise AnalysisError("Missing (NaN) accuracies in the freezing test")
        cost = 100 * (acc.sel(adapt_layers="all").values - acc.sel(adapt_layers="head").values)
        why_not = _too_few(list(range(cost.size)), "test task(s)", "run the test on more test tasks")
    if why_not is not None:
        return {**out, "verdict": NOT_TESTABLE, "reason": why_not}
    r = threshold_test(cost, threshold, "below", level)
    all_m, all_lo, all_hi = t_interval(100 * acc.sel(adapt_layers="all").values, level)
    head_m, head_lo, head_hi = t_interval(100 * acc.sel(adapt_layers="head").values, level)
    outcome = str(r["outcome"])
    return {**out, "n_tasks": int(cost.size), "checkpoint": freezing.attrs.get("checkpoint"),
            "inner_steps": freezing.attrs.get("inner_steps"),
            "all": {"mean": float(all_m), "lower": float(all_lo), "upper": float(all_hi)},
            "head": {"mean": float(head_m), "lower": float(head_lo), "upper": float(head_hi)},
            "cost": {"mean": float(r["mean"]), "lower": float(r["lower"]), "upper": float(r["upper"])},
            "outcome": outcome, "verdict": _verdict([outcome])}


def assess_reuse(ds: xr.Dataset, measures: Sequence[str] = REUSE_MEASURES, *, freezing: xr.Dataset | None = None,
                 unit: str = "disjoint", level: float = 0.95, checkpoint: int | None = None,
                 after: int | None = None, freezing_why_not: str | None = None) -> dict:
    """R1, R2 (from the record) and R3 (from ``freezing``) with the similarity values behind them.

    Parameters
    ----------
    ds : xarray.Dataset
        Activation record.
    measures : sequence of str
        Similarity measures.
    freezing : xarray.Dataset, optional
        :func:`freezing_dataset` of the run (R3 is not testable without it).
    unit : {"disjoint", "task"}
        Independent units (:func:`repscope.analyses.task_units.independent_tasks`).
    level : float
        CI level.
    checkpoint : int, optional
        Checkpoint judged by R1 and R2 (default: the last recorded).
    after : int, optional
        Inner step compared with step 0 (default: the last recorded).
    freezing_why_not : str, optional
        Why no freezing test could be run (R3's reason).

    Returns
    -------
    dict
        ``similarity`` (:func:`reuse_similarity`, or None when the record cannot give
        it), ``summary`` (:func:`summarize_tasks`, or None), ``units`` (list and
        description), ``r1``, ``r2``, ``r3``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> dims = ("checkpoint", "task", "inner_step", "stimulus")
    >>> ds = xr.Dataset({n: (dims + (f"unit_{n}",), rng.normal(size=(1, 3, 2, 10, 4)))
    ...                  for n in ("conv1", "head")},
    ...                 coords={"checkpoint": [0], "task": [0, 1, 2], "inner_step": [0, 2]},
    ...                 attrs={"layers": '["conv1", "head"]'})
    >>> res = assess_reuse(ds, ["cka_linear"])
    >>> res["units"]["tasks"], res["r2"]["layers"], res["r3"]["verdict"]
    ([0, 1, 2], ['head'], 'not testable with this run')
    """
    units, description = independent_tasks(ds, unit)
    sim = summary = why_not = None
    layer_names(ds)
    steps = [int(s) for s in ds["inner_step"].values]
    if 0 not in steps or max(steps) == 0:
        why_not = (f"missing inner steps: the record holds inner steps {steps}; R1 and R2 compare step 0 "
                   "with a later one (record with --inner-steps 0,...,N)")
    else:
        sim = reuse_similarity(ds, measures, after=after)
        summary = summarize_tasks(sim, units, level)
    return {"similarity": sim, "summary": summary, "units": {"tasks": units, "description": description},
            "measures": list(measures), "level": level,
            "r1": body_reuse(sim, units, checkpoint=checkpoint, level=level, why_not=why_not),
            "r2": head_change(sim, units, checkpoint=checkpoint, level=level, why_not=why_not),
            "r3": freezing_cost(freezing, level=level, why_not=freezing_why_not)}


def _ci(d: Mapping) -> str:
    return f"{d['mean']:.4f} [{d['lower']:.4f}, {d['upper']:.4f}]"


def _layer_lines(r: Mapping, claim: str) -> list[str]:
    if r["verdict"] == NOT_TESTABLE:
        return [f"Not testable: {r['reason']}.", ""]
    lines = [f"Cells: layers {', '.join(r['layers'])} at checkpoint {r['checkpoint']}, inner step "
             f"{r['before']} vs inner step {r['after']}, tasks {r['units']}, measures "
             f"{', '.join(r['measures'])}; each cell {claim} with its whole {r['level']:.0%} CI for "
             "\"supported\".", "", "| measure | layer | similarity (CI) | outcome |", "| --- | --- | --- | --- |"]
    lines += [f"| {x['measure']} | {x['layer']} | {_ci(x)} | {x['outcome']} |" for x in r["rows"]]
    return lines + [""]


def reuse_markdown(runs: Mapping[str, Mapping], *, accuracy: Mapping[str, Mapping] | None = None,
                   title: str = "Feature reuse (Raghu et al., 2020)") -> str:
    """A markdown report: R1-R3 of each run with their cells and CIs, and test accuracy side by side.

    Parameters
    ----------
    runs : mapping
        ``{run name: assess_reuse(...)}``.
    accuracy : mapping, optional
        ``{run name: {"mean", "ci95", "n_tasks", "adapt_layers", "inner_steps"}}`` (test
        accuracy in %, from each run's evaluation).

    Examples
    --------
    >>> res = {"r1": {"verdict": NOT_TESTABLE, "reason": "no inner steps"},
    ...        "r2": {"verdict": NOT_TESTABLE, "reason": "no inner steps"},
    ...        "r3": {"verdict": NOT_TESTABLE, "reason": "no freezing test was run"},
    ...        "units": {"description": "5 tasks"}, "level": 0.95}
    >>> print(reuse_markdown({"small": res}).splitlines()[4])
    ## R1 (small): body layers' similarity before vs after the inner loop > 0.9: **not testable with this run**
    """
    lines = [f"# {title}", "",
             "Verdicts: \"supported\" only when the whole CI lies on the claim's side, \"not supported\" "
             "when it lies on the other side, \"inconclusive\" otherwise.", ""]
    for name, res in runs.items():
        r1, r2, r3 = res["r1"], res["r2"], res["r3"]
        lines += [f"## R1 ({name}): body layers' similarity before vs after the inner loop > "
                  f"{r1.get('threshold', BODY_THRESHOLD):g}: **{r1['verdict']}**", ""]
        if r1["verdict"] != NOT_TESTABLE:
            lines += [f"Independent tasks: {res['units']['description']}.", ""]
        lines += _layer_lines(r1, f"> {r1.get('threshold', BODY_THRESHOLD):g}")
        lines += [f"## R2 ({name}): head similarity before vs after the inner loop < "
                  f"{r2.get('threshold', HEAD_THRESHOLD):g}: **{r2['verdict']}**", ""]
        lines += _layer_lines(r2, f"< {r2.get('threshold', HEAD_THRESHOLD):g}")
        lines += [f"## R3 ({name}): freezing the body at test time costs < {r3.get('threshold', FREEZE_COST):g} "
                  f"point of accuracy: **{r3['verdict']}**", ""]
        if r3["verdict"] == NOT_TESTABLE:
            lines += [f"Not testable: {r3['reason']}.", ""]
        else:
            lines += [f"Cells: {r3['n_tasks']} held-out test tasks, meta-parameters of checkpoint "
                      f"{r3['checkpoint']}, {r3['inner_steps']} inner steps over every layer vs over the head "
                      f"alone; cost = accuracy(all) - accuracy(head) in points, paired per task, "
                      f"{r3['level']:.0%} Student-t CI.", "",
                      f"Accuracy, every layer adapted: {_ci(r3['all'])} %; head only: {_ci(r3['head'])} %; "
                      f"cost: {_ci(r3['cost'])} points ({r3['outcome']}).", ""]
    if accuracy:
        lines += ["## Test accuracy side by side", "", "| run | adapted in the inner loop | test accuracy (95% CI) "
                  "| test tasks | inner steps |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {n} | {a['adapt_layers']} | {a['mean']:.2f} +- {a['ci95']:.2f} % | {a['n_tasks']} | "
                  f"{a['inner_steps']} |" for n, a in accuracy.items()]
        lines += [""]
    return "\n".join(lines)
