"""Layer similarity during meta-learning: train (if needed), record, analyse, report.

Run ``python analyses/layer_similarity.py --help`` for every option.

With no arguments this runs the quick end-to-end path on a fresh machine:

1. ``python -m repscope.training.maml --preset quick --out runs/quick`` (skipped when
   ``runs/quick/checkpoints`` holds the last step; resumed with ``--resume`` when it
   holds earlier ones);
2. ``python -m repscope.training.record --run runs/quick --checkpoints all --tasks 8
   --inner-steps 0,1,5,10 --eval-tasks 100`` (skipped when ``runs/quick/activations`` holds records);
3. ``python -m repscope.training.supervised --out runs/mnist`` (skipped when its records and
   ``summary.json`` exist);
4. the analysis: figures 1a, 1b, 3, 4, 5 of the MAML run and figure 2 of the MNIST
   control as PNG + PDF with their values as netCDF in ``results/<run>/``, and
   ``results/findings.md`` (claims F1-F3 with bootstrap CIs).

``--preset medium`` runs the same stages in the paper's regime (20-way 1-shot, 5 inner
steps, second order; 2400 meta-steps on the small archives, 5 analysis tasks over
disjoint characters, 20 recorded checkpoints), sized for 2 CPU cores (its run time is in
``docs/guide/reproducing.rst``).

Data come from ``--data`` or ``$REPSCOPE_DATA``, else the training CLIs download them.
``--preset paper`` trains the paper's runs (``omniglot-20way-1shot``, 60000 meta-steps,
and ``miniimagenet-5way-1shot`` when Mini-ImageNet data are present), records 50 tasks
at every 1000th step and analyses them: a GPU job (its run time, measured by
``bench/bench_maml.py``, is on the benchmark page, ``docs/guide/benchmarks.rst``).
``--maml-run`` /
``--mnist-run`` / ``--run`` analyse existing runs without training anything;
``--redraw`` redraws every figure from saved netCDF without recomputing.

A record larger than ``--memory-limit`` (default: a quarter of this machine's memory)
is read lazily with dask, one checkpoint file at a time, so the paper's 16 GB record is
analysed in bounded memory; ``--workers N`` runs the analysis on a local
``dask.distributed`` cluster of N processes and ``--scheduler ADDRESS`` on an existing
cluster (whose workers must see the record at the same path). Both need the ``dask``
extra (``pip install "repscope[dask]"``); the numbers are the in-memory ones.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

# Run as a script, sys.path[0] is analyses/; the package is imported absolutely. The
# heavy modules (torch, rsatoolbox, matplotlib) are imported in main() after parsing,
# so --help answers at once; tests check the option lists below against the registries.
from repscope.analyses.errors import AnalysisError

MEASURE_NAMES = ("rsa", "cka_linear", "cka_rbf", "cka_linear_debiased", "cka_rbf_debiased",
                 "cka_linear_minibatch")
RDM_METHOD_NAMES = ("euclidean", "correlation", "cosine")
MDS_MODE_NAMES = ("paper", "precomputed")
BAND_NAMES = ("std", "sem")
CI_UNIT_NAMES = ("disjoint", "task")
FIGURE_NAMES = ("1a", "1b", "2", "3", "4", "5", "6")


def grid_with_partners(steps: int, every: int, gap: int, late_from: int) -> str:
    """Checkpoints ``0, every, ..., steps``, plus for each at or after ``late_from`` the one
    ``gap`` steps earlier: a ``--checkpoints`` list for ``repscope.training.record``.

    Examples
    --------
    >>> grid_with_partners(400, 100, 20, 300)
    '0,100,200,280,300,380,400'
    """
    grid = set(range(0, steps + 1, every)) | {steps}
    return ",".join(str(c) for c in sorted(grid | {c - gap for c in grid if c >= late_from}))


#: What each ``--preset`` of this command runs: the training presets of
#: :data:`repscope.training.config.PRESETS` it trains (``maml``), the options it records them
#: with (``record``) and the analysis settings it changes (``analysis``).
REPRODUCTIONS = {
    "quick": {"maml": ["quick"], "record": ["--checkpoints", "all", "--tasks", "8",
                                            "--inner-steps", "0,1,5,10", "--eval-tasks", "100"]},
    # The training preset "medium" (repscope.training.config): 2400 steps, a checkpoint every
    # 40 (1000/60000 of the run). Recorded: every 200th step, and in the second half also
    # the step 40 earlier, so that F2 finds pairs at the scaled gap (40 steps) and the
    # Figure-3 statement at its scaled gap (400 steps); 5 tasks over disjoint characters.
    "medium": {"maml": ["medium"],
               "record": ["--checkpoints", grid_with_partners(2400, 200, 40, 1200), "--tasks", "5",
                          "--inner-steps", "0,1,5,10", "--eval-tasks", "100"],
               "analysis": {"fig1b_gap": 200}},
    "paper": {"maml": ["omniglot-20way-1shot", "miniimagenet-5way-1shot"],
              "record": ["--checkpoints", "every:1000", "--tasks", "50", "--inner-steps", "0,1,5,10"]},
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python analyses/layer_similarity.py",
        description=__doc__.split("\n\n")[0],
        epilog="Without --run/--maml-run/--mnist-run the preset's runs are trained and recorded "
               "first (each stage skipped when its output exists). See the module docstring.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(REPRODUCTIONS), default="quick",
                   help="quick: CPU minutes (MAML 'quick' preset: 1 inner step, 8 tasks); medium: the "
                        "paper's regime (20-way 1-shot, 5 inner steps, second order) sized for 2 CPU "
                        "cores (run time in docs/guide/reproducing.rst); paper: the full reproduction "
                        "(a GPU job, run time in docs/guide/benchmarks.rst; Mini-ImageNet when its "
                        "data exist)")
    p.add_argument("--run", action="append", default=[], type=Path, metavar="DIR",
                   help="existing run folder (or its activations/ folder) to analyse; repeatable; "
                        "kind read from the record (the 'kind' its recorder stored: maml or supervised)")
    p.add_argument("--maml-run", action="append", default=[], type=Path, metavar="DIR",
                   help="existing meta-learning run folder to analyse (repeatable)")
    p.add_argument("--mnist-run", type=Path, metavar="DIR",
                   help="existing supervised MNIST run folder to analyse")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where presets train")
    p.add_argument("--results", type=Path, default=Path("results"), help="output folder")
    p.add_argument("--data", type=Path, default=None,
                   help="data folder laid out like ../shared/data (default: $REPSCOPE_DATA, "
                        "else the training CLIs download)")
    p.add_argument("--device", default=None,
                   help="torch device for training and CKA, e.g. cuda (default: CPU)")
    p.add_argument("--measures", default="rsa,cka_linear",
                   help=f"comma-separated measures for figs 1a/1b/2; from {sorted(MEASURE_NAMES)}")
    p.add_argument("--primary", default="rsa", choices=sorted(MEASURE_NAMES),
                   help="measure of the RDM of RDMs (figs 3/5/6) and of the findings")
    p.add_argument("--rdm-method", default="correlation", choices=RDM_METHOD_NAMES,
                   help="first-order RDM (correlation: the paper's code; euclidean: its text, "
                        "rsatoolbox's squared distance / n units)")
    p.add_argument("--mds-mode", default="paper", choices=MDS_MODE_NAMES,
                   help="paper: min-max scaled rows as features (the paper's code); "
                        "precomputed: MDS on the dissimilarities")
    p.add_argument("--figure-measures", action="append", default=[], metavar="FIG=M1,M2",
                   help="measures of one figure, overriding --measures (repeatable; default "
                        "2=rsa,cka_rbf as the paper's mnist.py); figures " + ", ".join(FIGURE_NAMES))
    p.add_argument("--figure-rdm-method", action="append", default=[], metavar="FIG=METHOD",
                   help="first-order RDM of one figure, overriding --rdm-method (repeatable; default "
                        "2=euclidean as the paper's mnist.py)")
    p.add_argument("--meta-gap", type=int, default=1000,
                   help="F2: meta-steps between the compared checkpoints, exactly, after the plateau "
                        "(also reported scaled to the run: gap x run steps / 60000)")
    p.add_argument("--fig1b-gap", type=int, default=None,
                   help="fig 1b: compare checkpoints exactly this many steps apart (default: "
                        "consecutive checkpoints; the medium preset: 200)")
    p.add_argument("--band", default="std", choices=BAND_NAMES,
                   help="error band of figs 1a/1b: std (+-1 std over tasks, as published) or sem "
                        "(+-1.96 SEM)")
    p.add_argument("--ci-unit", default="disjoint", choices=CI_UNIT_NAMES,
                   help="independent units of the findings' CIs: disjoint (tasks whose characters "
                        "are pairwise disjoint) or task (every task, as if independent)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for CIs (at least 40)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap CIs and the MDS")
    p.add_argument("--formats", default="png,pdf", help="comma-separated figure file formats")
    p.add_argument("--memory-limit", default="auto", metavar="SIZE",
                   help="read records larger than this (e.g. 4GB) lazily with dask, one checkpoint "
                        "file at a time; auto: a quarter of this machine's memory")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="analyse on a local dask.distributed cluster of N worker processes")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="analyse on the dask.distributed cluster at ADDRESS (e.g. tcp://host:8786); "
                        "its workers read the record, so they must see it at the same path")
    p.add_argument("--redraw", action="store_true",
                   help="only redraw all figures under --results from their saved netCDF")
    return p


def _activations(folder: Path) -> Path:
    folder = Path(folder)
    return folder / "activations" if (folder / "activations").is_dir() else folder


def _record_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in _activations(folder).glob("checkpoint_*.nc"))


def _open(folder: Path, lazy=None, quiet: bool = False):
    """The record of a run; ``lazy(size) -> str or None`` says why to read it lazily."""
    from repscope import probes

    why = lazy(_record_bytes(folder)) if lazy is not None else None
    if why and not quiet:
        print(f"[layer_similarity] {folder}: {why}: reading it lazily with dask, one checkpoint "
              "file at a time", flush=True)
    try:
        return probes.open_run(_activations(folder), chunks={} if why else None)
    except probes.ProbeError as err:
        raise AnalysisError(f"Cannot read the activation record of run {folder}: {err}") from None


def _has(folder: Path, pattern: str) -> bool:
    return folder.is_dir() and any(folder.glob(pattern))


def _stage(cmd: list[str], what: str) -> None:
    print(f"[layer_similarity] {what}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    done = subprocess.run(cmd)
    if done.returncode != 0:
        raise AnalysisError(f"{what} failed with exit code {done.returncode}: {' '.join(cmd)}")
    print(f"[layer_similarity] {what} done in {time.time() - t0:.0f} s", flush=True)


def _steps(folder: Path, pattern: str, regex: str) -> set[int]:
    found = (re.match(regex, p.name) for p in folder.glob(pattern)) if folder.is_dir() else ()
    return {int(m.group(1)) for m in found if m}


def _training_state(out: Path) -> str:
    """"done", "partial" or "missing" for a MAML run folder (read from its files)."""
    steps = _steps(out / "checkpoints", "step_*.pt", r"^step_(\d+)\.pt$")
    if not steps:
        return "missing"
    try:
        total = int(json.loads((out / "config.json").read_text())["steps"])
    except (OSError, ValueError, KeyError):
        return "done"  # cannot tell; never retrain over existing checkpoints
    return "done" if max(steps) >= total else "partial"


def _data_args(args) -> list[str]:
    data = args.data or (Path(os.environ["REPSCOPE_DATA"]) if os.environ.get("REPSCOPE_DATA") else None)
    return ["--data", str(data)] if data else []


def _train_and_record(args) -> tuple[list[Path], Path]:
    """Run the preset's stages whose outputs are missing; return the run folders."""
    preset = REPRODUCTIONS[args.preset]
    data = _data_args(args)
    dev = ["--device", args.device] if args.device else []
    runs = []
    for name in preset["maml"]:
        if name.startswith("miniimagenet"):
            roots = [r for r in (args.data, os.environ.get("REPSCOPE_DATA"),
                                 os.environ.get("REPSCOPE_CACHE", Path.home() / ".cache/repscope/data")) if r]
            if not any((Path(r) / "miniimagenet").is_dir() for r in roots):
                print(f"[layer_similarity] skipping {name}: no miniimagenet/ in the data folder", flush=True)
                continue
        out = args.runs_dir / name
        state = _training_state(out)
        if state == "done":
            print(f"[layer_similarity] skip training {name}: checkpoints exist in {out}", flush=True)
        else:
            resume = ["--resume"] if state == "partial" else []
            _stage([sys.executable, "-m", "repscope.training.maml", "--preset", name, "--out", str(out)]
                   + resume + data + dev, f"train {name}" + (" (resume)" if resume else ""))
        if _has(out / "activations", "checkpoint_*.nc"):
            print(f"[layer_similarity] skip recording {name}: {out / 'activations'} exists", flush=True)
        else:
            _stage([sys.executable, "-m", "repscope.training.record", "--run", str(out)] + preset["record"] + data + dev,
                   f"record {name}")
        runs.append(out)
    mnist = args.runs_dir / "mnist"
    if _has(mnist / "activations", "*.nc") and (mnist / "summary.json").is_file():
        print(f"[layer_similarity] skip supervised control: {mnist / 'activations'} exists", flush=True)
    else:  # a folder without summary.json was interrupted: start it again
        again = ["--overwrite"] if mnist.exists() else []
        _stage([sys.executable, "-m", "repscope.training.supervised", "--out", str(mnist)] + again + data + dev,
               "train the supervised MNIST control")
    return runs, mnist


def _lazy_policy(args):
    """``lazy(size)``: why a record of ``size`` bytes is read lazily (None: in memory)."""
    from repscope.analyses.lazy import memory_budget, parse_bytes

    if args.workers is not None and args.scheduler is not None:
        raise AnalysisError(f"--workers {args.workers} and --scheduler {args.scheduler!r} exclude "
                            "each other: give one")
    if args.workers is not None and args.workers < 1:
        raise AnalysisError(f"--workers must be >= 1, got {args.workers}")
    try:
        limit = memory_budget() if args.memory_limit == "auto" else parse_bytes(args.memory_limit)
    except AnalysisError as err:
        raise AnalysisError(f"--memory-limit: {err}") from None
    where = ("on the dask cluster at " + args.scheduler if args.scheduler else
             f"on a local dask cluster of {args.workers} workers" if args.workers else None)

    def lazy(size: int):
        if where:
            return f"record of {size / 1e9:.2f} GB analysed {where}"
        if size > limit:
            return f"record of {size / 1e9:.2f} GB is larger than --memory-limit {limit / 1e9:.2f} GB"
        return None
    return lazy


def _cluster(args):
    """A dask.distributed client for --workers/--scheduler (closed on exit), else nothing."""
    if args.workers is None and args.scheduler is None:
        return nullcontext()
    try:
        from distributed import Client
    except ImportError:
        flag = "--workers" if args.workers is not None else "--scheduler"
        raise AnalysisError(f'{flag} needs dask.distributed: pip install "repscope[dask]"') from None
    if args.scheduler is not None:
        try:
            return Client(args.scheduler, timeout=30)
        except (OSError, TimeoutError, ValueError) as err:
            raise AnalysisError(f"Cannot connect to the dask scheduler --scheduler "
                                f"{args.scheduler!r}: {err}") from None
    return Client(n_workers=args.workers, threads_per_worker=1, dashboard_address=None)


def _per_figure(entries: list[str], option: str) -> dict[str, str]:
    """``["2=rsa,cka_rbf", ...]`` to ``{"2": "rsa,cka_rbf"}``; figures are checked by AnalysisConfig."""
    out = {}
    for entry in entries:
        fig, sep, value = entry.partition("=")
        if not sep or not fig.strip() or not value.strip():
            raise AnalysisError(f"Cannot read {option} {entry!r}. Expected FIG=VALUE, e.g. 2=euclidean")
        out[fig.strip()] = value.strip()
    return out


def _check_paths(args) -> None:
    """Refuse missing run folders and unusable output folders before anything runs."""
    named = [("--run", r) for r in args.run] + [("--maml-run", r) for r in args.maml_run]
    named += [("--mnist-run", args.mnist_run)] if args.mnist_run is not None else []
    for option, run in named:
        if not _has(_activations(run), "checkpoint_*.nc"):
            raise AnalysisError(f"{option} {run}: no activation record there (expected checkpoint_*.nc files "
                                "in the folder or its activations/ folder; record the run with "
                                "python -m repscope.training.record or repscope.training.supervised)")
    for option, folder in (("--results", args.results), ("--runs-dir", args.runs_dir)):
        if folder.exists() and not folder.is_dir():
            raise AnalysisError(f"{option} {folder}: exists and is not a folder; expected a folder to write into")
    if args.data is not None and not args.data.is_dir():
        raise AnalysisError(f"--data {args.data}: no such folder; expected a folder laid out like ../shared/data")


def _analyse(args, cfg, lazy) -> int:
    """Train and record what is missing (no run named), analyse, write findings.md."""
    from repscope.analyses.pipeline import analyse_maml, analyse_supervised, is_supervised, summarize
    from repscope.analyses.saving import save_text

    maml_runs, mnist_run = list(args.maml_run), args.mnist_run
    for run in args.run:
        if is_supervised(_open(run, lazy, quiet=True)):
            mnist_run = run
        else:
            maml_runs.append(run)
    if not (maml_runs or mnist_run):
        maml_runs, mnist_run = _train_and_record(args)
    t0 = time.time()
    supervised = None
    with _cluster(args):  # lazy records are read, chunk by chunk, by its workers
        if mnist_run is not None:
            res = analyse_supervised(_open(mnist_run, lazy), cfg, args.results / Path(mnist_run).name,
                                     str(mnist_run))
            supervised = res["supervised"]
        maml, records = {}, {}
        for run in maml_runs:
            records[Path(run).name] = _open(run, lazy)
            maml[Path(run).name] = analyse_maml(records[Path(run).name], cfg,
                                                args.results / Path(run).name, str(run))
        summary = summarize(maml, supervised, cfg, records)
    path = save_text(summary, args.results / "findings.md")
    print(summary)
    print(f"[layer_similarity] analysis took {time.time() - t0:.0f} s; results in {args.results}, "
          f"summary {path}")
    return 0


def main(argv=None) -> int:
    """Command-line entry; returns the exit status."""
    args = _parser().parse_args(argv)
    from repscope.analyses.pipeline import AnalysisConfig, redraw
    from repscope.analyses.saving import writing_results

    try:
        if args.redraw:
            with writing_results(args.results):
                files = redraw(args.results, tuple(f.strip() for f in args.formats.split(",") if f.strip()))
            print(f"[layer_similarity] redrew {len(files)} files under {args.results}")
            return 0
        preset = REPRODUCTIONS[args.preset].get("analysis", {})
        fig_measures = {**AnalysisConfig().figure_measures,
                        **{k: tuple(m.strip() for m in v.split(",") if m.strip())
                           for k, v in _per_figure(args.figure_measures, "--figure-measures").items()}}
        fig_rdm = {**AnalysisConfig().figure_rdm_method,
                   **_per_figure(args.figure_rdm_method, "--figure-rdm-method")}
        cfg = AnalysisConfig(measures=tuple(m.strip() for m in args.measures.split(",") if m.strip()),
                             primary=args.primary, rdm_method=args.rdm_method, mds_mode=args.mds_mode,
                             figure_measures=fig_measures, figure_rdm_method=fig_rdm,
                             meta_gap=args.meta_gap, band=args.band, ci_unit=args.ci_unit,
                             fig1b_gap=args.fig1b_gap if args.fig1b_gap is not None else preset.get("fig1b_gap"),
                             n_boot=args.n_boot, seed=args.seed, device=args.device,
                             formats=tuple(f.strip() for f in args.formats.split(",") if f.strip()))
        _check_paths(args)
        lazy = _lazy_policy(args)  # options checked before anything is trained or written
        with writing_results(args.results):  # one analysis writes a results folder at a time
            return _analyse(args, cfg, lazy)
    except AnalysisError as err:
        print(f"layer_similarity: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
