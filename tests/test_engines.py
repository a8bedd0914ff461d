"""The batched engine against the higher engine (the reference), in float64.

Meta-gradients, evaluation accuracies and recorded activations must agree to 1e-10
(relative to the largest value) in float64; in float32 random tasks amplify rounding
through the inner steps (~1e-3 relative between two exact implementations), so float32
is only checked loosely. Training with either engine learns alike, and a run may be
resumed with the other engine.
"""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.func import functional_call

from repscope.probes import Probe
from repscope.training.checkpoint import load_checkpoint, load_run
from repscope.training.config import get_preset
from repscope.training.engines import ENGINES, batched, get_engine, meta_step
from repscope.training.engines.network import BATCH_NORMS, batched_forward
from repscope.training.errors import TrainingError
from repscope.training.maml import main as maml_main
from repscope.training.maml import train
from repscope.training.model import build_model
from repscope.training.record import RecordConfig, _probe_set, analysis_tasks, record_checkpoint
from repscope.training.tasks import task_samplers

TIGHT = 1e-10


def _tasks(cfg, n_tasks, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    size, ch = cfg.image_size, cfg.in_channels
    n_s, n_q = cfg.n_way * cfg.k_shot, cfg.n_way * cfg.n_query

    def labels(n):  # shuffled, so that no engine can rely on sorted labels
        return torch.arange(cfg.n_way).repeat(n // cfg.n_way)[torch.randperm(n, generator=g)]

    return [SimpleNamespace(support_x=torch.rand(n_s, ch, size, size, generator=g, dtype=dtype),
                            support_y=labels(n_s),
                            query_x=torch.rand(n_q, ch, size, size, generator=g, dtype=dtype),
                            query_y=labels(n_q))
            for _ in range(n_tasks)]


def _meta_grads(engine, cfg, tasks, dtype=torch.float64):
    torch.manual_seed(0)
    model = build_model(cfg).to(dtype)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    metrics = meta_step(model, opt, tasks, cfg, engine=engine)
    return {n: p.grad.clone() for n, p in model.named_parameters()}, metrics


def _relative_difference(a: dict, b: dict) -> float:
    scale = max(v.abs().max().item() for v in a.values())
    return max((a[k] - b[k]).abs().max().item() for k in a) / scale


OMNIGLOT = dict(n_way=5, meta_batch=3, inner_steps=3, n_query=2)
CASES = {
    # the paper's configuration: 20-way 1-shot, 5 inner steps, second order, sum over K
    "paper": ("omniglot-20way-1shot", dict(meta_batch=2)),
    "first_order": ("quick", dict(OMNIGLOT, first_order=True)),
    "anil": ("quick", dict(OMNIGLOT, adapt_layers="head")),
    "freeze2": ("quick", dict(OMNIGLOT, adapt_layers="freeze:2")),
    "adapt_bn": ("quick", dict(OMNIGLOT, adapt_bn=True, inner_loss="mean", inner_lr=0.3,
                               k_shot=2)),
    "meta_clip": ("quick", dict(OMNIGLOT, meta_clip=0.05, meta_loss="sum_over_k")),
    "no_inner_step": ("quick", dict(OMNIGLOT, inner_steps=0)),
    "first_order_anil": ("quick", dict(OMNIGLOT, first_order=True, adapt_layers="head")),
    "miniimagenet": ("miniimagenet-5way-1shot", dict(meta_batch=2, inner_steps=2, n_query=2)),
    "meta_batch_1": ("quick", dict(OMNIGLOT, meta_batch=1)),
    "meta_batch_16": ("quick", dict(n_way=3, meta_batch=16, inner_steps=2)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_meta_gradients_equal_higher_in_float64(case, monkeypatch):
    monkeypatch.setitem(batched.TASK_CHUNK, "cpu", 5)  # whole meta-batches and chunks of one
    preset, overrides = CASES[case]
    cfg = get_preset(preset, **overrides)
    tasks = _tasks(cfg, cfg.meta_batch)
    ref, ref_metrics = _meta_grads("higher", cfg, tasks)
    got, got_metrics = _meta_grads("batched", cfg, tasks)
    assert ref.keys() == got.keys()
    assert _relative_difference(ref, got) < TIGHT, case
    for k in ref_metrics:
        assert got_metrics[k] == pytest.approx(ref_metrics[k], rel=1e-6), k  # higher: float32 acc
    assert all(g.abs().sum() > 0 for g in got.values())  # every parameter gets one
    if cfg.meta_clip is not None:  # the clip bites, on both engines alike
        assert max(g.abs().max().item() for g in got.values()) == pytest.approx(cfg.meta_clip)


def test_ten_meta_steps_of_training_agree_in_float64(data_root):
    """Whole Adam steps on real episodes: the trajectories stay together in float64 (in
    float32 rounding noise is amplified by Adam until they part within ~10 steps)."""
    cfg = get_preset("quick", data=str(data_root))
    sampler = task_samplers(cfg)["train"]
    torch.manual_seed(0)
    nets = {e: build_model(cfg).double() for e in ENGINES}
    nets["batched"].load_state_dict(nets["higher"].state_dict())
    opts = {e: torch.optim.Adam(n.parameters(), lr=cfg.meta_lr) for e, n in nets.items()}
    for step in range(10):
        for e in ENGINES:
            meta_step(nets[e], opts[e], sampler.batch(step, cfg.meta_batch), cfg, engine=e)
    a = dict(nets["higher"].named_parameters())
    b = dict(nets["batched"].named_parameters())
    for name in a:
        diff = (a[name] - b[name]).abs().max().item()
        if name.endswith("conv.bias"):  # rounding noise on a zero gradient; see _functional
            assert diff < 1e-6, name
        else:
            assert diff < 1e-10 * a[name].abs().max().item(), name


def test_meta_gradients_float32_loosely():
    cfg = get_preset("quick", **OMNIGLOT)
    tasks = _tasks(cfg, cfg.meta_batch, dtype=torch.float32)
    ref, _ = _meta_grads("higher", cfg, tasks, torch.float32)
    got, _ = _meta_grads("batched", cfg, tasks, torch.float32)
    assert _relative_difference(ref, got) < 1e-2


def test_both_batch_norms_and_the_module_agree():
    cfg = get_preset("quick", n_way=4)
    torch.manual_seed(0)
    model = build_model(cfg).double()
    x = torch.rand(3, 4, 1, 28, 28, dtype=torch.float64)
    params = {n: torch.stack([p * (1 + 0.1 * t) for t in range(3)])
              for n, p in model.named_parameters()}
    ref = torch.stack([functional_call(model, {n: v[t] for n, v in params.items()}, (x[t],))
                       for t in range(3)])
    for norm in BATCH_NORMS:
        out = batched_forward(model, params, x, norm)
        assert (out - ref).abs().max() < TIGHT * ref.abs().max(), norm


def test_evaluation_accuracies_equal_higher(monkeypatch):
    cfg = get_preset("quick", n_way=4, n_query=3)
    torch.manual_seed(0)
    model = build_model(cfg).double()
    tasks = _tasks(cfg, 5) + _tasks(get_preset("quick", n_way=4, n_query=1), 2, seed=1)
    monkeypatch.setitem(batched.TASK_CHUNK, "cpu", 2)  # chunks of 2, and a change of shapes
    ref = get_engine("higher").evaluate(model, tasks, cfg, 3)
    got = get_engine("batched").evaluate(model, iter(tasks), cfg, 3)
    assert got.shape == (7, 4) and np.array_equal(got, ref)
    assert get_engine("batched").evaluate(model, [], cfg, 3).shape == (0, 4)


def test_recordings_equal_higher_in_float64():
    cfg = get_preset("quick", n_way=4)
    images = np.random.default_rng(0).random((7, 3, 28, 28)).astype(np.float32)
    ids = np.array([[f"a/c{c}/{e}" for e in range(3)] for c in range(7)])
    tasks = analysis_tasks(images, ids, cfg.n_way, 3)
    probe_set = _probe_set(images, ids, tasks[0], 1)
    eval_eps = _tasks(cfg, 3, seed=2)
    torch.manual_seed(0)
    model = build_model(cfg).double()
    out = {}
    for engine in ENGINES:
        rec = RecordConfig(tasks=3, inner_steps=(0, 1, 3), eval_tasks=3, progress=False,
                           engine=engine)
        probe = Probe(model, layers=list(rec.layers), dtype="float64")  # stored in float64
        out[engine] = record_checkpoint(model, probe, cfg, rec, tasks, probe_set, eval_eps, 7,
                                        {"kind": "test"})
    a, b = out["higher"], out["batched"]
    assert list(a.data_vars) == list(b.data_vars)
    assert {k: v for k, v in a.attrs.items() if k != "created"} == \
        {k: v for k, v in b.attrs.items() if k != "created"}
    for name in a.data_vars:
        ref = a[name].values
        assert a[name].dims == b[name].dims and ref.dtype == np.float64, name
        assert np.abs(b[name].values - ref).max() <= TIGHT * np.abs(ref).max(), name
    for name in a.coords:
        assert np.array_equal(a[name].values, b[name].values), name
    assert not np.array_equal(a["head"].sel(task=0, inner_step=3), a["head"].sel(task=1, inner_step=3))


def _quick(data_root, **kw):
    base = dict(steps=50, val_every=50, val_tasks=100, test_tasks=0, lake_eval=False,
                progress=False, checkpoint_every=50, data=str(data_root))
    return get_preset("quick", **{**base, **kw})


def _val(run):
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in lines if r["kind"] == "val"}


def test_fifty_quick_steps_learn_alike_with_either_engine(tmp_path, data_root):
    val = {}
    for engine in ENGINES:  # validation after the 1 inner step the preset meta-trains for
        train(_quick(data_root, engine=engine, inner_steps_eval=1, val_tasks=200),
              tmp_path / engine, log=None)
        val[engine] = _val(tmp_path / engine)
    a, b = val["higher"], val["batched"]
    # the same initial weights and tasks (float32 rounding may flip an argmax or two)
    assert abs(a[0]["mean"] - b[0]["mean"]) < 0.5
    for v in (a, b):  # both learn: about 7 % -> 18 % in 50 steps, CI about 1.5 %
        assert v[50]["mean"] > v[0]["mean"] + 5
    # the runs differ by rounding only (float32 through Adam); far below 5 combined CIs
    assert abs(a[50]["mean"] - b[50]["mean"]) < 5 * np.hypot(a[50]["ci95"], b[50]["ci95"]) / 1.96


# Conv biases feed a batch norm that subtracts them again: their exact gradient is 0,
# their computed one is rounding noise, which Adam's normalisation turns into +-lr
# steps. They differ between engines (as between CPUs) without changing the function.
def _functional(name):
    return not name.endswith("conv.bias")


def test_resume_with_the_other_engine(tmp_path, data_root):
    small = dict(n_way=5, meta_batch=2, steps=6, checkpoint_every=3, checkpoint_log=False,
                 val_every=0, state_every=100)
    train(_quick(data_root, engine="higher", **small), tmp_path / "ref", log=None)
    train(_quick(data_root, engine="higher", **{**small, "steps": 3}), tmp_path / "mix", log=None)
    assert maml_main(["--out", str(tmp_path / "mix"), "--resume", "--steps", "6",
                      "--engine", "batched", "--no-progress"]) == 0
    stored, saved = load_run(tmp_path / "mix")
    assert stored.engine == "batched" and sorted(saved) == [0, 3, 6]
    ref = load_checkpoint(load_run(tmp_path / "ref")[1][6])
    got = load_checkpoint(saved[6])
    names = list(ref["model"])

    def close(a, b, rel, what):  # relative to the tensor's largest element
        assert (a - b).abs().max() <= rel * b.abs().max(), what

    for k in filter(_functional, names):
        close(got["model"][k], ref["model"][k], 1e-4, k)
    for pid, state in ref["optimizer"]["state"].items():
        if _functional(names[int(pid)]):
            for k, v in state.items():
                close(got["optimizer"]["state"][pid][k].double(), v.double(), 1e-2,
                      f"{names[int(pid)]} {k}")
    # and the networks compute the same function
    nets = []
    for ckpt in (ref, got):
        net = build_model(stored)
        net.load_state_dict(ckpt["model"])
        nets.append(net)
    x = torch.as_tensor(_tasks(stored, 1, dtype=torch.float32)[0].query_x)
    with torch.no_grad():
        torch.testing.assert_close(nets[1](x), nets[0](x), rtol=1e-4, atol=1e-4)


def test_unknown_engine_is_refused_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(TrainingError, match=r"Unknown engine.*'jax'. Expected one of"):
        get_preset("quick", engine="jax")
    with pytest.raises(TrainingError, match=r"Unknown engine.*'jax'"):
        RecordConfig(engine="jax")
    with pytest.raises(SystemExit) as exc:  # refused by the parser, with the allowed engines
        maml_main(["--out", str(tmp_path / "r"), "--engine", "jax"])
    assert exc.value.code == 2
    assert "invalid choice: 'jax' (choose from 'higher', 'batched')" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_configured_engine_names_are_the_registry_s():
    """config.py owns the literal names (so it need not import the engines); the
    registry holds one engine per name, the reference first."""
    from repscope.training.config import ENGINE_NAMES

    assert ENGINE_NAMES[0] == "higher"
    assert sorted(ENGINE_NAMES) == sorted(ENGINES)
    assert all(ENGINES[name].name == name for name in ENGINE_NAMES)
