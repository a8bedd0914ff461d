"""A synthetic activation record with the paper's dimensions, tiled from a real one.

Run: ``REPSCOPE_DATA=../shared/data python bench/paper_record.py --out /tmp/paper``
(``--checkpoints 60 --tasks 50`` by default: 60 checkpoints x 50 tasks x inner steps
0/1/5/10 x 20 stimuli, the five conv4 layers in float32, about 16 GB in 60 files).

The source is real: a 20-way Omniglot ``quick`` run meta-trained for a few steps
(``python -m repscope.training.maml``) and recorded at two checkpoints with five tasks
(``python -m repscope.training.record``), built once into ``--source``. Output
checkpoint ``c`` (step ``1000 c``), task ``t`` copies source checkpoint ``c mod 2``,
task ``t mod 5`` and adds Gaussian noise of ``--noise`` times each layer's standard
deviation (seeded by ``c``), so every cell is a distinct representation with the real
layers' structure. Files are written by :func:`repscope.probes.write_checkpoint`, so
the record is what ``python -m repscope.training.record`` writes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import xarray as xr

from repscope.analyses.task_units import task_classes
from repscope.probes import existing_checkpoints, open_run, write_checkpoint

INNER_STEPS = (0, 1, 5, 10)


def source_record(folder: Path, data: str | None) -> Path:
    """A real small record (2 checkpoints x 5 tasks x inner steps 0/1/5/10 x 20 stimuli)."""
    from repscope.training.config import get_preset
    from repscope.training.maml import train
    from repscope.training.record import RecordConfig, record_run

    acts = folder / "activations"
    if len(existing_checkpoints(acts)) >= 2:
        return acts
    if folder.exists():
        shutil.rmtree(folder)
    cfg = get_preset("quick", steps=2, val_every=0, test_tasks=0, lake_eval=False,
                     progress=False, data=data)
    train(cfg, folder, log=None)
    rec = RecordConfig(checkpoints="0,2", tasks=5, inner_steps=INNER_STEPS, eval_tasks=20,
                       progress=False, data=data)
    return record_run(folder, rec, acts, log=None)


def tile(source: xr.Dataset, step: int, index: int, tasks: int, noise: float,
         seed: int) -> xr.Dataset:
    """Checkpoint ``step`` of the synthetic record from ``source`` checkpoint ``index``."""
    rng = np.random.default_rng([seed, step])
    src = source.isel(checkpoint=[index])
    pick = np.arange(tasks) % src.sizes["task"]
    one = src.isel(task=pick).assign_coords(checkpoint=[step], task=np.arange(tasks, dtype=np.int64))
    classes = task_classes(source)  # task t shows the characters of source task t mod 5
    one.attrs["task_classes"] = json.dumps([classes[t] for t in pick])
    for name in json.loads(source.attrs["layers"]):
        values = one[name].values  # a copy of the source (fancy indexing)
        values += rng.standard_normal(values.shape, dtype=np.float32) * np.float32(noise * values.std())
    return one


def build(source_acts: Path, out: Path, checkpoints: int = 60, tasks: int = 50,
          noise: float = 0.1, seed: int = 0) -> int:
    """Write the synthetic record into ``out``; returns its size in bytes."""
    source = open_run(source_acts)
    out.mkdir(parents=True, exist_ok=True)
    done = set(existing_checkpoints(out))
    for c in range(checkpoints):
        step = 1000 * c
        if step not in done:
            write_checkpoint(out, tile(source, step, c % source.sizes["checkpoint"], tasks, noise, seed))
    return sum(p.stat().st_size for p in out.glob("checkpoint_*.nc"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/paper_record.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="activations folder to write")
    p.add_argument("--source", type=Path, default=Path("/tmp/repscope-bench-source"),
                   help="where the real small source run is built (reused when present)")
    p.add_argument("--data", default=os.environ.get("REPSCOPE_DATA"), help="data folder")
    p.add_argument("--checkpoints", type=int, default=60)
    p.add_argument("--tasks", type=int, default=50)
    p.add_argument("--noise", type=float, default=0.1)
    args = p.parse_args(argv)
    t0 = time.time()
    acts = source_record(args.source, args.data)
    size = build(acts, args.out, args.checkpoints, args.tasks, args.noise)
    print(f"{args.out}: {args.checkpoints} checkpoints x {args.tasks} tasks x inner steps "
          f"{list(INNER_STEPS)} x 20 stimuli, {size / 1e9:.2f} GB, built in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
