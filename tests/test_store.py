"""netCDF store: round trip, streaming with bounded memory, crash safety, validation."""
import json
import os
import tracemalloc

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from repscope.probes import (Probe, ProbeError, existing_checkpoints, open_run, validate,
                    write_checkpoint)

N = 8
IDS = [f"char{i:02d}/drawer01" for i in range(N)]


def make_net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))


def record_checkpoint(probe, net, step, tasks=(0, 1), steps=(0, 1), size=6):
    torch.manual_seed(100 + step)
    x = torch.randn(N, 1, size, size)
    for task in tasks:
        for inner in steps:
            with probe.recording(checkpoint=step, task=task, inner_step=inner,
                                 labels=np.arange(N) % 4, image_ids=IDS,
                                 role=["support"] * 4 + ["probe"] * 4):
                net(x + task + inner)
    return probe.to_dataset(config={"run": "test"}, clear=True)


@pytest.fixture
def dataset():
    net = make_net(0)
    probe = Probe(net, ["0", "3"])
    parts = [record_checkpoint(probe, net, step) for step in (0, 1000, 2000)]
    return xr.concat(parts, dim="checkpoint", data_vars="minimal", coords="minimal",
                     compat="equals", join="outer", combine_attrs="override")


def test_round_trip_is_identical(tmp_path, dataset):
    written = write_checkpoint(tmp_path, dataset)
    assert [p.name for p in written] == [f"checkpoint_{s:08d}.nc" for s in (0, 1000, 2000)]
    xr.testing.assert_identical(open_run(tmp_path), dataset)
    xr.testing.assert_identical(open_run(tmp_path, checkpoints=[1000]),
                                dataset.sel(checkpoint=[1000]))


@pytest.mark.parametrize("compress", [False, True])
def test_float16_round_trip_with_and_without_compression(tmp_path, compress):
    net = make_net(1)
    probe = Probe(net, ["0", "3"], dtype="float16")
    ds = record_checkpoint(probe, net, 5)
    assert ds["0"].dtype == np.float16
    write_checkpoint(tmp_path, ds, compress=compress)
    back = open_run(tmp_path)
    xr.testing.assert_identical(back, ds)
    assert back["0"].dtype == np.float16 and "repscope_dtype" not in back["0"].attrs


def test_missing_cells_stay_nan_across_checkpoints(tmp_path):
    net = make_net(2)
    probe = Probe(net, ["3"])
    write_checkpoint(tmp_path, record_checkpoint(probe, net, 0, tasks=(0,), steps=(0,)))
    write_checkpoint(tmp_path, record_checkpoint(probe, net, 10, tasks=(0, 1), steps=(0, 5)))
    ds = open_run(tmp_path)
    assert ds["task"].values.tolist() == [0, 1] and ds["inner_step"].values.tolist() == [0, 5]
    assert ds["3"].sel(checkpoint=0, task=1).isnull().all()
    assert not ds["3"].sel(checkpoint=10, task=1).isnull().any()


def test_existing_checkpoints_and_overwrite(tmp_path, dataset):
    assert existing_checkpoints(tmp_path) == []
    write_checkpoint(tmp_path, dataset.sel(checkpoint=[0, 2000]))
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert existing_checkpoints(tmp_path) == [0, 2000]
    with pytest.raises(ProbeError, match=r"Checkpoints \[2000\] already exist.*overwrite=True"):
        write_checkpoint(tmp_path, dataset.sel(checkpoint=[1000, 2000]))
    assert existing_checkpoints(tmp_path) == [0, 2000]
    write_checkpoint(tmp_path, dataset.sel(checkpoint=[2000]), overwrite=True)
    with pytest.raises(ProbeError, match=r"Checkpoints \[1000\] are not stored"):
        open_run(tmp_path, checkpoints=[1000])


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path, dataset, monkeypatch):
    old = dataset.sel(checkpoint=[1000])
    write_checkpoint(tmp_path, old)
    before = (tmp_path / "checkpoint_00001000.nc").read_bytes()

    def crash(self, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"half a netCDF file")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", crash)
    newer = old.copy(deep=True)
    newer["3"][:] = 0.0
    with pytest.raises(ProbeError, match="Writing checkpoint 1000 to .* failed: disk full"):
        write_checkpoint(tmp_path, newer, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_00001000.nc"]
    assert (tmp_path / "checkpoint_00001000.nc").read_bytes() == before
    monkeypatch.undo()
    xr.testing.assert_identical(open_run(tmp_path), old)


def stream(folder, keep):
    """Record and write 6 checkpoints; return peak traced memory and one checkpoint's size."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    probe = Probe(net, ["0", "1"])
    one = record_checkpoint(probe, net, -1, size=32).nbytes
    kept = []
    tracemalloc.start()
    try:
        for step in range(0, 6000, 1000):
            ds = record_checkpoint(probe, net, step, size=32)
            write_checkpoint(folder, ds)
            if keep:
                kept.append(ds)
            del ds               # otherwise it lives on while the next one is recorded
            assert probe.recorded == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # torch buffers are invisible to tracemalloc: the pool holds one checkpoint's worth
    # (4 cells x 2 layers), recycled, not one per checkpoint
    pooled = sum(len(free) for free in probe._pool._free.values())
    assert pooled == 4 * 2, pooled
    return peak, one


def test_streaming_holds_one_checkpoint_at_a_time(tmp_path):
    """Peak traced memory over 6 checkpoints stays below 2.5 checkpoints' worth; a recorder
    that keeps every checkpoint (the negative control) goes above."""
    peak, one = stream(tmp_path / "a", keep=False)
    assert one > 1_000_000 and peak < 2.5 * one, (peak, one)
    leaky_peak, _ = stream(tmp_path / "b", keep=True)
    assert leaky_peak > 5 * one, (leaky_peak, one)
    assert existing_checkpoints(tmp_path / "a") == list(range(0, 6000, 1000))
    ds = open_run(tmp_path / "a")
    assert ds.sizes["checkpoint"] == 6 and not ds["1"].isnull().any()


# --- validation --------------------------------------------------------------------------

def drop_coord_role(ds):
    return ds.drop_vars("role")


def drop_attr_config(ds):
    ds = ds.copy()
    del ds.attrs["config"]
    return ds


def drop_var_attr(ds):
    ds = ds.copy(deep=True)
    del ds["3"].attrs["module_type"]
    return ds


def rename_dim(ds):
    return ds.rename({"inner_step": "step"})


def unmarked_metric(ds):
    return ds.assign(accuracy=(("checkpoint", "task", "inner_step"), np.zeros((3, 2, 2))))


@pytest.mark.parametrize("damage, named", [
    (drop_coord_role, "missing coordinate 'role'"),
    (drop_attr_config, "missing dataset attribute 'config'"),
    (drop_var_attr, "layer variable '3' is missing attribute 'module_type'"),
    (rename_dim, "missing dimension 'inner_step'"),
    (unmarked_metric, "'accuracy' is neither listed in 'layers' nor marked with attribute role='metric'"),
])
def test_validator_names_the_missing_item(dataset, damage, named):
    validate(dataset)
    with pytest.raises(ProbeError, match=named.replace("(", r"\(").replace(")", r"\)")):
        validate(damage(dataset))


def test_metric_variables_travel_through_the_store(tmp_path, dataset):
    acc = xr.DataArray(np.random.default_rng(0).random((3, 2, 2)),
                       dims=("checkpoint", "task", "inner_step"), attrs={"role": "metric"})
    with_metric = dataset.assign(accuracy=acc)
    write_checkpoint(tmp_path, with_metric)
    xr.testing.assert_identical(open_run(tmp_path), with_metric)


def test_open_run_names_the_broken_file_and_item(tmp_path, dataset):
    write_checkpoint(tmp_path, dataset.sel(checkpoint=[0]))
    broken = drop_var_attr(dataset.sel(checkpoint=[1000]))
    broken.to_netcdf(tmp_path / "checkpoint_00001000.nc", engine="netcdf4")
    with pytest.raises(ProbeError, match=r"checkpoint_00001000.nc does not follow .*'module_type'"):
        open_run(tmp_path)


def test_open_run_refuses_files_of_different_runs(tmp_path, dataset):
    write_checkpoint(tmp_path, dataset.sel(checkpoint=[0]))
    other = dataset.sel(checkpoint=[1000]).copy()
    other.attrs["config"] = json.dumps({"run": "other"})
    write_checkpoint(tmp_path, other)
    with pytest.raises(ProbeError, match="Attribute 'config' of .*checkpoint_00001000.nc differs"):
        open_run(tmp_path)


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ProbeError, match="No checkpoint_XXXXXXXX.nc files"):
        open_run(tmp_path)


def test_flipped_byte_is_an_error_naming_file_and_fix(tmp_path, dataset):
    path = write_checkpoint(tmp_path, dataset)[0]
    values = np.ascontiguousarray(dataset["0"].isel(checkpoint=0).values, np.float32)
    data = bytearray(path.read_bytes())
    at = data.find(values.tobytes()[:32])
    assert at > 0
    data[at + 3] ^= 0x04
    path.write_bytes(bytes(data))
    with pytest.raises(ProbeError, match=r"checkpoint_\d+\.nc is corrupt: its content does "
                                         r"not match the SHA-256.*Delete it and record"):
        open_run(tmp_path)


def test_file_without_a_hash_is_read_without_the_check_and_a_warning(tmp_path, dataset):
    (tmp_path / "old").mkdir()
    for path in write_checkpoint(tmp_path / "new", dataset):
        with xr.open_dataset(path) as f:
            old = f.load()
        assert "content_sha256" in old.attrs
        del old.attrs["content_sha256"]  # as written before the hash existed
        old.to_netcdf(tmp_path / "old" / path.name, engine="netcdf4")
    with pytest.warns(UserWarning, match=r"3 activation file\(s\) carry no content_sha256 and were read "
                                         r"without the content check"):
        old = open_run(tmp_path / "old")
    xr.testing.assert_identical(old, open_run(tmp_path / "new"))
    assert "content_sha256" not in open_run(tmp_path / "new").attrs


def test_open_run_removes_stale_temporaries_and_warns(tmp_path, dataset):
    write_checkpoint(tmp_path, dataset)
    stale = tmp_path / ".checkpoint_00000009.nc.tmp-999999999"
    stale.write_bytes(b"half a file")
    with pytest.warns(UserWarning, match=r"Removed 1 temporary files that killed writers left"):
        open_run(tmp_path)
    assert not stale.exists()
