"""Do the claims replicate over seeds? Per-seed verdicts, a pooled verdict, and agreement.

Runs of one configuration that differ only in their seed (:func:`check_same_layout`
refuses anything else, naming what differs) are each judged by
:func:`repscope.analyses.findings.assess`, as a single run is. :func:`pool_findings` then
judges each claim once more with the seeds as the top resampling unit: every seed is
reduced to one value per cell of the claim, the mean over its own independent tasks
(exactly the values its own verdict compared, :func:`repscope.analyses.uncertainty.unit_values`
one level up), and the same rule runs with seeds in place of tasks:

F1
    :func:`repscope.analyses.findings.depth_order_test` on the seeds' layer means
    (layer, checkpoint, seed).
F2 and the Figure-3 statement
    per seed ``inner - (1 + floor) x meta`` at the gap, from its own post-plateau
    cells; a one-sample Student-t interval over seeds (:func:`pooled_gap_test`). The
    seed is the unit, so its inner and meta changes are paired.
F3
    :func:`repscope.analyses.findings.first_step_test` (Fieller) on the seeds'
    ``d(0, 1)`` and ``d(1, last)``.

The pooled test needs :data:`~repscope.analyses.findings.MIN_UNITS` seeds (3: a t
interval with 2 df) that could each answer the claim; with fewer it is "not testable"
and says why. It is calibrated as the single-run rules are (each verdict errs at most
2.5% at ``level`` 0.95), now for the population of seeds rather than for one trained
network.

A claim is **replicated** when the pooled verdict is "supported" and the seeds agree
(:func:`seeds_agree`, :data:`AGREEMENT`): no analysed seed's own verdict is "not
supported", and at least half of them (rounded up; 2 of 3, 3 of 5) are "supported". A
contradicting seed is evidence that seeds differ, so it blocks; requiring most seeds to
show the effect on their own keeps a pooled mean carried by a few seeds from counting.
A fixed share, not "all" or "all but one", because the per-seed tests have modest power
at a few tasks: simulated with 5 tasks per seed and per-seed power 0.7 (F2), "all but
one" replicates a true effect 74% of the time with 3 seeds, 55% with 5 and 16% with 10
(more seeds, less replication), the majority 74%, 86% and 96%. The agreement can only
remove pooled "supported" verdicts, so "replicated" errs at most as often as the pooled
test (simulated at the edge of each claim: at most 0.8% at 3-10 seeds, where the
agreement alone errs up to 6.5% when seeds differ by 30%; ``tests/test_replication.py``).
Seeds whose runs failed are named and left out of both: the pooled
verdict says how many of the requested seeds it used.
"""
from __future__ import annotations

import json
from typing import Mapping, Sequence

import numpy as np
import xarray as xr

from .errors import AnalysisError
from .findings import (F3_THRESHOLD, FLOOR, MIN_UNITS, NOT_TESTABLE, _ci, _outcomes, _verdict,
                       depth_order_test, first_step_test)
from .uncertainty import t_interval

__all__ = ["check_same_layout", "seeds_agree", "pooled_gap_test", "pool_findings", "seed_spread",
           "replication_markdown", "AGREEMENT", "CLAIMS", "SEED_DEPENDENT", "MIN_SEEDS"]

#: Fewest seeds for a pooled verdict (a t interval over seeds with 2 df).
MIN_SEEDS = MIN_UNITS
#: The agreement rule, as printed in findings.md.
AGREEMENT = ("no analysed seed's own verdict is \"not supported\" and at least half of them (rounded up: "
             "2 of 3, 3 of 5) are \"supported\"")
#: The claims pooled, their keys in :func:`repscope.analyses.findings.assess` and their names.
CLAIMS = {"f1": "F1: early layers change less than late layers",
          "f2": "F2 (exact gap)", "f2_scaled": "F2 (scale-relative gap)",
          "fig3": "Figure-3 statement (exact gap)", "fig3_scaled": "Figure-3 statement (scale-relative gap)",
          "f3": "F3: most of the inner-loop change happens in step 1"}
#: Record settings that may differ between the seeds of one configuration (the seed and
#: what it draws, the probe stimuli; where and how the run was executed).
SEED_DEPENDENT = ("run.seed", "probe_set", "run.data", "record.data", "run.device", "record.device",
                  "run.threads", "run.progress", "record.progress")
METHOD = ("seeds as the top resampling unit: each seed reduced to the mean of its own independent "
          "tasks (the values its own verdict compared), then a Student-t interval over seeds "
          "(F1: every adjacent conv pair; F2 and the Figure-3 statement: per seed inner - "
          "(1 + floor) x meta at the gap, from its own post-plateau checkpoint pairs; F3: Fieller's "
          "ratio over seeds)")


# ----------------------------------------------------------------------------- inputs

def _flat(cfg, prefix: str = "") -> dict:
    if isinstance(cfg, dict):
        out = {}
        for k, v in cfg.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: cfg}


def _dropped(key: str) -> bool:
    return any(key == s or key.startswith(s + ".") for s in SEED_DEPENDENT)


def _layout(ds: xr.Dataset) -> dict:
    try:
        cfg = json.loads(ds.attrs.get("config", "{}"))
    except ValueError:
        cfg = {}
    out = {f"config {k}": v for k, v in _flat(cfg).items() if not _dropped(k)}
    out["layers"] = ds.attrs.get("layers")
    for dim in ("checkpoint", "task", "inner_step"):
        out[f"{dim}s"] = [int(v) for v in ds[dim].values] if dim in ds.coords else None
    out["task_classes"] = ds.attrs.get("task_classes")
    return out


def check_same_layout(records: Mapping[int, xr.Dataset]) -> None:
    """Refuse records that are not one configuration run with different seeds.

    The layers, checkpoints, tasks, inner steps, the tasks' classes and every entry of
    the stored configuration must agree, except the seed-dependent and execution
    entries of :data:`SEED_DEPENDENT`. The error names the seeds and each difference.

    Examples
    --------
    >>> def rec(seed, steps):
    ...     cfg = {"kind": "maml", "run": {"seed": seed, "steps": steps, "n_way": 5}}
    ...     return xr.Dataset(coords={"checkpoint": [0, steps], "task": [0, 1], "inner_step": [0, 1]},
    ...                       attrs={"config": json.dumps(cfg), "layers": '["conv1", "head"]'})
    >>> check_same_layout({0: rec(0, 100), 1: rec(1, 100)})
    >>> check_same_layout({0: rec(0, 100), 1: rec(1, 200)})
    Traceback (most recent call last):
    ...
    repscope.analyses.errors.AnalysisError: The records are not one configuration with different seeds: seed 1 differs from seed 0 in checkpoints ([0, 100] vs [0, 200]), config run.steps (100 vs 200). ...
    """
    seeds = list(records)
    if len(seeds) < 2:
        return
    ref = _layout(records[seeds[0]])
    problems = []
    for s in seeds[1:]:
        other = _layout(records[s])
        diff = [f"{k} ({ref.get(k)!r} vs {other.get(k)!r})".replace("'", "") for k in sorted(set(ref) | set(other))
                if ref.get(k) != other.get(k)]
        if diff:
            problems.append(f"seed {s} differs from seed {seeds[0]} in " + ", ".join(diff[:6])
                            + (f" and {len(diff) - 6} more" if len(diff) > 6 else ""))
    if problems:
        raise AnalysisError("The records are not one configuration with different seeds: " + "; ".join(problems)
                            + ". Pool only runs trained and recorded with the same settings; only "
                            f"{', '.join(SEED_DEPENDENT)} may differ")


# ----------------------------------------------------------------------------- rules

def seeds_agree(verdicts, axis: int = -1) -> np.ndarray:
    """The agreement rule (:data:`AGREEMENT`) over the seeds' own verdicts along ``axis``.

    Examples
    --------
    >>> bool(seeds_agree(["supported", "supported", "inconclusive"]))
    True
    >>> bool(seeds_agree(["supported", "supported", "supported", "not supported"]))
    False
    >>> bool(seeds_agree(["supported", "inconclusive", "not testable with this run"]))
    False
    """
    v = np.asarray(verdicts)
    n = v.shape[axis]
    ok = (v == "supported").sum(axis) >= -(-n // 2)
    return ok & ~(v == "not supported").any(axis)


def pooled_gap_test(inner, meta, *, level: float = 0.95, floor: float = FLOOR) -> dict:
    """F2's decision with seeds as the units: ``inner - (1 + floor) x meta`` per seed.

    Parameters
    ----------
    inner, meta : numpy.ndarray
        Shape (..., seed).
        Each seed's inner-loop change (mean over its tasks) and meta-training change
        (mean over its disjoint checkpoint pairs) at one gap.

    Returns
    -------
    dict
        ``difference`` (mean, lower, upper of ``inner - (1 + floor) x meta``),
        ``reversed`` (the plain difference's upper bound < 0) and ``outcome`` strings,
        as :func:`repscope.analyses.findings.gap_test`.

    Examples
    --------
    >>> str(pooled_gap_test([0.30, 0.34, 0.28], [0.05, 0.06, 0.04])["outcome"])
    'supported'
    """
    inner, meta = np.asarray(inner, dtype=float), np.asarray(meta, dtype=float)
    m, lo, hi = t_interval(inner - (1 + floor) * meta, level)
    rev = t_interval(inner - meta, level)[2] < 0
    return {"difference": (m, lo, hi), "reversed": rev, "outcome": _outcomes(lo > 0, rev)}


# ----------------------------------------------------------------------------- pooling

def _testable(results: Mapping[int, dict], key: str, field: str) -> tuple[list[int], dict[int, str]]:
    used, left = [], {}
    for s, r in results.items():
        c = r.get(key, {})
        if c.get("verdict") != NOT_TESTABLE and c.get(field):
            used.append(s)
        else:
            left[s] = c.get("reason", "not judged")
    return used, left


def _pool_f1(results, seeds, level, floor) -> dict:
    f1 = [results[s]["f1"] for s in seeds]
    conv = f1[0]["conv"]
    x = np.stack([[r["layer_means"] for r in f["per_checkpoint"]] for f in f1], -1)  # checkpoint, layer, seed
    res = depth_order_test(x.transpose(1, 0, 2), level=level, floor=floor)
    m, lo, hi = res["pair"]
    pairs = [{"shallow": conv[k], "deep": conv[k + 1], "deep_minus_floored": _ci(m[k], lo[k], hi[k]),
              "outcome": "supported" if lo[k] > 0 else ("contradicted" if res["reversed"][k] else "inconclusive")}
             for k in range(len(conv) - 1)]
    return {"verdict": str(res["verdict"]), "pairs": pairs,
            "per_checkpoint": [str(o) for o in res["per_checkpoint"]]}


def _pool_gap(results, seeds, key, level, floor) -> dict:
    rows = [{r["layer"]: r for r in results[s][key]["per_layer"]} for s in seeds]
    layers = list(rows[0])
    per = []
    for layer in layers:
        inner = np.array([r[layer]["inner"] for r in rows])
        meta = np.array([r[layer]["meta"] for r in rows])
        res = pooled_gap_test(inner, meta, level=level, floor=floor)
        per.append({"layer": layer, "inner": float(inner.mean()), "meta": float(meta.mean()),
                    "inner_minus_floored_meta": _ci(*res["difference"]), "outcome": str(res["outcome"])})
    return {"verdict": _verdict([r["outcome"] for r in per]), "gap": results[seeds[0]][key]["gap"],
            "per_layer": per}


def _pool_f3(results, seeds, level, threshold) -> dict:
    rows = [{r["layer"]: r for r in results[s]["f3"]["per_layer"]} for s in seeds]
    per = []
    for layer in rows[0]:
        first = np.array([r[layer]["step_0_to_1"] for r in rows])
        rest = np.array([r[layer]["step_1_to_last"] for r in rows])
        res = first_step_test(first, rest, level=level, threshold=threshold)
        per.append({"layer": layer, "step_0_to_1": float(first.mean()), "step_1_to_last": float(rest.mean()),
                    "ratio": _ci(*res["ratio"]), "outcome": str(res["outcome"])})
    return {"verdict": _verdict([r["outcome"] for r in per]), "per_layer": per}


def _fields(key: str) -> str:
    return {"f1": "per_checkpoint", "f3": "per_layer"}.get(key, "per_layer")


def pool_findings(results: Mapping[int, dict], *, failed: Mapping[int, str] | None = None,
                  requested: Sequence[int] | None = None) -> dict:
    """Per-seed verdicts, the pooled verdict over seeds and replication, claim by claim.

    Parameters
    ----------
    results : dict of {int: dict}
        :func:`repscope.analyses.findings.assess` of each analysed seed, one measure,
        one configuration (:func:`check_same_layout`).
    failed : dict of {int: str}, optional
        Seeds whose runs failed, with what failed; named and left out.
    requested : list of int, optional
        Every seed asked for (default: the analysed and the failed ones).

    Returns
    -------
    dict
        ``measure``, ``seeds`` (analysed), ``failed``, ``requested``, ``level``,
        ``agreement`` (:data:`AGREEMENT`), ``method`` and ``claims``: per key of
        :data:`CLAIMS` a dict with ``name``, ``per_seed`` ({seed: verdict}),
        ``pooled`` (verdict, ``seeds_used``, ``seeds_left_out`` with reasons, the CIs,
        or ``reason`` when not testable), ``agree`` and ``replicated`` (bools) and
        ``status`` (a sentence).

    Examples
    --------
    >>> def seed(v):
    ...     return {"measure": "rsa", "level": 0.95, "floor": FLOOR, "f3_threshold": F3_THRESHOLD,
    ...             "f3": {"verdict": "supported", "per_layer": [
    ...                 {"layer": "conv1", "step_0_to_1": 0.4 + v, "step_1_to_last": 0.05 + v / 4}]}}
    >>> p = pool_findings({0: seed(0.0), 1: seed(0.02), 2: seed(0.01)}, failed={3: "training failed"})
    >>> p["claims"]["f3"]["pooled"]["verdict"], p["claims"]["f3"]["replicated"]
    ('supported', True)
    >>> p["claims"]["f3"]["status"]
    'replicated (pooled over 3 of 4 requested seeds; seed 3 failed)'
    """
    failed = {int(s): str(r) for s, r in (failed or {}).items()}
    seeds = [int(s) for s in results]
    if not seeds:
        raise AnalysisError("No analysed seed to pool" + (f"; every seed failed: {failed}" if failed else ""))
    both = sorted(set(seeds) & set(failed))
    if both:
        raise AnalysisError(f"Seeds {both} are both analysed and listed as failed; give each seed once")
    requested = sorted(set(seeds) | set(failed)) if requested is None else [int(s) for s in requested]
    first = results[seeds[0]]
    level, floor = first.get("level", 0.95), first.get("floor", FLOOR)
    threshold = first.get("f3_threshold", F3_THRESHOLD)
    missing = f"; seed{'s' if len(failed) > 1 else ''} {', '.join(map(str, failed))} failed" if failed else ""
    out = {"measure": first.get("measure"), "seeds": seeds, "failed": failed, "requested": requested,
           "level": level, "agreement": AGREEMENT, "method": METHOD, "min_seeds": MIN_SEEDS, "claims": {}}
    for key, name in CLAIMS.items():
        if not any(key in r for r in results.values()):
            continue
        per_seed = {s: results[s].get(key, {}).get("verdict", NOT_TESTABLE) for s in seeds}
        used, left = _testable(results, key, _fields(key))
        pooled = {"seeds_used": used, "seeds_left_out": left}
        if len(used) < MIN_SEEDS:
            why = (f"{len(used)} seed(s) could answer ({used}), a t interval over seeds needs "
                   f"{MIN_SEEDS} (2 df)")
            if left:
                why += f"; not testable on their own: seed(s) {', '.join(map(str, left))} (reasons in their findings)"
            if failed:
                why += "; failed: " + "; ".join(f"seed {s} ({r})" for s, r in failed.items())
            pooled.update(verdict=NOT_TESTABLE, reason=why)
        elif key == "f1":
            pooled.update(_pool_f1(results, used, level, floor))
        elif key == "f3":
            pooled.update(_pool_f3(results, used, level, threshold))
        else:
            pooled.update(_pool_gap(results, used, key, level, floor))
        agree = bool(seeds_agree(list(per_seed.values())))
        replicated = pooled["verdict"] == "supported" and agree
        used_text = f"pooled over {len(used)} of {len(requested)} requested seeds{missing}"
        pooled["used_text"] = used_text
        if replicated:
            status = f"replicated ({used_text})"
        elif pooled["verdict"] == NOT_TESTABLE:
            status = f"not testable over seeds ({len(used)} of {len(requested)} requested seeds could answer{missing})"
        elif pooled["verdict"] != "supported":
            status = f"not replicated: pooled verdict {pooled['verdict']} ({used_text})"
        else:
            status = f"not replicated: the seeds disagree (the rule: {AGREEMENT}; {used_text})"
        out["claims"][key] = {"name": name, "per_seed": per_seed, "pooled": pooled, "agree": agree,
                              "replicated": replicated, "status": status}
    return out


def seed_spread(results: Mapping[int, xr.Dataset]) -> xr.Dataset:
    """A figure result of several seeds as one Dataset: each seed's mean over tasks.

    Parameters
    ----------
    results : dict of {int: xarray.Dataset}
        The same figure (1a or 1b) of each seed, with a ``task`` dim.

    Returns
    -------
    xarray.Dataset
        The per-seed task means with a leading ``seed`` dim; the attrs of the first.

    Examples
    --------
    >>> r = {s: xr.Dataset({"rsa": (("layer", "checkpoint", "task"), np.full((1, 2, 3), float(s)))},
    ...                    coords={"layer": ["conv1"], "checkpoint": [0, 5]}) for s in (0, 1)}
    >>> seed_spread(r)["rsa"].sel(checkpoint=5).values.tolist()
    [[0.0], [1.0]]
    """
    if not results:
        raise AnalysisError("No seed results to combine")
    seeds = [int(s) for s in results]
    means = [r.mean("task", keep_attrs=True) if "task" in r.dims else r for r in results.values()]
    out = xr.concat(means, dim=xr.DataArray(seeds, dims="seed", name="seed"), combine_attrs="override")
    return out.transpose("seed", ...)


# ----------------------------------------------------------------------------- report

def _fmt(ci: dict) -> str:
    if np.isnan(ci["lower"]) and np.isnan(ci["upper"]):
        return f"{ci['mean']:.4g} (no CI)"
    return f"{ci['mean']:.4g} [{ci['lower']:.4g}, {ci['upper']:.4g}]"


def _detail(key: str, pooled: dict, floor: float) -> list[str]:
    if pooled["verdict"] == NOT_TESTABLE:
        return [f"Pooled test not testable: {pooled['reason']}.", ""]
    head = f"Seeds used: {pooled['seeds_used']}" + (
        "; left out: " + "; ".join(f"seed {s} ({r})" for s, r in pooled["seeds_left_out"].items())
        if pooled["seeds_left_out"] else "") + "."
    if key == "f1":
        rows = [f"| {r['shallow']} < {r['deep']} | {_fmt(r['deep_minus_floored'])} | {r['outcome']} |"
                for r in pooled["pairs"]]
        return [head, "", f"| pair | deeper - {1 + floor:g} x shallower over seeds (CI) | outcome |",
                "| --- | --- | --- |", *rows, ""]
    if key == "f3":
        rows = [f"| {r['layer']} | {r['step_0_to_1']:.4g} | {r['step_1_to_last']:.4g} | {_fmt(r['ratio'])} | "
                f"{r['outcome']} |" for r in pooled["per_layer"]]
        return [head, "", "| layer | d(0,1) | d(1,last) | d(1,last) / d(0,1) over seeds (CI) | outcome |",
                "| --- | --- | --- | --- | --- |", *rows, ""]
    rows = [f"| {r['layer']} | {r['inner']:.4g} | {r['meta']:.4g} | {_fmt(r['inner_minus_floored_meta'])} | "
            f"{r['outcome']} |" for r in pooled["per_layer"]]
    return [head + f" Gap {pooled['gap']} steps.", "",
            f"| layer | inner loop | meta-training | inner - {1 + floor:g} x meta over seeds (CI) | outcome |",
            "| --- | --- | --- | --- | --- |", *rows, ""]


def replication_markdown(pooled: dict, *, title: str | None = None, floor: float = FLOOR,
                         links: Mapping[int, str] | None = None) -> str:
    """A markdown report of :func:`pool_findings`: the per-seed table with the pooled
    verdict and replication beside it, then each pooled test's cells and CIs.

    ``links`` maps a seed to the path of its own findings, listed under the table.

    Examples
    --------
    >>> p = {"measure": "rsa", "seeds": [0, 1], "failed": {2: "exit code 1"}, "requested": [0, 1, 2],
    ...      "level": 0.95, "method": METHOD, "claims": {"f1": {"name": CLAIMS["f1"],
    ...      "per_seed": {0: "supported", 1: "supported"}, "replicated": False,
    ...      "pooled": {"verdict": NOT_TESTABLE, "reason": "only 2 seed(s) could answer"},
    ...      "status": "not testable over seeds (only 2 seed(s) could answer)"}}}
    >>> print(replication_markdown(p).splitlines()[0])
    # Findings over seeds: rsa
    """
    seeds, failed, req = pooled["seeds"], pooled["failed"], pooled["requested"]
    pct = int(round(pooled["level"] * 100))
    lines = [f"# {title or 'Findings over seeds: ' + str(pooled['measure'])}", "",
             f"Seeds requested: {req}; analysed: {seeds}"
             + ("; failed: " + "; ".join(f"seed {s} ({r})" for s, r in failed.items()) if failed else "")
             + f". The pooled verdicts use the {len(seeds)} analysed seed(s) of {len(req)}"
             + (f" (N-{len(req) - len(seeds)})" if len(req) > len(seeds) else "") + ".", "",
             f"Pooled CIs: {pct}% {pooled.get('method', METHOD)}; at least {MIN_SEEDS} seeds. A claim is "
             f"**replicated** when the pooled verdict is \"supported\" and the seeds agree: "
             f"{pooled.get('agreement', AGREEMENT)}.", "",
             "| claim | " + " | ".join(f"seed {s}" for s in req) + " | pooled | replicated |",
             "| --- | " + " | ".join("---" for _ in req) + " | --- | --- |"]
    short = {NOT_TESTABLE: "not testable"}
    for c in pooled["claims"].values():
        p = c["pooled"]
        used = f" ({len(p['seeds_used'])} of {len(req)} seeds)" if "seeds_used" in p else ""
        rep = "yes" if c["replicated"] else ("not testable" if p["verdict"] == NOT_TESTABLE else "no")
        cells = [short.get(c["per_seed"][s], c["per_seed"][s]) if s in c["per_seed"] else "failed" for s in req]
        lines.append(f"| {c['name']} | " + " | ".join(cells)
                     + f" | {short.get(p['verdict'], p['verdict'])}{used} | {rep} |")
    lines += [""]
    if links:
        lines += ["Each seed's own findings (cells, CIs, plateau): "
                  + ", ".join(f"seed {s}: `{p}`" for s, p in links.items()) + ".", ""]
    for key, c in pooled["claims"].items():
        lines += [f"## {c['name']}: **{c['status']}**", ""] + _detail(key, c["pooled"], floor)
    return "\n".join(lines).rstrip() + "\n"
