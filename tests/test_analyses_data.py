"""Hand-made activation records in the contract's layout, built on real MNIST images.

The "layers" are fixed random projections + ReLU of the pixels of the first MNIST
test images. Each (checkpoint, task, inner_step) perturbs the projection weights:
late layers are perturbed more than early ones, the inner loop does most of its change
in step 1, and meta-training drifts slowly. Tests here check the records follow the
schema (``repscope.probes.validate`` / ``repscope.probes.open_run``).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import xarray as xr

LAYERS = ("encoder.conv1", "encoder.conv2", "head")
WIDTHS = (48, 24, 5)


def mnist(data_root: Path, n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """First ``n`` MNIST test images (float in [0, 1], flattened) and their labels."""
    with gzip.open(data_root / "mnist" / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)[:n]
    with gzip.open(data_root / "mnist" / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return images.astype(np.float64) / 255.0, labels.astype(np.int64)


def _layers(x, weights):
    out, h = [], x
    for k, w in enumerate(weights):
        h = h @ w
        if k < len(weights) - 1:
            h = np.maximum(h, 0)
        out.append(h)
    return out


def make_record(data_root: Path, checkpoints=(0, 1000, 2000, 3000), n_tasks: int = 4,
                inner_steps=(0, 1, 5, 10), n_stimuli: int = 20, seed: int = 0,
                n_eval: int = 30, metrics: bool = True, kind: str = "maml") -> xr.Dataset:
    """An activation record (schema_version 1) with the metric variables.

    ``kind`` goes into the ``config`` attribute as the recorders write it.
    """
    x, labels = mnist(data_root, n_stimuli)
    rng = np.random.default_rng(seed)
    dims_in = (784,) + WIDTHS[:-1]
    base = [rng.normal(size=(i, o)) / np.sqrt(i) for i, o in zip(dims_in, WIDTHS)]
    meta_dirs = [[rng.normal(size=w.shape) / np.sqrt(w.shape[0]) for w in base] for _ in checkpoints]
    task_dirs = [[rng.normal(size=w.shape) / np.sqrt(w.shape[0]) for w in base] for _ in range(n_tasks)]
    scale = [0.15, 0.5, 1.2]  # late layers move more (F1)
    data = {name: np.zeros((len(checkpoints), n_tasks, len(inner_steps), n_stimuli, w))
            for name, w in zip(LAYERS, WIDTHS)}
    meta = [np.zeros_like(w) for w in base]
    for c in range(len(checkpoints)):
        meta = [m + 0.05 * s * d for m, s, d in zip(meta, scale, meta_dirs[c])]
        for t in range(n_tasks):
            for k, step in enumerate(inner_steps):
                amount = 1 - 0.15 ** step  # most of the change in step 1 (F3)
                ws = [b + m + amount * s * d for b, m, s, d in zip(base, meta, scale, task_dirs[t])]
                for name, h in zip(LAYERS, _layers(x, ws)):
                    data[name][c, t, k] = h
    dims = ("checkpoint", "task", "inner_step", "stimulus")
    coords = {
        "checkpoint": np.asarray(checkpoints, np.int64),
        "task": np.arange(n_tasks, dtype=np.int64),
        "inner_step": np.asarray(inner_steps, np.int64),
        "stimulus": np.arange(n_stimuli, dtype=np.int64),
        "label": ("stimulus", labels),
        "image_id": ("stimulus", np.array([f"mnist/t10k/{i}" for i in range(n_stimuli)], dtype=object)),
        "role": ("stimulus", np.array(["probe"] * n_stimuli, dtype=object)),
    }
    ds = xr.Dataset(coords=coords)
    for name, w in zip(LAYERS, WIDTHS):
        ds[name] = xr.DataArray(data[name], dims=dims + (f"unit_{name}",), attrs={
            "module_path": name, "module_type": "Linear", "feature_shape": [w],
            "reduction": "none", "role": "layer"})
    if metrics:
        steps = np.asarray(inner_steps)
        prog = np.linspace(0.3, 0.9, len(checkpoints))[:, None, None]
        acc = prog * (1 - 0.5 ** (steps + 1))[None, None, :] + rng.uniform(0, 0.05, (len(checkpoints), n_tasks, len(steps)))
        ds["accuracy"] = xr.DataArray(acc, dims=("checkpoint", "task", "inner_step"), attrs={"role": "metric"})
        ev = prog[:, :, 0] + rng.normal(0, 0.05, (len(checkpoints), n_eval))
        ds["eval_accuracy"] = xr.DataArray(ev, dims=("checkpoint", "eval_task"),
                                           coords={"eval_task": np.arange(n_eval, dtype=np.int64)},
                                           attrs={"role": "metric", "inner_steps": int(steps[-1])})
    ds.attrs = {"schema_version": 1, "layers": json.dumps(list(LAYERS)),
                "config": json.dumps({"kind": kind, "maker": "tests/test_analyses_data.py", "seed": seed}),
                "versions": json.dumps({"numpy": np.__version__}), "created": "2026-01-01T00:00:00Z"}
    return ds


CLAIM_LAYERS = ("conv1", "conv2", "conv3", "head")
CLAIM_WIDTHS = (40, 30, 20, 5)


def make_claims_record(data_root, *, checkpoints=tuple(range(0, 3001, 250)), n_tasks=6,
                       inner_steps=(0, 1, 5, 10), inner_scale=(0.05, 0.2, 0.5, 1.5),
                       meta_per_1000=0.02, step_profile="first", plateau_at=1500,
                       n_test=None, meta_inner_steps=5, run_steps=None, seed=0) -> xr.Dataset:
    """A record whose F1/F2/F3 truths are set by the arguments.

    Each "layer" is its own random projection + ReLU of the pixels, so a layer's
    representation moves exactly as its own weights do (no change flows downstream).

    ``inner_scale``: per-layer size of the inner-loop weight change (increasing: F1
    true). ``meta_per_1000``: weight drift of every layer per 1000 meta-steps, along a
    fixed direction (small against ``inner_scale``: F2 true). ``step_profile``:
    "first" puts 90% of the change in step 1 (F3 true), "linear" spreads it evenly
    over 10 steps (F3 false). ``plateau_at``: the held-out accuracy rises linearly
    until that step and is flat after it (None: rising to the end).
    """
    x, labels = mnist(data_root, 20)
    rng = np.random.default_rng(seed)
    base = [rng.normal(size=(784, o)) / np.sqrt(784) for o in CLAIM_WIDTHS]
    meta_dir = [rng.normal(size=w.shape) / np.sqrt(w.shape[0]) for w in base]
    task_dir = [[rng.normal(size=w.shape) / np.sqrt(w.shape[0]) for w in base] for _ in range(n_tasks)]
    amount = {"first": lambda k: 1 - 0.1 ** k, "linear": lambda k: min(k, 10) / 10}[step_profile]
    data = {n: np.zeros((len(checkpoints), n_tasks, len(inner_steps), 20, w)) for n, w in zip(CLAIM_LAYERS, CLAIM_WIDTHS)}
    for c, step in enumerate(checkpoints):
        meta = [b + meta_per_1000 * step / 1000 * d for b, d in zip(base, meta_dir)]
        for t in range(n_tasks):
            for k, s in enumerate(inner_steps):
                ws = [m + amount(s) * sc * d for m, sc, d in zip(meta, inner_scale, task_dir[t])]
                for name, w in zip(CLAIM_LAYERS, ws):  # each "layer" reads the pixels: no coupling
                    h = x @ w
                    data[name][c, t, k] = h if name == "head" else np.maximum(h, 0)
    ck = np.asarray(checkpoints, np.int64)
    ds = xr.Dataset(coords={
        "checkpoint": ck, "task": np.arange(n_tasks, dtype=np.int64),
        "inner_step": np.asarray(inner_steps, np.int64), "stimulus": np.arange(20, dtype=np.int64),
        "label": ("stimulus", labels),
        "image_id": ("stimulus", np.array([f"mnist/t10k/{i}" for i in range(20)], dtype=object)),
        "role": ("stimulus", np.array(["probe"] * 20, dtype=object))})
    for name, w in zip(CLAIM_LAYERS, CLAIM_WIDTHS):
        ds[name] = (("checkpoint", "task", "inner_step", "stimulus", f"unit_{name}"), data[name],
                    {"module_path": name, "module_type": "Linear", "feature_shape": [w],
                     "reduction": "none", "role": "layer"})
    level = np.minimum(ck, plateau_at if plateau_at is not None else ck.max() * 10) / ck.max()
    ev = 0.1 + 0.6 * level[:, None] + rng.normal(0, 0.05, (len(ck), 200))
    ds = ds.assign_coords(eval_task=np.arange(200, dtype=np.int64))
    ds["eval_accuracy"] = (("checkpoint", "eval_task"), ev, {"role": "metric", "inner_steps": 5})
    ds["accuracy"] = (("checkpoint", "task", "inner_step"),
                      np.repeat(ev[:, :n_tasks, None], len(inner_steps), 2), {"role": "metric"})
    run = {"inner_steps": meta_inner_steps, "steps": run_steps or int(ck.max()), "n_way": 20,
           "n_test": n_test if n_test is not None else 20 * n_tasks}
    ds.attrs = {"schema_version": 1, "layers": json.dumps(list(CLAIM_LAYERS)),
                "config": json.dumps({"kind": "maml", "run": run, "record": {"tasks": n_tasks}}),
                "versions": json.dumps({"numpy": np.__version__}), "created": "2026-01-01T00:00:00Z"}
    return ds


def make_supervised(data_root: Path, steps=tuple(range(0, 45, 5)), n_stimuli: int = 40) -> xr.Dataset:
    """The MNIST control: checkpoint = training step, one task, inner_step 0."""
    ds = make_record(data_root, checkpoints=steps, n_tasks=1, inner_steps=(0,), n_stimuli=n_stimuli,
                     seed=1, metrics=False, kind="supervised")
    return ds


def write_run(ds: xr.Dataset, folder: Path) -> Path:
    """Write one ``checkpoint_XXXXXXXX.nc`` per checkpoint, as ``probes`` lays out runs."""
    folder.mkdir(parents=True, exist_ok=True)
    for c in ds["checkpoint"].values:
        ds.sel(checkpoint=[c]).to_netcdf(folder / f"checkpoint_{int(c):08d}.nc")
    return folder


def test_record_follows_the_schema(data_root, tmp_path):
    from repscope import probes

    ds = make_record(data_root)
    probes.validate(ds)
    back = probes.open_run(write_run(ds, tmp_path / "activations"))
    assert back["checkpoint"].values.tolist() == [0, 1000, 2000, 3000]
    np.testing.assert_allclose(back["head"].values, ds["head"].values)
    # step 0 is the same for every task (shared probe set, before adaptation)
    np.testing.assert_array_equal(ds["head"].isel(inner_step=0, task=0), ds["head"].isel(inner_step=0, task=3))


def test_supervised_record_follows_the_schema(data_root):
    from repscope import probes

    ds = probes.validate(make_supervised(data_root))
    assert ds.sizes["task"] == 1 and ds.sizes["inner_step"] == 1


def test_claims_record_follows_the_schema(data_root, tmp_path):
    from repscope import probes

    ds = probes.validate(make_claims_record(data_root, checkpoints=(0, 250, 500), n_tasks=5))
    back = probes.open_run(write_run(ds, tmp_path / "activations"))
    np.testing.assert_allclose(back["conv3"].values, ds["conv3"].values)
