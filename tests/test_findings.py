"""The verdict rules of F1-F3 on synthetic records whose truth is known by construction.

Records are built like ``test_analyses_data.make_record`` (fixed random projections of
real MNIST images), but every ingredient the claims are about is a parameter: how much
each layer moves in the inner loop, how that change is spread over inner steps, how
fast meta-training drifts, and where the accuracy stops rising. Each rule gets a
record built to support it, one built to refute it, and one it cannot answer; one
record has the quick run's checkpoint layout, where the old code compared checkpoint
750 with checkpoint 0. Whether the rules err at their stated rate is tested on simulated
records in ``test_calibration.py``.
"""
from __future__ import annotations


import numpy as np
import pytest
import xarray as xr

from repscope.analyses.errors import AnalysisError
from repscope.analyses.findings import (NOT_TESTABLE, assess, depth_order, findings_markdown,
                                        first_step, gap_curve_dataset, inner_vs_meta)
from repscope.analyses.plateau import available_gaps, disjoint_pairs, find_plateau, gap_pairs
from repscope.analyses.task_units import independent_tasks
from test_analyses_data import make_claims_record

QUICK_LAYOUT = (0, 1, 2, 5, 10, 20) + tuple(range(50, 751, 50))


def _assess(ds, **kw):
    return assess(ds, "rsa", {"rdm_method": "euclidean"}, **kw)


@pytest.fixture(scope="module")
def supporting(data_root):
    # 750 steps: two disjoint pairs fit after the plateau at 1500 (1000 steps: one only)
    return _assess(make_claims_record(data_root), meta_gap=250, fig3_gap=750)


def test_a_record_built_for_the_claims_supports_all_three(supporting):
    r = supporting
    assert r["plateau"]["start"] == 1500
    assert r["f1"]["verdict"] == "supported"
    assert r["f1"]["conv"] == ["conv1", "conv2", "conv3"] and r["f1"]["head"] == "head"  # beside, not in
    assert [(p["shallow"], p["deep"]) for p in r["f1"]["pairs"]] == [("conv1", "conv2"), ("conv2", "conv3")]
    assert r["f2"]["verdict"] == "supported"
    assert r["f2"]["pairs"] == [[1500, 1750], [1750, 2000], [2000, 2250], [2250, 2500],
                                [2500, 2750], [2750, 3000]]
    assert r["fig3"]["verdict"] == "supported" and r["fig3"]["layers"] == ["conv1"]
    assert r["fig3"]["pairs"] == [[1500, 2250], [2250, 3000]]
    assert r["fig3"]["overlapping_pairs_left_out"] == [[1750, 2500], [2000, 2750]]
    # F2 over every gap after the plateau; 1000-1500 steps leave one disjoint pair: not testable
    assert [row["gap"] for row in r["gap_curve"]] == [250, 500, 750, 1000, 1250, 1500]
    assert [row["verdict"] for row in r["gap_curve"]][:3] == ["supported"] * 3
    assert "at least 2" in r["gap_curve"][3]["reason"]
    assert r["f2_reverses_at"] is None and r["fig3_reverses_at"] is None
    curve = gap_curve_dataset(r["gap_curve"])
    assert curve["outcome"].shape == (6, 4) and curve["n_pairs"].values.tolist() == [6, 3, 2, 1, 1, 1]
    assert (curve["lower"].sel(gap=[250, 500, 750]) > 0).all() and curve["lower"].sel(gap=1000).isnull().all()
    assert r["f3"]["verdict"] == "supported" and r["f3"]["last_step"] == 10
    for row in r["f3"]["per_layer"]:  # 90% of the weight change in step 1
        assert row["ratio"]["upper"] < 0.5 and row["share_after_step_1"]["lower"] > 0.5
    assert r["facts"]["inner_step"] == 5  # meta-trained with 5 inner steps
    assert r["units"]["tasks"] == [0, 1, 2, 3, 4, 5]


def test_depth_order_refuted_when_early_layers_move_most(data_root):
    r = _assess(make_claims_record(data_root, inner_scale=(1.5, 0.5, 0.2, 0.05)), meta_gap=250)
    assert r["f1"]["verdict"] == "not supported"
    assert all(row["outcome"] == "contradicted" for row in r["f1"]["per_checkpoint"])


def test_f2_refuted_when_meta_training_drifts_faster_than_the_inner_loop(data_root):
    r = _assess(make_claims_record(data_root, inner_scale=(0.01, 0.02, 0.03, 0.05), meta_per_1000=2.0),
                meta_gap=250)
    assert r["f2"]["verdict"] == "not supported"
    assert "contradicted" in {row["outcome"] for row in r["f2"]["per_layer"]}
    assert r["f2_reverses_at"] == 250  # the smallest gap after the plateau


def test_f3_refuted_when_the_change_is_spread_over_all_steps(data_root):
    r = _assess(make_claims_record(data_root, step_profile="linear"), meta_gap=250)
    assert r["f3"]["verdict"] == "not supported"


def test_quick_layout_is_not_testable_at_1000_steps_and_never_uses_checkpoint_0(data_root):
    ds = make_claims_record(data_root, checkpoints=QUICK_LAYOUT, plateau_at=400, run_steps=750)
    r = _assess(ds)  # meta_gap 1000: the old code compared 750 with 0
    assert r["plateau"]["start"] is not None and r["plateau"]["start"] >= 400
    assert r["f2"]["verdict"] == NOT_TESTABLE
    assert "exactly 1000 steps apart" in r["f2"]["reason"]
    # the scale-relative variant: 1000/60000 of 750 steps = 12 steps; no such pair either
    assert r["f2_scaled"]["gap"] == 12 and r["f2_scaled"]["verdict"] == NOT_TESTABLE
    # 10000/60000 of 750 = 125: none at 125 exactly; at 50 steps the pairs start at the plateau
    assert r["fig3_scaled"]["gap"] == 125 and r["fig3_scaled"]["verdict"] == NOT_TESTABLE
    r50 = _assess(ds, meta_gap=50)
    assert r50["f2"]["pairs"][0][0] >= r50["plateau"]["start"]
    assert all(a != 0 for a, _ in r50["f2"]["pairs"])
    text = findings_markdown(r)
    assert "not testable" in text and "exactly 1000 steps apart" in text


def test_no_plateau_makes_f2_untestable(data_root):
    r = _assess(make_claims_record(data_root, plateau_at=None), meta_gap=250)
    assert r["plateau"]["start"] is None and "still rising" in r["plateau"]["reason"]
    assert r["f2"]["verdict"] == NOT_TESTABLE and "no plateau" in r["f2"]["reason"]


def test_overlapping_tasks_leave_too_few_independent_ones(data_root):
    # 35 held-out characters, 20-way: tasks 1.. all share characters with task 0
    ds = make_claims_record(data_root, n_test=35)
    units, text = independent_tasks(ds)
    assert units == [0] and "pairwise disjoint" in text
    r = _assess(ds, meta_gap=250)
    for key in ("f1", "f2", "f3"):
        assert r[key]["verdict"] == NOT_TESTABLE and "independent task" in r[key]["reason"]
    forced = _assess(ds, meta_gap=250, ci_unit="task")
    assert forced["f1"]["verdict"] == "supported"
    assert "treated as independent" in forced["units"]["description"]


def test_f3_untestable_without_inner_step_1(data_root):
    r = _assess(make_claims_record(data_root, inner_steps=(0, 5, 10)), meta_gap=250)
    assert r["f3"]["verdict"] == NOT_TESTABLE and "inner steps 0, 1" in r["f3"]["reason"]


def test_report_names_the_cells_and_cis(supporting):
    text = findings_markdown(supporting)
    assert "Plateau: from checkpoint 1500" in text
    assert "checkpoint pairs 1500->1750, 1750->2000" in text
    assert "(overlapping pairs left out: 1750->2500, 2000->2750)" in text
    assert "inner steps 0 and 1, and between 1 and 10" in text
    assert "meta-trained with 5 inner steps" in text
    assert "Student-t intervals over independent tasks" in text and "at most 2.5% of the time" in text
    assert "conv layers conv1, conv2, conv3 (adjacent pairs; the head `head` beside them" in text
    assert "| conv1 < conv2 |" in text and "inner - 1.1 x meta" in text
    assert "### Over every gap after the plateau" in text and "reversed at no gap" in text
    assert "d(1,10) / d(0,1) (CI)" in text
    assert "scale-relative: 750/60000" in text


def test_plateau_needs_the_rise_to_stop():
    ck = np.arange(0, 3001, 250)
    noise = np.random.default_rng(0).normal(0, 0.1, (len(ck), 600))
    rising = xr.DataArray((ck / 3000)[:, None] + noise, dims=("checkpoint", "eval_task"),
                          coords={"checkpoint": ck})
    res = find_plateau(xr.Dataset({"eval_accuracy": rising}))
    assert res["start"] is None and "still rising" in res["reason"]
    with pytest.raises(AnalysisError, match="neither eval_accuracy nor accuracy"):
        find_plateau(xr.Dataset(coords={"checkpoint": ck}))
    assert gap_pairs([0, 250, 500], 250, start=250) == [(250, 500)]
    flat = rising.copy(data=0.3 + noise)
    assert "nothing learned" in find_plateau(xr.Dataset({"eval_accuracy": flat}))["reason"]
    few = rising.copy(data=0.3 + noise).isel(eval_task=slice(0, 20))
    assert "too noisy" in find_plateau(xr.Dataset({"eval_accuracy": few}))["reason"]
    # a plateau needs its whole rise CI inside the tolerance over a third of the run
    knee = rising.copy(data=0.1 + 0.5 * np.minimum(ck, 1500)[:, None] / 1500 + noise)
    p = find_plateau(xr.Dataset({"eval_accuracy": knee}))
    assert p["start"] == 1500 and -0.02 < p["rise_ci"][0] < p["rise_ci"][1] < 0.02
    assert find_plateau(xr.Dataset({"eval_accuracy": knee}), tolerance=0.005)["start"] is None


def test_checkpoint_pairs_for_f2():
    assert disjoint_pairs([(0, 200), (100, 300), (200, 400)]) == [(0, 200), (200, 400)]
    assert available_gaps([0, 1760, 1800, 1960, 2000], 1760) == [40, 160, 200, 240]


def test_rules_on_arrays_with_known_values():
    dims = ("layer", "checkpoint", "task")
    co = {"layer": ["conv1", "conv2", "head"], "checkpoint": [100, 150, 200]}
    spread = np.arange(5.0) / 1000  # tasks differ a little
    inner = xr.DataArray(0.5 + np.zeros((3, 3, 1)) + spread, dims=dims, coords=co)
    meta = xr.DataArray(np.full((3, 2, 5), 0.25) + spread, dims=dims,
                        coords={**co, "checkpoint": [150, 200], "previous": ("checkpoint", [100, 150])})
    r = inner_vs_meta(inner, meta, range(5))
    row = r["per_layer"][0]
    assert row["inner"] == pytest.approx(0.502) and row["meta"] == pytest.approx(0.252)
    assert row["inner_minus_floored_meta"]["mean"] == pytest.approx(0.502 - 1.1 * 0.252)
    assert r["verdict"] == "supported"
    # equal changes: within the 10% floor, neither side: inconclusive; a larger meta change: reversed
    assert inner_vs_meta(inner, meta + 0.25, range(5))["verdict"] == "inconclusive"
    assert inner_vs_meta(inner, meta + 0.5, range(5))["verdict"] == "not supported"
    # one disjoint pair: meta-training's spread over the run cannot be estimated
    one = meta.isel(checkpoint=[0])
    assert "at least 2" in inner_vs_meta(inner, one, range(5))["reason"]
    assert first_step(inner, inner, range(2))["verdict"] == NOT_TESTABLE  # 2 < MIN_UNITS
    flat = xr.DataArray(np.ones((3, 1, 6)) + np.arange(6.0) / 100, dims=dims,
                        coords={**co, "checkpoint": [100]})
    assert depth_order(flat, range(6))["verdict"] == "inconclusive"
