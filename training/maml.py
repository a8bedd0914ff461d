"""Meta-train the conv4 network with MAML: ``python -m repscope.training.maml --preset NAME --out DIR``.

A run folder holds ``config.json`` (the resolved :class:`~repscope.training.config.MAMLConfig`),
``checkpoints/step_XXXXXXXX.pt`` (meta-parameters, optimiser and RNG state at step 0,
early log-spaced steps, every ``checkpoint_every`` steps and the last step),
``state.pt`` (the latest resumable state, every ``state_every`` steps),
``metrics.jsonl`` (a ``config`` header line, then one ``train`` line per meta-step with
the query loss and accuracy before and after adaptation, and ``val`` lines with the mean
and 95% CI over ``val_tasks`` held-out tasks) and, once training is done,
``evaluation.json`` (test tasks and, for background-only Omniglot runs, Lake et al.'s
20-run benchmark, beside the published numbers).

``--resume`` continues from the newest saved state; because every episode is a pure
function of (seed, step), a run killed at any moment and resumed ends with the same
weights as an uninterrupted run (bit-exact on CPU). An existing run is never
overwritten without ``--resume`` or ``--overwrite``. Every saved state is read whole
(content hash included) before resuming, and a damaged one is passed over for the newest
good state before it; ``--resume`` to fewer ``--steps`` than the run has reached is
refused before anything is written. A run whose loss or weights stop being finite stops
at that step without writing anything of it (see the robustness guide).

``torchrun --nproc-per-node K -m repscope.training.maml ...`` splits every meta-batch
over K processes (gloo on CPU, NCCL with ``--device cuda``, one GPU each): the same
episodes and, to float tolerance, the same weights as one process; rank 0 alone writes
the run folder, so ``--resume`` works with any K (see :mod:`repscope.training.distributed`).

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     result = train(get_preset("quick", n_way=5, meta_batch=2, steps=3, val_every=0,
...                               test_tasks=2, lake_eval=False, progress=False,
...                               data=str(DATA)), d + "/run", log=None)
...     sorted(load_run(d + "/run")[1])
[0, 1, 2, 3]
"""
import argparse
import contextlib
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

from ..probes.files import LOCK_NAME, atomic_write_text, remove_own, run_lock, temporary_owner
from .checkpoint import (clean_run_folder, latest_resumable, load_checkpoint, load_run,
                         save_checkpoint, seed_generators, set_rng_state, training_state_path)
from .distributed import Ranks, leave, ranks
from .cli import arg, build_parser, given, peek, print_config, wrote
from .config import (CHOICES, PRESETS, RUNTIME_FIELDS, MAMLConfig, checkpoint_steps,  # noqa: F401
                     get_preset)
from .errors import TrainingError
from .evaluate import PUBLISHED, evaluate_tasks, lake_episodes, summarize
from .inner import adapted_parameter_names
from .engines import meta_step
from .model import build_model
from .options import DEVICES, check_device, torch_threads
from .tasks import lake_runs, task_samplers

__all__ = ["train", "main"]

#: What a run folder holds that this command wrote (subfolder -> names, a regular
#: expression): all that --overwrite removes; the recordings of the replaced run go too.
_ARTEFACTS = {"": r"config\.json|state\.pt|metrics\.jsonl|evaluation\.json",
              "checkpoints": r"step_\d{8}\.pt", "activations": r"checkpoint_-?\d+\.nc"}
_COMMAND = "python -m repscope.training.maml"


def _foreign(out: Path) -> list:
    """Names in ``out`` other than the lock and temporaries."""
    return sorted(p.name for p in out.iterdir()
                  if p.name != LOCK_NAME and temporary_owner(p) is None) if out.is_dir() else []


def _prepare_folder(out: Path, resume: bool, overwrite: bool, log=None) -> bool:
    """Return True when an existing run is to be resumed (called holding the run's lock)."""
    exists = (out / "config.json").is_file()
    if exists and resume:
        return True
    if exists and not overwrite:
        raise TrainingError(f"{str(out)!r} already holds a run. Pass --resume to continue it "
                            "or --overwrite to start again from step 0")
    if exists and overwrite:
        try:
            load_run(out)  # only a repscope run is ours to remove
        except TrainingError as exc:
            raise TrainingError(
                f"--overwrite removes only a run that repscope wrote, and {str(out)!r} holds "
                f"none: {exc}. Nothing was removed; choose another --out, or delete the folder "
                "yourself") from None
        activations = out / "activations"
        recorder = (run_lock(activations, _COMMAND + " --overwrite", TrainingError, log)
                    if activations.is_dir() and not activations.is_symlink()
                    else contextlib.nullcontext())
        with recorder:  # no recorder may be writing what is removed
            removed = remove_own(out, _ARTEFACTS, TrainingError)  # all checked, then removed
        with contextlib.suppress(OSError):
            activations.rmdir()  # when nothing else is left in it
        if log:
            kept = _foreign(out)
            log(f"--overwrite: removed {len(removed)} files of the previous run"
                + (f"; kept {kept}, which repscope did not write" if kept else ""))
    if not exists and _foreign(out) and not overwrite:
        raise TrainingError(f"{str(out)!r} is not empty and holds no run (no config.json). "
                            "Choose a new folder or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    return False


def check_options(config: MAMLConfig) -> None:
    """Checks of ``config`` against the network and the schedule, before anything is written.

    Examples
    --------
    >>> check_options(get_preset("quick", adapt_layers="conv9"))
    Traceback (most recent call last):
    ...
    repscope.training.errors.TrainingError: Unknown adapt_layers 'conv9'. Expected 'all', 'head', 'freeze:K' or a comma-separated subset of [...]
    """
    adapted_parameter_names(build_model(config), config)  # --adapt-layers vs the layers
    if config.val_every and not config.val_tasks:
        raise TrainingError(f"val_tasks (--val-tasks) 0 with val_every (--val-every) "
                            f"{config.val_every}: a validation needs at least 1 task. Give "
                            "--val-tasks 1 or more, or --val-every 0 to skip validation")


def _check_same_run(stored: MAMLConfig, given: MAMLConfig) -> MAMLConfig:
    a, b = stored.to_dict(), given.to_dict()
    diff = sorted(k for k in a if a[k] != b[k] and k not in RUNTIME_FIELDS)
    if diff:
        raise TrainingError(
            "--resume with a configuration that differs from the stored run in "
            f"{[(k, a[k], b[k]) for k in diff]} (stored, given). Only {list(RUNTIME_FIELDS)} "
            "may change on resume")
    return given


def _rewrite_metrics(path: Path, config: MAMLConfig, keep_until: int) -> None:
    """Keep the lines of steps <= keep_until; put the current config in the header."""
    lines = [json.dumps({"kind": "config", "config": config.to_dict()})]
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off by a crash
            if rec.get("kind") != "config" and rec.get("step", 0) <= keep_until:
                lines.append(line)
    atomic_write_text(path, "\n".join(lines) + "\n")


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def _validate(model, sampler, config) -> dict:
    episodes = (sampler.episode(i) for i in range(config.val_tasks))
    return summarize(evaluate_tasks(model, episodes, config, config.inner_steps_eval))


def final_evaluation(model, samplers, config, log=print) -> dict:
    """Test tasks and (if ``config.lake_eval``) Lake's benchmark, beside published numbers."""
    result = {"config": config.to_dict(), "inner_steps": config.inner_steps_eval}
    if config.test_tasks:
        episodes = (samplers["test"].episode(i) for i in range(config.test_tasks))
        result["test"] = summarize(evaluate_tasks(model, episodes, config))
        if log:
            t = result["test"]
            log(f"test: {config.n_way}-way {config.k_shot}-shot accuracy {t['mean']:.2f} +- "
                f"{t['ci95']:.2f} % over {t['n_tasks']} held-out tasks "
                f"({config.inner_steps_eval} inner steps); chance {100 / config.n_way:.1f} %")
    if config.lake_eval and (config.n_way, config.k_shot) != (20, 1):
        result["lake"] = {"skipped": f"Lake's runs are 20-way 1-shot; this run is "
                                     f"{config.n_way}-way {config.k_shot}-shot"}
        if log:
            log(f"Lake et al. benchmark skipped: {result['lake']['skipped']}")
    elif config.lake_eval:
        acc = evaluate_tasks(model, lake_episodes(lake_runs(config)), config)
        result["lake"] = {**summarize(acc), "per_run": [round(float(a) * 100, 2)
                                                        for a in acc[:, -1]]}
        result["published"] = PUBLISHED
        if log:
            t = result["lake"]
            log(f"Lake et al. 20-run benchmark: {t['mean']:.2f} +- {t['ci95']:.2f} % "
                f"(published: MAML {PUBLISHED['finn2017_omniglot_20way_1shot']['mean']} +- "
                f"{PUBLISHED['finn2017_omniglot_20way_1shot']['ci95']} % on the standard "
                f"split; people {PUBLISHED['lake2015_human_20way_1shot']['mean']} %)")
    return result


def train(config: MAMLConfig, out, resume: bool = False, overwrite: bool = False,
          log=print, on_step=None, group: Ranks | None = None) -> dict | None:
    """Meta-train as ``config`` says, writing the run folder ``out``.

    Parameters
    ----------
    config : MAMLConfig
        The run's configuration. On ``resume`` it must equal the stored one except for
        ``device``, ``progress``, ``data`` and ``steps``.
    out : path-like
        Run folder.
    resume, overwrite : bool
        Continue an existing run / delete an existing run's artefacts first.
    log : callable or None
        Receives one-line messages (``print`` by default).
    on_step : callable, optional
        Called as ``on_step(step)`` after each meta-step's metrics are written and
        before its checkpoint (used by tests to interrupt a run).
    group : repscope.training.distributed.Ranks, optional
        Data-parallel ranks under ``torchrun`` (see :mod:`repscope.training.distributed`):
        each rank adapts its share of every meta-batch; rank 0 alone logs, writes the
        run folder and runs the validation and final evaluation. Default: one process.

    Returns
    -------
    dict or None
        The final evaluation (also written to ``out/evaluation.json``); None on ranks
        other than 0.
    """
    out = Path(out)
    group = group or Ranks()
    log = (log if group.is_main else None) or (lambda *_: None)
    check_device(config.device)
    if resume and overwrite:
        raise TrainingError("--resume and --overwrite exclude each other")
    check_options(config)
    found = None
    if resume and (out / "config.json").is_file():  # every check before anything is written
        config = _check_same_run(load_run(out)[0], config)
        found = _resume_point(out, config, log)
    samplers = task_samplers(config)  # data errors come before --overwrite removes anything
    if group.size > config.meta_batch:
        raise TrainingError(f"{group.size} processes for --meta-batch {config.meta_batch}: every "
                            "process needs a task of each meta-batch. Use at most --meta-batch processes")
    with contextlib.ExitStack() as hold:
        resuming, error = False, None
        if group.is_main:  # rank 0 alone touches the folder; the others wait for its verdict
            try:  # one writer per run folder, held until training ends, however it ends
                hold.enter_context(run_lock(out, _COMMAND, TrainingError, log))
                for path in clean_run_folder(out):
                    log(f"removed {str(path)!r}, a temporary file left by a killed process")
                resuming = _prepare_folder(out, resume, overwrite, log)
            except TrainingError as exc:
                if not group.distributed:
                    raise
                error = exc
        group.check(error)
        resuming = group.broadcast(resuming)
        with torch_threads(config.threads):
            return _train(config, out, resuming, found, samplers, group.device(config.device),
                          log, on_step, group)


def _resume_point(out: Path, config: MAMLConfig, log):
    """``(step, path)`` of the state to resume from, or None; refuses a shorter run."""
    found = latest_resumable(out, log=log)
    if found is not None and found[0] > config.steps:
        raise TrainingError(
            f"--steps {config.steps} is below the progress of the run in {str(out)!r}: it has "
            f"reached step {found[0]} ({found[1].name}). Pass --steps {found[0]} or more to "
            "continue it, or --overwrite to start again from step 0")
    return found


def _check_finite(step: int, metrics: dict, model, out: Path, outputs: str | None = None) -> None:
    """Stop a diverged run before it writes a non-finite value anywhere.

    ``outputs``: what of the weights after ``step`` gave non-finite outputs (validation).
    """
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    if not bad and outputs is None and all(torch.isfinite(p).all() for p in model.parameters()):
        return
    what = (f"{', '.join(f'{k} = {metrics[k]}' for k in bad)}" if bad
            else outputs or "non-finite meta-parameters")
    _, saved = load_run(out)
    # Non-finite metrics come from the weights before this step: that checkpoint is not
    # finite either (its outputs are NaN); every one before it passed its next step.
    before = step - 1 if bad else step
    last = max((s for s in saved if s < before), default=None)
    unusable = (f" (step {step - 1}, saved, gives non-finite outputs: record refuses it)"
                if bad and step - 1 in saved else "")
    raise TrainingError(
        f"Training diverged at meta-step {step}: {what}. The run stops here; nothing of "
        f"step {step} was written, and its last finite checkpoint is "
        f"{'step ' + str(last) if last is not None else 'none'} in {str(out / 'checkpoints')!r}"
        f"{unusable}. "
        "Lower --meta-lr or --inner-lr (or set --meta-clip) and start again with --overwrite")


def _train(config, out, resuming, found, samplers, device, log, on_step, group):
    from tqdm import tqdm

    seed_generators(config.seed)
    model = build_model(config).to(device)
    meta_opt = torch.optim.Adam(model.parameters(), lr=config.meta_lr)
    metrics = out / "metrics.jsonl"
    start = 0
    if found is not None:
        start, path = found
        ckpt = load_checkpoint(path, map_location=device)
        model.load_state_dict(ckpt["model"])
        meta_opt.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        log(f"resuming {str(out)!r} from step {start} ({path.name})")
    elif resuming:
        log(f"{str(out)!r} has no checkpoint yet: starting it from step 0")
    main = group.is_main  # rank 0 alone writes the run folder
    if main:
        atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        _rewrite_metrics(metrics, config, keep_until=start if found is not None else -1)
    schedule = set(checkpoint_steps(config))
    if found is None and main:
        if config.val_every:
            _append(metrics, {"kind": "val", "step": 0, **_validate(model, samplers["val"],
                                                                    config)})
        save_checkpoint(training_state_path(out, 0), step=0, config=config, model=model,
                        optimizer=meta_opt)
    t0 = time.time()
    bar = tqdm(total=config.steps, initial=start, disable=not (config.progress and main),
               desc=config.preset, dynamic_ncols=True)
    for step in range(start, config.steps):
        m = meta_step(model, meta_opt, samplers["train"].batch(step, config.meta_batch), config,
                      group=group if group.distributed else None)
        done = step + 1
        _check_finite(done, m, model, out)  # on every rank: all hold the same numbers
        if not main:
            continue
        val = None
        if config.val_every and done % config.val_every == 0:
            val = _validate(model, samplers["val"], config)
            if not math.isfinite(val["mean"]):
                _check_finite(done, {}, model, out, "validation accuracy is not a number "
                                                    "(the network's outputs are not finite)")
        _append(metrics, {"kind": "train", "step": done, **{k: round(v, 6) for k, v in m.items()},
                          "elapsed_s": round(time.time() - t0, 3)})
        if val is not None:
            _append(metrics, {"kind": "val", "step": done, **val})
            log(f"step {done}: validation accuracy {val['mean']:.2f} +- {val['ci95']:.2f} % "
                f"({val['n_tasks']} tasks)")
        if on_step is not None:
            on_step(done)
        if done in schedule:
            save_checkpoint(training_state_path(out, done), step=done, config=config, model=model,
                            optimizer=meta_opt)
        elif done % config.state_every == 0:
            save_checkpoint(out / "state.pt", step=done, config=config, model=model,
                            optimizer=meta_opt)
        bar.update(1)
        bar.set_postfix(loss=f"{m['post_loss']:.3f}", pre_acc=f"{m['pre_acc']:.3f}",
                        post_acc=f"{m['post_acc']:.3f}", refresh=False)
    bar.close()
    if not main:
        return None
    if (out / "state.pt").is_file():
        (out / "state.pt").unlink()  # the last scheduled checkpoint supersedes it
    result = final_evaluation(model, samplers, config, log=log)
    bad = [k for k in ("test", "lake") if not math.isfinite(result.get(k, {}).get("mean", 0.0))]
    if bad:  # the last step's weights give NaN outputs: no accuracy to report
        _, saved = load_run(out)
        last = max((s for s in saved if s < config.steps), default=None)
        raise TrainingError(
            f"Training diverged at its last meta-step {config.steps}: {' and '.join(bad)} "
            "accuracy is not a number (the network's outputs are not finite), so "
            f"evaluation.json is not written and checkpoint {config.steps} cannot be recorded; "
            f"its last finite checkpoint is {'step ' + str(last) if last is not None else 'none'} "
            f"in {str(out / 'checkpoints')!r}. Lower --meta-lr or --inner-lr (or set "
            "--meta-clip) and start again with --overwrite")
    atomic_write_text(out / "evaluation.json", json.dumps(result, indent=2) + "\n")
    return result


# ----------------------------------------------------------------------------- CLI

_GROUPS = {
    "preset": [arg("--preset", choices=sorted(PRESETS), default=None,
                   help="Starting configuration; every option below overrides its value "
                        "(default: quick; on --resume: the stored run's configuration).")],
    "data and tasks": ["dataset", "archives", "data", "n_train", "n_val", "n_test", "rotate",
                       "rotate_eval", "n_way", "k_shot", "n_query", "n_query_eval"],
    "model": ["image_size", "in_channels", "n_filters", "stride", "pool", "features",
              "head_init"],
    "inner loop": ["inner_steps", "inner_steps_eval", "inner_lr", "inner_loss", "first_order",
                   "adapt_bn", "adapt_layers"],
    "outer loop": ["meta_batch", "meta_lr", "meta_loss", "meta_clip", "steps", "seed"],
    "evaluation": ["val_every", "val_tasks", "test_tasks", "lake_eval"],
    "checkpoints": [
        arg("--out", required=True, metavar="DIR", help="Run folder to write."),
        arg("--resume", action="store_true",
            help="Continue the run in --out from its newest saved state (a folder without a "
                 "run starts a new one). Options other than --steps, --device, --data, "
                 "--threads, --engine and --progress must match the run."),
        arg("--overwrite", action="store_true",
            help="Delete the run in --out and start again from step 0."),
        "checkpoint_every", "checkpoint_log", "state_every"],
    "runtime": ["device", "engine", "threads", "progress"],
}


def _parser(preset: str = "quick") -> argparse.ArgumentParser:
    """The command line, its defaults shown as ``preset`` resolves them."""
    return build_parser(
        "python -m repscope.training.maml",
        "Meta-train the conv4 network of Finn et al. (2017) with MAML and write a run "
        "folder: config.json, checkpoints/, metrics.jsonl, evaluation.json. The defaults "
        f"shown are those of preset {preset!r}; --preset NAME --help shows another's.",
        MAMLConfig, _GROUPS, defaults=get_preset(preset), hidden=("preset",),
        choices={**CHOICES, "device": DEVICES}, arguments={"data": {"metavar": "DIR"}},
        usage="%(prog)s [--preset NAME] --out DIR [OPTION ...]")


def config_from_args(args) -> MAMLConfig:
    """The resolved configuration of parsed command-line ``args``."""
    overrides = {k: v for k, v in given(args, MAMLConfig).items() if k != "preset"}
    out = Path(args.out) if args.out is not None else None
    if args.resume and out is not None and (out / "config.json").is_file():
        stored = load_run(out)[0]
        if args.preset is None or args.preset == stored.preset:
            return dataclasses.replace(stored, **overrides)
    return get_preset(args.preset or "quick", **overrides)


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status."""
    preset = peek(argv, "--preset")
    parser = _parser(preset if preset in PRESETS else "quick")
    args = parser.parse_args(argv)
    group = None
    try:
        config = config_from_args(args)
        if args.show_config:
            return print_config(config.to_dict())
        group = ranks(config.device)  # torchrun: one process per rank, else one process
        train(config, args.out, resume=args.resume, overwrite=args.overwrite, group=group)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if group is not None:
            leave(group)
    if group.is_main:
        print(wrote("run folder", args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
