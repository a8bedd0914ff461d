"""Fault injection: kill training and recording, damage every kind of file they write.

Kills are real ``SIGKILL``s of a child process at seeded points: the N-th rename of a
finished temporary file onto its final name (``os.replace``), before or after it, so the
child dies with a temporary on disk or just after a file became visible. Damage is a
flipped byte inside tensor or array data, a truncation, or an empty file, in each kind of
file: checkpoint, resumable state, netCDF record, results (``config.json``,
``metrics.jsonl``, ``evaluation.json``) and the decoded Omniglot cache.

Every fault ends in one of two outcomes, asserted here and counted in
``docs/guide/robustness.rst``: *survived* (the next ordinary command, ``--resume`` or
re-recording, gives results identical to an undisturbed run, nothing that was there is
lost, no temporary is left) or *refused* (a clear error that names the file and says what
to do, and nothing is changed).
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from repscope import probes
from repscope.probes.errors import ProbeError
from repscope.probes.files import LOCK_NAME
from repscope.training.checkpoint import load_checkpoint, load_run
from repscope.training.config import get_preset
from repscope.training.data import load_omniglot
from repscope.training.data.omniglot import _cache_file
from repscope.training.errors import TrainingError
from repscope.training.maml import train
from repscope.training.record import RecordConfig, record_run

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "guide" / "robustness.rst"

RUN = dict(n_way=5, meta_batch=1, inner_steps=1, inner_steps_eval=1, steps=7,
           checkpoint_every=4, checkpoint_log=False, state_every=2, val_every=3, val_tasks=2,
           test_tasks=2, lake_eval=False, progress=False)
REC = dict(tasks=2, inner_steps=(0, 1), eval_tasks=2, reduce="spatial_mean", progress=False)

# (what is damaged or killed, how) -> expected outcome. The docs' counts are these.
KILLS = {("train", seed): "survived" for seed in range(4)} | \
        {("record", seed): "survived" for seed in range(2)}
DAMAGE = {
    ("checkpoint", "flip"): "survived", ("checkpoint", "truncate"): "survived",
    ("checkpoint", "empty"): "survived", ("state", "flip"): "survived",
    ("state", "truncate"): "survived", ("netcdf", "flip"): "survived",
    ("netcdf", "truncate"): "survived", ("netcdf", "empty"): "survived",
    ("metrics", "truncate"): "survived", ("evaluation", "garbage"): "survived",
    ("config", "truncate"): "refused", ("checkpoint-when-recording", "flip"): "refused",
    ("cache", "flip"): "survived", ("cache", "truncate"): "survived",
}

_CHILD = r"""
import json, os, signal, sys
n, when, job, args = int(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
real, count = os.replace, [0]
def replace(src, dst):
    if not os.path.abspath(dst).startswith(os.path.abspath(args["out"]) + os.sep):
        return real(src, dst)  # not the job's own output (the data cache, ...)
    count[0] += 1
    if count[0] == n and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
    if count[0] == n and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
import torch
torch.set_num_threads(1)
if job == "train":
    from repscope.training.config import MAMLConfig
    from repscope.training.maml import train
    train(MAMLConfig.from_dict(args["config"]), args["out"], resume=True, log=None)
else:
    from repscope.training.record import RecordConfig, record_run
    record_run(args["run"], RecordConfig(**args["rec"]), args["out"], log=None)
sys.exit(3)  # never reached: the kill point lies inside the job
"""


def _count_replaces(monkeypatch, fn, out):
    real, calls = os.replace, []

    def counting(src, dst):
        if str(Path(dst).absolute()).startswith(str(Path(out).absolute()) + os.sep):
            calls.append(Path(dst).name)
        real(src, dst)

    monkeypatch.setattr(os, "replace", counting)
    fn()
    monkeypatch.setattr(os, "replace", real)
    return calls


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    """An undisturbed run and its recording, and how many renames each made."""
    root = tmp_path_factory.mktemp("faults")
    cfg = get_preset("quick", **RUN, data=str(data_root))
    mp = pytest.MonkeyPatch()
    try:
        train_calls = _count_replaces(mp, lambda: train(cfg, root / "run", log=None),
                                      root / "run")
        rec_calls = _count_replaces(mp, lambda: record_run(root / "run", RecordConfig(**REC),
                                                           root / "acts", log=None),
                                    root / "acts")
    finally:
        mp.undo()
    return {"cfg": cfg, "run": root / "run", "acts": root / "acts",
            "train_calls": train_calls, "rec_calls": rec_calls}


def _temporaries(folder):
    return sorted(p.name for p in Path(folder).rglob(".*.tmp-*"))


def _files(folder):
    return {str(p.relative_to(folder)) for p in Path(folder).rglob("*")
            if p.is_file() and ".tmp-" not in p.name and p.name != LOCK_NAME}  # a killed writer's lock goes


def _lines(path, kind):
    out = []
    for line in Path(path).read_text().splitlines():
        rec = json.loads(line)
        if rec["kind"] == kind:
            rec.pop("elapsed_s", None)
            out.append(rec)
    return out


def _assert_same_run(a, b):
    ca, cb = load_run(a)[1], load_run(b)[1]
    assert list(ca) == list(cb)
    for step in ca:
        x, y = load_checkpoint(ca[step]), load_checkpoint(cb[step])
        for k in x["model"]:
            assert torch.equal(x["model"][k], y["model"][k]), (step, k)
        for pid, st in x["optimizer"]["state"].items():
            for k, v in st.items():
                assert torch.equal(v, y["optimizer"]["state"][pid][k]), (step, pid, k)
    for kind in ("train", "val"):
        assert _lines(Path(a) / "metrics.jsonl", kind) == _lines(Path(b) / "metrics.jsonl", kind)
    assert json.loads((Path(a) / "evaluation.json").read_text()) == \
        json.loads((Path(b) / "evaluation.json").read_text())
    assert not (Path(b) / "state.pt").exists() and not _temporaries(b)


def _assert_same_record(a, b):
    x, y = probes.open_run(a), probes.open_run(b)
    xr.testing.assert_identical(x.drop_attrs(), y.drop_attrs())
    assert {k: v for k, v in x.attrs.items() if k != "created"} == \
        {k: v for k, v in y.attrs.items() if k != "created"}
    assert not _temporaries(b)


def _kill(job, n, when, args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(n), when, job, json.dumps(args)],
                          cwd=REPO, env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


def _kill_point(job, i, calls):
    """The ``i``-th of distinct (rename number, before/after) points drawn with a fixed seed."""
    points = [(n, when) for n in range(1, len(calls) + 1) for when in ("before", "after")]
    k = sum(1 for (j, _) in KILLS if j == job)
    return random.Random(f"{job}-kills").sample(points, k)[i]


@pytest.mark.parametrize("seed", sorted(s for (job, s) in KILLS if job == "train"))
def test_training_killed_at_a_random_write_resumes_exactly(reference, tmp_path, seed):
    n, when = _kill_point("train", seed, reference["train_calls"])
    out = tmp_path / "run"
    _kill("train", n, when, {"config": reference["cfg"].to_dict(), "out": str(out)})
    before = _files(out) - {"state.pt"}  # state.pt is meant to go when the run ends
    said = []
    train(reference["cfg"], out, resume=True, log=said.append)
    assert before <= _files(out), f"lost {before - _files(out)}"
    _assert_same_run(reference["run"], out)
    if when == "before" and n > 1:  # a temporary was on disk: removed, and said so
        assert any("left by a killed process" in m for m in said), said


@pytest.mark.parametrize("seed", sorted(s for (job, s) in KILLS if job == "record"))
def test_recording_killed_at_a_random_write_resumes_exactly(reference, tmp_path, seed):
    n, when = _kill_point("record", seed, reference["rec_calls"])
    out = tmp_path / "acts"
    _kill("record", n, when, {"run": str(reference["run"]), "rec": REC, "out": str(out)})
    before = _files(out)
    record_run(reference["run"], RecordConfig(**REC), out, log=None)
    assert before <= _files(out)
    _assert_same_record(reference["acts"], out)


# ----------------------------------------------------------------------------- damage

def _damage(path: Path, how: str, needle: bytes = b"") -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        at = data.find(needle)
        assert at >= 0 and needle, "the data to damage is not stored verbatim"
        data[at + len(needle) // 2] ^= 0x10
    elif how == "truncate":
        data = data[: len(data) // 2]
    elif how == "empty":
        data = bytearray()
    elif how == "garbage":
        data = bytearray(b"{not json")
    path.write_bytes(bytes(data))


def _needle(array) -> bytes:
    """16 values of ``array`` around a non-zero one in its middle: found once in a file."""
    flat = np.ascontiguousarray(array).ravel()
    nonzero = np.flatnonzero(flat)
    at = int(nonzero[len(nonzero) // 2])
    return flat[max(at - 8, 0): at + 8].tobytes()


def _tensor_bytes(path) -> bytes:
    return _needle(load_checkpoint(path)["model"]["conv2.conv.weight"].numpy())


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _ways(kind):
    return [how for (k, how) in DAMAGE if k == kind]


@pytest.mark.parametrize("how", _ways("checkpoint"))
def test_damaged_checkpoint_is_refused_then_rewritten_on_resume(reference, tmp_path, how):
    run = _copy(reference["run"], tmp_path / "run")
    victim = run / "checkpoints" / "step_00000004.pt"
    needle = _tensor_bytes(victim)
    _damage(victim, how, needle)
    with pytest.raises(TrainingError, match=r"step_00000004\.pt.*(corrupt|truncated).*Delete it"):
        load_checkpoint(victim)
    said = []
    train(reference["cfg"], run, resume=True, log=said.append)
    assert any("step_00000004.pt" in m for m in said), said
    _assert_same_run(reference["run"], run)


@pytest.mark.parametrize("how", _ways("state"))
def test_damaged_state_is_passed_over_and_the_run_resumes_exactly(reference, tmp_path, how):
    class Stop(Exception):
        pass

    def stop(step):
        if step == 7:
            raise Stop

    run = tmp_path / "run"
    with pytest.raises(Stop):
        train(reference["cfg"], run, log=None, on_step=stop)
    assert load_checkpoint(run / "state.pt")["step"] == 6
    _damage(run / "state.pt", how, _tensor_bytes(run / "state.pt"))
    said = []
    train(reference["cfg"], run, resume=True, log=said.append)
    assert any("state.pt" in m for m in said), said
    _assert_same_run(reference["run"], run)


@pytest.mark.parametrize("how", _ways("netcdf"))
def test_damaged_record_is_refused_then_recorded_again(reference, tmp_path, how):
    acts = _copy(reference["acts"], tmp_path / "acts")
    victim = probes.store.activation_file_path(acts, 4)
    values = probes.open_run(reference["acts"])["conv1"].sel(checkpoint=4).values
    _damage(victim, how, _needle(values.astype(np.float32)))
    with pytest.raises(ProbeError, match=r"checkpoint_00000004\.nc.*Delete it"):
        probes.open_run(acts)
    said = []
    record_run(reference["run"], RecordConfig(**REC), acts, log=said.append)
    assert any("checkpoint_00000004.nc" in m for m in said), said
    _assert_same_record(reference["acts"], acts)


@pytest.mark.parametrize("how", _ways("metrics"))
def test_truncated_metrics_line_is_rewritten_on_resume(reference, tmp_path, how):
    class Stop(Exception):
        pass

    def stop(step):
        if step == 5:
            raise Stop

    run = tmp_path / "run"
    with pytest.raises(Stop):
        train(reference["cfg"], run, log=None, on_step=stop)
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text[: len(text) - 20])  # a line cut by the crash
    train(reference["cfg"], run, resume=True, log=None)
    _assert_same_run(reference["run"], run)


@pytest.mark.parametrize("how", _ways("evaluation"))
def test_garbage_evaluation_is_written_again_on_resume(reference, tmp_path, how):
    run = _copy(reference["run"], tmp_path / "run")
    _damage(run / "evaluation.json", how)
    train(reference["cfg"], run, resume=True, log=None)
    _assert_same_run(reference["run"], run)


@pytest.mark.parametrize("how", _ways("config"))
def test_truncated_config_is_refused_with_the_fix(reference, tmp_path, how):
    run = _copy(reference["run"], tmp_path / "run")
    _damage(run / "config.json", how)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(TrainingError, match=r"config\.json.*truncated or corrupt.*load_checkpoint"):
        train(reference["cfg"], run, resume=True, log=None)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("how", _ways("checkpoint-when-recording"))
def test_damaged_checkpoint_refuses_recording(reference, tmp_path, how):
    run = _copy(reference["run"], tmp_path / "run")
    victim = run / "checkpoints" / "step_00000004.pt"
    _damage(victim, how, _tensor_bytes(victim))
    with pytest.raises(TrainingError, match=r"step_00000004\.pt'? is corrupt.*Delete it"):
        record_run(run, RecordConfig(**REC), tmp_path / "acts", log=None)
    assert sorted(probes.existing_checkpoints(tmp_path / "acts")) == [0]  # before it: kept


@pytest.mark.parametrize("how", _ways("cache"))
def test_damaged_cache_is_rebuilt(data_root, tmp_path, how):
    chars = load_omniglot(data_root, archives=("images_background_small1",), download=False,
                          cache=tmp_path)
    own = _cache_file(tmp_path, chars.meta)
    _damage(own, how, _needle(chars.images[5]))
    with pytest.warns(UserWarning, match="Ignoring unreadable Omniglot cache"):
        again = load_omniglot(data_root, archives=("images_background_small1",),
                              download=False, cache=tmp_path)
    np.testing.assert_array_equal(again.images, chars.images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt: read back without a word
        load_omniglot(data_root, archives=("images_background_small1",), download=False,
                      cache=tmp_path)


def test_the_docs_state_these_counts():
    outcomes = list(KILLS.values()) + list(DAMAGE.values())
    text = DOCS.read_text()
    assert f"{len(outcomes)} faults injected" in text
    assert f"{outcomes.count('survived')} survived" in text
    assert f"{outcomes.count('refused')} refused" in text
