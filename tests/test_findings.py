"""The verdict rules of F1-F3 on synthetic records whose truth is known by construction.

Records are built like ``test_analyses_data.make_record`` (fixed random projections of
real MNIST images), but every ingredient the claims are about is a parameter: how much
each layer moves in the inner loop, how that change is spread over inner steps, how
fast meta-training drifts, and where the accuracy stops rising. Each rule gets a
record built to support it, one built to refute it, and one it cannot answer; one
record has the quick run's checkpoint layout, where the old code compared checkpoint
750 with checkpoint 0.
"""
from __future__ import annotations


import numpy as np
import pytest
import xarray as xr

from repscope.analyses.errors import AnalysisError
from repscope.analyses.findings import (NOT_TESTABLE, assess, depth_order, findings_markdown,
                                        first_step, inner_vs_meta)
from repscope.analyses.plateau import find_plateau, gap_pairs
from repscope.analyses.task_units import independent_tasks
from test_analyses_data import make_claims_record

QUICK_LAYOUT = (0, 1, 2, 5, 10, 20) + tuple(range(50, 751, 50))


def _assess(ds, **kw):
    return assess(ds, "rsa", {"rdm_method": "euclidean"}, n_boot=300, **kw)


@pytest.fixture(scope="module")
def supporting(data_root):
    return _assess(make_claims_record(data_root), meta_gap=250, fig3_gap=1000)


def test_a_record_built_for_the_claims_supports_all_three(supporting):
    r = supporting
    assert r["plateau"]["start"] == 1500
    assert r["f1"]["verdict"] == "supported"
    assert r["f1"]["early"] == "conv1" and r["f1"]["late"] == "conv3"  # not the head
    assert r["f2"]["verdict"] == "supported"
    assert r["f2"]["pairs"] == [[1500, 1750], [1750, 2000], [2000, 2250], [2250, 2500],
                                [2500, 2750], [2750, 3000]]
    assert r["fig3"]["verdict"] == "supported" and r["fig3"]["layers"] == ["conv1"]
    assert r["f3"]["verdict"] == "supported" and r["f3"]["last_step"] == 10
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
    assert {row["outcome"] for row in r["f2"]["per_layer"]} == {"contradicted"}


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
    assert "inner steps 0 and 1, and between 1 and 10" in text
    assert "meta-trained with 5 inner steps" in text
    assert "pairwise disjoint" not in text or "independent tasks" in text
    assert "scale-relative: 1000/60000" in text


def test_plateau_needs_the_rise_to_stop():
    ck = np.arange(0, 3001, 250)
    rising = xr.DataArray(np.repeat((ck / 3000)[:, None], 5, 1), dims=("checkpoint", "eval_task"),
                          coords={"checkpoint": ck})
    assert find_plateau(xr.Dataset({"eval_accuracy": rising}))["start"] is None
    with pytest.raises(AnalysisError, match="neither eval_accuracy nor accuracy"):
        find_plateau(xr.Dataset(coords={"checkpoint": ck}))
    assert gap_pairs([0, 250, 500], 250, start=250) == [(250, 500)]
    flat = rising.copy(data=np.full(rising.shape, 0.3))
    assert "nothing learned" in find_plateau(xr.Dataset({"eval_accuracy": flat}))["reason"]
    noisy = rising.copy(data=np.random.default_rng(0).uniform(0, 1, rising.shape))
    assert "too noisy" in find_plateau(xr.Dataset({"eval_accuracy": noisy}))["reason"]


def test_rules_on_arrays_with_known_values():
    dims = ("layer", "checkpoint", "task")
    co = {"layer": ["conv1", "conv2", "head"], "checkpoint": [100]}
    # inner change exactly 0.25 above the meta change for every layer: CI collapses to 0.25
    inner = xr.DataArray(np.full((3, 1, 5), 0.5), dims=dims, coords=co)
    meta = xr.DataArray(np.full((3, 1, 5), 0.25), dims=dims,
                        coords={**co, "previous": ("checkpoint", [50])})
    r = inner_vs_meta(inner, meta, range(5), n_boot=50)
    assert r["per_layer"][0]["inner_minus_meta"]["mean"] == 0.25
    assert r["per_layer"][0]["inner_minus_meta"]["lower"] == 0.25
    # equal changes: the CI is [0, 0], neither side: inconclusive
    assert inner_vs_meta(inner, meta + 0.25, range(5), n_boot=50)["verdict"] == "inconclusive"
    assert inner_vs_meta(inner, meta + 0.5, range(5), n_boot=50)["verdict"] == "not supported"
    assert first_step(inner, inner, range(4), n_boot=50)["verdict"] == NOT_TESTABLE
    flat = xr.DataArray(np.ones((3, 1, 6)), dims=dims, coords=co)
    assert depth_order(flat, range(6), n_boot=50)["verdict"] == "inconclusive"
