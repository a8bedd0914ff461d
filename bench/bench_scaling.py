"""The whole analysis of a paper-sized record in bounded memory, beside the in-memory path.

Run: ``REPSCOPE_DATA=../shared/data python bench/bench_scaling.py --root /tmp/repscope-scaling``
(``--paper-checkpoints 0`` skips the paper-sized record; ``--small-checkpoints`` sizes
the record that both paths analyse).

Builds, with ``bench/paper_record.py``, a small record (4 checkpoints x 50 tasks x
inner steps 0/1/5/10 x 20 stimuli, 1.1 GB) and the paper-sized one (60 checkpoints,
16 GB), then runs the main entry as a user would, each in its own process:

1. ``analyses/layer_similarity.py --maml-run SMALL --memory-limit 1TB`` (in memory);
2. the same with ``--memory-limit 1MB`` (read lazily with dask);
3. ``analyses/layer_similarity.py --maml-run PAPER`` (default limit: lazily).

Prints each one's wall time and peak resident memory (the process's ``ru_maxrss``),
and whether every figure's netCDF of 1 and 2 is identical. Goals: 3 in < 10 minutes
with a peak < 4 GB on 2 cores; 1 and 2 identical.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import xarray as xr

HERE = Path(__file__).resolve().parent
ENTRY = HERE.parent / "analyses" / "layer_similarity.py"


def _build(root: Path, name: str, checkpoints: int, data: str | None) -> Path:
    out = root / name / "activations"
    cmd = [sys.executable, str(HERE / "paper_record.py"), "--out", str(out), "--source",
           str(root / "source"), "--checkpoints", str(checkpoints)] + (["--data", data] if data else [])
    subprocess.run(cmd, check=True)
    return root / name


def _run(args: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of the main entry with ``args``."""
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, str(ENTRY), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        if line.startswith("[layer_similarity]"):
            print("   ", line.rstrip(), flush=True)
        lines.append(line)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit("".join(lines[-40:]) + f"\nfailed: {ENTRY} {' '.join(args)}")
    return time.time() - t0, usage.ru_maxrss * 1024


def _identical(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("*.nc"))
    return bool(names) and all(
        xr.load_dataset(a / n).identical(xr.load_dataset(b / n)) for n in names)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/bench_scaling.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/repscope-scaling"),
                   help="where the records and results go (about 17 GB)")
    p.add_argument("--data", default=os.environ.get("REPSCOPE_DATA"))
    p.add_argument("--small-checkpoints", type=int, default=4)
    p.add_argument("--paper-checkpoints", type=int, default=60)
    args = p.parse_args(argv)
    common = ["--formats", "png,pdf"]
    rows = []
    small = _build(args.root, "small", args.small_checkpoints, args.data)
    size = sum(f.stat().st_size for f in (small / "activations").glob("*.nc"))
    for mode, limit in (("in memory", "1TB"), ("lazy (dask)", "1MB")):
        res = args.root / ("results-memory" if limit == "1TB" else "results-lazy")
        print(f"{small.name}, {mode}:", flush=True)
        rows.append((small.name, size, mode, *_run(["--maml-run", str(small), "--results", str(res),
                                                     "--memory-limit", limit, *common])))
    same = _identical(args.root / "results-memory" / "small", args.root / "results-lazy" / "small")
    if args.paper_checkpoints:
        paper = _build(args.root, "paper", args.paper_checkpoints, args.data)
        psize = sum(f.stat().st_size for f in (paper / "activations").glob("*.nc"))
        print(f"{paper.name}, default --memory-limit:", flush=True)
        rows.append((paper.name, psize, "lazy (dask)",
                     *_run(["--maml-run", str(paper), "--results", str(args.root / "results-paper"), *common])))
    print(f"\n{'record':<8} {'size GB':>8} {'path':<12} {'wall s':>8} {'peak RSS GB':>12}")
    for name, nbytes, mode, wall, peak in rows:
        print(f"{name:<8} {nbytes / 1e9:>8.2f} {mode:<12} {wall:>8.0f} {peak / 1e9:>12.2f}")
    print(f"\nevery figure's netCDF identical (in memory vs lazy, {small.name}): {same}")
    print(f"lazy / in-memory on {small.name}: time x{rows[1][3] / rows[0][3]:.2f}, "
          f"peak memory x{rows[1][4] / rows[0][4]:.2f}; cores: {os.cpu_count()}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
