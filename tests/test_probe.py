"""Probe over a zoo of awkward models: selection, hook scoping, outputs, labels.

Recorded values are compared with a manual forward through the same submodules
(``torch.equal``), never only checked for running.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from repscope.probes import Probe, ProbeError

IDS = [f"img{i}" for i in range(6)]
LABELS = [0, 1, 2, 0, 1, 2]


class Block(nn.Module):
    """conv -> BN -> in-place ReLU: the ReLU overwrites the conv's output tensor."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.norm(self.conv(x)))


class Zoo(nn.Module):
    """Nested blocks, a shared module called twice, tuple and dict outputs, an unused module."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(Block(1, 4), Block(4, 6))
        self.shared = nn.Linear(6, 6)
        self.pair = TupleOut()
        self.named = DictOut()
        self.unused = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = self.encoder(x).mean(dim=(2, 3))
        h = self.shared(F.relu(self.shared(h)))
        h, _aux = self.pair(h)
        out = self.named(h)
        return self.head(out["hidden"])


class TupleOut(nn.Module):
    def forward(self, h):
        return h * 2, h.sum(1)


class DictOut(nn.Module):
    def forward(self, h):
        return {"hidden": h + 1, "logits": h - 1}


@pytest.fixture
def zoo():
    torch.manual_seed(0)
    return Zoo()


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(6, 1, 8, 8)


def record(probe, model, x, *, module=None, batches=1, **key):
    key = {"checkpoint": 0, **key}
    with probe.recording(labels=LABELS, image_ids=IDS, module=module, **key) as rec:
        for chunk in x.chunk(batches):
            model(chunk)
    return rec


def probe_attrs(probe, path):
    return probe.to_dataset()[path].attrs


def all_hooks(model):
    return {name: len(m._forward_hooks) for name, m in model.named_modules() if m._forward_hooks}


# --- layer selection -------------------------------------------------------------------

def test_default_selects_direct_children(zoo):
    assert Probe(zoo).layers == ["encoder", "shared", "pair", "named", "unused", "head"]


def test_predicate_and_list_selection(zoo):
    convs = Probe(zoo, lambda path, m: isinstance(m, nn.Conv2d)).layers
    assert convs == ["encoder.0.conv", "encoder.1.conv"]
    assert Probe(zoo, ["head", "encoder.1"]).layers == ["head", "encoder.1"]
    assert Probe(zoo, "head").layers == ["head"]


def test_unknown_path_lists_valid_paths_and_close_matches(zoo):
    with pytest.raises(ProbeError) as err:
        Probe(zoo, ["encoder.0.conv", "encoder.1.cnv"])
    message = str(err.value)
    assert "'encoder.1.cnv'" in message
    assert "Close matches: ['encoder.1.conv'" in message
    assert "'encoder.0.norm'" in message and "'head'" in message


@pytest.mark.parametrize("bad, expected", [
    (["head", "head"], "more than once"),
    (lambda path, m: False, "No layers selected"),
    (3, "Unsupported layer selector"),
    ([""], "Unknown layer ''"),
])
def test_bad_selectors_are_refused(zoo, bad, expected):
    with pytest.raises(ProbeError, match=expected):
        Probe(zoo, bad)


@pytest.mark.parametrize("kwargs, expected", [
    ({"dtype": "int8"}, "Unknown dtype 'int8'"),
    ({"reduce": "max"}, "Unknown reduction 'max'"),
    ({"reduce": {"nope": "spatial_mean"}}, "not recorded layers"),
    ({"output_keys": {"nope": 0}}, "not recorded layers"),
])
def test_bad_options_are_refused(zoo, kwargs, expected):
    with pytest.raises(ProbeError, match=expected):
        Probe(zoo, ["head"], **kwargs)


# --- hooks exist only while recording ---------------------------------------------------

def test_hooks_removed_after_normal_exit(zoo, x):
    probe = Probe(zoo, ["encoder.0.conv", "head"])
    with probe.recording(checkpoint=0, labels=LABELS, image_ids=IDS):
        assert all_hooks(zoo) == {"encoder.0.conv": 1, "head": 1}
        zoo(x)
    assert all_hooks(zoo) == {}


def test_hooks_removed_after_exception_and_cell_discarded(zoo, x):
    probe = Probe(zoo, ["head"])
    with pytest.raises(KeyError, match="boom"):
        with probe.recording(checkpoint=0, labels=LABELS, image_ids=IDS):
            zoo(x)
            raise KeyError("boom")
    assert all_hooks(zoo) == {}
    assert probe.recorded == []
    record(probe, zoo, x)          # the same cell can be recorded again
    assert probe.recorded == [(0, 0, 0)]


def test_hooks_removed_after_nested_use(zoo, x):
    outer, inner = Probe(zoo, ["head"]), Probe(zoo, ["head", "encoder"])
    with outer.recording(checkpoint=0, labels=LABELS, image_ids=IDS) as rec_outer:
        with inner.recording(checkpoint=0, labels=LABELS, image_ids=IDS) as rec_inner:
            assert all_hooks(zoo) == {"head": 2, "encoder": 1}
            zoo(x)
        assert all_hooks(zoo) == {"head": 1}
        with pytest.raises(ProbeError, match="already recording"):
            with outer.recording(checkpoint=1, labels=LABELS, image_ids=IDS):
                pass
        assert all_hooks(zoo) == {"head": 1}
    assert all_hooks(zoo) == {}
    assert np.array_equal(rec_outer.activations["head"], rec_inner.activations["head"])


def test_hooks_removed_when_a_hook_raises(zoo, x):
    probe = Probe(zoo, ["shared", "head"])
    with pytest.raises(ProbeError, match="more than once per forward"):
        record(probe, zoo, x)
    assert all_hooks(zoo) == {}


# --- every layer must fire --------------------------------------------------------------

def test_module_never_called_is_an_error(zoo, x):
    probe = Probe(zoo, ["unused", "head"])
    with pytest.raises(ProbeError, match=r"\['unused'\] never ran"):
        record(probe, zoo, x)


def test_no_forward_at_all_is_an_error(zoo):
    probe = Probe(zoo, ["head"])
    with pytest.raises(ProbeError, match="never ran.*module=copy"):
        with probe.recording(checkpoint=0, labels=LABELS, image_ids=IDS):
            pass


def test_fewer_stimuli_than_labels_is_an_error(zoo, x):
    probe = Probe(zoo, ["head"])
    with pytest.raises(ProbeError, match="recorded 3 stimuli .* but 6 labels"):
        with probe.recording(checkpoint=0, labels=LABELS, image_ids=IDS):
            zoo(x[:3])


# --- values equal a manual forward ------------------------------------------------------

def test_nested_and_inplace_relu_values_equal_manual_forward(zoo, x):
    layers = ["encoder.0.conv", "encoder.0.norm", "encoder.0", "encoder", "head"]
    rec = record(Probe(zoo, layers), zoo, x)
    with torch.no_grad():
        conv = zoo.encoder[0].conv(x)
        norm = zoo.encoder[0].norm(conv)
        block = F.relu(norm)
        enc = zoo.encoder[1](block.clone())
        head = zoo(x)
    assert (conv < 0).any(), "the in-place ReLU must have something to overwrite"
    for path, want in zip(layers, [conv, norm, block, enc, head]):
        assert torch.equal(torch.from_numpy(rec.activations[path]), want.reshape(6, -1)), path


def test_batches_are_concatenated_in_order(zoo, x):
    zoo.eval()                     # BN with running stats: batches independent
    one = record(Probe(zoo, ["encoder", "head"]), zoo, x, batches=1)
    three = record(Probe(zoo, ["encoder", "head"]), zoo, x, batches=3)
    for path in ("encoder", "head"):
        assert np.array_equal(one.activations[path], three.activations[path])


def test_batchnorm_train_mode_uses_each_batch_statistics(zoo, x):
    rec = record(Probe(zoo, ["encoder.0.norm"]), zoo, x, batches=2)
    with torch.no_grad():
        want = torch.cat([zoo.encoder[0].norm(zoo.encoder[0].conv(c)) for c in x.chunk(2)])
    assert torch.equal(torch.from_numpy(rec.activations["encoder.0.norm"]), want.reshape(6, -1))


def test_tuple_and_dict_outputs_first_tensor_or_key(zoo, x):
    probe = Probe(zoo, ["pair", "named"])
    keyed = Probe(zoo, ["pair", "named"], output_keys={"pair": 1, "named": "logits"})
    rec, rec_keyed = record(probe, zoo, x), record(keyed, zoo, x)
    with torch.no_grad():
        h = zoo.encoder(x).mean(dim=(2, 3))
        h = zoo.shared(F.relu(zoo.shared(h)))
        pair, aux = zoo.pair(h)
        named = zoo.named(pair)
    assert torch.equal(torch.from_numpy(rec.activations["pair"]), pair)
    assert torch.equal(torch.from_numpy(rec.activations["named"]), named["hidden"])
    assert torch.equal(torch.from_numpy(rec_keyed.activations["pair"]), aux[:, None])
    assert probe_attrs(keyed, "pair")["feature_shape"] == []     # one value per stimulus
    assert torch.equal(torch.from_numpy(rec_keyed.activations["named"]), named["logits"])


def test_unknown_output_key_names_the_available_keys(zoo, x):
    probe = Probe(zoo, ["named"], output_keys={"named": "logit"})
    with pytest.raises(ProbeError, match=r"'logit' for layer 'named'.*\['hidden', 'logits'\]"):
        record(probe, zoo, x)


def test_shared_module_is_refused_clearly(zoo, x):
    with pytest.raises(ProbeError, match="'shared' produced 12 stimuli .* more than once per forward"):
        record(Probe(zoo, ["shared"]), zoo, x)


def test_spatial_mean_and_float16(zoo, x):
    probe = Probe(zoo, ["encoder.0", "head"], reduce="spatial_mean", dtype="float16")
    record(probe, zoo, x)
    ds = probe.to_dataset()
    with torch.no_grad():
        block = zoo.encoder[0](x.clone())
    want = block.mean(dim=(2, 3)).to(torch.float16)
    got = ds["encoder.0"].isel(checkpoint=0, task=0, inner_step=0).values
    assert got.dtype == np.float16 and np.array_equal(got, want.numpy())
    assert ds["encoder.0"].attrs["feature_shape"] == [4, 4, 4]
    assert ds["encoder.0"].attrs["reduction"] == "spatial_mean"
    assert ds["head"].attrs["reduction"] == "none"      # nothing spatial to average
    assert ds.sizes["unit_encoder.0"] == 4


def test_outputs_are_detached_and_on_cpu(zoo, x):
    x = x.requires_grad_(True)
    rec = record(Probe(zoo, ["head"]), zoo, x)
    assert isinstance(rec.activations["head"], np.ndarray)


# --- labelled dataset -------------------------------------------------------------------

def test_dataset_labels_cells_and_fills_missing_with_nan(zoo, x):
    probe = Probe(zoo, ["head", "encoder.0.conv"])
    record(probe, zoo, x, checkpoint=100, task=0, inner_step=0)
    record(probe, zoo, x, checkpoint=100, task=3, inner_step=5)
    ds = probe.to_dataset(config={"lr": 0.1})
    assert ds.attrs["layers"] == '["encoder.0.conv", "head"]'   # forward order
    assert ds["head"].dims == ("checkpoint", "task", "inner_step", "stimulus", "unit_head")
    assert ds["checkpoint"].values.tolist() == [100]
    assert ds["task"].values.tolist() == [0, 3]
    assert ds["inner_step"].values.tolist() == [0, 5]
    assert ds["label"].values.tolist() == LABELS
    assert ds["image_id"].values.tolist() == IDS
    assert ds["role"].values.tolist() == ["probe"] * 6
    assert ds["head"].sel(task=0, inner_step=5).isnull().all()
    assert not ds["head"].sel(task=3, inner_step=5).isnull().any()
    attrs = ds["encoder.0.conv"].attrs
    assert attrs["module_type"] == "Conv2d" and attrs["feature_shape"] == [4, 4, 4]
    assert ds.attrs["config"] == '{"lr": 0.1}' and ds.attrs["schema_version"] == 1


def test_roles_per_stimulus_and_bad_role(zoo, x):
    probe = Probe(zoo, ["head"])
    roles = ["support"] * 3 + ["query"] * 3
    with probe.recording(checkpoint=0, labels=LABELS, image_ids=IDS, role=roles):
        zoo(x)
    assert probe.to_dataset()["role"].values.tolist() == roles
    with pytest.raises(ProbeError, match=r"Unknown role 'train'. Expected one of \['support'"):
        probe.recording(checkpoint=1, labels=LABELS, image_ids=IDS, role="train").__enter__()


def test_different_stimulus_sets_and_repeated_cells_are_refused(zoo, x):
    probe = Probe(zoo, ["head"])
    record(probe, zoo, x)
    with pytest.raises(ProbeError, match=r"\(0, 0, 0\) was already recorded"):
        record(probe, zoo, x)
    with probe.recording(checkpoint=1, labels=LABELS[::-1], image_ids=IDS):
        zoo(x)
    with pytest.raises(ProbeError, match="different stimulus labels"):
        probe.to_dataset()


def test_to_dataset_clear_forgets_cells(zoo, x):
    probe = Probe(zoo, ["head"])
    record(probe, zoo, x)
    probe.to_dataset(clear=True)
    assert probe.recorded == []
    with pytest.raises(ProbeError, match="Nothing recorded"):
        probe.to_dataset()


def test_cleared_buffers_are_reused_but_held_arrays_never_overwritten(zoo, x):
    probe = Probe(zoo, ["encoder", "head"])
    first = record(probe, zoo, x, checkpoint=0)
    held = first.activations["head"]
    held_copy = held.copy()
    dropped_ptr = first._tensors["encoder"].data_ptr()
    probe.clear()
    assert first.activations == {}                      # forgotten recordings are emptied
    second = record(probe, zoo, x * -3.0, checkpoint=1)
    assert second._tensors["encoder"].data_ptr() == dropped_ptr     # recycled
    assert not np.shares_memory(second.activations["head"], held)   # still held: not reused
    assert np.array_equal(held, held_copy)
    with torch.no_grad():                               # the recycled buffer holds the new values
        want = zoo.encoder[1](zoo.encoder[0](x * -3.0))
    assert np.array_equal(second.activations["encoder"], want.reshape(6, -1).numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_outputs_land_on_the_cpu_equal_to_a_manual_forward(zoo, x):
    zoo, x = zoo.cuda().eval(), x.cuda()
    probe = Probe(zoo, ["encoder.0.conv", "encoder", "head"], reduce={"encoder": "spatial_mean"})
    for step in range(2):                       # the second recording reuses pinned buffers
        rec = record(probe, zoo, x, batches=2, checkpoint=step)
        probe.clear() if step == 0 else None
    with torch.no_grad():
        conv = zoo.encoder[0].conv(x)
        enc = zoo.encoder(x).mean(dim=(2, 3))
        head = zoo(x)
    for path, want in [("encoder.0.conv", conv), ("encoder", enc), ("head", head)]:
        assert rec._tensors[path].is_pinned()
        assert torch.equal(torch.from_numpy(rec.activations[path]), want.reshape(6, -1).cpu()), path
