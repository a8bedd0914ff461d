"""Atomic writes (repscope.probes.files): a crash leaves the old file or the new one, never
half a file; temporaries of dead writers are cleaned, and nothing else is."""
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from repscope.probes import files
from repscope.probes.files import (atomic_path, atomic_write, atomic_write_text,
                                   clean_stale_temporaries, temporary_owner, temporary_path)

DEAD = 999999999  # above any pid_max: no such process


class Crash(Exception):
    pass


def _half_then_crash(tmp: Path):
    with open(tmp, "wb") as f:
        f.write(b"first half of the new content")
        f.flush()
        raise Crash("mid-write")


def test_a_crash_mid_write_leaves_no_file_and_no_temporary(tmp_path):
    target = tmp_path / "new.bin"
    with pytest.raises(Crash):
        atomic_write(target, _half_then_crash)
    assert list(tmp_path.iterdir()) == []


def test_a_crash_mid_write_keeps_the_existing_file(tmp_path):
    target = tmp_path / "state.pt"
    target.write_bytes(b"the old complete content")
    with pytest.raises(Crash):
        atomic_write(target, _half_then_crash)
    assert target.read_bytes() == b"the old complete content"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failure_at_flush_or_rename_keeps_the_existing_file(tmp_path, monkeypatch, failing):
    target = tmp_path / "config.json"
    target.write_text("old")

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_a_killed_writer_leaves_the_old_file_and_a_temporary_that_is_cleaned(tmp_path):
    """A real SIGKILL half-way through writing: no clean-up code runs in the child."""
    target = tmp_path / "metrics.jsonl"
    target.write_text("old\n")
    child = ("import os, signal, sys\n"
             "from repscope.probes.files import atomic_path\n"
             "with atomic_path(sys.argv[1]) as tmp:\n"
             "    with open(tmp, 'w') as f:\n"
             "        f.write('half')\n"
             "        f.flush()\n"
             "        os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", child, str(target)], timeout=120)
    assert done.returncode == -signal.SIGKILL
    left = sorted(p.name for p in tmp_path.iterdir())
    assert target.read_text() == "old\n" and len(left) == 2
    (stale,) = [tmp_path / n for n in left if n != "metrics.jsonl"]
    assert temporary_owner(stale) is not None and stale.name.startswith(".metrics.jsonl.tmp-")
    assert clean_stale_temporaries(tmp_path) == [stale]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_a_successful_write_replaces_flushes_file_and_folder_and_has_the_usual_mode(
        tmp_path, monkeypatch):
    flushed, real = [], os.fsync

    def counting(fd):
        flushed.append(os.fstat(fd).st_mode)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    target = tmp_path / "sub" / "result.txt"  # the folder is created
    assert atomic_write_text(target, "new") == target
    monkeypatch.undo()
    assert target.read_text() == "new" and list(target.parent.iterdir()) == [target]
    assert [stat.S_ISREG(m) for m in flushed] == [True, False]  # the file, then its folder
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what an ordinary open() creates under this umask
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_the_block_form_writes_with_any_path_writer(tmp_path):
    target = tmp_path / "a.npz"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".a.npz.tmp-")
        with open(tmp, "wb") as f:
            np.savez(f, x=np.arange(3))
    with np.load(target) as f:
        assert f["x"].tolist() == [0, 1, 2]


def test_temporary_names_round_trip():
    tmp = temporary_path("runs/x/checkpoints/step_00000010.pt")
    assert tmp.parent == Path("runs/x/checkpoints")
    assert temporary_owner(tmp) == os.getpid()
    for other in ("step_00000010.pt", ".step.pt.tmp", "step.pt.tmp-12", ".step.pt.tmp-12x",
                  ".step.pt.part", ".step.pt.abc123.tmp"):
        assert temporary_owner(other) is None, other


def test_cleaning_removes_only_dead_writers_temporaries(tmp_path):
    dead = tmp_path / f".checkpoint_00000005.nc.tmp-{DEAD}"
    dead.write_bytes(b"half")
    live = temporary_path(tmp_path / "live.nc")  # this process: a concurrent writer
    live.write_bytes(b"being written")
    keep = {
        "checkpoint_00000005.nc": b"a final file",
        ".hidden.tmp": b"no pid",
        f"notes.tmp-{DEAD}": b"no leading dot",
        f".x.tmp-{DEAD}x": b"not a pid",
        ".y.abc123.tmp": b"another program's scheme",
    }
    for name, data in keep.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / f".folder.tmp-{DEAD}").mkdir()  # a folder is not a temporary file
    outside = tmp_path.parent / f"{tmp_path.name}-precious"
    outside.write_bytes(b"not ours")
    (tmp_path / f".link.tmp-{DEAD}").symlink_to(outside)  # never followed nor removed
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / f".deep.tmp-{DEAD}").write_bytes(b"in a subfolder")  # only the folder named
    assert clean_stale_temporaries(tmp_path) == [dead]
    for name, data in keep.items():
        assert (tmp_path / name).read_bytes() == data
    assert live.exists() and (tmp_path / f".folder.tmp-{DEAD}").is_dir()
    assert (tmp_path / f".link.tmp-{DEAD}").is_symlink() and outside.read_bytes() == b"not ours"
    assert (sub / f".deep.tmp-{DEAD}").exists()
    assert clean_stale_temporaries(tmp_path / "missing") == []


def test_the_module_imports_nothing_of_ours():
    """Every package may import it: the bottom floor."""
    source = Path(files.__file__).read_text()
    assert "repscope" not in "".join(line for line in source.splitlines()
                                     if line.startswith(("import", "from")))
    assert "from ." not in source


# ---------------------------------------------------------------- the writers that use it

def _dataset(value):
    from repscope.probes import Probe

    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    torch.nn.init.constant_(net[0].weight, value)
    probe = Probe(net)
    with probe.recording(checkpoint=7, labels=[0, 1], image_ids=["a", "b"]):
        net(torch.ones(2, 3))
    return probe.to_dataset()


def _store(tmp_path, crash):
    from repscope.probes.store import activation_file_path, write_checkpoint

    if crash:
        def half(self, path, *args, **kwargs):
            Path(path).write_bytes(b"CDF half")
            raise Crash("mid-write")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(xr.Dataset, "to_netcdf", half)
            write_checkpoint(tmp_path, _dataset(2.0), overwrite=True)
    else:
        write_checkpoint(tmp_path, _dataset(1.0))
    return activation_file_path(tmp_path, 7)


def _state(tmp_path, crash):
    from repscope.training.checkpoint import save_checkpoint, training_state_path
    from repscope.training.config import get_preset
    from repscope.training.model import build_model

    cfg = get_preset("quick")
    net = build_model(cfg)
    path = training_state_path(tmp_path, 3)
    if crash:
        def half(obj, f, *args, **kwargs):
            Path(f).write_bytes(b"PK half")
            raise Crash("mid-write")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch, "save", half)
            save_checkpoint(path, step=3, config=cfg, model=net,
                            optimizer=torch.optim.Adam(net.parameters()))
    else:
        save_checkpoint(path, step=3, config=cfg, model=net,
                        optimizer=torch.optim.Adam(net.parameters()))
    return path


def _result(tmp_path, crash):
    from repscope.analyses.saving import save_netcdf

    ds = xr.Dataset({"a": ("x", [2.0 if crash else 1.0])})
    if crash:
        def half(self, path, *args, **kwargs):
            Path(path).write_bytes(b"CDF half")
            raise Crash("mid-write")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(xr.Dataset, "to_netcdf", half)
            save_netcdf(ds, tmp_path / "fig1a.nc")
    return save_netcdf(ds, tmp_path / "fig1a.nc")


@pytest.mark.parametrize("writer", [_store, _state, _result],
                         ids=["activation file", "training state", "analysis result"])
def test_every_writer_keeps_its_old_file_through_a_crash(tmp_path, writer):
    path = writer(tmp_path, crash=False)
    before = path.read_bytes()
    with pytest.raises(Exception) as info:
        writer(tmp_path, crash=True)
    assert "mid-write" in str(info.value) or isinstance(info.value.__cause__, Crash)
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if temporary_owner(p) is not None]
