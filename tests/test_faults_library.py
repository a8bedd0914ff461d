"""Misuse of the library and its environment: each case a clear error from our error
classes (or a stated, documented behaviour), never a traceback, a wrong number or a hang.

Every case here failed before it was fixed (``CASES`` says how); ``docs/guide/robustness.rst``
publishes the table and its counts, checked by the last test.
"""
import gzip
import json
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from repscope.analyses import AnalysisError, compare
from repscope.probes import Probe, ProbeError, open_run, write_checkpoint

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "guide" / "robustness.rst"

# case -> what it did before -> "refused" (a clear error) or "stated" (documented behaviour)
CASES = {
    "NaN or Inf layer outputs in Probe.recording": ("recorded silently", "refused"),
    "write_checkpoint of a record with NaN or Inf activations": ("written silently", "refused"),
    "open_run of a file with NaN or Inf activations": ("read silently", "refused"),
    "compare() with an all-NaN (diverged) cell": ("NaN without a message", "refused"),
    "compare() of two Datasets": ("AttributeError", "refused"),
    "compare() of two ndarrays": ("AttributeError", "refused"),
    "compare(..., dtype='int8')": ("TypeError from torch.finfo", "refused"),
    "open_run(chunks={'task': 0})": ("ZeroDivisionError", "refused"),
    "open_run(checkpoints=[])": ("IndexError", "refused"),
    "netCDF content_sha256 that is not a string": ("'corrupt' for the wrong reason", "refused"),
    "checkpoint .pt content_sha256 that is not a string": ("TypeError", "refused"),
    "netCDF attribute (task_classes, config) edited": ("loaded silently", "refused"),
    "netCDF file with the hash removed": ("loaded silently", "stated"),
    "--scheduler at a server that accepts and never answers": ("hung 480 s", "refused"),
    "--scheduler at a server that answers HTTP": ("Unable to allocate 3.07 EiB", "refused"),
    "Omniglot PNG whose header claims 60000x60000": ("PIL.DecompressionBombError", "refused"),
    "MNIST gzip that inflates far beyond its IDX size": ("inflated whole", "refused"),
    "two identical runs write different checkpoint bytes": ("unseeded RNG states", "refused"),
    "torchrun with the agent killed": ("gloo stack", "refused"),
}


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def _record(net, step=0, scale=1.0, cells=((0, 0), (0, 1))):
    probe = Probe(net, ["0", "2"])
    for task, inner in cells:
        with probe.recording(checkpoint=step, task=task, inner_step=inner, labels=[0, 1, 0, 1, 0],
                             image_ids=[f"i{k}" for k in range(5)]):
            net(torch.arange(15.0).reshape(5, 3) * scale + inner)
    return probe.to_dataset(config={"seed": 0})


# --- non-finite values -------------------------------------------------------------

def test_probe_refuses_nan_and_inf_outputs_naming_layer_and_cell():
    net = _net()
    with torch.no_grad():
        net[2].weight[0, 0] = float("nan")
    probe = Probe(net, ["0", "2"])
    with pytest.raises(ProbeError, match=r"Layer '2' output NaN for 5 of 5 stimuli in recording "
                                         r"\(checkpoint, task, inner_step\) = \(300, 1, 2\)"):
        with probe.recording(checkpoint=300, task=1, inner_step=2, labels=[0] * 5, image_ids=list("abcde")):
            net(torch.ones(5, 3))
    assert probe.recorded == []
    with pytest.raises(ProbeError, match=r"Layer '0' output Inf .*Stored as float16"):
        big = Probe(_net(), ["0"], dtype="float16")
        with big.recording(checkpoint=0, labels=[0] * 5, image_ids=list("abcde")):
            big.model(torch.full((5, 3), 1e6))


def _diverged(ds, layer="2", cell=(0, 0, 1), value=np.nan, stimulus=slice(None)):
    ds = ds.copy(deep=True)
    ds[layer][cell + (stimulus,)] = value
    return ds


@pytest.mark.parametrize("damage,named", [
    (dict(value=np.inf, stimulus=0), r"layer '2' is Inf in 1 cell\(s\): checkpoint=0, task=0, inner_step=1"),
    (dict(stimulus=3), r"layer '2' is partly NaN in 1 cell\(s\): checkpoint=0, task=0, inner_step=1"),
    ({}, r"layer '2' is all NaN in 1 cell\(s\) that other layers recorded: checkpoint=0, task=0, inner_step=1"),
])
def test_write_checkpoint_refuses_non_finite_activations_before_writing(tmp_path, damage, named):
    ds = _record(_net())
    with pytest.raises(ProbeError, match=r"dataset holds non-finite activations: " + named):
        write_checkpoint(tmp_path / "a", _diverged(ds, **damage))
    assert not any((tmp_path / "a").glob("checkpoint_*.nc"))


def test_large_finite_activations_whose_sum_overflows_are_accepted(tmp_path):
    ds = _record(_net())
    ds["0"][:] = 3e38  # finite float32; their sum is not
    write_checkpoint(tmp_path, ds)
    assert float(open_run(tmp_path)["0"].max()) == pytest.approx(3e38, rel=1e-6)


def test_a_checkpoint_whose_every_cell_is_nan_is_refused(tmp_path):
    ds = _record(_net())
    for layer in ("0", "2"):
        ds[layer][:] = np.nan
    with pytest.raises(ProbeError, match="checkpoint 0 holds no values: every cell of every layer is all NaN"):
        write_checkpoint(tmp_path, ds)


def test_cells_never_recorded_stay_allowed(tmp_path):
    net = _net()
    ds = xr.concat([_record(net, 0, cells=((0, 0),)), _record(net, 5, cells=((1, 1),))], "checkpoint",
                   data_vars="minimal", coords="minimal", compat="equals", join="outer",
                   combine_attrs="override")
    write_checkpoint(tmp_path, ds)
    back = open_run(tmp_path)
    assert bool(back["2"].sel(checkpoint=0, task=1).isnull().all())


def test_open_run_refuses_a_file_with_non_finite_activations(tmp_path):
    path = write_checkpoint(tmp_path, _record(_net()))[0]
    with xr.open_dataset(path) as f:
        ds = f.load()
    ds["0"][0, 0, 1, 2, 1] = np.inf
    del ds.attrs["content_sha256"]  # a record written by other code, or before the check
    ds.to_netcdf(path)
    with pytest.raises(ProbeError, match=r"checkpoint_00000000.nc holds non-finite activations: "
                                         r"layer '0' is Inf in 1 cell\(s\): checkpoint=0, task=0, inner_step=1"):
        open_run(tmp_path)


def _layer(values, name="head"):
    n = values.shape[-2]
    return xr.DataArray(values, dims=("checkpoint", "stimulus", "unit_head"), name=name,
                        coords={"checkpoint": [0, 100], "stimulus": np.arange(n)})


@pytest.mark.parametrize("measure", ["rsa", "cka_linear"])
def test_compare_refuses_an_all_nan_cell_unless_allowed(measure):
    x = np.random.default_rng(0).normal(size=(2, 6, 4))
    x[1] = np.nan  # the network diverged before checkpoint 100
    a = _layer(x)
    with pytest.raises(AnalysisError, match=r"'head' has non-finite values in 1 cell\(s\): checkpoint=100 "
                                            r"\(all NaN\).*allow_missing=True"):
        compare(a, a, measure)
    out = compare(a, a, measure, allow_missing=True)
    assert np.isnan(out.sel(checkpoint=100)) and np.isfinite(out.sel(checkpoint=0))


# --- wrong inputs ------------------------------------------------------------------

def test_compare_refuses_datasets_arrays_and_integer_dtypes():
    a = _layer(np.random.default_rng(0).normal(size=(2, 6, 4)))
    with pytest.raises(AnalysisError, match=r"the first input is an xarray.Dataset with variables \['head'\]: "
                                            r"pass one of them, e.g. ds\['head'\]"):
        compare(a.to_dataset(), a.to_dataset())
    with pytest.raises(AnalysisError, match="the second input is a ndarray. Label an array first"):
        compare(a, a.values, "cka_linear")
    with pytest.raises(AnalysisError, match="the first input is a ndarray"):
        compare(a.values, a.values)
    for dtype in ("int8", torch.int64, "bogus"):
        with pytest.raises(AnalysisError, match=r"Measure 'cka_linear': dtype .* is not a floating-point dtype. "
                                                r"Expected one of \['float32', 'float64'\]"):
            compare(a, a, "cka_linear", dtype=dtype)
    assert float(compare(a, a, "cka_linear", dtype="float32")[0]) == pytest.approx(1, abs=1e-5)


def test_open_run_refuses_zero_chunks_and_empty_selections(tmp_path):
    write_checkpoint(tmp_path, _record(_net()))
    for chunks in ({"task": 0}, {"task": -2}, {"task": 1.5}, {"task": True}):
        with pytest.raises(ProbeError, match=r"chunks\['task'\] is .*; expected an int >= 1"):
            open_run(tmp_path, chunks=chunks)
    with pytest.raises(ProbeError, match=r"checkpoints is empty: pass None for every stored checkpoint, or some of \[0\]"):
        open_run(tmp_path, checkpoints=[])
    with pytest.raises(ProbeError, match="checkpoints must be None or a list of int"):
        open_run(tmp_path, checkpoints=["x"])
    assert open_run(tmp_path, chunks={"task": 1})["0"].shape == (1, 1, 2, 5, 4)


# --- content hashes ----------------------------------------------------------------

def _rewrite(path, edit):
    with xr.open_dataset(path) as f:
        ds = f.load()
    edit(ds)
    path.unlink()
    ds.to_netcdf(path)


@pytest.mark.parametrize("bad", [12345, "deadbeef", "x" * 64])
def test_a_malformed_netcdf_hash_is_named(tmp_path, bad):
    path = write_checkpoint(tmp_path, _record(_net()))[0]
    _rewrite(path, lambda ds: ds.attrs.update(content_sha256=bad))
    with pytest.raises(ProbeError, match=r"its attribute 'content_sha256' is .*, not a SHA-256 \(64 hexadecimal"):
        open_run(tmp_path)


@pytest.mark.parametrize("edit", [
    lambda ds: ds.attrs.update(task_classes=json.dumps([[1, 2]])),
    lambda ds: ds.attrs.update(config=json.dumps({"seed": 1})),
    lambda ds: ds["2"].attrs.update(module_type="Conv2d"),
])
def test_an_edited_attribute_fails_the_hash(tmp_path, edit):
    ds = _record(_net()).assign_attrs(task_classes=json.dumps([[0, 1]]))
    path = write_checkpoint(tmp_path, ds)[0]
    _rewrite(path, edit)
    with pytest.raises(ProbeError, match="is corrupt: its content does not match the SHA-256"):
        open_run(tmp_path)


def test_files_of_the_first_hash_definition_are_still_read(tmp_path):
    from repscope.probes.store import record_hash

    path = write_checkpoint(tmp_path, _record(_net()))[0]
    new = open_run(tmp_path)

    def as_v1(ds):
        del ds.attrs["content_hash_version"]
        ds.attrs["content_sha256"] = record_hash(ds, version=1)
    _rewrite(path, as_v1)
    xr.testing.assert_identical(open_run(tmp_path), new)
    _rewrite(path, lambda ds: ds.attrs.update(content_hash_version=3))
    with pytest.raises(ProbeError, match="content_hash_version = 3; this version of repscope checks 1 to 2"):
        open_run(tmp_path)


def test_a_malformed_checkpoint_hash_is_named(tmp_path):
    from repscope.training.checkpoint import load_checkpoint
    from repscope.training.errors import TrainingError

    path = tmp_path / "step_00000000.pt"
    for bad in (12345, None, "abc"):
        torch.save({"format": "repscope.maml.checkpoint", "format_version": 1, "step": 0, "config": {},
                    "model": {}, "optimizer": {}, "rng": {}, "content_sha256": bad}, path)
        with pytest.raises(TrainingError, match=r"its content_sha256 entry is .*, not a SHA-256"):
            load_checkpoint(path)


# --- network waits -----------------------------------------------------------------

class _Server:
    """A TCP server on 127.0.0.1 that accepts and never answers, or answers HTTP.
    It stops itself after ``life`` seconds at the latest."""

    def __init__(self, answer: bytes | None, life: float = 30.0):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(life)
        self.port = self.sock.getsockname()[1]
        self.answer, self.conns = answer, []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            while True:
                conn, _ = self.sock.accept()
                self.conns.append(conn)
                if self.answer is not None:
                    conn.settimeout(1)
                    try:
                        conn.recv(65536)
                    except OSError:
                        pass
                    conn.sendall(self.answer)
        except OSError:  # closed, or its life ended
            return

    def close(self):
        for conn in self.conns:
            conn.close()
        self.sock.close()


@pytest.mark.parametrize("answer,named", [
    (None, r"did not answer \(waited 4 s\)"),
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", r"did not answer as a dask scheduler"),
])
def test_a_scheduler_that_does_not_answer_is_an_error_naming_it(answer, named):
    pytest.importorskip("distributed")
    from repscope.analyses.cluster import connect

    server = _Server(answer)
    try:
        t0 = time.monotonic()
        with pytest.raises(AnalysisError, match=rf"at 'tcp://127.0.0.1:{server.port}' {named}"):
            connect(f"tcp://127.0.0.1:{server.port}", timeout=2)
        assert time.monotonic() - t0 < 20
    finally:
        server.close()


def test_the_command_line_names_a_non_dask_scheduler(data_root, tmp_path, capsys):
    pytest.importorskip("distributed")
    from repscope.analyses import layer_similarity
    from test_analyses_data import make_record

    run = tmp_path / "maml" / "activations"
    write_checkpoint(run, make_record(data_root, checkpoints=(0, 1000), n_tasks=2, n_stimuli=10))
    server = _Server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    try:
        assert layer_similarity.main(["--maml-run", str(run.parent), "--results", str(tmp_path / "r"),
                                      "--scheduler", f"tcp://127.0.0.1:{server.port}"]) == 2
    finally:
        server.close()
    assert f"--scheduler: The server at 'tcp://127.0.0.1:{server.port}' did not answer as a dask scheduler" \
        in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_real_scheduler_is_connected():
    distributed = pytest.importorskip("distributed")
    from repscope.analyses.cluster import connect

    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        with connect(cluster.scheduler_address, timeout=10) as client:
            assert client.scheduler_info()["address"] == cluster.scheduler_address


def test_a_closed_port_is_an_error_naming_it():
    pytest.importorskip("distributed")
    from repscope.analyses.cluster import connect

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(AnalysisError, match=rf"Cannot connect to the dask scheduler at 'tcp://127.0.0.1:{port}'"):
        connect(f"tcp://127.0.0.1:{port}", timeout=2)


# --- data ----------------------------------------------------------------------------

def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` 1-bit pixels (its data is one empty row)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def test_a_png_claiming_a_huge_size_is_a_data_error(tmp_path):
    from repscope.training.data.preprocess import decode_png
    from repscope.training.errors import DataError

    with pytest.raises(DataError, match=r"Image 'Greek/character01/0101_01.png' declares 60000x60000 pixels; "
                                        r"Omniglot images are 105x105"):
        decode_png(_png_header(60000, 60000), "Greek/character01/0101_01.png")


def test_an_mnist_gzip_larger_than_its_idx_header_is_refused_without_inflating_it(tmp_path):
    import tracemalloc

    from repscope.training.data.mnist import read_idx
    from repscope.training.errors import DataError

    path = tmp_path / "labels-idx1-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(struct.pack(">HBBI", 0, 0x08, 1, 10) + bytes(10))
        for _ in range(64):  # 64 MiB of zeros past the 10 declared labels
            f.write(bytes(2**20))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"holds more than the 18 bytes its IDX header declares"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20  # a few chunks, not the 64 MiB member
    canonical = tmp_path / "t10k-labels-idx1-ubyte.gz"  # the canonical file is 10008 bytes
    canonical.write_bytes(gzip.compress(struct.pack(">HBBI", 0, 0x08, 1, 60000) + bytes(60000)))
    with pytest.raises(DataError, match=r"IDX header says shape \(60000,\) \(60008 bytes\), more than the "
                                        r"10008 bytes expected"):
        read_idx(canonical)


def test_two_identical_runs_write_byte_identical_checkpoints(tmp_path, data_root):
    import random

    from repscope.training.config import get_preset
    from repscope.training.maml import train

    cfg = get_preset("quick", n_way=5, meta_batch=1, inner_steps=1, inner_steps_eval=1, steps=2,
                     checkpoint_every=2, checkpoint_log=False, state_every=2, val_every=0, test_tasks=0,
                     lake_eval=False, progress=False, data=str(data_root))
    for name, seed in (("a", 1), ("b", 2)):  # another process: other global generator states
        random.seed(seed)
        np.random.seed(seed)
        train(cfg, tmp_path / name, log=None)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.pt"))
    assert len(files) >= 2
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_the_docs_state_these_cases_and_counts():
    text = DOCS.read_text()
    outcomes = [after for _, after in CASES.values()]
    assert f"{len(CASES)} cases of misuse" in text
    assert f"{outcomes.count('refused')} refused" in text and f"{outcomes.count('stated')} stated" in text


def test_a_rank_whose_torchrun_agent_is_gone_stops_with_a_message(monkeypatch):
    import repscope.training.distributed as distributed
    from repscope.training.errors import TrainingError

    with socket.socket() as s:  # a port nothing listens on: the agent's store died with it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setattr(distributed, "RENDEZVOUS_WAIT", 1.0)
    t0 = time.monotonic()
    with pytest.raises(TrainingError, match=rf"Cannot reach the torchrun rendezvous at 127.0.0.1:{port} within 1 s "
                                            r".*The torchrun process that started this one stopped"):
        distributed.ranks("cpu")
    assert time.monotonic() - t0 < 15
