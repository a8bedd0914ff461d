"""Measure sanity benchmark: train K seeded MNIST control networks, then check the measures.

Run: ``python bench/bench_measure_sanity.py [--seeds 0,1,2,3,4] [--steps 1000] [--jobs 2]``

1. Trains the conv4 MNIST control network once per seed (``python -m
   repscope.training.supervised``, each in its own process, ``--jobs`` at a time; runs
   already in ``--runs-dir`` are reused), recording the first ``--n-probe`` test images
   at the first and last step only.
2. Runs ``python -m repscope.analyses.sanity`` on them: Kornblith et al.'s layer
   identification and Ding et al.'s principal-component removal (see that module), and
   writes tables, netCDF and a figure under ``--out``.

On 2 shared CPU cores with the defaults, training takes about a minute per network and
the analysis a few minutes.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def _train_cmd(seed: int, folder: Path, args) -> list[str]:
    return [sys.executable, "-m", "repscope.training.supervised", "--out", str(folder), "--seed", str(seed),
            "--steps", str(args.steps), "--record-every", str(args.steps), "--n-probe", str(args.n_probe),
            "--mnist", args.mnist, "--no-progress", "--threads", "1"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds, one network each (K >= 2)")
    p.add_argument("--steps", type=int, default=1000, help="training steps per network")
    p.add_argument("--n-probe", type=int, default=500, help="recorded probe images")
    p.add_argument("--mnist", default="auto", help="training data, as python -m repscope.training.supervised")
    p.add_argument("--jobs", type=int, default=2, help="networks trained at once")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/measure_sanity"), help="run folders")
    p.add_argument("--out", type=Path, default=Path("results/measure_sanity"), help="results folder")
    p.add_argument("--n-stimuli", default="20,100,500", help="passed to repscope.analyses.sanity")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    folders = {s: args.runs_dir / f"seed{s}" for s in seeds}
    todo = [s for s, f in folders.items() if not any((f / "activations").glob("checkpoint_*.nc"))]
    t0 = time.time()
    running: list[subprocess.Popen] = []
    for s in todo:
        while len([r for r in running if r.poll() is None]) >= args.jobs:
            time.sleep(1)
        print(f"[bench] training seed {s}: {' '.join(_train_cmd(s, folders[s], args))}", flush=True)
        running.append(subprocess.Popen(_train_cmd(s, folders[s], args), stdout=subprocess.DEVNULL))
    codes = [r.wait() for r in running]
    if any(codes):
        print(f"[bench] training failed: exit codes {codes}", file=sys.stderr)
        return 1
    print(f"[bench] {len(todo)} network(s) trained in {time.time() - t0:.0f} s", flush=True)
    t1 = time.time()
    cmd = [sys.executable, "-m", "repscope.analyses.sanity", "--out", str(args.out), "--n-stimuli", args.n_stimuli]
    for s in seeds:
        cmd += ["--run", str(folders[s])]
    done = subprocess.run(cmd)
    print(f"[bench] analysis in {time.time() - t1:.0f} s", flush=True)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
