"""Layer similarity during meta-learning: train (if needed), record, analyse, report.

``python analyses/layer_similarity.py`` (also ``repscope layer-similarity``) runs this
module's :func:`main`; ``--help`` lists every option. With no arguments it runs the
default ``small`` path from a fresh checkout (F1 and F3 answered in minutes):

1. ``python -m repscope.training.maml --preset small --out runs/small`` (skipped when
   ``runs/small/checkpoints`` holds the last step; resumed with ``--resume`` when it
   holds earlier ones);
2. ``python -m repscope.training.record --run runs/small --checkpoints all --tasks 5
   --inner-steps 0,1,2,5,10 --eval-tasks 100`` (skipped when ``runs/small/activations``
   holds records);
3. at the same time, on a second core, ``python -m repscope.training.supervised --out
   runs/mnist`` (skipped when its records and ``summary.json`` exist);
4. the analysis: figures 1a, 1b, 3, 4, 5 of the MAML run and figure 2 of the MNIST
   control as PNG + PDF with their values as netCDF in ``results/<run>/``, and
   ``results/findings.md`` (claims F1-F3 with Student-t CIs over independent tasks, and
   the claims this preset cannot test).

``--seeds N`` trains N seeds of the preset, each in ``runs/<preset>/seed_<s>``, on every
core (``--jobs``; :func:`train_seeds` says how the stages share them), analyses each
seed as soon as it is recorded and pools the findings over seeds
(:func:`repscope.analyses.pipeline.analyse_seeds`). ``--preset omniglot-5way-cpu``
trains 3 seeds of a 5-way preset whose accuracy levels off, so that every claim can be
tested (under an hour on 2 cores). ``--preset quick`` is a smoke test.

``--preset medium`` runs the same stages in the paper's regime (the training preset
``medium``: 20-way 1-shot, 5 inner steps, second order on the small archives; every
fifth saved checkpoint recorded, with its predecessor in the second half, 5 analysis
tasks over disjoint characters), sized for 2 CPU cores (its run time is in
:ref:`reproducing`).

Data come from ``--data`` or ``$REPSCOPE_DATA``, else the training commands download them.
``--preset paper`` trains the paper's runs (``omniglot-20way-1shot``, 60000 meta-steps,
and ``miniimagenet-5way-1shot`` when the Mini-ImageNet loader finds its data: in the data
folder, see :func:`repscope.training.data.paths.data_root`), records 50 tasks at every
1000th step and analyses them: a GPU job (its run time, measured by
``bench/bench_maml.py``, is on the benchmark page, :ref:`benchmarks`).
``--maml-run`` / ``--mnist-run`` / ``--run`` analyse existing runs without training
anything; ``--redraw`` redraws every figure from saved netCDF without recomputing.

A record larger than ``--memory-limit`` (default: a quarter of the physical memory)
is read lazily with dask, one checkpoint file at a time, so the paper's 16 GB record is
analysed in bounded memory; ``--workers N`` runs the analysis on a local
``dask.distributed`` cluster of N processes and ``--scheduler ADDRESS`` on an existing
cluster (whose workers must see the record at the same path). Both need the ``dask``
extra (``pip install -e ".[dask]"`` from a checkout); the numbers are the in-memory ones.

This module sits above the subpackages: it reads training's presets, checkpoint layout
and data folders, runs the training stages as separate processes and calls the analyses.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .analyses.errors import AnalysisError
from .analyses.mds import MDS_MODES
from .analyses.measures import MEASURES
from .analyses.pipeline import (AnalysisConfig, analyse_maml, analyse_seeds, analyse_supervised,
                                is_supervised, redraw, summarize)
from .analyses.rdms import RDM_METHODS
from .analyses.saving import save_text, writing_results
from .analyses.task_units import CI_UNITS
from .analyses.uncertainty import BANDS
from .jobs import Job, run_jobs
from .training.checkpoint import load_run, training_state_path
from .training.cli import arg, build_parser, given, peek, print_config, setting, wrote
from .training.config import get_preset
from .training.data.miniimagenet import find_miniimagenet
from .training.data.paths import DATA_ENV
from .training.errors import DataError, TrainingError
from .training.options import DEVICES

__all__ = ["REPRODUCTIONS", "LayerSimilarityOptions", "grid_with_partners", "training_state",
           "train_and_record", "train_seeds", "seed_folder", "parse_seeds", "check_jobs", "main"]

_LOG = "[layer_similarity]"


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


def _medium() -> dict:
    """The medium reproduction, from the training preset ``medium``: every fifth saved
    checkpoint, and in the second half also the one saved before it, so that F2 finds
    pairs at the scaled gap (one checkpoint interval, 1000/60000 of the run) and the
    Figure-3 statement at its scaled gap; 5 tasks over disjoint characters."""
    cfg = get_preset("medium")
    every = 5 * cfg.checkpoint_every
    checkpoints = grid_with_partners(cfg.steps, every, cfg.checkpoint_every, cfg.steps // 2)
    return {"train": ("medium",),
            "record": ("--checkpoints", checkpoints, "--tasks", "5", "--inner-steps", "0,1,5,10",
                       "--eval-tasks", "100"),
            "analysis": {"fig1b_gap": every}}


def _five_way_cpu() -> dict:
    """The CPU reproduction that plateaus (training preset ``omniglot-5way-cpu``): every
    fifth saved checkpoint, and in the second half also the one saved before it (F2 at
    the scaled gap, one checkpoint interval); 28 tasks over disjoint characters; 600
    evaluation tasks per checkpoint, so that the plateau test resolves about one point
    of accuracy; 3 seeds."""
    cfg = get_preset("omniglot-5way-cpu")
    every = 5 * cfg.checkpoint_every
    checkpoints = grid_with_partners(cfg.steps, every, cfg.checkpoint_every, cfg.steps // 2)
    return {"train": ("omniglot-5way-cpu",),
            "record": ("--checkpoints", checkpoints, "--tasks", "28", "--inner-steps",
                       "0,1,5,10", "--eval-tasks", "600"),
            "analysis": {"fig1b_gap": every}, "seeds": 3}


#: What each ``--preset`` trains (training presets), how it records them (options of
#: ``python -m repscope.training.record``) and the analysis settings it implies.
REPRODUCTIONS = {
    "quick": {"train": ("quick",),
              "record": ("--checkpoints", "all", "--tasks", "8", "--inner-steps", "0,1,5,10",
                         "--eval-tasks", "100"),
              "analysis": {}},
    # The default: F1 and F3 answered in minutes (5 analysis tasks over disjoint characters).
    "small": {"train": ("small",),
              "record": ("--checkpoints", "all", "--tasks", "5", "--inner-steps", "0,1,2,5,10",
                         "--eval-tasks", "100"),
              "analysis": {},
              "longer": "F2 and the Figure-3 statement need a run whose held-out accuracy "
                        "levels off: python analyses/layer_similarity.py --preset "
                        "omniglot-5way-cpu (3 seeds, under an hour on 2 cores)"},
    "medium": _medium(),
    "omniglot-5way-cpu": _five_way_cpu(),
    "paper": {"train": ("omniglot-20way-1shot", "miniimagenet-5way-1shot"),
              "record": ("--checkpoints", "every:1000", "--tasks", "50", "--inner-steps",
                         "0,1,5,10"),
              "analysis": {}},
}


@dataclass
class LayerSimilarityOptions:
    """What ``python analyses/layer_similarity.py`` trains or reads, and where it writes
    (the analysis settings are :class:`repscope.analyses.pipeline.AnalysisConfig`'s).

    Examples
    --------
    >>> LayerSimilarityOptions().results
    PosixPath('results')
    """

    preset: str = setting("small", "What to train and record when no run is named. small: "
                          "F1 and F3 answered in minutes (20-way 1-shot, 2 inner steps, 5 "
                          "disjoint tasks); quick: a smoke test (1 inner step, 8 tasks); "
                          "omniglot-5way-cpu: every claim testable after a plateau, 3 seeds, "
                          "under an hour on 2 CPU cores; medium: the paper's 20-way regime sized "
                          "for 2 CPU cores; paper: the full reproduction (a GPU job; "
                          "Mini-ImageNet when its data are found). Run times are in the "
                          "reproduction guide.")
    seeds: Optional[str] = setting(None, "Independent training seeds: a count N (seeds 0 to "
                                   "N-1) or distinct seeds such as 0,3,7. Each is trained and "
                                   "recorded in RUNS_DIR/PRESET/seed_S (resumed on its own), "
                                   "analysed alone, and the findings pooled with the seeds as "
                                   "the top unit (none: the preset's, 3 for omniglot-5way-cpu, "
                                   "else 1).")
    jobs: Optional[int] = setting(None, "Cores for training and recording: stages at once (none: "
                                  "one per core, at most one per seed); the last recording "
                                  "spreads over the cores it finds free.")
    run: list = setting(help="Existing run folder (or its activations/ folder) to analyse, "
                        "its kind (maml or supervised) read from the record; repeatable.",
                        default_factory=list)
    maml_run: list = setting(help="Existing meta-learning run folder to analyse; repeatable.",
                             default_factory=list)
    mnist_run: Optional[Path] = setting(None, "Existing supervised MNIST run folder to analyse.")
    runs_dir: Path = setting(Path("runs"), "Where the preset's runs are trained.")
    data: Optional[Path] = setting(None, "Data folder for training; none: $REPSCOPE_DATA, else "
                                   "the training commands download.")
    results: Path = setting(Path("results"), "Output folder of figures, values and findings.")
    redraw: bool = setting(False, "Only redraw every figure under --results from its saved "
                           "netCDF.")
    memory_limit: str = setting("auto", "Read records larger than this (e.g. 4GB) lazily with "
                                "dask, one checkpoint file at a time; auto: a quarter of the "
                                "physical memory.")
    workers: Optional[int] = setting(None, "Analyse on a local dask.distributed cluster of N "
                                     "worker processes.")
    scheduler: Optional[str] = setting(None, "Analyse on the dask.distributed cluster at this "
                                       "address (e.g. tcp://host:8786); its workers read the "
                                       "record, so they must see it at the same path.")


_ANALYSIS_HELP = {  # the options of AnalysisConfig's fields (its docstring documents them)
    "measures": "Measures of figures 1a, 1b and 2.",
    "primary": "Measure of the RDM of RDMs (figures 3, 5, 6) and of the findings.",
    "rdm_method": "First-order RDM (correlation: the paper's code; euclidean: its text, "
                  "rsatoolbox's squared distance / n units).",
    "mds_mode": "paper: min-max scaled rows as features (the paper's code); precomputed: MDS "
                "on the dissimilarities.",
    "figure_measures": "Measures of one figure, overriding --measures; repeatable.",
    "figure_rdm_method": "First-order RDM of one figure, overriding --rdm-method; repeatable.",
    "meta_gap": "F2: meta-steps between the compared checkpoints, exactly, after the plateau "
                "(also reported scaled to the run: gap x run steps / 60000).",
    "fig1b_gap": "Figure 1b: compare checkpoints exactly this many steps apart (none: "
                 "consecutive checkpoints).",
    "band": "Error band of figures 1a and 1b: std (+-1 std over tasks, as published) or sem "
            "(+-1.96 SEM).",
    "ci_unit": "Independent units of the findings' CIs: disjoint (tasks whose characters are "
               "pairwise disjoint) or task (every task, as if independent).",
    "seed": "Seed of the MDS embedding of figures 3, 5 and 6.",
    "device": "Torch device for training and CKA (none: the CPU).",
    "formats": "Figure file formats.",
}

_GROUPS = {
    "what to analyse": ["preset", "seeds", "jobs", "run", "maml_run", "mnist_run", "runs_dir",
                        "data"],
    "measures": ["measures", "primary", "rdm_method", "mds_mode", "figure_measures",
                 "figure_rdm_method"],
    "findings": ["meta_gap", "fig1b_gap", "band", "ci_unit", "seed"],
    "output": ["results", "formats", "redraw"],
    "runtime": ["device", "memory_limit", "workers", "scheduler"],
}


def _parser(preset: str | None = None) -> argparse.ArgumentParser:
    """The command line, its defaults shown as ``preset`` (none: the default preset)
    resolves them."""
    preset = preset or LayerSimilarityOptions().preset
    runs = {"action": "append", "type": Path, "metavar": "DIR"}
    arguments = {name: {"help": text} for name, text in _ANALYSIS_HELP.items()}
    arguments["figure_measures"].update(action="append", type=str, metavar="FIG=M1,M2")
    arguments["figure_rdm_method"].update(action="append", type=str, metavar="FIG=METHOD")
    arguments.update(run=runs, maml_run=runs, mnist_run={"type": Path, "metavar": "DIR"},
                     runs_dir={"type": Path, "metavar": "DIR"},
                     results={"type": Path, "metavar": "DIR"},
                     data={"type": Path, "metavar": "DIR"}, memory_limit={"metavar": "SIZE"},
                     scheduler={"metavar": "ADDRESS"}, seeds={"metavar": "N|S1,S2,..."},
                     jobs={"metavar": "N"})
    analysis = {**AnalysisConfig().__dict__, **REPRODUCTIONS[preset]["analysis"]}
    return build_parser(
        "python analyses/layer_similarity.py",
        __doc__.split("\n\n")[0] + f" The defaults shown are those of --preset {preset}.",
        (LayerSimilarityOptions, AnalysisConfig), _GROUPS,
        defaults={**LayerSimilarityOptions().__dict__, **analysis},
        choices={"preset": sorted(REPRODUCTIONS), "measures": sorted(MEASURES),
                 "primary": sorted(MEASURES), "rdm_method": sorted(RDM_METHODS),
                 "mds_mode": sorted(MDS_MODES), "band": list(BANDS), "ci_unit": list(CI_UNITS),
                 "device": DEVICES},
        arguments=arguments, hidden=("fig3_checkpoints", "fig3_tasks", "fig3_inner_steps"),
        usage="%(prog)s [--preset NAME | --run DIR ...] [OPTION ...]",
        epilog="Without --run/--maml-run/--mnist-run the preset's runs are trained and "
               "recorded first (each stage skipped when its output exists).")


# ----------------------------------------------------------------- train and record


def _has(folder: Path, pattern: str) -> bool:
    return folder.is_dir() and any(folder.glob(pattern))


def _stage(cmd: list[str], what: str, log: Path | None = None) -> None:
    """Run one stage's command; its output goes to ``log`` (a file) when given."""
    where = f" (output in {log})" if log is not None else ""
    print(f"{_LOG} {what}: {' '.join(cmd)}{where}", flush=True)
    t0 = time.time()
    if log is None:
        done = subprocess.run(cmd)
    else:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as handle:
            done = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = ""
        if log is not None:
            lines = Path(log).read_text(errors="replace").strip().splitlines()
            tail = "; its last lines: " + " | ".join(lines[-3:])
        raise AnalysisError(f"{what} failed with exit code {done.returncode}: "
                            f"{' '.join(cmd)}{tail}")
    print(f"{_LOG} {what} done in {time.time() - t0:.0f} s", flush=True)


def training_state(out: Path) -> str:
    """``"done"``, ``"partial"`` or ``"missing"``: how far the MAML run in ``out`` got.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     training_state(Path(d))
    'missing'
    """
    try:
        config, saved = load_run(out)
    except TrainingError:  # no readable config.json: never train over saved checkpoints
        return "done" if _has(training_state_path(out, 0).parent, "*") else "missing"
    if not saved:
        return "missing"
    return "done" if max(saved) >= config.steps else "partial"


def _data_args(data: Path | None) -> list[str]:
    data = data or (Path(os.environ[DATA_ENV]) if os.environ.get(DATA_ENV) else None)
    return ["--data", str(data)] if data else []


def train_and_record(preset: str, runs_dir: Path, data: Path | None = None,
                     device: str | None = None, run=None,
                     stages: dict | None = None,
                     beside: bool = False) -> tuple[list[Path], Path | None]:
    """Run the stages of reproduction ``preset`` whose outputs are missing in ``runs_dir``.

    Parameters
    ----------
    preset : str
        A key of :data:`REPRODUCTIONS` (or of ``stages``' table, for the log).
    runs_dir : path-like
        Where the runs are trained (one folder per training preset, and ``mnist``).
    data : path-like, optional
        Data folder passed to the training commands (default: ``$REPSCOPE_DATA``, else
        they download).
    device : str, optional
        ``--device`` of the training commands.
    beside : bool
        Train the supervised control at the same time as the meta-learning stages, in
        a second process whose output goes to ``mnist.log`` (for a second core).
    run : callable, optional
        ``run(command, what)`` runs one stage's command line, ``run(command, what, log)`` with
        its output to the file ``log`` (default: as a process,
        stopping with :class:`~repscope.analyses.errors.AnalysisError` when it fails).
    stages : dict, optional
        The stages, shaped as an entry of :data:`REPRODUCTIONS` (default:
        ``REPRODUCTIONS[preset]``): ``train`` (training presets), ``record`` (options of
        ``python -m repscope.training.record``) and, optionally, ``supervised`` (False:
        no supervised MNIST control; default True).

    Returns
    -------
    runs : list of pathlib.Path
        The meta-learning run folders (a Mini-ImageNet run only when its data are found).
    mnist : pathlib.Path or None
        The supervised control's run folder (None when ``stages`` has none).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     runs, mnist = train_and_record("quick", Path(d), run=lambda cmd, what: print(what))
    train quick
    record quick
    train the supervised MNIST control
    """
    from concurrent.futures import ThreadPoolExecutor

    run = run or _stage
    stages = REPRODUCTIONS[preset] if stages is None else stages
    extra = _data_args(data) + (["--device", device] if device else [])
    mnist = Path(runs_dir) / "mnist" if stages.get("supervised", True) else None
    with ThreadPoolExecutor(max_workers=1) as pool:
        control = None
        if mnist is not None and beside:  # on a second core, its output in mnist.log
            log = mnist.with_name("mnist.log")
            control = pool.submit(_supervised_stage, mnist, extra,
                                  lambda cmd, what: run(cmd, what, log), True)
        runs = []
        for name in _trainable(stages, data):
            out = Path(runs_dir) / name
            _train_and_record_one(name, out, stages, extra, run)
            runs.append(out)
        if control is not None:
            control.result()
        elif mnist is not None:
            _supervised_stage(mnist, extra, run)
    return runs, mnist


def _trainable(stages: dict, data) -> list[str]:
    """The training presets of ``stages`` whose data can be found (Mini-ImageNet is optional)."""
    names = []
    for name in stages["train"]:
        if get_preset(name).dataset == "miniimagenet":
            try:
                find_miniimagenet(data)  # where the training command will look
            except DataError as err:
                print(f"{_LOG} skipping {name}: {err}", flush=True)
                continue
        names.append(name)
    return names


def _train_and_record_one(name: str, out: Path, stages: dict, extra: list[str], run,
                          seed: int | None = None, quiet: bool = False) -> Path:
    """Train (or resume) and record the run of training preset ``name`` in ``out``."""
    _train_one(name, out, extra, run, seed, quiet)
    return _record_one(name, out, stages, extra, run, seed, quiet)


def _label(name: str, seed: int | None) -> str:
    return name if seed is None else f"{name} seed {seed}"


def _train_one(name: str, out: Path, extra: list[str], run, seed: int | None = None,
               quiet: bool = False) -> Path:
    """Train (or resume) the run of training preset ``name`` in ``out``, unless it is done."""
    label = _label(name, seed)
    state = training_state(out)
    if state == "done":
        print(f"{_LOG} skip training {label}: checkpoints exist in {out}", flush=True)
        return out
    resume = ["--resume"] if state == "partial" else []
    run([sys.executable, "-m", "repscope.training.maml", "--preset", name, "--out", str(out)]
        + ([] if seed is None else ["--seed", str(seed)]) + resume
        + (["--no-progress"] if quiet else []) + extra,
        f"train {label}" + (" (resume)" if resume else ""))
    return out


def _record_one(name: str, out: Path, stages: dict, extra: list[str], run,
                seed: int | None = None, quiet: bool = False, width: int = 1) -> Path:
    """Record the checkpoints of ``out`` that ``stages`` select and its record lacks, with
    ``width`` processes (``torchrun`` ranks when more than one)."""
    label = _label(name, seed)
    if _recorded(out, stages["record"]):
        print(f"{_LOG} skip recording {label}: {out / 'activations'} holds every checkpoint",
              flush=True)
        return out
    ranks = ([] if width == 1 else
             ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={width}"])
    # "--" ends torchrun's own options: its --run-path would take record's --run
    run([sys.executable, *ranks, "-m", "repscope.training.record"] + (["--"] if ranks else [])
        + ["--run", str(out), *stages["record"]] + (["--no-progress"] if quiet else []) + extra,
        f"record {label}" + (f" ({width} processes)" if ranks else ""))
    return out


def _recorded(out: Path, record: tuple) -> bool:
    """Whether ``out/activations`` holds a file for every checkpoint that the record
    options ``record`` select from the run's saved checkpoints (an interrupted
    recording is resumed, not taken as done)."""
    from .probes import existing_checkpoints
    from .training.record import RecordConfig, select_checkpoints

    spec = (record[record.index("--checkpoints") + 1] if "--checkpoints" in record
            else RecordConfig().checkpoints)
    try:
        wanted = select_checkpoints(spec, list(load_run(out)[1]))
    except TrainingError:  # no run, or no such checkpoints: the recorder says which
        return False
    activations = out / "activations"
    return activations.is_dir() and set(wanted) <= set(existing_checkpoints(activations))


def _supervised_stage(mnist: Path, extra: list[str], run, quiet: bool = False) -> Path:
    if _has(mnist / "activations", "*.nc") and (mnist / "summary.json").is_file():
        print(f"{_LOG} skip supervised control: {mnist / 'activations'} exists", flush=True)
    else:  # a folder without summary.json was interrupted: start it again
        again = ["--overwrite"] if mnist.exists() else []
        run([sys.executable, "-m", "repscope.training.supervised", "--out", str(mnist)]
            + again + (["--no-progress"] if quiet else []) + extra,
            "train the supervised MNIST control")
    return mnist


def parse_seeds(text, default: int = 1) -> tuple[int, ...]:
    """``--seeds``: a count N (seeds ``0 .. N-1``) or comma-separated distinct seeds.

    Examples
    --------
    >>> parse_seeds("3"), parse_seeds("0,4"), parse_seeds(None, default=2)
    ((0, 1, 2), (0, 4), (0, 1))
    >>> parse_seeds("1,1")
    Traceback (most recent call last):
    ...
    repscope.analyses.errors.AnalysisError: --seeds '1,1' names seed 1 twice; expected a count N >= 1 or distinct seeds >= 0 such as 0,3,7
    """
    allowed = "expected a count N >= 1 or distinct seeds >= 0 such as 0,3,7"
    if text is None:
        return tuple(range(default))
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise AnalysisError(f"--seeds {text!r} is not a number or a list of numbers; "
                            f"{allowed}") from None
    if len(values) == 1:
        if values[0] < 1:
            raise AnalysisError(f"--seeds {text!r} is not allowed; {allowed}")
        return tuple(range(values[0]))
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:
        raise AnalysisError(f"--seeds {text!r} names seed {twice[0]} twice; {allowed}")
    if min(values) < 0:
        raise AnalysisError(f"--seeds {text!r} holds a negative seed; {allowed}")
    return tuple(values)


def check_jobs(jobs, seeds) -> int:
    """``--jobs``: processes at once, one per core by default, never more than seeds.

    Examples
    --------
    >>> check_jobs(None, (0, 1, 2)) >= 1, check_jobs(2, (0, 1, 2))
    (True, 2)
    >>> check_jobs(4, (0, 1))
    Traceback (most recent call last):
    ...
    repscope.analyses.errors.AnalysisError: --jobs 4 is more than the 2 seeds to train; expected 1 to 2
    """
    if jobs is None:
        return max(1, min(len(seeds), os.cpu_count() or 1))
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise AnalysisError(f"--jobs {jobs!r} is not allowed; expected 1 to {len(seeds)}")
    if jobs > len(seeds):
        raise AnalysisError(f"--jobs {jobs} is more than the {len(seeds)} seeds to train; "
                            f"expected 1 to {len(seeds)}")
    return jobs


def seed_folder(runs_dir: Path, name: str, seed: int) -> Path:
    """The run folder of ``seed`` of training preset ``name`` when several seeds are trained.

    Examples
    --------
    >>> seed_folder(Path("runs"), "small", 2)
    PosixPath('runs/small/seed_2')
    """
    return Path(runs_dir) / name / f"seed_{seed}"


def train_seeds(preset: str, runs_dir: Path, seeds, jobs: int, data: Path | None = None,
                device: str | None = None, run=None, analyse=None,
                analyse_control=None) -> tuple[dict, dict, Path]:
    """Train and record every seed of reproduction ``preset``, ``jobs`` processes at once.

    Each seed's run lives in its own folder (:func:`seed_folder`) and goes through the
    stages of :func:`train_and_record` on its own, so an interrupted seed resumes and a
    finished one is skipped. The stages are jobs of :func:`repscope.jobs.run_jobs`: the
    supervised MNIST control first, then every seed's training, then each recording as
    soon as its training is done and a core is free; a recording that finds several
    cores free and nothing else to start (on the CPU: the last seed's) runs as that
    many ``torchrun`` ranks, which write the record one process writes. With more than
    one job, each stage writes its output to ``<run folder>.log`` instead of the
    terminal (no progress bars). A seed whose stage fails does not stop the others.

    Parameters
    ----------
    preset : str
        A key of :data:`REPRODUCTIONS`.
    runs_dir : path-like
        Where the runs are trained.
    seeds : sequence of int
        Distinct seeds (:func:`parse_seeds`).
    jobs : int
        Cores to use (at least 1, at most one per seed): stages run at once, each a
        process, a recording over torchrun ranks counting each rank.
    data, device
        As :func:`train_and_record`.
    run : callable, optional
        ``run(command, what, log)`` runs one stage's command line; ``log`` is a path for
        its output, or None for the terminal (default: as a process).
    analyse : callable, optional
        ``analyse(name, seed, folder)`` analyses one seed's run as soon as it is recorded
        (in this process, one analysis at a time, after ``analyse_control``); an
        :class:`~repscope.analyses.errors.AnalysisError` it raises fails that seed.
    analyse_control : callable, optional
        ``analyse_control(folder)`` analyses the supervised control once it is trained.

    Returns
    -------
    runs : dict of {str: dict of {int: pathlib.Path}}
        Per training preset, each seed whose stages (with ``analyse``: and analysis)
        finished and its run folder.
    failed : dict of {str: dict of {int: str}}
        Per training preset, each seed whose stages failed and what failed.
    mnist : pathlib.Path
        The supervised control's run folder.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     runs, failed, mnist = train_seeds("quick", Path(d), (0, 1), 1,
    ...                                       run=lambda cmd, what, log: print(what))
    train the supervised MNIST control
    train quick seed 0
    train quick seed 1
    record quick seed 0
    record quick seed 1
    >>> sorted(runs["quick"]), failed
    ([0, 1], {'quick': {}})
    """
    run = run or _stage
    stages = REPRODUCTIONS[preset]
    extra = _data_args(data) + (["--device", device] if device else [])
    quiet = jobs > 1

    def logged(folder: Path):
        return lambda cmd, what: run(cmd, what, folder.with_name(folder.name + ".log")
                                     if quiet else None)

    work = [(name, seed) for name in _trainable(stages, data) for seed in seeds]
    mnist = Path(runs_dir) / "mnist"
    folder = {item: seed_folder(runs_dir, *item) for item in work}
    # The short control first, then every training, then the recordings: the last
    # recording finds the other cores free and spreads over them (torchrun ranks).
    # Analyses run in this process, one at a time, as their records appear.
    plan = ([Job("mnist", lambda width: _supervised_stage(mnist, extra, logged(mnist), quiet))]
            + [Job(("train", item), lambda width, item=item: _train_one(
                item[0], folder[item], extra, logged(folder[item]), item[1], quiet))
               for item in work]
            + [Job(("record", item), lambda width, item=item: _record_one(
                item[0], folder[item], stages, extra, logged(folder[item]), item[1], quiet,
                width), after=(("train", item),), wide=device in (None, "cpu"))
               for item in work])
    if analyse_control is not None:
        plan.append(Job("analyse mnist", lambda width: analyse_control(mnist),
                        after=("mnist",), lane="analysis"))
    if analyse is not None:
        plan += [Job(("analyse", item), lambda width, item=item: analyse(*item, folder[item]),
                     after=(("record", item),) + (("analyse mnist",) if analyse_control else ()),
                     lane="analysis") for item in work]
    outcomes = run_jobs(plan, jobs)
    if not outcomes["mnist"].ok:
        raise outcomes["mnist"].error
    runs = {name: {} for name in dict.fromkeys(n for n, _ in work)}
    failed = {name: {} for name in runs}
    if analyse_control is not None and not outcomes["analyse mnist"].ok:
        raise outcomes["analyse mnist"].error
    last = "analyse" if analyse is not None else "record"
    for name, seed in work:
        done = outcomes[(last, (name, seed))]
        if done.ok:
            runs[name][seed] = folder[(name, seed)]
        elif isinstance(done.error, AnalysisError):
            failed[name][seed] = str(done.error)
            print(f"{_LOG} {name} seed {seed} failed: {done.error}", flush=True)
        else:
            raise done.error
    return runs, failed, mnist


# ----------------------------------------------------------------- analyse


def _activations(folder: Path) -> Path:
    folder = Path(folder)
    return folder / "activations" if (folder / "activations").is_dir() else folder


def _record_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in _activations(folder).glob("checkpoint_*.nc"))


def _open(folder: Path, lazy=None, quiet: bool = False):
    """The record of a run; ``lazy(size) -> str or None`` says why to read it lazily."""
    from . import probes

    why = lazy(_record_bytes(folder)) if lazy is not None else None
    if why and not quiet:
        print(f"{_LOG} {folder}: {why}: reading it lazily with dask, one checkpoint "
              "file at a time", flush=True)
    try:
        return probes.open_run(_activations(folder), chunks={} if why else None)
    except probes.ProbeError as err:
        raise AnalysisError(f"Cannot read the activation record of run {folder}: {err}") from None


def _lazy_policy(opts: LayerSimilarityOptions):
    """``lazy(size)``: why a record of ``size`` bytes is read lazily (None: in memory)."""
    from .analyses.lazy import memory_budget, parse_bytes

    if opts.workers is not None and opts.scheduler is not None:
        raise AnalysisError(f"--workers {opts.workers} and --scheduler {opts.scheduler!r} "
                            "exclude each other: give one")
    if opts.workers is not None and opts.workers < 1:
        raise AnalysisError(f"--workers must be >= 1, got {opts.workers}")
    try:
        limit = memory_budget() if opts.memory_limit == "auto" else parse_bytes(opts.memory_limit)
    except AnalysisError as err:
        raise AnalysisError(f"--memory-limit: {err}") from None
    where = ("on the dask cluster at " + opts.scheduler if opts.scheduler else
             f"on a local dask cluster of {opts.workers} workers" if opts.workers else None)

    def lazy(size: int):
        if where:
            return f"record of {size / 1e9:.2f} GB analysed {where}"
        if size > limit:
            return (f"record of {size / 1e9:.2f} GB is larger than --memory-limit "
                    f"{limit / 1e9:.2f} GB")
        return None
    return lazy


def _cluster(opts: LayerSimilarityOptions):
    """A dask.distributed client for --workers/--scheduler (closed on exit), else nothing."""
    if opts.workers is None and opts.scheduler is None:
        return nullcontext()
    try:
        from distributed import Client
    except ImportError:
        flag = "--workers" if opts.workers is not None else "--scheduler"
        raise AnalysisError(f'{flag} needs dask.distributed: pip install -e ".[dask]" from a '
                            "checkout") from None
    if opts.scheduler is not None:
        from .analyses.cluster import connect

        try:
            return connect(opts.scheduler, timeout=30)
        except AnalysisError as err:
            raise AnalysisError(f"--scheduler: {err}") from None
    return Client(n_workers=opts.workers, threads_per_worker=1, dashboard_address=None)


def _per_figure(entries, option: str) -> dict[str, str]:
    """``["2=rsa,cka_rbf", ...]`` to ``{"2": "rsa,cka_rbf"}``; figures are checked by AnalysisConfig."""
    out = {}
    for entry in entries or ():
        fig, sep, value = entry.partition("=")
        if not sep or not fig.strip() or not value.strip():
            raise AnalysisError(f"Cannot read {option} {entry!r}. Expected FIG=VALUE, e.g. "
                                "2=euclidean")
        out[fig.strip()] = value.strip()
    return out


def _analysis_config(args: argparse.Namespace, preset: str) -> AnalysisConfig:
    """The analysis settings of the command line: given options over the preset's."""
    default = AnalysisConfig(**REPRODUCTIONS[preset]["analysis"])
    values = {**REPRODUCTIONS[preset]["analysis"], **given(args, AnalysisConfig)}
    values["figure_measures"] = {
        **default.figure_measures,
        **{k: tuple(m.strip() for m in v.split(",") if m.strip())
           for k, v in _per_figure(args.figure_measures, "--figure-measures").items()}}
    values["figure_rdm_method"] = {**default.figure_rdm_method,
                                   **_per_figure(args.figure_rdm_method, "--figure-rdm-method")}
    return AnalysisConfig(**values)


def _check_paths(opts: LayerSimilarityOptions) -> None:
    """Refuse missing run folders and unusable output folders before anything runs."""
    named = [("--run", r) for r in opts.run] + [("--maml-run", r) for r in opts.maml_run]
    named += [("--mnist-run", opts.mnist_run)] if opts.mnist_run is not None else []
    check_folders(named, opts.results, opts.runs_dir, opts.data, "omniglot/ and mnist/")


def check_folders(named, results: Path, runs_dir: Path, data: Path | None, data_holds: str) -> None:
    """Refuse named runs without a record, output folders that are files, and a missing
    data folder (``data_holds`` says what it should hold), before anything runs."""
    for option, run in named:
        if not _has(_activations(run), "checkpoint_*.nc"):
            raise AnalysisError(f"{option} {run}: no activation record there (expected "
                                "checkpoint_*.nc files in the folder or its activations/ folder; "
                                "record the run with python -m repscope.training.record or "
                                "repscope.training.supervised)")
    for option, folder in (("--results", results), ("--runs-dir", runs_dir)):
        if folder.exists() and not folder.is_dir():
            raise AnalysisError(f"{option} {folder}: exists and is not a folder; expected a "
                                "folder to write into")
    if data is not None and not data.is_dir():
        raise AnalysisError(f"--data {data}: no such folder; expected a folder holding "
                            f"{data_holds}")


def _seeds_and_jobs(opts: LayerSimilarityOptions) -> tuple[tuple[int, ...], int]:
    """The seeds to train and the processes at once, checked before anything runs."""
    named = opts.run or opts.maml_run or opts.mnist_run is not None
    if named and opts.seeds is not None:
        raise AnalysisError(f"--seeds {opts.seeds!r} trains the preset's seeds; it does not "
                            "apply to runs named with --run, --maml-run or --mnist-run")
    seeds = parse_seeds(opts.seeds, REPRODUCTIONS[opts.preset].get("seeds", 1))
    return seeds, check_jobs(opts.jobs, seeds)


def _longer(preset: str) -> str:
    note = REPRODUCTIONS[preset].get("longer")
    return f"\nClaims this preset cannot test: {note}.\n" if note else ""


def _analyse_seeds(opts: LayerSimilarityOptions, cfg: AnalysisConfig, seeds, jobs) -> Path:
    """Train and record every seed, analyse each alone as soon as it is recorded (beside
    the other seeds' stages), pool them; write findings.md."""
    from .analyses.pipeline import analyse_seed

    control, analysed = {}, {}

    def analyse_control(mnist: Path):  # figure 2 beside the first training preset's seeds
        print(f"{_LOG} analyse the supervised control {mnist}", flush=True)
        first = REPRODUCTIONS[opts.preset]["train"][0]
        control["result"] = analyse_supervised(_open(mnist), cfg,
                                               opts.results / first / mnist.name, str(mnist))

    def analyse(name: str, seed: int, folder: Path):
        print(f"{_LOG} analyse {name} seed {seed}", flush=True)
        supervised = control["result"]["supervised"] if control else None
        analysed.setdefault(name, {})[seed] = analyse_seed(seed, folder, cfg,
                                                           opts.results / name, supervised)

    runs, failed, mnist_run = train_seeds(opts.preset, opts.runs_dir, seeds, jobs, opts.data,
                                          cfg.device, analyse=analyse,
                                          analyse_control=analyse_control)
    t0 = time.time()
    texts = []
    for name, records in runs.items():
        if not records:
            raise AnalysisError(f"Every seed of {name} failed: {failed[name]}")
        res = analyse_seeds(records, cfg, opts.results / name, failed=failed[name],
                            mnist=mnist_run, analysed=analysed.get(name),
                            supervised=control.get("result"))
        texts.append(f"# {name}: {len(records)} of {len(seeds)} seeds\n\n"
                     + Path(res["findings"]).read_text())
    summary = "\n".join(texts) + _longer(opts.preset)
    path = save_text(summary, opts.results / "findings.md")
    print(summary)
    print(f"{_LOG} pooling the seeds took {time.time() - t0:.0f} s; findings in "
          f"{Path(path).resolve()}")
    return opts.results


def _analyse(opts: LayerSimilarityOptions, cfg: AnalysisConfig, lazy, seeds=(0,), jobs=1) -> Path:
    """Train and record what is missing (no run named), analyse, write findings.md."""
    maml_runs, mnist_run = list(opts.maml_run), opts.mnist_run
    for run in opts.run:
        if is_supervised(_open(run, lazy, quiet=True)):
            mnist_run = run
        else:
            maml_runs.append(run)
    if not (maml_runs or mnist_run):
        if tuple(seeds) != (0,):
            return _analyse_seeds(opts, cfg, seeds, jobs)
        maml_runs, mnist_run = train_and_record(opts.preset, opts.runs_dir, opts.data, cfg.device,
                                                beside=(os.cpu_count() or 1) > 1)
    t0 = time.time()
    supervised = None
    with _cluster(opts):  # lazy records are read, chunk by chunk, by its workers
        if mnist_run is not None:
            res = analyse_supervised(_open(mnist_run, lazy), cfg,
                                     opts.results / Path(mnist_run).name, str(mnist_run))
            supervised = res["supervised"]
        maml, records = {}, {}
        for run in maml_runs:
            name = Path(run).name
            records[name] = _open(run, lazy)
            maml[name] = analyse_maml(records[name], cfg, opts.results / name, str(run))
        summary = summarize(maml, supervised, cfg, records)
    if not (opts.run or opts.maml_run or opts.mnist_run is not None):
        summary += _longer(opts.preset)
    path = save_text(summary, opts.results / "findings.md")
    print(summary)
    print(f"{_LOG} analysis took {time.time() - t0:.0f} s; findings in {Path(path).resolve()}")
    return opts.results


def main(argv=None) -> int:
    """Command-line entry of ``python analyses/layer_similarity.py``; returns the exit status.

    Examples
    --------
    >>> main(["--preset", "medium", "--show-config"])  # doctest: +ELLIPSIS
    {
      "options": {
        "preset": "medium",
    ...
        "fig1b_gap": 200,
    ...
    0
    """
    preset = peek(argv, "--preset")
    args = _parser(preset if preset in REPRODUCTIONS else None).parse_args(argv)
    try:
        opts = LayerSimilarityOptions(**given(args, LayerSimilarityOptions))
        if opts.redraw and not args.show_config:
            with writing_results(opts.results):
                files = redraw(opts.results, args.formats or AnalysisConfig().formats)
            print(wrote(f"{len(files)} redrawn figure files", opts.results))
            return 0
        cfg = _analysis_config(args, opts.preset)
        _check_paths(opts)
        if args.show_config:
            return print_config({"options": opts, "analysis": cfg})
        lazy = _lazy_policy(opts)  # options checked before anything is trained or written
        seeds, jobs = _seeds_and_jobs(opts)
        with writing_results(opts.results):  # one analysis writes a results folder at a time
            results = _analyse(opts, cfg, lazy, seeds, jobs)
        print(wrote("figures, their values and findings.md", results))
        return 0
    except AnalysisError as err:
        print(f"layer_similarity: error: {err}", file=sys.stderr)
        return 2
