"""Feature reuse (Raghu et al., 2020): the per-layer similarity on a real record against the
registry called directly, the R1-R3 verdicts on synthetic arrays, the freezing test
against a hand-unrolled float64 head-only inner loop, and the command line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr
from scipy import stats

from repscope import feature_reuse, probes, reproduce
from repscope.analyses import feature_reuse as script
from repscope.analyses.findings import NOT_TESTABLE
from repscope.analyses.measures import compare
from repscope.analyses.reuse import (assess_reuse, body_reuse, freezing_cost, freezing_dataset, head_change,
                                     reuse_similarity, summarize_tasks)
from repscope.training import maml, record
from repscope.training.config import get_preset
from repscope.training.engines.batched import batched_adapt
from repscope.training.evaluate import evaluate_tasks
from repscope.training.freezing import adapted_layers_accuracy, freezing_test
from repscope.training.model import build_model

SCRIPT = Path(__file__).resolve().parents[1] / "analyses" / "feature_reuse.py"
LAYERS = ["conv1", "conv2", "conv3", "conv4", "head"]


@pytest.fixture(scope="module")
def run(data_root, tmp_path_factory):
    """A tiny MAML run (10-way, 2 meta-steps) recorded on 3 tasks over disjoint characters."""
    out = tmp_path_factory.mktemp("reuse") / "tiny"
    assert maml.main(["--out", str(out), "--n-way", "10", "--meta-batch", "1", "--steps", "2",
                      "--checkpoint-every", "1", "--inner-steps", "1", "--inner-steps-eval", "2",
                      "--val-every", "0", "--test-tasks", "0", "--no-lake-eval", "--no-progress",
                      "--data", str(data_root)]) == 0
    assert record.main(["--run", str(out), "--tasks", "3", "--eval-tasks", "0", "--checkpoints", "all",
                        "--inner-steps", "0,1,2", "--no-progress"]) == 0
    return out


# ----------------------------------------------------------------- the analysis on a real record

def test_similarity_is_the_registry_on_step_0_against_the_last_step(run):
    ds = probes.open_run(run / "activations")
    sim = reuse_similarity(ds)
    assert sim.attrs["after"] == 2 and list(sim["layer"].values) == LAYERS
    for measure in ("svcca", "pwcca", "cka_linear"):
        for layer in LAYERS:
            direct = compare(ds[layer].sel(inner_step=0), ds[layer].sel(inner_step=2), measure)
            got = sim[measure].sel(layer=layer).transpose(*direct.dims)
            np.testing.assert_allclose(got.values, direct.values, rtol=0, atol=1e-12)
    summary = summarize_tasks(sim, [0, 1, 2])
    values = sim["pwcca"].sel(layer="conv3", checkpoint=2).values
    half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / np.sqrt(3)
    np.testing.assert_allclose(summary["pwcca"].sel(layer="conv3", checkpoint=2).values,
                               [values.mean(), values.mean() - half, values.mean() + half], atol=1e-12)


def test_the_record_tasks_are_the_independent_units(run):
    res = assess_reuse(probes.open_run(run / "activations"))
    assert res["units"]["tasks"] == [0, 1, 2]  # 3 x 10 of 35 held-out characters: disjoint
    assert res["r1"]["checkpoint"] == 2 and res["r1"]["layers"] == LAYERS[:-1]
    assert {(r["measure"], r["layer"]) for r in res["r1"]["rows"]} == {
        (m, layer) for m in ("svcca", "pwcca", "cka_linear") for layer in LAYERS[:-1]}
    assert res["r2"]["layers"] == ["head"]
    assert res["r3"]["verdict"] == NOT_TESTABLE and "no freezing test" in res["r3"]["reason"]


# ----------------------------------------------------------------- verdicts on synthetic arrays

def _sim(body, head, spread=0.01):
    """Five tasks whose values spread symmetrically about the given means."""
    means = np.array([body] * 4 + [head])
    n_tasks = 5
    v = means[:, None, None] + spread * np.array([-1, 1, -0.5, 0.5, 0]) * np.ones((5, 2, 1))
    return xr.Dataset({m: (("layer", "checkpoint", "task"), v.copy()) for m in ("svcca", "cka_linear")},
                      coords={"layer": LAYERS, "checkpoint": [0, 750], "task": range(n_tasks)},
                      attrs={"before": 0, "after": 5})


@pytest.mark.parametrize("body,head,r1,r2", [
    (0.97, 0.2, "supported", "supported"),
    (0.6, 0.8, "not supported", "not supported"),
    (0.9, 0.5, "inconclusive", "inconclusive"),  # means on the thresholds
])
def test_r1_r2_verdicts(body, head, r1, r2):
    sim = _sim(body, head)
    assert body_reuse(sim, range(5))["verdict"] == r1
    assert head_change(sim, range(5))["verdict"] == r2


def test_one_reversed_cell_makes_r1_not_supported():
    sim = _sim(0.97, 0.2)
    sim["svcca"].loc[dict(layer="conv2", checkpoint=750)] = 0.5
    res = body_reuse(sim, range(5))
    assert res["verdict"] == "not supported"
    bad = [r for r in res["rows"] if r["outcome"] == "contradicted"]
    assert [(r["measure"], r["layer"]) for r in bad] == [("svcca", "conv2")]


def test_r1_r2_are_judged_at_the_last_checkpoint_unless_told():
    sim = _sim(0.97, 0.2)
    sim["svcca"].loc[dict(layer="conv1", checkpoint=0)] = 0.1  # only the first checkpoint is off
    assert body_reuse(sim, range(5))["verdict"] == "supported"
    assert body_reuse(sim, range(5), checkpoint=0)["verdict"] == "not supported"


def test_too_few_tasks_or_missing_inner_steps_are_not_testable():
    sim = _sim(0.97, 0.2)
    res = body_reuse(sim, [0, 1])
    assert res["verdict"] == NOT_TESTABLE and "only 2 independent task(s)" in res["reason"]
    x = np.random.default_rng(0).normal(size=(1, 3, 1, 10, 4))
    ds = xr.Dataset({n: (("checkpoint", "task", "inner_step", "stimulus", f"unit_{n}"), x) for n in LAYERS},
                    coords={"checkpoint": [0], "task": [0, 1, 2], "inner_step": [0]},
                    attrs={"layers": json.dumps(LAYERS)})
    res = assess_reuse(ds)
    assert res["r1"]["verdict"] == res["r2"]["verdict"] == NOT_TESTABLE
    assert "missing inner steps" in res["r1"]["reason"] and "[0]" in res["r1"]["reason"]


def test_r3_verdicts():
    rng = np.random.default_rng(1)
    acc = rng.uniform(0.3, 0.7, 200)
    cheap = freezing_dataset({"all": acc, "head": acc - 0.001 + rng.normal(0, 0.02, 200)})
    assert freezing_cost(cheap)["verdict"] == "supported"
    costly = freezing_dataset({"all": acc, "head": acc - 0.04 + rng.normal(0, 0.02, 200)})
    res = freezing_cost(costly)
    assert res["verdict"] == "not supported" and res["cost"]["lower"] > 1
    wide = freezing_dataset({"all": acc[:5], "head": acc[:5] - rng.normal(0, 0.1, 5)})
    assert freezing_cost(wide)["verdict"] == "inconclusive"
    assert freezing_cost(freezing_dataset({"all": acc[:2], "head": acc[:2]}))["verdict"] == NOT_TESTABLE
    anil = freezing_dataset({"all": acc, "head": acc}, trained_adapt_layers="head")
    assert "adapted 'head' in meta-training" in freezing_cost(anil)["reason"]
    assert freezing_cost(None)["verdict"] == NOT_TESTABLE


# ----------------------------------------------------------------- the freezing test

def _episodes(n_way, n_tasks, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [SimpleNamespace(support_x=torch.rand(n_way, 1, 28, 28, generator=g, dtype=torch.float64),
                            support_y=torch.arange(n_way),
                            query_x=torch.rand(n_way, 1, 28, 28, generator=g, dtype=torch.float64),
                            query_y=torch.arange(n_way)) for _ in range(n_tasks)]


def _body(net, x):
    return net.conv4(net.conv3(net.conv2(net.conv1(x)))).mean(dim=(2, 3))


def test_head_only_adaptation_keeps_the_body_and_matches_a_hand_unrolled_head_sgd():
    cfg = get_preset("quick", n_way=5, inner_lr=0.4, adapt_layers="head")
    torch.manual_seed(0)
    net = build_model(cfg).double()
    eps = _episodes(5, 2)
    sx = torch.stack([e.support_x for e in eps])
    sy = torch.stack([e.support_y for e in eps])
    meta = {n: p.detach().clone() for n, p in net.named_parameters()}
    steps = 3
    for step, fast in batched_adapt(net, sx, sy, cfg, steps):
        for name, value in fast.items():
            if not name.startswith("head."):
                for t in range(2):  # the body is exactly the meta-parameters at every step
                    assert torch.equal(value[t], meta[name]), (name, step)
    reference_acc = []
    for t, ep in enumerate(eps):
        with torch.no_grad():
            fs, fq = _body(net, ep.support_x), _body(net, ep.query_x)
        w, b = meta["head.weight"].clone().requires_grad_(), meta["head.bias"].clone().requires_grad_()
        for _ in range(steps):  # SGD on the head alone, the support loss summed over K
            loss = F.cross_entropy(fs @ w.T + b, ep.support_y, reduction="sum") / cfg.k_shot
            gw, gb = torch.autograd.grad(loss, (w, b))
            w, b = (w - cfg.inner_lr * gw).detach().requires_grad_(), (b - cfg.inner_lr * gb).detach().requires_grad_()
        torch.testing.assert_close(fast["head.weight"][t], w.detach(), rtol=0, atol=1e-10)
        torch.testing.assert_close(fast["head.bias"][t], b.detach(), rtol=0, atol=1e-10)
        reference_acc.append(float(((fq @ w.T + b).argmax(1) == ep.query_y).double().mean()))
    acc = adapted_layers_accuracy(net, eps, get_preset("quick", n_way=5, inner_lr=0.4), steps=steps)
    np.testing.assert_array_equal(acc["head"], reference_acc)
    every = evaluate_tasks(net, eps, get_preset("quick", n_way=5, inner_lr=0.4), steps)[:, -1]
    np.testing.assert_array_equal(acc["all"], every)  # "all" is the plain evaluation


def test_freezing_test_reads_the_run_and_its_test_tasks(run, data_root):
    res = freezing_test(run, 4, data=data_root)
    assert res["checkpoint"] == 2 and res["inner_steps"] == 2 and res["trained_adapt_layers"] == "all"
    assert sorted(res["accuracy"]) == ["all", "head"] and res["accuracy"]["head"].shape == (4,)
    with pytest.raises(Exception, match="checkpoint 7 is not saved"):
        freezing_test(run, 4, checkpoint=7)


# ----------------------------------------------------------------- the command line

def test_main_analyses_an_existing_run_and_names_every_file(run, tmp_path, capsys):
    out = tmp_path / "results"
    rc = feature_reuse.main(["--maml-run", str(run), "--results", str(out), "--test-tasks", "4",
                             "--formats", "png"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"figures, their values and feature_reuse.md written to {out.resolve()}"
    for name in ("maml/reuse_similarity.nc", "maml/reuse_summary.nc", "maml/freezing.nc",
                 "maml/reuse_over_checkpoints.png", "reuse_fig2.png", "feature_reuse.md"):
        assert (out / name).is_file(), name
        assert f"{Path(name).name} written to {(out / name).resolve()}" in lines
    text = (out / "feature_reuse.md").read_text()
    for claim in ("R1", "R2", "R3"):
        assert f"## {claim} (maml: {run})" in text
    assert "Cells: layers conv1, conv2, conv3, conv4 at checkpoint 2, inner step 0 vs inner step 2, tasks [0, 1, 2]" in text
    assert "Cells: 4 held-out test tasks" in text
    assert not (out / "anil").exists()


@pytest.mark.parametrize("argv,named", [
    (["--test-tasks", "0"], "--test-tasks 0: expected an integer >= 1"),
    (["--after", "7"], "--after 7: not recorded in --maml-run"),
    (["--checkpoint", "5"], "--checkpoint 5: not recorded in --maml-run"),
    (["--anil-run", "nowhere"], "--anil-run nowhere: no activation record there"),
])
def test_bad_options_are_refused_before_anything_is_written(run, tmp_path, capsys, monkeypatch, argv, named):
    def forbidden(*a, **k):
        raise AssertionError("a stage ran before the options were checked")

    monkeypatch.setattr(reproduce, "_stage", forbidden)
    monkeypatch.setattr(feature_reuse, "freezing_test", forbidden)
    out = tmp_path / "results"
    assert feature_reuse.main(["--maml-run", str(run), "--results", str(out)] + argv) == 2
    assert named in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("argv,named", [
    (["--measures", "rsa"], "argument --measures: invalid choice: 'rsa'"),
    (["--preset", "huge"], "argument --preset: invalid choice: 'huge' (choose from"),
    (["--ci-unit", "seed"], "argument --ci-unit: invalid choice: 'seed'"),
])
def test_the_parser_refuses_values_outside_the_registries(tmp_path, capsys, argv, named):
    with pytest.raises(SystemExit) as exc:
        feature_reuse.main(argv + ["--results", str(tmp_path / "r")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert named in err
    allowed = {"--measures": ("svcca", "pwcca", "cka_linear"), "--preset": ("small",),
               "--ci-unit": ("disjoint", "task")}[argv[0]]
    assert all(name in err for name in allowed)
    assert not (tmp_path / "r").exists()


def test_the_preset_trains_its_maml_and_anil_twins_without_a_supervised_control(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(reproduce, "training_state", lambda out: "missing")
    runs, mnist = reproduce.train_and_record("small", tmp_path, run=lambda cmd, what: ran.append(cmd),
                                             stages=feature_reuse.FEATURE_REUSE["small"])
    assert mnist is None and [r.name for r in runs] == ["small", "small-anil"]
    presets = [c[c.index("--preset") + 1] for c in ran if "repscope.training.maml" in c]
    assert presets == ["small", "small-anil"]
    assert not any("repscope.training.supervised" in c for c in ran)
    assert get_preset("small-anil").to_dict() == {**get_preset("small").to_dict(), "preset": "small-anil",
                                                  "adapt_layers": "head"}


def test_script_help_runs_from_a_plain_python_call():
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for opt in ("--preset", "--maml-run", "--anil-run", "--results", "--measures", "--test-tasks"):
        assert opt in done.stdout
    assert script.main is feature_reuse.main
