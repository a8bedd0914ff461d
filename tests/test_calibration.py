"""The verdict rules and the plateau rule against simulated records whose truth is known.

Each rule is run on many simulated records at once (its array form, as
:func:`repscope.analyses.findings.assess` runs it on one): under a null at the edge of
the claim (the claim false by the smallest margin, where a calibrated rule errs most)
"supported" must come out at most ``level + 3 simulation SEs`` of the time, at 3, 5, 10
and 30 independent tasks; under a clear effect it must come out at least 90% of the
time. Values are shaped like a real record's: changes are positive, a task's change is
its layer's mean times a task factor (tasks differ by ~30%, shared by all checkpoints)
times checkpoint noise. Seeded generators keep every rate fixed.
"""
from __future__ import annotations

import numpy as np
import pytest

from repscope.analyses.findings import (F3_THRESHOLD, FLOOR, depth_order_test, first_step_test,
                                        gap_test)
from repscope.analyses.plateau import TOLERANCE, plateau_scan

DRAWS = 2000
ALPHA = 0.025  # one side of a 95% interval
BOUND = ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / DRAWS)  # 0.0355
UNITS = (3, 5, 10, 30)
#: The medium preset's recorded checkpoints (2400 steps).
MEDIUM = np.array([0, 200, 400, 600, 800, 1000, 1160, 1200, 1360, 1400, 1560, 1600, 1760, 1800,
                   1960, 2000, 2160, 2200, 2360, 2400])


def _changes(rng, means, n, checkpoints=20, task_sd=0.3, noise_sd=0.1):
    """(draw, layer, checkpoint, unit) positive changes with the given layer means."""
    means = np.asarray(means, float)[None, :, None, None]
    task = 1 + task_sd * rng.standard_normal((DRAWS, means.shape[1], 1, n))
    noise = 1 + noise_sd * rng.standard_normal((DRAWS, means.shape[1], checkpoints, n))
    return means * task * noise


def _rate(verdicts, what="supported") -> float:
    return float((np.asarray(verdicts) == what).mean())


# ----------------------------------------------------------------------------- F1

@pytest.mark.parametrize("n", UNITS)
def test_f1_false_positive_rate_at_the_edge_of_the_claim(n):
    # conv2 exceeds conv1 by exactly the floor (claim false by the least margin); the
    # other pairs clearly hold, so the verdict hangs on the one pair, as it can at worst
    rng = np.random.default_rng(100 + n)
    x = _changes(rng, [0.10, 0.10 * (1 + FLOOR), 0.4, 1.2], n)
    assert _rate(depth_order_test(x)["verdict"]) <= BOUND


def test_f1_passes_no_backwards_network_whatever_the_head_does():
    # conv2 > conv3 > conv4 (the case): the head is not in the statistic at all
    rng = np.random.default_rng(1)
    x = _changes(rng, [0.05, 0.4, 0.2, 0.1], 5)
    res = depth_order_test(x)["verdict"]
    assert _rate(res) == 0.0 and _rate(res, "not supported") > 0.9


def test_f1_power_on_a_clear_order():
    rng = np.random.default_rng(2)
    x = _changes(rng, [0.05, 0.15, 0.35, 0.8], 5, task_sd=0.2)
    assert _rate(depth_order_test(x)["verdict"]) >= 0.9


# ----------------------------------------------------------------------------- F2

@pytest.mark.parametrize("n", UNITS)
@pytest.mark.parametrize("blocks", (2, 4))
def test_f2_false_positive_rate_at_the_edge_of_the_claim(n, blocks):
    rng = np.random.default_rng(200 + 10 * n + blocks)
    inner = 0.10 * (1 + FLOOR) * (1 + 0.3 * rng.standard_normal((DRAWS, n)))
    meta = 0.10 * (1 + 0.3 * rng.standard_normal((DRAWS, blocks)))
    assert _rate(gap_test(inner, meta)["outcome"]) <= BOUND


def test_f2_needs_the_floor_not_just_a_difference():
    # inner - meta = 1e-4 on changes of 0.2, measured almost without noise: not "supported"
    rng = np.random.default_rng(3)
    inner = 0.2001 + 1e-6 * rng.standard_normal((DRAWS, 30))
    meta = 0.2 + 1e-6 * rng.standard_normal((DRAWS, 4))
    assert _rate(gap_test(inner, meta)["outcome"]) == 0.0


def test_f2_power_on_a_clear_effect():
    # inner 6x meta, 10 tasks, 4 disjoint pairs; with 2 pairs the meta sample's own spread
    # (a t quantile on 1 df) leaves little power: record several pairs after the plateau
    rng = np.random.default_rng(4)
    inner = 0.3 * (1 + 0.3 * rng.standard_normal((DRAWS, 10)))
    meta = 0.05 * (1 + 0.3 * rng.standard_normal((DRAWS, 4)))
    assert _rate(gap_test(inner, meta)["outcome"]) >= 0.9


# ----------------------------------------------------------------------------- F3

@pytest.mark.parametrize("n", UNITS)
def test_f3_false_positive_rate_at_the_threshold(n):
    rng = np.random.default_rng(300 + n)
    first = 0.4 * (1 + 0.3 * rng.standard_normal((DRAWS, n)))
    # later steps move a task in proportion to its first step, plus their own spread
    rest = F3_THRESHOLD * first + 0.05 * rng.standard_normal((DRAWS, n))
    assert _rate(first_step_test(first, rest)["outcome"]) <= BOUND
    indep = F3_THRESHOLD * 0.4 * (1 + 0.3 * rng.standard_normal((DRAWS, n)))
    assert _rate(first_step_test(first, indep)["outcome"]) <= BOUND


def test_f3_needs_later_steps_small_against_step_1():
    # d(1, last) = 0.9 d(0, 1) (passed by the old "d(0,1) > d(1,last)" rule): contradicted never,
    # supported never
    rng = np.random.default_rng(5)
    first = 0.4 * (1 + 0.1 * rng.standard_normal((DRAWS, 10)))
    rest = 0.9 * first
    assert _rate(first_step_test(first, rest)["outcome"]) == 0.0


def test_f3_power_on_a_clear_effect():
    rng = np.random.default_rng(6)
    first = 0.4 * (1 + 0.3 * rng.standard_normal((DRAWS, 5)))
    rest = 0.1 * first + 0.02 * rng.standard_normal((DRAWS, 5))
    assert _rate(first_step_test(first, rest)["outcome"]) >= 0.9


# ----------------------------------------------------------------------------- plateau

PLATEAU_DRAWS = 1000
PLATEAU_TASKS = 600  # evaluation tasks per checkpoint (the batched engine's 300-600)


def _accuracy(rng, curve, n=PLATEAU_TASKS, task_sd=0.1, noise_sd=0.1):
    """(draw, checkpoint, task): a task's difficulty shared over checkpoints, plus the
    binomial-sized noise of 20 query images (sd ~0.1) at each checkpoint."""
    task = task_sd * rng.standard_normal((PLATEAU_DRAWS, 1, n))
    return curve[None, :, None] + task + noise_sd * rng.standard_normal((PLATEAU_DRAWS, len(curve), n))


def test_a_steady_rise_of_ten_points_is_rarely_a_plateau():
    rng = np.random.default_rng(7)
    rising = 0.6 + 0.10 * MEDIUM / MEDIUM[-1]
    found = plateau_scan(MEDIUM, _accuracy(rng, rising))["start_index"] >= 0
    assert found.mean() <= 0.05


def test_a_true_plateau_is_found_and_its_start_is_not_early():
    rng = np.random.default_rng(8)
    curve = 0.1 + 0.6 * np.minimum(MEDIUM, 1600) / 1600
    start = plateau_scan(MEDIUM, _accuracy(rng, curve))["start_index"]
    # the rule on the noiseless curve: 1560 is within the tolerance of the level reached at 1600
    earliest = int(plateau_scan(MEDIUM, np.repeat(curve[:, None], 2, 1) + [0, 1e-9])["start_index"])
    assert MEDIUM[earliest] == 1560
    assert (start >= 0).mean() >= 0.9
    found = start[start >= 0]
    assert (found < earliest).mean() <= 0.05  # before the tolerance allows: rarely
    assert np.median(MEDIUM[found]) == 1600  # typically at the knee itself


def test_too_few_evaluation_tasks_find_no_plateau_rather_than_a_false_one():
    rng = np.random.default_rng(9)
    curve = 0.1 + 0.6 * np.minimum(MEDIUM, 1600) / 1600
    res = plateau_scan(MEDIUM, _accuracy(rng, curve, n=100))
    assert (res["start_index"] >= 0).mean() < 0.05
    assert TOLERANCE == 0.02


@pytest.mark.parametrize("n", (3, 10))
def test_every_rule_stays_calibrated_when_tasks_differ_skewed(n):
    """Task factors log-normal (a few tasks change much more than the rest)."""
    rng = np.random.default_rng(400 + n)

    def factor(shape):
        return rng.lognormal(0, 0.5, shape) / np.exp(0.125)  # mean 1

    x = np.array([0.1, 0.1 * (1 + FLOOR), 0.4, 1.2])[None, :, None, None] * factor((DRAWS, 4, 1, n)) \
        * (1 + 0.1 * rng.standard_normal((DRAWS, 4, 20, n)))
    assert _rate(depth_order_test(x)["verdict"]) <= BOUND
    assert _rate(gap_test(0.1 * (1 + FLOOR) * factor((DRAWS, n)), 0.1 * factor((DRAWS, 3)))["outcome"]) <= BOUND
    first = 0.4 * factor((DRAWS, n))
    assert _rate(first_step_test(first, 0.4 * F3_THRESHOLD * factor((DRAWS, n)))["outcome"]) <= BOUND
