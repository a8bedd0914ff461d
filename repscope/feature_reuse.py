"""Rapid learning or feature reuse? MAML against ANIL on one record each (Raghu et al., 2020).

``python analyses/feature_reuse.py`` (also ``repscope feature-reuse``) runs this module's
:func:`main`; ``--help`` lists every option. With no arguments it runs the ``small``
comparison:

1. ``python -m repscope.training.maml --preset small --out runs/small`` and the same
   with ``--preset small-anil`` (its ANIL twin: same data, steps, checkpoints and seed,
   only the head adapted in the inner loop), each skipped when its checkpoints exist;
2. ``python -m repscope.training.record --run runs/<preset> --checkpoints all --tasks 5
   --inner-steps 0,1,2,5 --eval-tasks 0`` for both (skipped when recorded): 5 analysis
   tasks over pairwise disjoint held-out characters;
3. the freezing test on the MAML run: its last checkpoint adapted on its test tasks
   with every layer and with the head alone
   (:func:`repscope.training.freezing.freezing_test`);
4. the analysis (:mod:`repscope.analyses.reuse`): per layer and checkpoint, SVCCA,
   PWCCA and linear CKA between inner step 0 and the last recorded step, mean and
   t interval over independent tasks; findings R1-R3; Raghu et al.'s Figure 2 and the
   similarity over checkpoints as PNG + PDF, their values as netCDF, and
   ``feature_reuse.md`` in ``--results``.

``--maml-run`` / ``--anil-run`` analyse existing runs (folders written by
``python -m repscope.training.maml`` and recorded) without training anything; either
may be given alone.

This module sits above the subpackages, as :mod:`repscope.reproduce` does, whose stages
(:func:`repscope.reproduce.train_and_record`) it runs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .analyses.errors import AnalysisError
from .analyses.measures import MEASURES
from .analyses.reuse import REUSE_MEASURES, assess_reuse, freezing_dataset, reuse_markdown
from .analyses.reuse_plots import plot_layer_similarity, plot_similarity_over_checkpoints
from .analyses.saving import save_figure, save_netcdf, save_text, writing_results
from .analyses.task_units import CI_UNITS
from .reproduce import _open, check_folders, train_and_record
from .training.cli import build_parser, given, print_config, setting, wrote
from .training.errors import TrainingError
from .training.freezing import freezing_test

__all__ = ["FEATURE_REUSE", "FeatureReuseOptions", "main"]

_LOG = "[feature_reuse]"
_FORMATS = ("png", "pdf", "svg")

#: What each ``--preset`` trains (a MAML preset and its ANIL twin, in that order) and how
#: it records them; entries shaped as :data:`repscope.reproduce.REPRODUCTIONS`' (no
#: supervised control).
FEATURE_REUSE = {
    "small": {"train": ("small", "small-anil"),
              "record": ("--checkpoints", "all", "--tasks", "5", "--inner-steps", "0,1,2,5",
                         "--eval-tasks", "0"),
              "supervised": False},
}


def _similarities() -> list[str]:
    return sorted(n for n, m in MEASURES.items() if m.direction == "similarity")


@dataclass
class FeatureReuseOptions:
    """What ``python analyses/feature_reuse.py`` trains or reads, and how it analyses.

    Examples
    --------
    >>> FeatureReuseOptions().measures
    ('svcca', 'pwcca', 'cka_linear')
    """

    preset: str = setting("small", "What to train and record when no run is named: a MAML "
                          "preset and its ANIL twin (small: 20-way 1-shot, 750 meta-steps, minutes "
                          "on a CPU).")
    maml_run: Optional[Path] = setting(None, "Existing MAML run folder (trained and recorded) to "
                                       "analyse; the freezing test runs on its last checkpoint.")
    anil_run: Optional[Path] = setting(None, "Existing ANIL run folder (trained and recorded) to "
                                       "analyse.")
    runs_dir: Path = setting(Path("runs"), "Where the preset's runs are trained.")
    data: Optional[Path] = setting(None, "Data folder; none: $REPSCOPE_DATA, else the training "
                                   "commands download.")
    results: Path = setting(Path("results/feature_reuse"), "Output folder of figures, values and "
                            "feature_reuse.md.")
    measures: tuple = setting(REUSE_MEASURES, "Similarity measures (Raghu et al.: CCA and CKA).")
    ci_unit: str = setting("disjoint", "Independent units of the CIs: disjoint (tasks whose "
                           "characters are pairwise disjoint) or task (every task, as if "
                           "independent).")
    after: Optional[int] = setting(None, "Inner step compared with step 0 (none: the last "
                                   "recorded).")
    checkpoint: Optional[int] = setting(None, "Checkpoint of Figure 2 and of R1 and R2 (none: the "
                                        "last recorded).")
    test_tasks: Optional[int] = setting(None, "Test tasks of the freezing test (none: the MAML "
                                        "run's test_tasks, the tasks of its evaluation.json).")
    formats: tuple = setting(("png", "pdf"), "Figure file formats.")


_GROUPS = {
    "what to analyse": ["preset", "maml_run", "anil_run", "runs_dir", "data"],
    "analysis": ["measures", "ci_unit", "after", "checkpoint", "test_tasks"],
    "output": ["results", "formats"],
}


def _parser() -> argparse.ArgumentParser:
    path = {"type": Path, "metavar": "DIR"}
    return build_parser(
        "python analyses/feature_reuse.py", __doc__.split("\n\n")[0],
        FeatureReuseOptions, _GROUPS,
        choices={"preset": sorted(FEATURE_REUSE), "measures": _similarities(),
                 "ci_unit": list(CI_UNITS), "formats": list(_FORMATS)},
        arguments={"maml_run": path, "anil_run": path, "runs_dir": path, "data": path,
                   "results": path},
        usage="%(prog)s [--preset NAME | --maml-run DIR --anil-run DIR] [OPTION ...]",
        epilog="Without --maml-run/--anil-run the preset's runs are trained and recorded first "
               "(each stage skipped when its output exists).")


def _check(opts: FeatureReuseOptions) -> None:
    """Refuse unusable values before anything is trained or written."""
    for name in ("after", "test_tasks"):
        value = getattr(opts, name)
        if value is not None and value < 1:
            raise AnalysisError(f"--{name.replace('_', '-')} {value}: expected an integer >= 1")
    if opts.checkpoint is not None and opts.checkpoint < 0:
        raise AnalysisError(f"--checkpoint {opts.checkpoint}: expected a recorded checkpoint (>= 0)")
    if not opts.measures:
        raise AnalysisError(f"--measures '': expected one or more of {_similarities()}")
    named = [(option, run) for option, run in (("--maml-run", opts.maml_run),
                                               ("--anil-run", opts.anil_run)) if run is not None]
    check_folders(named, opts.results, opts.runs_dir, opts.data, "omniglot/")


def _check_record(ds, option: str, run: Path, opts: FeatureReuseOptions) -> None:
    steps = [int(s) for s in ds["inner_step"].values]
    if opts.after is not None and opts.after not in steps:
        raise AnalysisError(f"--after {opts.after}: not recorded in {option} {run}; recorded inner "
                            f"steps {steps}")
    checkpoints = [int(c) for c in ds["checkpoint"].values]
    if opts.checkpoint is not None and opts.checkpoint not in checkpoints:
        raise AnalysisError(f"--checkpoint {opts.checkpoint}: not recorded in {option} {run}; "
                            f"recorded checkpoints {checkpoints}")


def _run_folder(run: Path) -> Path:
    """The run folder of a run or of its activations/ folder."""
    run = Path(run)
    return run.parent if run.name == "activations" and not (run / "config.json").is_file() else run


def _test_accuracy(run: Path) -> dict | None:
    """Test accuracy (%) and what the run adapted, from its evaluation.json and config.json."""
    folder = _run_folder(run)
    try:
        test = json.loads((folder / "evaluation.json").read_text())["test"]
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError, KeyError):
        return None
    return {"mean": test["mean"], "ci95": test["ci95"], "n_tasks": test["n_tasks"],
            "adapt_layers": cfg.get("adapt_layers", "all"), "inner_steps": cfg.get("inner_steps_eval")}


def _freezing(run: Path, opts: FeatureReuseOptions):
    """The freezing test on the MAML run, as a dataset, or (None, why not)."""
    folder = _run_folder(run)
    print(f"{_LOG} freezing test on {folder} (head only vs every layer at test time)", flush=True)
    t0 = time.time()
    try:
        res = freezing_test(folder, opts.test_tasks, data=opts.data)
    except TrainingError as err:
        return None, f"the freezing test needs the trained run's checkpoints: {err}"
    print(f"{_LOG} freezing test took {time.time() - t0:.0f} s", flush=True)
    return freezing_dataset(res["accuracy"], run=str(folder), checkpoint=res["checkpoint"],
                            inner_steps=res["inner_steps"], n_way=res["n_way"], k_shot=res["k_shot"],
                            trained_adapt_layers=res["trained_adapt_layers"],
                            config=json.dumps(res["config"])), None


def _records(runs: dict, opts: FeatureReuseOptions) -> dict:
    """The records of ``{label: run}``, checked against --after and --checkpoint."""
    records = {label: _open(run) for label, run in runs.items()}
    for label, ds in records.items():
        _check_record(ds, f"--{label}-run", runs[label], opts)
    return records


def _analyse(opts: FeatureReuseOptions, runs: dict, records: dict | None) -> list[Path]:
    """Train and record the preset's runs when none is named (``runs`` empty), analyse, write."""
    if not runs:
        stages = FEATURE_REUSE[opts.preset]
        trained, _ = train_and_record(opts.preset, opts.runs_dir, opts.data, stages=stages)
        runs = dict(zip(("maml", "anil"), trained))
        records = _records(runs, opts)
    written, results, summaries, accuracy = [], {}, {}, {}
    for label, run in runs.items():
        out = opts.results / label
        freezing, why_not = (_freezing(run, opts) if label == "maml" else
                             (None, "the freezing test asks what a MAML-trained network loses; it "
                                    "runs on the MAML run"))
        res = assess_reuse(records[label], opts.measures, freezing=freezing, unit=opts.ci_unit,
                           checkpoint=opts.checkpoint, after=opts.after, freezing_why_not=why_not)
        results[f"{label}: {run}"] = res
        if freezing is not None:
            written.append(save_netcdf(freezing, out / "freezing.nc"))
        if res["similarity"] is not None:
            summaries[label] = res["summary"]
            written.append(save_netcdf(res["similarity"], out / "reuse_similarity.nc"))
            written.append(save_netcdf(res["summary"], out / "reuse_summary.nc"))
            written += save_figure(plot_similarity_over_checkpoints(res["summary"], label),
                                   out / "reuse_over_checkpoints", opts.formats)
        acc = _test_accuracy(run)
        if acc is not None:
            accuracy[f"{label} ({_run_folder(run).name})"] = acc
    if summaries:
        written += save_figure(plot_layer_similarity(summaries, opts.checkpoint),
                               opts.results / "reuse_fig2", opts.formats)
    text = reuse_markdown(results, accuracy=accuracy)
    written.append(save_text(text, opts.results / "feature_reuse.md"))
    print(text)
    return written


def main(argv=None) -> int:
    """Command-line entry of ``python analyses/feature_reuse.py``; returns the exit status.

    Examples
    --------
    >>> main(["--show-config"])  # doctest: +ELLIPSIS
    {
      "preset": "small",
    ...
    0
    """
    args = _parser().parse_args(argv)
    try:
        opts = FeatureReuseOptions(**given(args, FeatureReuseOptions))
        opts.measures, opts.formats = tuple(opts.measures), tuple(opts.formats)
        _check(opts)
        if args.show_config:
            return print_config(opts)
        t0 = time.time()
        runs = {label: Path(run) for label, run in (("maml", opts.maml_run), ("anil", opts.anil_run))
                if run is not None}
        records = _records(runs, opts) if runs else None  # checked before anything is written
        with writing_results(opts.results):
            written = _analyse(opts, runs, records)
        for path in written:
            print(wrote(Path(path).name, path))
        print(f"{_LOG} took {time.time() - t0:.0f} s")
        print(wrote("figures, their values and feature_reuse.md", opts.results))
        return 0
    except AnalysisError as err:
        print(f"feature_reuse: error: {err}", file=sys.stderr)
        return 2
