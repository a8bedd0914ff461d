"""The higher inner loop and meta-step against a hand-unrolled functional reference."""
from types import SimpleNamespace

import pytest
import torch
from torch.func import functional_call

from repscope.training.config import get_preset
from repscope.training.errors import TrainingError
from repscope.training.inner import adapt, adapted_parameter_names, task_loss
from repscope.training.engines import meta_step
from repscope.training.model import build_model



def _tasks(n_tasks, n_way, k_shot, n_query, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_tasks):
        out.append(SimpleNamespace(
            support_x=torch.rand(n_way * k_shot, 1, 28, 28, generator=g, dtype=torch.float64),
            support_y=torch.arange(n_way).repeat_interleave(k_shot),
            query_x=torch.rand(n_way * n_query, 1, 28, 28, generator=g, dtype=torch.float64),
            query_y=torch.arange(n_way).repeat_interleave(n_query)))
    return out


def _reference_meta_grads(model, tasks, cfg):
    """Explicit SGD on a params dict through torch.func.functional_call."""
    theta = dict(model.named_parameters())
    adapted = adapted_parameter_names(model, cfg)
    total = 0.0
    for t in tasks:
        fast = dict(theta)
        for _ in range(cfg.inner_steps):
            loss = task_loss(functional_call(model, fast, (t.support_x,)), t.support_y,
                             cfg.inner_loss, cfg.k_shot)
            grads = torch.autograd.grad(loss, [fast[n] for n in adapted],
                                        create_graph=not cfg.first_order)
            for n, g in zip(adapted, grads):
                fast[n] = fast[n] - cfg.inner_lr * (g.detach() if cfg.first_order else g)
        q = task_loss(functional_call(model, fast, (t.query_x,)), t.query_y, cfg.meta_loss,
                      cfg.k_shot)
        total = total + q / len(tasks)
    grads = torch.autograd.grad(total, list(theta.values()), allow_unused=True)
    return {n: (torch.zeros_like(p) if g is None else g) for (n, p), g in zip(theta.items(), grads)}


def _toolkit_meta_grads(model, tasks, cfg):
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    meta_step(model, opt, tasks, cfg)
    return {n: (torch.zeros_like(p) if p.grad is None else p.grad)
            for n, p in model.named_parameters()}


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("extra", [{}, {"adapt_layers": "freeze:2"}, {"adapt_layers": "head"},
                                   {"adapt_bn": True, "inner_loss": "mean", "inner_lr": 0.3,
                                    "meta_loss": "sum_over_k"}])
def test_meta_gradients_match_functional_reference(first_order, extra):
    cfg = get_preset("quick", n_way=3, k_shot=2, n_query=2, meta_batch=2, inner_steps=2,
                     first_order=first_order, **extra)
    torch.manual_seed(0)
    model = build_model(cfg).double()
    tasks = _tasks(2, 3, 2, 2)
    ref = _reference_meta_grads(model, tasks, cfg)
    got = _toolkit_meta_grads(model, tasks, cfg)
    assert ref.keys() == got.keys()
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-6, atol=1e-6, msg=name)
    # every parameter gets a meta-gradient, adapted or not
    assert all(g.abs().sum() > 0 for g in got.values())


def test_second_and_first_order_differ():
    grads = {}
    for fo in (False, True):
        cfg = get_preset("quick", n_way=3, meta_batch=1, inner_steps=2, first_order=fo)
        torch.manual_seed(0)
        grads[fo] = _toolkit_meta_grads(build_model(cfg).double(), _tasks(1, 3, 1, 1), cfg)
    diff = (grads[False]["conv1.conv.weight"] - grads[True]["conv1.conv.weight"]).abs().max()
    assert diff > 1e-6


def _changed_after_adapt(cfg, steps=2):
    torch.manual_seed(1)
    model = build_model(cfg).double()
    t = _tasks(1, cfg.n_way, cfg.k_shot, 1)[0]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    *_, (_, fmodel) = adapt(model, t.support_x, t.support_y, cfg, steps)
    after = dict(zip(before, fmodel.parameters()))
    for n, p in model.named_parameters():  # the meta-parameters are untouched
        assert torch.equal(p, before[n])
    return {n for n in before if not torch.equal(after[n], before[n])}


CONV = [f"conv{i}.conv.{w}" for i in range(1, 5) for w in ("weight", "bias")]
BETA = [f"conv{i}.norm.beta" for i in range(1, 5)]
HEAD = ["head.weight", "head.bias"]


def test_bn_offsets_not_adapted_by_default():
    assert _changed_after_adapt(get_preset("quick", n_way=3)) == set(CONV + HEAD)
    assert _changed_after_adapt(get_preset("quick", n_way=3, adapt_bn=True)) == set(CONV + HEAD + BETA)


@pytest.mark.parametrize("spec,expected", [
    ("head", HEAD),
    ("freeze:1", CONV[2:] + HEAD),
    ("freeze:3", CONV[6:] + HEAD),
    ("freeze:4", HEAD),
    ("conv2,head", CONV[2:4] + HEAD),
])
def test_layer_freezing_freezes_exactly_what_it_says(spec, expected):
    assert _changed_after_adapt(get_preset("quick", n_way=3, adapt_layers=spec)) == set(expected)


@pytest.mark.parametrize("spec", ["conv9", "freeze:5", "freeze:x", ""])
def test_unknown_layer_selection_raises(spec):
    model = build_model(get_preset("quick"))
    with pytest.raises(TrainingError, match="adapt_layers"):
        adapted_parameter_names(model, get_preset("quick", adapt_layers=spec))


def test_mean_loss_with_scaled_lr_equals_sum_over_k():
    n_way, k, alpha = 4, 2, 0.1
    a = get_preset("quick", n_way=n_way, k_shot=k, inner_loss="sum_over_k", inner_lr=alpha)
    b = get_preset("quick", n_way=n_way, k_shot=k, inner_loss="mean", inner_lr=n_way * alpha)
    torch.manual_seed(0)
    model = build_model(a).double()
    t = _tasks(1, n_way, k, 1)[0]
    *_, (_, fa) = adapt(model, t.support_x, t.support_y, a, 3)
    *_, (_, fb) = adapt(model, t.support_x, t.support_y, b, 3)
    for pa, pb in zip(fa.parameters(), fb.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-12)


def test_meta_clip_bounds_gradients():
    cfg = get_preset("quick", n_way=3, meta_batch=1, inner_steps=1, meta_clip=1e-4)
    torch.manual_seed(0)
    model = build_model(cfg).double()
    grads = _toolkit_meta_grads(model, _tasks(1, 3, 1, 1), cfg)
    assert max(g.abs().max().item() for g in grads.values()) == pytest.approx(1e-4)
