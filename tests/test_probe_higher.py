"""Probe inside inner loops: ``higher`` patched copies and ``functional_call`` fast weights.

References are independent of the Probe: each layer is recomputed with
``torch.func.functional_call`` on that submodule with the same (fast) weights.
"""
import higher
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from repscope.probes import Probe, ProbeError

LAYERS = ["body.0", "body.1", "body", "head"]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4),
                                  nn.ReLU(inplace=True))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))


@pytest.fixture
def setup():
    torch.manual_seed(0)
    net = Net()
    support, probe_x = torch.randn(6, 1, 8, 8), torch.randn(5, 1, 8, 8)
    return net, support, torch.tensor([0, 1, 2, 0, 1, 2]), probe_x


def reference(net, params, x):
    """Each recorded layer's output under ``params``, computed submodule by submodule."""
    def sub(prefix, inp):
        module = dict(net.named_modules())[prefix]
        own = {k[len(prefix) + 1:]: v for k, v in params.items() if k.startswith(prefix + ".")}
        return functional_call(module, own, (inp,))
    with torch.no_grad():
        conv = sub("body.0", x)
        norm = sub("body.1", conv)
        body = F.relu(norm)
        head = sub("head", body.mean(dim=(2, 3)))
    return {"body.0": conv, "body.1": norm, "body": body, "head": head}


def record_kwargs(step):
    return dict(checkpoint=0, task=0, inner_step=step, labels=[0, 1, 2, 0, 1],
                image_ids=[f"p{i}" for i in range(5)])


def test_higher_patched_copy_over_inner_steps(setup):
    net, support, y, probe_x = setup
    probe = Probe(net, LAYERS)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    recs, fast = [], []
    with higher.innerloop_ctx(net, opt, copy_initial_weights=False) as (fmodel, diffopt):
        for step in range(3):
            with probe.recording(module=fmodel, **record_kwargs(step)) as rec:
                fmodel(probe_x)
            patched = dict(fmodel.named_modules())
            assert all(not patched[p]._forward_hooks for p in LAYERS)
            recs.append(rec)
            fast.append(dict(zip((n for n, _ in net.named_parameters()), fmodel.fast_params)))
            diffopt.step(F.cross_entropy(fmodel(support), y))
    assert all(not m._forward_hooks for m in net.modules())
    for rec, params in zip(recs, fast):
        want = reference(net, params, probe_x)
        for path in LAYERS:
            got = torch.from_numpy(rec.activations[path])
            assert torch.equal(got, want[path].reshape(5, -1)), path
    assert not torch.equal(torch.from_numpy(recs[0].activations["head"]),
                           torch.from_numpy(recs[2].activations["head"])), "the copy must adapt"
    ds = probe.to_dataset()
    assert ds["inner_step"].values.tolist() == [0, 1, 2]
    assert ds["body.0"].attrs["module_type"] == "Conv2d"     # the original type, not higher's


def test_hooks_on_the_original_do_not_see_higher_and_say_so(setup):
    net, _, _, probe_x = setup
    probe = Probe(net, ["head"])
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    with higher.innerloop_ctx(net, opt, copy_initial_weights=False) as (fmodel, _):
        with pytest.raises(ProbeError, match=r"never ran.*recording\(\.\.\., module=copy\)"):
            with probe.recording(**record_kwargs(0)):
                fmodel(probe_x)
    assert all(not m._forward_hooks for m in net.modules())


def test_hooks_removed_from_patched_copy_after_exception(setup):
    net, _, _, probe_x = setup
    probe = Probe(net, LAYERS)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    with higher.innerloop_ctx(net, opt, copy_initial_weights=False) as (fmodel, _):
        with pytest.raises(RuntimeError, match="inner"):
            with probe.recording(module=fmodel, **record_kwargs(0)):
                fmodel(probe_x)
                raise RuntimeError("inner")
        assert all(not m._forward_hooks for m in fmodel.modules())


def test_module_with_other_structure_is_refused(setup):
    net, *_ = setup
    probe = Probe(net, ["body.0"])
    with pytest.raises(ProbeError, match="has no submodule 'body.0'"):
        probe.recording(module=nn.Linear(2, 2), **record_kwargs(0)).__enter__()
    other = Net()
    other.body[0] = nn.Linear(2, 2)
    with pytest.raises(ProbeError, match="is a Linear, but the model's is a Conv2d"):
        probe.recording(module=other, **record_kwargs(0)).__enter__()


def test_functional_call_with_fast_weights(setup):
    net, support, y, probe_x = setup
    probe = Probe(net, LAYERS)
    params = dict(net.named_parameters())
    for step in range(2):
        with probe.recording(**record_kwargs(step)) as rec:
            functional_call(net, params, (probe_x,))
        want = reference(net, params, probe_x)
        for path in LAYERS:
            assert torch.equal(torch.from_numpy(rec.activations[path]), want[path].reshape(5, -1))
        loss = F.cross_entropy(functional_call(net, params, (support,)), y)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        params = {k: v - 0.5 * g for (k, v), g in zip(params.items(), grads)}
    assert all(not m._forward_hooks for m in net.modules())
