"""Recording a MAML run: layout, the shared probe set, step 0 across tasks, resume."""
import json

import numpy as np
import pytest
import torch
import xarray as xr

from repscope import probes
from repscope.training.checkpoint import load_meta_parameters, load_run
from repscope.training.config import get_preset
from repscope.training.errors import TrainingError
from repscope.training.inner import adapt
from repscope.training.maml import train
from repscope.training.model import build_model
from repscope.training.record import RecordConfig, analysis_tasks, main, record_run, select_checkpoints
from repscope.training.tasks import task_samplers


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("maml") / "run"
    config = get_preset("quick", n_way=5, meta_batch=1, steps=2, val_every=0, test_tasks=0,
                        lake_eval=False, progress=False, data=str(data_root))
    train(config, out, log=None)
    return out


def _rec(**kw):
    base = dict(tasks=3, inner_steps=(0, 1, 3), eval_tasks=2, reduce="spatial_mean", progress=False)
    return RecordConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def recorded(tiny_run):
    folder = record_run(tiny_run, _rec(), log=None)
    return probes.open_run(folder)


def test_dims_and_coords_as_documented(recorded):
    ds = recorded
    assert ds["checkpoint"].values.tolist() == [0, 1, 2]
    assert ds["task"].values.tolist() == [0, 1, 2]
    assert ds["inner_step"].values.tolist() == [0, 1, 3]
    assert ds.sizes["stimulus"] == 5 and ds.sizes["eval_task"] == 2
    for layer in ("conv1", "conv2", "conv3", "conv4", "head"):
        assert ds[layer].dims == ("checkpoint", "task", "inner_step", "stimulus", f"unit_{layer}")
    assert ds.sizes["unit_conv1"] == 64 and ds.sizes["unit_head"] == 5
    assert ds["accuracy"].dims == ("checkpoint", "task", "inner_step")
    assert ds["eval_accuracy"].dims == ("checkpoint", "eval_task")
    assert set(ds["role"].values) == {"probe"}
    assert ds["label"].values.tolist() == [0, 1, 2, 3, 4]
    cfg = json.loads(ds.attrs["config"])
    assert cfg["kind"] == "maml" and cfg["probe_set"]["index"] == 1
    assert np.all((ds["accuracy"].values >= 0) & (ds["accuracy"].values <= 1))


def test_step_zero_is_identical_across_tasks(recorded):
    for layer in ("conv1", "conv4", "head"):
        step0 = recorded[layer].sel(inner_step=0).values
        assert np.array_equal(step0[:, 0], step0[:, 1]) and np.array_equal(step0[:, 0], step0[:, 2])
        later = recorded[layer].sel(inner_step=3).values
        assert not np.array_equal(later[:, 0], later[:, 1])  # tasks adapt differently


def test_values_equal_a_manual_forward_on_the_probe_set(tiny_run, recorded, data_root):
    config, saved = load_run(tiny_run)
    test = task_samplers(config)["test"]
    tasks = analysis_tasks(test.images, test.image_ids, config.n_way, 3)
    probe_x = torch.as_tensor(test.images[tasks[0].classes, 1])  # second drawing of task 0
    assert recorded["image_id"].values.tolist() == test.image_ids[tasks[0].classes, 1].tolist()
    assert recorded["image_id"].values[0].count("/") == 2  # Alphabet/characterNN/drawer
    model = load_meta_parameters(build_model(config), saved[2])
    with torch.no_grad():
        np.testing.assert_array_equal(recorded["head"].sel(checkpoint=2, task=1, inner_step=0).values,
                                      model(probe_x).numpy())
    # task 2 after one inner step on its own support set
    t = tasks[2]
    for k, fmodel in adapt(model, torch.as_tensor(t.support_x), torch.as_tensor(t.support_y), config, 1):
        pass
    # the run's engine (quick: batched) against higher: float32 rounding of one inner
    # step apart (tests/test_engines.py compares the engines tightly in float64)
    with torch.no_grad():
        np.testing.assert_allclose(recorded["head"].sel(checkpoint=2, task=2, inner_step=1).values,
                                   fmodel(probe_x).numpy(), rtol=0, atol=2e-5)
        expected = fmodel.conv2(fmodel.conv1(probe_x)).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(recorded["conv2"].sel(checkpoint=2, task=2, inner_step=1).values,
                               expected, rtol=0, atol=2e-5)


def test_resumed_recording_equals_a_fresh_one(tiny_run, recorded, tmp_path):
    partial = tmp_path / "acts"
    record_run(tiny_run, _rec(checkpoints="0,2"), out=partial, log=None)
    first = {p.name: p.stat().st_mtime_ns for p in partial.glob("*.nc")}
    record_run(tiny_run, _rec(), out=partial, log=None)
    assert {p.name: p.stat().st_mtime_ns for p in partial.glob("*.nc") if p.name in first} == first
    resumed = probes.open_run(partial)
    drop = ["created"]
    xr.testing.assert_identical(resumed.drop_attrs(), recorded.drop_attrs())
    assert {k: v for k, v in resumed.attrs.items() if k not in drop} == \
        {k: v for k, v in recorded.attrs.items() if k not in drop}


def test_cli_and_bad_checkpoint_specs(tiny_run, tmp_path, capsys):
    assert main(["--run", str(tiny_run), "--out", str(tmp_path / "a"), "--checkpoints", "1",
                 "--tasks", "2", "--inner-steps", "0,1", "--eval-tasks", "0", "--layers", "head",
                 "--no-progress"]) == 0
    ds = probes.open_run(tmp_path / "a")
    assert list(ds.data_vars) == ["head", "accuracy"] and ds["checkpoint"].values.tolist() == [1]
    assert main(["--run", str(tiny_run), "--out", str(tmp_path / "a"), "--checkpoints", "2",
                 "--tasks", "3", "--inner-steps", "0,1", "--eval-tasks", "0", "--layers", "head",
                 "--no-progress"]) == 2
    assert ("already holds recordings made with other settings (tasks: 2 in the folder, 3 now)"
            in capsys.readouterr().err)
    assert main(["--run", str(tiny_run), "--checkpoints", "7", "--no-progress"]) == 2
    assert "not in the run" in capsys.readouterr().err
    with pytest.raises(TrainingError, match="Expected 'all', 'every:K'"):
        select_checkpoints("sometimes", [0, 1])
    with pytest.raises(TrainingError, match="probe_task must be one of the analysed tasks 0..1"):
        RecordConfig(tasks=2, probe_task=2)


def test_cli_rerecords_a_corrupt_file_and_names_it(tiny_run, recorded, tmp_path, capsys):
    args = ["--run", str(tiny_run), "--out", str(tmp_path / "acts"), "--tasks", "3",
            "--inner-steps", "0,1,3", "--eval-tasks", "2", "--reduce", "spatial_mean",
            "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    for step, damage in ((0, lambda b: b""), (2, lambda b: b[: len(b) // 2])):
        path = probes.store.activation_file_path(tmp_path / "acts", step)
        path.write_bytes(damage(path.read_bytes()))
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "--inner-steps" not in err
    assert "recording checkpoint 0 again" in err and "checkpoint_00000000.nc" in err
    assert "recording checkpoint 2 again" in err and "recording 2 of 3 checkpoints" in err
    xr.testing.assert_identical(probes.open_run(tmp_path / "acts").drop_attrs(),
                                recorded.drop_attrs())
