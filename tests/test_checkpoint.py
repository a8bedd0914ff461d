"""Checkpoints: kill-and-resume equals an uninterrupted run, safe loading, run folders."""
import json

import pytest
import torch

from repscope.training.checkpoint import (load_checkpoint, load_meta_parameters, load_run,
                                          save_checkpoint, training_state_path)
from repscope.training.config import get_preset
from repscope.training.errors import TrainingError
from repscope.training.maml import main, train
from repscope.training.model import build_model



class _Killed(Exception):
    pass


def _cfg(data_root, **kw):
    base = dict(n_way=5, meta_batch=2, inner_steps=1, inner_steps_eval=2, steps=7,
                checkpoint_every=4, checkpoint_log=False, state_every=2, val_every=3,
                val_tasks=3, test_tasks=3, lake_eval=False, progress=False, data=str(data_root))
    return get_preset("quick", **{**base, **kw})


def _lines(path, kind):
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec["kind"] == kind:
            rec.pop("elapsed_s", None)
            out.append(rec)
    return out


def _assert_same_state(a, b):
    assert a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for pid, st in a["optimizer"]["state"].items():
        for k, v in st.items():
            assert torch.equal(v, b["optimizer"]["state"][pid][k]), (pid, k)


@pytest.mark.parametrize("kill_at", [1, 5])
def test_kill_and_resume_equals_uninterrupted(tmp_path, data_root, kill_at):
    cfg = _cfg(data_root)
    train(cfg, tmp_path / "a", log=None)

    def kill(step):
        if step == kill_at:
            raise _Killed  # after the step's metrics are written, before its checkpoint

    with pytest.raises(_Killed):
        train(cfg, tmp_path / "b", log=None, on_step=kill)
    # a crash inside torch.save leaves only a temporary file behind
    (tmp_path / "b" / "checkpoints" / ".step_00000007.pt.tmp-1").write_bytes(b"\x00" * 10)
    with pytest.raises(TrainingError, match="--resume"):
        train(cfg, tmp_path / "b", log=None)
    train(cfg, tmp_path / "b", resume=True, log=None)

    steps_a, steps_b = load_run(tmp_path / "a")[1], load_run(tmp_path / "b")[1]
    assert list(steps_a) == list(steps_b) == [0, 4, 7]
    for step in steps_a:
        _assert_same_state(load_checkpoint(steps_a[step]), load_checkpoint(steps_b[step]))
    for kind in ("train", "val"):
        assert _lines(tmp_path / "a" / "metrics.jsonl", kind) == \
            _lines(tmp_path / "b" / "metrics.jsonl", kind)
    assert [r["step"] for r in _lines(tmp_path / "b" / "metrics.jsonl", "train")] == \
        list(range(1, 8))
    ev_a = json.loads((tmp_path / "a" / "evaluation.json").read_text())
    ev_b = json.loads((tmp_path / "b" / "evaluation.json").read_text())
    assert ev_a == ev_b


def test_resume_refuses_a_different_configuration(tmp_path, data_root):
    train(_cfg(data_root, steps=2, val_every=0, test_tasks=0), tmp_path / "r", log=None)
    with pytest.raises(TrainingError, match="inner_lr"):
        train(_cfg(data_root, steps=2, val_every=0, test_tasks=0, inner_lr=0.5),
              tmp_path / "r", resume=True, log=None)
    # more steps is allowed, and continues from the last state
    train(_cfg(data_root, steps=3, val_every=0, test_tasks=0), tmp_path / "r", resume=True,
          log=None)
    assert list(load_run(tmp_path / "r")[1]) == [0, 2, 3]


def test_overwrite_starts_again(tmp_path, data_root):
    cfg = _cfg(data_root, steps=2, val_every=0, test_tasks=0)
    train(cfg, tmp_path / "o", log=None)
    (tmp_path / "o" / "metrics.jsonl").write_text("garbage\n")
    train(cfg, tmp_path / "o", overwrite=True, log=None)
    assert len(_lines(tmp_path / "o" / "metrics.jsonl", "train")) == 2
    with pytest.raises(TrainingError, match="exclude"):
        train(cfg, tmp_path / "o", overwrite=True, resume=True, log=None)


def _saved(tmp_path):
    cfg = get_preset("quick")
    torch.manual_seed(3)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters())
    return cfg, model, save_checkpoint(training_state_path(tmp_path, 12), step=12, config=cfg,
                                       model=model, optimizer=opt)


def test_truncated_checkpoint_raises(tmp_path):
    _, _, path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TrainingError, match="truncated"):
        load_checkpoint(path)


def test_foreign_checkpoints_raise(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(TrainingError, match="not a repscope MAML checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # needs pickled classes
    with pytest.raises(TrainingError, match="weights_only"):
        load_checkpoint(tmp_path / "module.pt")
    with pytest.raises(TrainingError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_loading_uses_weights_only(tmp_path, monkeypatch):
    _, _, path = _saved(tmp_path)
    seen = []
    real = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(path)
    assert seen == [True]


def test_load_run_and_meta_parameters_round_trip(tmp_path):
    cfg, model, path = _saved(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    config, ckpts = load_run(tmp_path)
    assert config == cfg and ckpts == {12: path}
    fresh = build_model(config)
    assert load_meta_parameters(fresh, path) is fresh
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    other = build_model(get_preset("miniimagenet-5way-1shot"))
    with pytest.raises(TrainingError, match="does not fit"):
        load_meta_parameters(other, path)


def test_cli_writes_a_run(tmp_path, data_root, capsys):
    out = tmp_path / "cli"
    argv = ["--preset", "quick", "--out", str(out), "--data", str(data_root), "--steps", "1",
            "--n-way", "5", "--meta-batch", "1", "--val-every", "0", "--test-tasks", "2",
            "--no-lake-eval", "--no-progress", "--meta-clip", "none"]
    assert main(argv) == 0
    config, ckpts = load_run(out)
    assert config.n_way == 5 and config.meta_clip is None and list(ckpts) == [0, 1]
    assert "test:" in capsys.readouterr().out
    assert main(argv) == 2  # exists: refuses without --resume / --overwrite
    assert "--resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--adapt-layers" in capsys.readouterr().out


def test_sigkill_and_resume_equals_uninterrupted(tmp_path, data_root):
    """A real ``kill -9`` of ``python -m repscope.training.maml``, then ``--resume``."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    args = ["--preset", "quick", "--data", str(data_root), "--steps", "14", "--n-way", "5",
            "--meta-batch", "1", "--inner-steps", "1", "--inner-steps-eval", "1",
            "--checkpoint-every", "7", "--state-every", "1", "--val-every", "0",
            "--test-tasks", "1", "--no-lake-eval", "--no-progress", "--threads", "1"]
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "repscope.training.maml", "--out",
                             str(tmp_path / "killed"), *args], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = tmp_path / "killed" / "checkpoints" / "step_00000002.pt"
    deadline = time.time() + 120
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert main(["--out", str(tmp_path / "killed"), "--resume", *args]) == 0
    assert main(["--out", str(tmp_path / "whole"), *args]) == 0
    a, b = load_run(tmp_path / "killed")[1], load_run(tmp_path / "whole")[1]
    assert list(a) == list(b) == [0, 1, 2, 5, 7, 14]
    for step in a:
        _assert_same_state(load_checkpoint(a[step]), load_checkpoint(b[step]))
    for kind in ("train",):
        assert _lines(tmp_path / "killed" / "metrics.jsonl", kind) == \
            _lines(tmp_path / "whole" / "metrics.jsonl", kind)


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_resume_to_fewer_steps_is_refused_before_writing(tmp_path, data_root, capsys):
    cfg = _cfg(data_root, steps=3, val_every=0, test_tasks=0)
    train(cfg, tmp_path / "r", log=None)
    before = _snapshot(tmp_path / "r")
    with pytest.raises(TrainingError, match=r"--steps 1 is below the progress of the run .* "
                                            r"reached step 3 .*Pass --steps 3 or more"):
        train(_cfg(data_root, steps=1, val_every=0, test_tasks=0), tmp_path / "r",
              resume=True, log=None)
    assert main(["--out", str(tmp_path / "r"), "--resume", "--steps", "1"]) == 2
    assert "--steps 1 is below" in capsys.readouterr().err
    assert _snapshot(tmp_path / "r") == before


@pytest.mark.parametrize("meta_lr", [1e37])
def test_diverging_run_stops_at_the_first_non_finite_loss(tmp_path, data_root, meta_lr, capsys):
    out = tmp_path / "d"
    argv = ["--out", str(out), "--data", str(data_root), "--steps", "6", "--n-way", "5",
            "--meta-batch", "1", "--checkpoint-every", "1", "--no-checkpoint-log",
            "--val-every", "0", "--test-tasks", "0", "--no-lake-eval", "--no-progress",
            "--meta-lr", str(meta_lr)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Training diverged at meta-step" in err and "Lower --meta-lr" in err, err
    _, saved = load_run(out)
    assert saved and max(saved) < 6 and not (out / "evaluation.json").exists()
    for step, path in saved.items():  # every checkpoint written holds finite weights
        assert all(torch.isfinite(v).all() for v in load_checkpoint(path)["model"].values())
    text = (out / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    # the newest checkpoint gave the NaN loss of the next step: the message names the one before
    assert f"its last finite checkpoint is step {max(saved) - 1}" in err
    assert f"step {max(saved)}, saved, gives non-finite outputs" in err


def test_overwrite_removes_the_old_runs_recordings(tmp_path, data_root):
    from repscope import probes
    from repscope.training.record import RecordConfig, record_run

    cfg = _cfg(data_root, steps=1, val_every=0, test_tasks=0)
    train(cfg, tmp_path / "o", log=None)
    record_run(tmp_path / "o", RecordConfig(tasks=1, inner_steps=(0,), eval_tasks=0,
                                            layers=("head",), progress=False), log=None)
    (tmp_path / "o" / "activations" / "notes.txt").write_text("the user's own file")
    train(cfg, tmp_path / "o", overwrite=True, log=None)
    assert probes.existing_checkpoints(tmp_path / "o" / "activations") == []
    assert (tmp_path / "o" / "activations" / "notes.txt").read_text() == "the user's own file"


def test_flipped_byte_in_the_weights_is_an_error(tmp_path):
    _, model, path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    needle = model.state_dict()["conv3.conv.weight"].numpy().tobytes()[:64]
    at = data.find(needle)
    assert at > 0
    data[at + 5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(TrainingError, match=r"step_00000012\.pt' is corrupt: its content does "
                                            r"not match the SHA-256.*Delete it"):
        load_checkpoint(path)


def test_checkpoint_without_a_hash_still_loads(tmp_path):
    _, _, path = _saved(tmp_path)
    old = torch.load(path, weights_only=True)
    del old["content_sha256"]  # as written before the hash existed
    torch.save(old, path)
    assert load_checkpoint(path)["step"] == 12


def test_stale_temporaries_are_removed_on_resume_and_said(tmp_path, data_root):
    cfg = _cfg(data_root, steps=1, val_every=0, test_tasks=0)
    train(cfg, tmp_path / "s", log=None)
    dead = tmp_path / "s" / "checkpoints" / ".step_00000001.pt.tmp-999999999"
    dead.write_bytes(b"half")
    said = []
    train(cfg, tmp_path / "s", resume=True, log=said.append)
    assert not dead.exists()
    assert any(".step_00000001.pt.tmp-999999999" in m and "killed process" in m for m in said)


def test_overwrite_with_missing_data_keeps_the_old_run(tmp_path, data_root):
    from repscope.training.errors import DataError

    cfg = _cfg(data_root, steps=1, val_every=0, test_tasks=0)
    train(cfg, tmp_path / "o", log=None)
    before = sorted(p.name for p in (tmp_path / "o").rglob("*"))
    with pytest.raises(DataError):
        train(_cfg(tmp_path / "no-data", steps=1, val_every=0, test_tasks=0), tmp_path / "o",
              overwrite=True, log=None)
    assert sorted(p.name for p in (tmp_path / "o").rglob("*")) == before
