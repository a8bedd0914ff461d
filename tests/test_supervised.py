"""The supervised MNIST control (Figure 2) on the real MNIST test set, offline mode."""
import json

import numpy as np
import pytest
import xarray as xr

from repscope import probes
from repscope.training.errors import TrainingError
from repscope.training.supervised import SupervisedConfig, load_data, main, train_and_record


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("mnist")
    config = SupervisedConfig(steps=80, record_every=40, data=str(data_root), mnist="offline",
                              reduce="spatial_mean", progress=False)
    data = load_data(config)
    summary = train_and_record(config, out, data)
    return config, out, data, summary


def test_offline_split_is_announced_and_recorded(short_run):
    config, out, data, summary = short_run
    assert data["meta"]["mode"] == "offline-test-split"
    assert data["meta"]["train"] == "t10k[100:]" and data["meta"]["probe"] == "t10k[0:100]"
    ds = probes.open_run(out / "activations")
    assert "OFFLINE" in ds.attrs["data_note"]
    assert json.loads(ds.attrs["config"])["data_meta"]["mode"] == "offline-test-split"


def test_record_layout_matches_contract(short_run):
    config, out, data, summary = short_run
    ds = probes.open_run(out / "activations")
    assert ds["checkpoint"].values.tolist() == [0, 40, 80]
    assert ds.sizes["task"] == 1 and ds.sizes["inner_step"] == 1 and ds.sizes["stimulus"] == 100
    assert json.loads(ds.attrs["layers"]) == ["conv1", "conv2", "conv3", "conv4", "head"]
    assert ds["conv1"].dims == ("checkpoint", "task", "inner_step", "stimulus", "unit_conv1")
    assert ds.sizes["unit_conv1"] == 64 and ds.sizes["unit_head"] == 10
    # probe stimuli are the first 100 test images, with their true labels
    y = data["probe"][1].numpy()
    np.testing.assert_array_equal(ds["label"].values, y)
    assert ds["image_id"].values[0] == "t10k/00000" and set(ds["role"].values) == {"probe"}
    assert ds["accuracy"].attrs["role"] == "metric"


def test_the_network_learns(short_run):
    config, out, data, summary = short_run
    assert summary["final_accuracy"] > 0.5, summary  # chance is 0.1
    acc = summary["accuracy_by_step"]
    assert acc[80] > acc[0] + 0.3


def test_rerun_skips_recorded_steps_and_training_is_deterministic(data_root, tmp_path):
    config = SupervisedConfig(steps=4, record_every=2, data=str(data_root), mnist="offline",
                              reduce="spatial_mean", progress=False)
    data = load_data(config)
    first = train_and_record(config, tmp_path / "a", data)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a" / "activations").glob("*.nc")}
    again = train_and_record(config, tmp_path / "a", data)
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a" / "activations").glob("*.nc")}
    assert before == after and len(before) == 3  # nothing rewritten
    assert again["final_accuracy"] == first["final_accuracy"]
    train_and_record(config, tmp_path / "b", data)
    a, b = (probes.open_run(tmp_path / name / "activations") for name in "ab")
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())


def test_cli_refuses_a_different_config_in_the_same_folder(tmp_path, data_root, capsys):
    args = ["--out", str(tmp_path), "--steps", "2", "--record-every", "1", "--mnist", "offline",
            "--data", str(data_root), "--reduce", "spatial_mean", "--no-progress"]
    assert main(args) == 0
    assert "final accuracy" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "activations").glob("*.nc")) == [
        "checkpoint_00000000.nc", "checkpoint_00000001.nc", "checkpoint_00000002.nc"]
    assert main(args[:3] + ["3"] + args[4:]) == 2
    assert "another configuration" in capsys.readouterr().err


def test_bad_options_name_the_allowed_values():
    with pytest.raises(TrainingError, match=r"Unknown mnist \(--mnist\) 'web'.*\['auto', 'full', 'offline'\]"):
        SupervisedConfig(mnist="web")
    with pytest.raises(TrainingError, match=r"steps \(--steps\) must be an integer >= 1, got 0"):
        SupervisedConfig(steps=0)


def test_diverging_training_stops_at_the_first_non_finite_loss(tmp_path, data_root, capsys):
    args = ["--out", str(tmp_path), "--steps", "6", "--record-every", "1", "--mnist", "offline",
            "--data", str(data_root), "--no-progress", "--lr", "1e37", "--n-probe", "20"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Training diverged at step" in err and "Lower --lr" in err, err
    ds = probes.open_run(tmp_path / "activations")
    assert int(ds["checkpoint"].max()) < 6
    assert all(np.isfinite(ds[v].values).all() for v in ds.data_vars)  # nothing diverged kept
    assert not (tmp_path / "summary.json").exists()


def test_overwrite_and_a_corrupt_record(tmp_path, data_root, capsys):
    args = ["--out", str(tmp_path), "--steps", "2", "--record-every", "1", "--mnist", "offline",
            "--data", str(data_root), "--no-progress", "--n-probe", "20"]
    assert main(args) == 0
    reference = probes.open_run(tmp_path / "activations")
    victim = tmp_path / "activations" / "checkpoint_00000001.nc"
    victim.write_bytes(b"")  # a 0-byte file counted as done before
    assert main(args) == 0
    xr.testing.assert_identical(probes.open_run(tmp_path / "activations").drop_attrs(),
                                reference.drop_attrs())
    metrics = (tmp_path / "metrics.jsonl").read_text()
    assert "recorded_again" in metrics and "checkpoint_00000001.nc" in metrics
    (tmp_path / "activations" / ".checkpoint_00000009.nc.tmp-999999999").write_bytes(b"x")
    assert main(args + ["--overwrite", "--steps", "1"]) == 0
    assert probes.existing_checkpoints(tmp_path / "activations") == [0, 1]
    assert "left by a killed process" in capsys.readouterr().err


def test_overwrite_with_missing_data_keeps_the_old_run(tmp_path, data_root):
    args = ["--out", str(tmp_path / "r"), "--steps", "1", "--record-every", "1", "--mnist",
            "offline", "--no-progress", "--n-probe", "20"]
    assert main(args + ["--data", str(data_root)]) == 0
    before = probes.existing_checkpoints(tmp_path / "r" / "activations")
    assert main(args + ["--data", str(tmp_path / "no-data"), "--overwrite"]) != 0
    assert probes.existing_checkpoints(tmp_path / "r" / "activations") == before == [0, 1]
