"""Findings over seeds: the pooled rules and the agreement rule on simulated seeds whose
truth is known, and :func:`analyse_seeds` on real tiny runs trained with different seeds.

Simulated seeds are shaped like :mod:`test_calibration`'s records with one level more:
each seed's true layer means vary around the population's (a seed factor, 10% or 30%),
and its tasks vary around the seed's. The claim is false at the population level by the
smallest margin (its edge), where a calibrated rule errs most.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from repscope import probes
from repscope.analyses.errors import AnalysisError
from repscope.analyses.findings import (F3_THRESHOLD, FLOOR, NOT_TESTABLE, depth_order_test,
                                        first_step_test, gap_test)
from repscope.analyses.pipeline import AnalysisConfig, analyse_seeds, redraw
from repscope.analyses.replication import (AGREEMENT, check_same_layout, pool_findings,
                                           pooled_gap_test, seeds_agree)

DRAWS = 2000
ALPHA = 0.025
BOUND = ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / DRAWS)  # 0.0355
TASKS = 5  # per seed, as the medium preset records


def _verdicts(outcome):
    o = np.asarray(outcome)
    return np.where(o == "contradicted", "not supported", o)


def _f1(rng, seeds, seed_sd, means=(0.10, 0.10 * (1 + FLOOR), 0.4, 1.2)):
    m = np.asarray(means)[None, None, :, None, None]
    shape = (DRAWS, seeds, len(means))
    x = m * (1 + seed_sd * rng.standard_normal((*shape, 1, 1))) \
        * (1 + 0.3 * rng.standard_normal((*shape, 1, TASKS))) * (1 + 0.1 * rng.standard_normal((*shape, 10, TASKS)))
    per = depth_order_test(x)["verdict"]                                   # (draw, seed)
    pooled = depth_order_test(np.moveaxis(x.mean(-1), 1, -1))["verdict"]   # seeds as units
    return per, pooled


def _f2(rng, seeds, seed_sd, ratio=1 + FLOOR, blocks=4):
    inner = 0.1 * ratio * (1 + seed_sd * rng.standard_normal((DRAWS, seeds, 1))) \
        * (1 + 0.3 * rng.standard_normal((DRAWS, seeds, TASKS)))
    meta = 0.1 * (1 + seed_sd * rng.standard_normal((DRAWS, seeds, 1))) \
        * (1 + 0.3 * rng.standard_normal((DRAWS, seeds, blocks)))
    per = _verdicts(gap_test(inner, meta)["outcome"])
    return per, pooled_gap_test(inner.mean(-1), meta.mean(-1))["outcome"]


def _f3(rng, seeds, seed_sd, ratio=F3_THRESHOLD):
    first = 0.4 * (1 + seed_sd * rng.standard_normal((DRAWS, seeds, 1))) \
        * (1 + 0.3 * rng.standard_normal((DRAWS, seeds, TASKS)))
    rest = ratio * 0.4 * (1 + seed_sd * rng.standard_normal((DRAWS, seeds, 1))) \
        * (1 + 0.3 * rng.standard_normal((DRAWS, seeds, TASKS)))
    per = _verdicts(first_step_test(first, rest)["outcome"])
    return per, first_step_test(first.mean(-1), rest.mean(-1))["outcome"]


RULES = {"F1": _f1, "F2": _f2, "F3": _f3}


@pytest.mark.parametrize("claim", sorted(RULES))
@pytest.mark.parametrize("seeds", (3, 5, 10))
@pytest.mark.parametrize("seed_sd", (0.1, 0.3))
def test_replicated_errs_no_more_than_the_level_at_the_edge_of_each_claim(claim, seeds, seed_sd):
    rng = np.random.default_rng(1000 + 10 * seeds + int(100 * seed_sd) + ord(claim[1]))
    per, pooled = RULES[claim](rng, seeds, seed_sd)
    supported = np.asarray(pooled) == "supported"
    assert supported.mean() <= BOUND  # the pooled test over seeds is calibrated
    assert (supported & seeds_agree(per)).mean() <= BOUND


def test_agreement_alone_is_not_a_test_when_seeds_differ():
    """Seeds that differ by 30-50%: a majority of seeds each 'supported' happens for a
    false claim above the level (each seed's own test is about that seed: 7% and 17%),
    so the pooled test over seeds is what calibrates "replicated"."""
    rng = np.random.default_rng(7)
    per, pooled = _f3(rng, 3, 0.3)
    assert seeds_agree(per).mean() > BOUND
    assert ((np.asarray(pooled) == "supported") & seeds_agree(per)).mean() <= BOUND
    per, pooled = _f3(rng, 3, 0.5)
    assert seeds_agree(per).mean() > 3 * BOUND
    assert ((np.asarray(pooled) == "supported") & seeds_agree(per)).mean() <= BOUND


def test_more_seeds_replicate_a_true_effect_more_often_not_less():
    # F2 with inner 4x meta: each seed alone is supported about 70% of the time
    rates = {}
    for seeds in (3, 10):
        per, pooled = _f2(np.random.default_rng(8 + seeds), seeds, 0.1, ratio=4)
        assert 0.55 < (per == "supported").mean() < 0.85
        rates[seeds] = ((np.asarray(pooled) == "supported") & seeds_agree(per)).mean()
    assert rates[3] >= 0.6 and rates[10] >= 0.9
    # "all but one seed supported" would fall instead
    per, _ = _f2(np.random.default_rng(9), 10, 0.1, ratio=4)
    assert ((per == "supported").sum(-1) >= 9).mean() < 0.5


def test_agreement_rule():
    s, i, n, t = "supported", "inconclusive", "not supported", NOT_TESTABLE
    assert seeds_agree([s, s, i]) and seeds_agree([s, s, t]) and seeds_agree([s, i, s, t])
    assert not seeds_agree([s, i, t]) and not seeds_agree([s, s, s, s, n])
    assert "at least half" in AGREEMENT


def _f3_result(values, outcome="supported"):
    return {"measure": "rsa", "level": 0.95, "floor": FLOOR, "f3_threshold": F3_THRESHOLD,
            "f3": {"verdict": "not supported" if outcome == "contradicted" else outcome, "per_layer": [
                {"layer": "conv1", "step_0_to_1": 0.4, "step_1_to_last": v, "outcome": outcome} for v in values]}}


def test_a_contradicting_seed_blocks_replication_though_the_pool_holds():
    # nine seeds with d(1,last)/d(0,1) about 0.12, one whose own ratio is above 1: the pooled
    # ratio 0.215 [0.005, 0.425] is below the threshold, but that seed contradicts the claim
    results = {s: _f3_result([v]) for s, v in enumerate([0.04, 0.05, 0.06, 0.05, 0.04, 0.06, 0.05, 0.05, 0.04])}
    results[9] = _f3_result([0.42], "contradicted")
    c = pool_findings(results)["claims"]["f3"]
    assert c["pooled"]["verdict"] == "supported" and c["pooled"]["seeds_used"] == list(range(10))
    assert not c["agree"] and not c["replicated"] and "the seeds disagree" in c["status"]


def test_too_few_seeds_say_why_and_name_the_failed_one():
    c = pool_findings({0: _f3_result([0.05]), 1: _f3_result([0.06])},
                      failed={2: "training exited with code 1"})["claims"]["f3"]
    assert c["pooled"]["verdict"] == NOT_TESTABLE and not c["replicated"]
    assert "needs 3" in c["pooled"]["reason"] and "seed 2 (training exited with code 1)" in c["pooled"]["reason"]
    assert c["per_seed"] == {0: "supported", 1: "supported"}


# ----------------------------------------------------------------------------- real runs

@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory, data_root):
    """Three tiny runs of one configuration, seeds 0, 1, 2 (about 15 s each on one core)."""
    from repscope.training.config import get_preset
    from repscope.training.maml import train
    from repscope.training.record import RecordConfig, record_run

    root = tmp_path_factory.mktemp("seeds")
    runs = {}
    for seed in (0, 1, 2):
        run = root / f"seed{seed}"
        train(get_preset("quick", n_way=5, meta_batch=1, steps=4, checkpoint_every=2, val_every=0, seed=seed,
                         test_tasks=0, lake_eval=False, progress=False, data=str(data_root)), run, log=None)
        record_run(run, RecordConfig(tasks=9, inner_steps=(0, 1, 10), eval_tasks=4, progress=False), log=None)
        runs[seed] = run
    return runs


CFG = AnalysisConfig(measures=("rsa",), formats=("png",))


def test_three_seeds_give_per_seed_and_pooled_verdicts(seed_runs, tmp_path):
    out = tmp_path / "results"
    res = analyse_seeds(dict(seed_runs), CFG, out)
    assert sorted(res["seeds"]) == [0, 1, 2] and res["failed"] == {}
    pooled = res["pooled"]["rsa"]
    for key in ("f1", "f3"):  # 7 disjoint tasks per seed: testable in each seed and over seeds
        c = pooled["claims"][key]
        assert set(c["per_seed"]) == {0, 1, 2}
        assert all(v == res["seeds"][s]["findings"]["rsa"][key]["verdict"] for s, v in c["per_seed"].items())
        assert c["pooled"]["verdict"] in ("supported", "inconclusive", "not supported")
        assert c["pooled"]["seeds_used"] == [0, 1, 2]
        assert c["replicated"] == (c["pooled"]["verdict"] == "supported" and bool(seeds_agree(list(c["per_seed"].values()))))
    # the pooled F1 interval is the t interval over the seeds' task means, checkpoint-averaged
    f1 = [res["seeds"][s]["findings"]["rsa"]["f1"] for s in (0, 1, 2)]
    d = np.array([[p["deep_mean"] - (1 + FLOOR) * p["shallow_mean"] for p in f["pairs"]] for f in f1])
    got = [p["deep_minus_floored"]["mean"] for p in pooled["claims"]["f1"]["pooled"]["pairs"]]
    np.testing.assert_allclose(got, d.mean(0), rtol=1e-9)
    assert pooled["claims"]["f2"]["pooled"]["verdict"] == NOT_TESTABLE  # no plateau in 4 steps
    text = (out / "findings.md").read_text()
    assert "| claim | seed 0 | seed 1 | seed 2 | pooled | replicated |" in text
    assert "(3 of 3 seeds)" in text and AGREEMENT in text
    for s in (0, 1, 2):
        assert (out / f"seed_{s}" / "fig1a.nc").is_file() and "## F1" in (out / f"seed_{s}" / "findings.md").read_text()
    spread = xr.open_dataset(out / "fig1a_seeds.nc")
    assert spread["rsa"].sizes["seed"] == 3 and (out / "fig1b_seeds.png").is_file()
    spread.close()
    assert out / "fig1a_seeds.png" in redraw(out, ("png",))


def test_two_seeds_and_a_failed_one_name_it_and_pool_nothing(seed_runs, tmp_path):
    out = tmp_path / "results"
    res = analyse_seeds({0: seed_runs[0], 1: seed_runs[1] / "activations"}, CFG, out,
                        failed={2: "training exited with code 1"})
    assert res["failed"] == {2: "training exited with code 1"}
    for c in res["pooled"]["rsa"]["claims"].values():
        assert set(c["per_seed"]) == {0, 1} and c["pooled"]["verdict"] == NOT_TESTABLE and not c["replicated"]
    text = (out / "findings.md").read_text()
    assert "failed: seed 2 (training exited with code 1)" in text
    assert "use the 2 analysed seed(s) of 3 (N-1)" in text
    assert "| claim | seed 0 | seed 1 | seed 2 | pooled | replicated |" in text
    assert "| F1: early layers change less than late layers | " in text and " | failed | not testable (2 of 3 seeds) | " \
        "not testable |" in text
    assert "(2 of 3 seeds)" in text and "a t interval over seeds needs 3" in text


def test_a_diverged_seed_is_named_as_failed(seed_runs, tmp_path):
    bad = probes.open_run(seed_runs[2] / "activations")
    bad["conv2"][{"checkpoint": 1, "task": 0, "inner_step": 1}] = np.nan
    res = analyse_seeds({0: seed_runs[0], 1: seed_runs[1], 2: bad}, CFG, tmp_path / "r")
    assert list(res["seeds"]) == [0, 1] and "its record is unusable" in res["failed"][2]
    assert "non-finite" in (tmp_path / "r" / "findings.md").read_text()


def test_records_of_different_configurations_are_refused_before_writing(seed_runs, tmp_path):
    a = probes.open_run(seed_runs[0] / "activations")
    b = probes.open_run(seed_runs[1] / "activations").isel(checkpoint=slice(0, 3))
    c = probes.open_run(seed_runs[2] / "activations")
    cfg = json.loads(c.attrs["config"])
    cfg["run"]["inner_lr"] = 0.4
    c.attrs["config"] = json.dumps(cfg)
    out = tmp_path / "never"
    with pytest.raises(AnalysisError, match=r"seed 1 differs from seed 0 in checkpoints \(\[0, 1, 2, 4\] vs "
                                            r"\[0, 1, 2\]\).*seed 2 differs from seed 0 in config run.inner_lr "
                                            r"\(0.1 vs 0.4\)"):
        analyse_seeds({0: a, 1: b, 2: c}, CFG, out)
    assert not out.exists()
    check_same_layout({0: a, 2: probes.open_run(seed_runs[2] / "activations")})  # seed and probes may differ


@pytest.mark.parametrize("records, failed, message", [
    ({}, None, "No seed records"),
    ({-1: "x"}, None, "seed -1 is not allowed"),
    ({True: "x"}, None, "seed True is not allowed"),
    ({0: "x"}, {0: "boom"}, r"seeds \[0\] are given both"),
    ({0: 3.5}, None, "The record of seed 0 is a float"),
])
def test_bad_seed_input_is_refused(records, failed, message, tmp_path):
    with pytest.raises(AnalysisError, match=message):
        analyse_seeds(records, CFG, tmp_path / "o", failed=failed)
    assert not (tmp_path / "o").exists()
