"""Meta-training and recording over torch.distributed ranks (torchrun, gloo on CPU).

Two processes give one process's weights to float tolerance, a run started with two
processes resumes with one, and a recording dealt out over two processes (and resumed)
is the one-process record.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
import xarray as xr

from repscope.probes import open_run
from repscope.training.checkpoint import load_checkpoint, load_run
from repscope.training.config import get_preset
from repscope.training.distributed import Ranks
from repscope.training.errors import TrainingError
from repscope.training.maml import main as maml_main
from repscope.training.maml import train
from repscope.training.model import build_model
from repscope.training.record import RecordConfig, record_run

SMALL = dict(n_way=5, meta_batch=4, inner_steps=1, val_every=0, test_tasks=2, lake_eval=False,
             progress=False, threads=1)
FLAGS = ["--n-way", "5", "--meta-batch", "4", "--inner-steps", "1", "--val-every", "0",
         "--test-tasks", "2", "--no-lake-eval", "--no-progress", "--threads", "1"]


def _torchrun(nproc: int, module: str, args: list[str]) -> None:
    # "--" ends torchrun's own options: its --run-path would swallow record's --run
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", module, "--", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _assert_same_weights(a: dict, b: dict) -> None:
    for name in a:
        if name.endswith("conv.bias"):
            # A conv bias feeds a batch norm that subtracts it again: its meta-gradient
            # is zero up to rounding, and Adam's first steps turn rounding noise into
            # +-meta_lr steps. The network's function does not depend on it (checked
            # through the logits below).
            continue
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)


def _logits(config, state: dict) -> torch.Tensor:
    model = build_model(config)
    model.load_state_dict(state)
    x = torch.linspace(-1, 1, 10 * 28 * 28).reshape(10, 1, 28, 28)
    with torch.no_grad():
        return model(x)


def test_more_processes_than_tasks_are_refused(tmp_path, data_root):
    cfg = get_preset("quick", steps=1, data=str(data_root), **SMALL)
    with pytest.raises(TrainingError, match="5 processes for --meta-batch 4"):
        train(cfg, tmp_path / "run", log=None, group=Ranks(rank=0, size=5))
    assert not (tmp_path / "run").exists()


def test_shard_deals_tasks_round_robin():
    items = list(range(7))
    shares = [Ranks(rank=r, size=3).shard(items) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(shares, [])) == items


@pytest.mark.parametrize("engine", ["batched", "higher"])
def test_two_ranks_match_one_process_and_resume_with_one(tmp_path, data_root, engine):
    cfg = get_preset("quick", steps=4, data=str(data_root), engine=engine, **SMALL)
    train(cfg, tmp_path / "one", log=None)
    _torchrun(2, "repscope.training.maml", ["--out", str(tmp_path / "two"), "--steps", "2", "--engine", engine,
                                            "--data", str(data_root), *FLAGS])
    _, one = load_run(tmp_path / "one")
    _, two = load_run(tmp_path / "two")
    assert sorted(two) == [0, 1, 2]
    for step in (1, 2):
        _assert_same_weights(load_checkpoint(one[step])["model"], load_checkpoint(two[step])["model"])

    # resume the two-process run with one process (K changes on resume)
    assert maml_main(["--out", str(tmp_path / "two"), "--resume", "--steps", "4"]) == 0
    _, two = load_run(tmp_path / "two")
    a, b = load_checkpoint(one[4])["model"], load_checkpoint(two[4])["model"]
    _assert_same_weights(a, b)
    la, lb = _logits(cfg, a), _logits(cfg, b)
    torch.testing.assert_close(la, lb, rtol=1e-4, atol=1e-4 * float(la.abs().max()))

    # rank 0 alone wrote the metrics: each step once, with one process's numbers
    rows = {}
    for name in ("one", "two"):
        lines = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        rows[name] = [r for r in lines if r["kind"] == "train"]
    assert [r["step"] for r in rows["two"]] == [1, 2, 3, 4]
    for r1, r2 in zip(rows["one"], rows["two"]):
        assert r2["post_acc"] == r1["post_acc"] and r2["pre_acc"] == r1["pre_acc"]
        assert r2["post_loss"] == pytest.approx(r1["post_loss"], abs=1e-4)
    assert not (tmp_path / "two" / "state.pt").exists()


def test_recording_over_two_ranks_is_the_one_process_record(tmp_path, data_root):
    cfg = get_preset("quick", steps=2, data=str(data_root), **SMALL)
    train(cfg, tmp_path / "run", log=None)
    rec = dict(tasks=3, inner_steps=(0, 1), eval_tasks=4, progress=False, data=str(data_root))
    record_run(tmp_path / "run", RecordConfig(**rec), tmp_path / "one", log=None)

    args = ["--run", str(tmp_path / "run"), "--out", str(tmp_path / "two"), "--tasks", "3",
            "--inner-steps", "0,1", "--eval-tasks", "4", "--no-progress", "--data", str(data_root)]
    _torchrun(2, "repscope.training.record", args + ["--checkpoints", "0,2"])
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "checkpoint_00000000.nc", "checkpoint_00000002.nc"]
    # resume the recording with one process: only checkpoint 1 is left
    record_run(tmp_path / "run", RecordConfig(**rec), tmp_path / "two", log=None)

    one, two = open_run(tmp_path / "one"), open_run(tmp_path / "two")
    one.attrs.pop("created", None)
    two.attrs.pop("created", None)
    xr.testing.assert_identical(one, two)
