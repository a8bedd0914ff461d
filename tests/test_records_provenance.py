"""Records say how they were made, and non-finite values never pass silently.

A record stores the engine and device type that made it (they change float32 values
beyond rounding after the first inner step); a folder holds one of each, and ``record``
and ``open_run`` name the two when files differ. A diverged run names its last finite
checkpoint, and ``record`` refuses a checkpoint whose weights or outputs are not finite
instead of storing NaN activations and the accuracy of NaN's argmax.
"""
import json
import shutil

import numpy as np
import pytest
import torch

from repscope.probes import open_run
from repscope.probes.errors import ProbeError
from repscope.probes.store import activation_file_path
from repscope.training.config import get_preset
from repscope.training.engines.tensors import accuracy
from repscope.training.errors import TrainingError
from repscope.training.maml import train
from repscope.training.record import RecordConfig, record_run

RUN = dict(n_way=5, meta_batch=1, inner_steps=1, inner_steps_eval=1, steps=4,
           checkpoint_every=4, checkpoint_log=False, val_every=0, test_tasks=0,
           lake_eval=False, progress=False)
REC = dict(tasks=2, inner_steps=(0, 1), eval_tasks=2, reduce="spatial_mean", progress=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_root):
    root = tmp_path_factory.mktemp("provenance")
    train(get_preset("quick", **RUN, data=str(data_root)), root / "run", log=None)
    return root / "run"


def _record_config(folder, step):
    with open_run(folder, checkpoints=[step]) as ds:
        return json.loads(ds.attrs["config"])["record"]


def test_the_engine_and_device_are_stored_in_every_file(run, tmp_path):
    record_run(run, RecordConfig(checkpoints="0", engine="higher", **REC), tmp_path / "a", log=None)
    stored = _record_config(tmp_path / "a", 0)
    assert (stored["engine"], stored["device"]) == ("higher", "cpu")
    record_run(run, RecordConfig(checkpoints="0", **REC), tmp_path / "b", log=None)
    assert _record_config(tmp_path / "b", 0)["engine"] == "batched"  # the quick preset's


def test_recording_with_another_engine_into_a_folder_is_refused_naming_both(run, tmp_path):
    out = tmp_path / "acts"
    record_run(run, RecordConfig(checkpoints="0", engine="higher", **REC), out, log=None)
    with pytest.raises(TrainingError, match=r"engine: 'higher' in the folder, 'batched' now"):
        record_run(run, RecordConfig(checkpoints="0,4", engine="batched", **REC), out, log=None)
    assert not activation_file_path(out, 4).exists()  # refused before writing


def test_open_run_names_mixed_engines(run, tmp_path):
    record_run(run, RecordConfig(checkpoints="0", engine="higher", **REC), tmp_path / "a", log=None)
    record_run(run, RecordConfig(checkpoints="4", engine="batched", **REC), tmp_path / "b",
               log=None)
    shutil.copy(activation_file_path(tmp_path / "b", 4), activation_file_path(tmp_path / "a", 4))
    with pytest.raises(ProbeError, match=r"record\.engine: 'higher' in the first file, "
                                         r"'batched' in this one"):
        open_run(tmp_path / "a")


def test_accuracy_of_non_finite_logits_is_not_a_number():
    logits = torch.tensor([[[float("nan")] * 3] * 2, [[1.0, 0.0, 0.0]] * 2])
    acc = accuracy(logits, torch.zeros(2, 2, dtype=torch.long))
    assert np.isnan(acc[0].item()) and acc[1].item() == 1.0


@pytest.fixture(scope="module")
def diverged(tmp_path_factory, data_root):
    """A run with --meta-lr 1e37: step 1's weights are finite (1e37) but give NaN outputs."""
    out = tmp_path_factory.mktemp("diverged") / "run"
    cfg = get_preset("quick", **{**RUN, "checkpoint_every": 1}, meta_lr=1e37, data=str(data_root))
    with pytest.raises(TrainingError) as err:
        train(cfg, out, log=None)
    return out, str(err.value)


def test_divergence_names_the_last_finite_checkpoint(diverged):
    out, message = diverged
    assert "Training diverged at meta-step 2" in message
    assert "last finite checkpoint is step 0" in message
    assert "step 1, saved, gives non-finite outputs" in message


def test_recording_a_non_finite_checkpoint_is_refused_naming_it(diverged, tmp_path):
    out, _ = diverged
    with pytest.raises(TrainingError, match=r"Checkpoint 1 \(.*step_00000001\.pt'\) cannot be "
                                            r"recorded: its network's outputs are not finite"):
        record_run(out, RecordConfig(checkpoints="1", **REC), tmp_path / "acts", log=None)
    assert not list((tmp_path / "acts").glob("*.nc"))
    # the last finite checkpoint records, with finite values throughout
    record_run(out, RecordConfig(checkpoints="0", **REC), tmp_path / "acts", log=None)
    ds = open_run(tmp_path / "acts")
    assert all(np.isfinite(ds[v].values).all() for v in ds.data_vars
               if np.issubdtype(ds[v].dtype, np.floating))


def test_validation_of_non_finite_outputs_stops_the_run_naming_the_last_finite_checkpoint(
        tmp_path, data_root):
    cfg = get_preset("quick", **{**RUN, "checkpoint_every": 1, "val_every": 1, "val_tasks": 2},
                     meta_lr=1e37, data=str(data_root))
    with pytest.raises(TrainingError, match=r"diverged at meta-step 1: validation accuracy is "
                                            r"not a number.*last finite checkpoint is step 0"):
        train(cfg, tmp_path / "run", log=None)
    text = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "NaN" not in text and '"step": 1' not in text  # nothing of step 1 written


def test_final_evaluation_of_non_finite_outputs_is_refused_not_stored(tmp_path, data_root):
    cfg = get_preset("quick", **{**RUN, "steps": 1, "checkpoint_every": 1, "test_tasks": 2},
                     meta_lr=1e37, data=str(data_root))
    with pytest.raises(TrainingError, match=r"test accuracy is not a number.*"
                                            r"last finite checkpoint is step 0"):
        train(cfg, tmp_path / "run", log=None)
    assert not (tmp_path / "run" / "evaluation.json").exists()
