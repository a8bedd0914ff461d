"""Run folders: one writer at a time, --overwrite removes only what repscope wrote,
read-only and full disks named, every option checked before the first write.

The concurrency tests use real processes: a holder that keeps a folder's lock (a
training run stopped mid-way, or a process holding :func:`repscope.probes.files.run_lock`)
and a second command on the same folder, which must fail at once, name the holder and
leave every file as it was; after a ``SIGKILL`` of the holder the next run proceeds.
Read-only and full disks are real mounts where ``unshare`` can make them (a bind mount
remounted read-only, a small tmpfs), and injected ``OSError``s otherwise.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repscope.probes.files import LOCK_NAME, environment_message, remove_own, run_lock
from repscope.training import maml, record, supervised
from repscope.training.checkpoint import load_checkpoint, load_run
from repscope.training.config import get_preset
from repscope.training.errors import TrainingError
from repscope.training.maml import train
from repscope.training.record import RecordConfig, record_run

REPO = Path(__file__).resolve().parents[1]
RUN = dict(n_way=5, meta_batch=1, inner_steps=1, inner_steps_eval=1, steps=6,
           checkpoint_every=3, checkpoint_log=False, state_every=2, val_every=0,
           test_tasks=0, lake_eval=False, progress=False)
# the tiny run: F = --preset quick --steps 20 ... (here 6 steps, 5-way)
F = ["--preset", "quick", "--n-way", "5", "--meta-batch", "1", "--steps", "6",
     "--checkpoint-every", "3", "--test-tasks", "0", "--no-lake-eval", "--val-every", "0",
     "--no-progress"]
REC = ["--tasks", "2", "--eval-tasks", "2", "--inner-steps", "0,1", "--checkpoints", "0,6",
       "--reduce", "spatial_mean", "--no-progress"]
SUP = ["--mnist", "offline", "--steps", "2", "--record-every", "1", "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_root):
    """A finished tiny run (seed 0) and its recording."""
    root = tmp_path_factory.mktemp("folders")
    train(get_preset("quick", **RUN, data=str(data_root)), root / "run", log=None)
    record_run(root / "run", RecordConfig(tasks=2, eval_tasks=2, inner_steps=(0, 1),
                                          reduce="spatial_mean", progress=False),
               log=None)
    return root / "run"


def _snapshot(folder: Path) -> dict:
    """Every entry under ``folder`` (links as links) with its bytes."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        key = str(p.relative_to(folder))
        out[key] = ("link", os.readlink(p)) if p.is_symlink() else \
            p.read_bytes() if p.is_file() else "folder"
    return out


def _command(module: str, *args, timeout=300):
    cmd = [sys.executable, *(["-m", module] if not module.endswith(".py") else [module]), *args]
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def _analysis(*args):
    return _command(str(REPO / "analyses" / "layer_similarity.py"), *args)


# ----------------------------------------------------------------------------- one writer

_HOLDER = r"""
import sys, time
from pathlib import Path
from repscope.probes.files import run_lock
with run_lock(sys.argv[1], "a test holder"):
    Path(sys.argv[2]).write_text("holding")
    time.sleep(600)
"""

_TRAINER = r"""
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from repscope.training.config import MAMLConfig
from repscope.training.maml import train
args = json.loads(sys.argv[1])

def hold(step):
    if step == 3:  # half-way: its checkpoints so far are on disk, the lock held
        Path(args["ready"]).write_text("holding")
        time.sleep(600)

train(MAMLConfig.from_dict(args["config"]), args["out"], log=None, on_step=hold)
"""


def _start(code, *args, ready: Path, timeout=240):
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the holder ended early: {proc.stderr.read()[-2000:]}")
        assert time.time() - t0 < timeout, "the holder never took its lock"
        time.sleep(0.2)
    return proc


def _kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_second_trainer_is_refused_and_a_killed_one_is_taken_over(tmp_path, data_root):
    out, ready = tmp_path / "run", tmp_path / "ready"
    config = get_preset("quick", **RUN, data=str(data_root))
    holder = _start(_TRAINER, json.dumps({"config": config.to_dict(), "out": str(out),
                                          "ready": str(ready)}), ready=ready)
    try:
        before = _snapshot(out)
        # seed 1 into seed 0's run, and a second identical trainer: refused
        for extra in (["--seed", "1"], ["--seed", "1", "--overwrite"], ["--resume"]):
            done = _command("repscope.training.maml", *F, "--out", str(out),
                            "--data", str(data_root), *extra)
            assert done.returncode == 2, done.stderr
            assert f"pid {holder.pid} on host" in done.stderr, done.stderr
            assert "being written by another repscope process" in done.stderr
            assert "Traceback" not in done.stderr
            assert _snapshot(out) == before  # nothing of the second written or removed
    finally:
        _kill(holder)
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid  # left by the kill
    done = _command("repscope.training.maml", *F, "--out", str(out), "--data", str(data_root),
                    "--resume")
    assert done.returncode == 0, done.stderr
    assert "taking over the lock" in done.stdout + done.stderr
    assert f"pid {holder.pid}" in done.stdout + done.stderr
    assert not (out / LOCK_NAME).exists()
    stored, saved = load_run(out)
    assert stored.seed == 0 and max(saved) == 6
    assert {load_checkpoint(p)["config"]["seed"] for p in saved.values()} == {0}


@pytest.mark.parametrize("command", ["record", "supervised", "analysis"])
def test_second_writer_of_a_folder_is_refused_before_writing(run, tmp_path, data_root, command):
    out, ready = tmp_path / "out", tmp_path / "ready"
    if command == "supervised":  # a folder holding a run of another configuration's files
        args = ("repscope.training.supervised", *SUP, "--out", str(out), "--data", str(data_root))
    elif command == "record":
        shutil.copytree(run, out)
        out = out / "activations"
        (out / "checkpoint_00000006.nc").unlink()  # left to record
        args = ("repscope.training.record", "--run", str(out.parent), *REC)
    else:
        args = (str(REPO / "analyses" / "layer_similarity.py"), "--maml-run", str(run),
                "--results", str(out), "--formats", "png")
    holder = _start(_HOLDER, out, ready, ready=ready)
    try:
        before = _snapshot(out)
        done = _command(*args)
        assert done.returncode == 2, done.stderr
        assert f"pid {holder.pid} on host" in done.stderr and "a test holder" in done.stderr
        assert "Traceback" not in done.stderr
        assert _snapshot(out) == before
    finally:
        _kill(holder)
    if command == "record":  # the next run proceeds after the kill
        done = _command(*args)
        assert done.returncode == 0, done.stderr
        assert "taking over the lock" in done.stderr
        assert not (out / LOCK_NAME).exists() and (out / "checkpoint_00000006.nc").is_file()


def test_lock_names_holder_and_is_released_on_exceptions(tmp_path):
    folder = tmp_path / "a" / "b"
    with pytest.raises(KeyboardInterrupt):
        with run_lock(folder, "first", TrainingError):
            assert (folder / LOCK_NAME).is_file()
            with pytest.raises(TrainingError, match=r"pid \d+ on host .*first"):
                with run_lock(folder, "second", TrainingError):
                    pass
            raise KeyboardInterrupt
    assert not (tmp_path / "a").exists()  # made for the lock, empty again, removed
    with run_lock(folder, "again", TrainingError):
        (folder / "kept").write_text("x")
    assert sorted(p.name for p in folder.iterdir()) == ["kept"]


def test_lock_of_another_host_is_reported_not_broken(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    info = {"pid": 4242, "host": "elsewhere.example", "started": "yesterday",
            "command": "python -m repscope.training.maml --out run"}
    (folder / LOCK_NAME).write_text(json.dumps(info))
    with pytest.raises(TrainingError, match="another host.*elsewhere.example.*delete"):
        with run_lock(folder, "here", TrainingError):
            pass
    assert json.loads((folder / LOCK_NAME).read_text()) == info


def test_lock_of_a_dead_process_here_is_taken_over_with_a_note(tmp_path):
    import socket

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 999999999, "host": socket.gethostname(),
                                                "started": "earlier", "command": "killed"}))
    notes = []
    with run_lock(folder, "here", TrainingError, log=notes.append):
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert len(notes) == 1 and "pid 999999999" in notes[0] and "killed" in notes[0]
    assert not (folder / LOCK_NAME).exists()


# ----------------------------------------------------------------------------- --overwrite

def test_overwrite_refuses_a_folder_that_holds_no_repscope_run(tmp_path, data_root):
    out = tmp_path / "theirs"
    (out / "checkpoints").mkdir(parents=True)
    (out / "config.json").write_text('{"model": "theirs", "lr": 0.1}')
    (out / "checkpoints" / "my_model_weights.bin").write_bytes(b"\x00" * 64)
    before = _snapshot(out)
    for command, args in (("repscope.training.maml", F), ("repscope.training.supervised", SUP)):
        done = _command(command, *args, "--out", str(out), "--overwrite", "--data", str(data_root))
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "Nothing was" in done.stderr, done.stderr
        assert _snapshot(out) == before


def test_overwrite_removes_only_our_files(run, tmp_path, data_root):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    (out / "checkpoints" / "my_model_weights.bin").write_bytes(b"mine")
    (out / "activations" / "notes.txt").write_text("mine")
    (out / "README").write_text("mine")
    notes = []
    train(get_preset("quick", **{**RUN, "steps": 3}, data=str(data_root)), out, overwrite=True,
          log=notes.append)
    assert (out / "checkpoints" / "my_model_weights.bin").read_bytes() == b"mine"
    assert (out / "activations" / "notes.txt").read_text() == "mine"
    assert (out / "README").read_text() == "mine"
    assert not list((out / "activations").glob("checkpoint_*.nc"))
    assert sorted(load_run(out)[1]) == [0, 3]
    assert any("kept" in n and "README" in n for n in notes), notes


def test_overwrite_refuses_a_symlinked_folder_before_removing_anything(run, tmp_path, data_root):
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    shutil.copytree(run, out)
    shutil.move(out / "checkpoints", elsewhere)
    (out / "checkpoints").symlink_to(elsewhere)
    before, theirs = _snapshot(out), _snapshot(elsewhere)
    done = _command("repscope.training.maml", *F, "--out", str(out), "--overwrite",
                    "--data", str(data_root))
    assert done.returncode == 2 and "symbolic link" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert _snapshot(out) == before and _snapshot(elsewhere) == theirs


def test_remove_own_checks_everything_first(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "checkpoints" / "step_00000000.pt").write_text("x")
    (tmp_path / "checkpoints" / "step_00000005.pt").symlink_to(tmp_path / "config.json")
    own = {"": r"config\.json", "checkpoints": r"step_\d{8}\.pt"}
    before = _snapshot(tmp_path)
    with pytest.raises(TrainingError, match="symbolic link.*Nothing was removed"):
        remove_own(tmp_path, own, TrainingError)
    assert _snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- environment

def test_out_naming_a_file_is_refused(run, tmp_path, data_root, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert maml.main([*F, "--out", str(afile), "--data", str(data_root)]) == 2
    assert supervised.main([*SUP, "--out", str(afile), "--data", str(data_root)]) == 2
    assert record.main(["--run", str(run), "--out", str(afile), *REC]) == 2
    err = capsys.readouterr().err
    assert err.count(f"{str(afile)!r} is a file, not a folder") == 3, err
    assert afile.read_text() == "mine"


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_write_errors_name_the_path_and_cause(tmp_path, data_root, monkeypatch, code):
    real = os.replace

    def failing(src, dst):
        if Path(dst).name == "step_00000003.pt":
            raise OSError(code, os.strerror(code), str(src))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    cause = {errno.EROFS: "the file system is read-only", errno.ENOSPC: "the disk is full",
             errno.EACCES: "permission denied"}[code]
    with pytest.raises(TrainingError, match=f"Cannot write '.*step_00000003.pt': {cause}"):
        train(get_preset("quick", **RUN, data=str(data_root)), tmp_path / "run", log=None)
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_a_writer_that_fails_on_a_full_disk_says_so(tmp_path, data_root, monkeypatch):
    import torch

    from repscope.probes import files

    def save(obj, path, *a, **k):  # what torch.save says on a full disk
        raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(files, "_free_bytes", lambda folder: 0)
    with pytest.raises(TrainingError, match=r"Cannot write '.*step_00000000.pt': the disk is full"):
        train(get_preset("quick", **RUN, data=str(data_root)), tmp_path / "run", log=None)


def test_environment_message():
    msg = environment_message(OSError(errno.ENOSPC, "No space", "/r/.metrics.jsonl.tmp-12"))
    assert msg.startswith("Cannot write '/r/metrics.jsonl': the disk is full")
    assert environment_message(OSError(errno.EDQUOT, "quota"), "/r") == \
        "Cannot write in '/r': the disk quota is exceeded; free some space or choose a folder " \
        "on another disk"
    assert environment_message(OSError(errno.ENOENT, "No such file", "/x")) is None


def _mount(kind: str, folder: Path, then: str):
    """Run the shell command ``then`` with ``folder`` mounted read-only or as a tiny disk."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not available to make a real mount")
    mount = (f"mount --bind {folder} {folder} && mount -o remount,ro,bind {folder}"
             if kind == "ro" else f"mount -t tmpfs -o size=200k tmpfs {folder}")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", mount], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount here: {probe.stderr.decode()[-200:]}")
    return subprocess.run(["unshare", "-m", "sh", "-c", f"{mount} && {then}"], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=600)


def test_read_only_folders_are_named_not_tracebacks(run, tmp_path, data_root):
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copytree(run, ro / "run")
    py = sys.executable
    commands = [
        f"{py} -m repscope.training.maml {' '.join(F)} --out {ro}/new --data {data_root}",
        f"{py} -m repscope.training.maml {' '.join(F)} --steps 9 --out {ro}/run --resume",
        f"{py} -m repscope.training.record --run {ro}/run {' '.join(REC)} --checkpoints 3",
        f"{py} -m repscope.training.supervised {' '.join(SUP)} --out {ro}/mnist --data {data_root}",
        f"{py} {REPO}/analyses/layer_similarity.py --maml-run {run} --results {ro}/results "
        "--formats png",
    ]
    done = _mount("ro", ro, "; ".join(f"{c}; echo rc=$?" for c in commands))
    assert done.stdout.count("rc=2") == len(commands), done.stdout + done.stderr
    assert done.stderr.count("the file system is read-only") == len(commands), done.stderr
    assert "Traceback" not in done.stderr


def test_full_disk_is_named_not_a_traceback(tmp_path, data_root):
    full = tmp_path / "full"
    full.mkdir()
    py = sys.executable
    commands = [f"{py} -m repscope.training.maml {' '.join(F)} --out {full}/run --data {data_root}",
                f"{py} -m repscope.training.supervised {' '.join(SUP)} --out {full}/mnist "
                f"--data {data_root}"]
    done = _mount("tmpfs", full, "; ".join(f"{c}; echo rc=$?; rm -rf {full}/*" for c in commands))
    assert done.stdout.count("rc=2") == len(commands), done.stdout + done.stderr
    assert done.stderr.count("the disk is full") == len(commands), done.stderr
    assert "Traceback" not in done.stderr


# ----------------------------------------------------------------------------- options first

@pytest.mark.parametrize("bad", [["--adapt-layers", "bogus"], ["--adapt-layers", "freeze:9"],
                                 ["--val-tasks", "0", "--val-every", "5"]])
def test_maml_options_are_checked_before_anything_is_written(tmp_path, data_root, capsys, bad):
    out = tmp_path / "run"
    assert maml.main([*F, *bad, "--out", str(out), "--data", str(data_root)]) == 2
    assert bad[1].split(":")[0] in capsys.readouterr().err
    assert not out.exists()


def test_supervised_batch_larger_than_the_data_is_refused(tmp_path, data_root, capsys):
    out = tmp_path / "mnist"
    assert supervised.main([*SUP, "--batch-size", "100000", "--out", str(out),
                            "--data", str(data_root)]) == 2
    err = capsys.readouterr().err
    assert "batch_size (--batch-size) 100000 is larger than the 9900 training images" in err
    assert not out.exists()


def test_record_too_large_for_memory_is_refused_with_the_estimate(run, tmp_path, capsys):
    out = tmp_path / "acts"
    assert record.main(["--run", str(run), "--out", str(out), *REC, "--tasks", "100000"]) == 2
    err = capsys.readouterr().err
    assert "tasks (--tasks) 100000 needs about" in err and "GB are available" in err, err
    assert not out.exists()
