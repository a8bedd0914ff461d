"""Record a MAML run's representations: ``python -m repscope.training.record``.

For every selected checkpoint of a run folder (written by ``python -m repscope.training.maml``),
and for ``P`` analysis tasks from held-out characters, the meta-parameters are adapted
on each task's own support set and the representations of a shared *probe set* are
recorded with :class:`repscope.probes.Probe` after the requested inner steps. As in the paper's
code (see :ref:`reproducing` and :ref:`data-format`):

* analysis tasks come from the run's held-out (test) classes, without rotation or label
  shuffling, in a fixed order: task ``t`` takes classes ``t*N .. t*N+N-1`` (wrapping
  around when there are fewer than ``P*N`` held-out classes); support = the first
  example of each class, query = all other examples;
* the probe set is, by default, the second example of each class of task 0: the same
  ``N`` images for every task, inner step and checkpoint (``--probe-task`` chooses
  another task, ``--probe-index`` another example). Inner step 0 is therefore identical
  for all tasks at one checkpoint: it is the meta-initialised representation;
* batch norm uses the batch statistics of the probe batch;
* each task's accuracy on its own query images is stored as ``accuracy``, and the
  accuracy of ``--eval-tasks`` randomly drawn held-out tasks after
  ``--eval-inner-steps`` inner steps (5, the paper's figure 4) as ``eval_accuracy``;
  they are rotated like the run's test tasks (``rotate_eval``);
* the dataset attr ``task_classes`` lists each analysed task's held-out classes, so
  that analyses can tell which tasks share characters.

One netCDF file per checkpoint goes to ``<run>/activations/`` (written atomically);
checkpoints already there are skipped, so an interrupted recording resumes where it
stopped. Each file already there is read whole first (schema and content hash): one that
is unreadable or corrupt (0 bytes, truncated, a changed byte) is named and recorded
again, and temporaries that a killed recorder left are removed. ``repscope.probes.open_run(<run>/activations)`` opens the result as one Dataset.

``torchrun --nproc-per-node K -m repscope.training.record -- --run RUN ...`` deals the
checkpoints still to record out over K processes (checkpoints ``rank, rank + K, ...``);
each writes its own files into the same folder, so the record is the one a single
process writes, and an interrupted recording resumes with any K. (The ``--`` ends
torchrun's options: it would take ``--run`` for its ``--run-path``.)
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import xarray as xr

from ..probes import Probe, ProbeError, existing_checkpoints, write_checkpoint
from ..probes.files import clean_stale_temporaries, run_lock
from ..probes.store import activation_file_path, verify_checkpoint
from .checkpoint import load_meta_parameters, load_run
from .cli import arg, build_parser, given, print_config, setting, wrote
from .config import ENGINE_NAMES
from .data.episodes import EpisodeSampler
from .distributed import Ranks, leave, ranks
from .engines import engine_for
from .engines.tensors import accuracy, episode_tensors
from .errors import TrainingError
from .evaluate import evaluate_tasks
from .model import build_model
from .options import (DEVICES, THREADS_HELP, available_memory, check_choice, check_device,
                      check_int, check_threads)
from .reduce_option import PAPER_REDUCE, REDUCE_HELP, parse_reduce, reduce_argument
from .tasks import task_samplers

__all__ = ["RecordConfig", "select_checkpoints", "analysis_tasks", "record_run", "main"]

LAYERS = ("conv1", "conv2", "conv3", "conv4", "head")
DTYPES = ("float32", "float16")


@dataclass
class RecordConfig:
    """What to record from a run (defaults: the paper's analysis, sized by the caller).

    Examples
    --------
    >>> RecordConfig(inner_steps=(0, 1, 5)).max_inner_step
    5
    """

    checkpoints: str = setting("all", "Checkpoints to record: 'all', 'every:K', "
                               "'START:STOP:STEP' (inclusive) or a list such as '0,100,200'.")
    tasks: int = setting(50, "Analysis tasks P.")
    inner_steps: Sequence[int] = setting((0, 1, 5, 10), "Inner steps after which to record.")
    eval_tasks: int = setting(600, "Random held-out tasks whose accuracy is stored as "
                              "eval_accuracy (0: none).")
    eval_inner_steps: Optional[int] = setting(5, "Inner steps before the eval tasks' accuracy "
                                              "is read (5: the paper's figure 4; none or -1: "
                                              "the run's inner_steps_eval).")
    probe_task: int = setting(0, "Task whose classes form the probe set.")
    probe_index: int = setting(1, "Example of each class used as probe image (1: the second "
                               "drawing).")
    layers: Sequence[str] = setting(LAYERS, "Module paths to record.")
    reduce: str = setting(PAPER_REDUCE, REDUCE_HELP)
    dtype: str = setting("float32", "Storage dtype of recorded activations.")
    compress: bool = setting(False, "zlib-compress the netCDF files.")
    device: str = setting("cpu", "Device.")
    data: Optional[str] = setting(None, "Data folder; none: the run's, else $REPSCOPE_DATA.")
    progress: bool = setting(True, "Show a progress bar.")
    threads: int = setting(1, THREADS_HELP)
    engine: Optional[str] = setting(None, "Inner-loop engine that adapts the tasks (none: the "
                                    "run's). Stored in each file; a folder holds one engine. "
                                    "In float32 the engines agree at inner step 0 and drift "
                                    "apart after it (rounding amplified by the inner steps); "
                                    "in float64 they agree to 1e-10.")

    def __post_init__(self):
        self.inner_steps = tuple(sorted({int(s) for s in self.inner_steps}))
        self.layers = tuple(self.layers)
        if not self.inner_steps or self.inner_steps[0] < 0:
            raise TrainingError(f"inner_steps (--inner-steps) must be non-negative integers, "
                                f"got {list(self.inner_steps)}")
        unknown = [name for name in self.layers if name not in LAYERS]
        if unknown or not self.layers:
            raise TrainingError(f"Unknown layers (--layers) {unknown or []}. Expected module "
                                f"paths among {list(LAYERS)}")
        check_int("tasks", self.tasks, 1)
        check_int("eval_tasks", self.eval_tasks, 0)
        if self.eval_inner_steps is not None:
            check_int("eval_inner_steps", self.eval_inner_steps, 0)
        check_int("probe_index", self.probe_index, 0)
        parse_reduce(self.reduce, self.layers)
        check_choice("dtype", self.dtype, DTYPES)
        check_device(self.device)
        self.threads = check_threads(self.threads)
        if self.engine is not None:
            check_choice("engine", self.engine, ENGINE_NAMES)
        if not 0 <= self.probe_task < self.tasks:
            raise TrainingError(f"probe_task must be one of the analysed tasks 0..{self.tasks - 1}, "
                                f"got {self.probe_task}")

    @property
    def max_inner_step(self) -> int:
        return max(self.inner_steps)


def select_checkpoints(spec: str, available: Sequence[int]) -> list[int]:
    """The checkpoint steps named by ``spec`` among ``available``.

    ``spec`` is ``all``, ``every:K`` (multiples of K), ``START:STOP:STEP`` (inclusive
    range), or a comma-separated list of steps. Steps that were not saved raise.

    Examples
    --------
    >>> avail = [0, 1, 2, 5, 100, 200, 300]
    >>> select_checkpoints("every:100", avail)
    [0, 100, 200, 300]
    >>> select_checkpoints("100:300:200", avail), select_checkpoints("5,0", avail)
    ([100, 300], [0, 5])
    >>> select_checkpoints("7", avail)
    Traceback (most recent call last):
    ...
    repscope.training.errors.TrainingError: Checkpoints [7] are not in the run; saved steps: [0, 1, 2, 5, 100, 200, 300]
    """
    available = sorted(available)
    text = str(spec).strip()
    try:
        if text == "all":
            return available
        if text.startswith("every:"):
            k = int(text.split(":", 1)[1])
            if k < 1:
                raise ValueError
            return [s for s in available if s % k == 0]
        if text.count(":") == 2:
            start, stop, step = (int(v) for v in text.split(":"))
            if step < 1:
                raise ValueError
            wanted = list(range(start, stop + 1, step))
        else:
            wanted = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise TrainingError(f"Cannot read checkpoints {spec!r}. Expected 'all', 'every:K', "
                            "'START:STOP:STEP' or a comma-separated list of steps") from None
    missing = [s for s in wanted if s not in available]
    if missing:
        raise TrainingError(f"Checkpoints {missing} are not in the run; saved steps: {available}")
    if not wanted:
        raise TrainingError(f"Checkpoints {spec!r} select nothing; saved steps: {available}")
    return wanted


def analysis_tasks(images, image_ids, n_way: int, n_tasks: int) -> list:
    """The fixed-order analysis tasks over held-out classes (see the module docstring).

    Examples
    --------
    >>> x = np.zeros((7, 4, 28, 28), np.float32)
    >>> ids = np.array([[f"c{c}/{e}" for e in range(4)] for c in range(7)])
    >>> [t.classes.tolist() for t in analysis_tasks(x, ids, n_way=3, n_tasks=3)]
    [[0, 1, 2], [3, 4, 5], [6, 0, 1]]
    """
    n_classes, n_examples = np.shape(images)[:2]
    if n_classes < n_way:
        raise TrainingError(f"{n_classes} held-out classes cannot make a {n_way}-way task")
    if n_examples < 2:
        raise TrainingError(f"Analysis tasks need >= 2 examples per class, got {n_examples}")
    tasks = []
    for t in range(n_tasks):
        classes = (t * n_way + np.arange(n_way)) % n_classes
        task = EpisodeSampler.fixed_task(images, classes, support_index=0,
                                         query_index=list(range(1, n_examples)), image_ids=image_ids)
        tasks.append(task)
    return tasks


def _probe_set(images, image_ids, task, index: int):
    n_examples = np.shape(images)[1]
    if not 0 <= index < n_examples:
        raise TrainingError(f"probe_index {index} is out of range for {n_examples} examples per class")
    x = torch.as_tensor(np.asarray(images)[task.classes, index])
    if x.ndim == 3:
        x = x[:, None]
    ids = [str(image_ids[c, index]) for c in task.classes] if image_ids is not None else \
        [f"class{c}/{index}" for c in task.classes]
    return x.float(), torch.arange(len(task.classes)), ids


def make_probe(model, rec: RecordConfig) -> Probe:
    """The :class:`repscope.probes.Probe` that ``rec`` asks for, on ``model``."""
    return Probe(model, layers=list(rec.layers), dtype=rec.dtype,
                 reduce=parse_reduce(rec.reduce, rec.layers))


def record_checkpoint(model, probe, config, rec: RecordConfig, tasks, probe_set, eval_episodes,
                      step: int, run_config: dict):
    """Record one checkpoint: every task, every requested inner step. Returns a Dataset.

    ``probe`` (from :func:`make_probe` on ``model``) is reused across checkpoints so
    that its buffers are recycled; the dataset it returns holds this checkpoint only.
    Tasks adapt with ``rec.engine`` (default ``config.engine``); the batched engine
    adapts them together and runs each task's probe forward pass through ``model``.
    """
    engine = engine_for(config, rec.engine)
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    px, py, pids = probe_set
    px = px.to(device, dtype)
    acc = np.full((1, len(tasks), len(rec.inner_steps)), np.nan)
    queries = [episode_tensors(task, device, dtype)[2:] for task in tasks]
    for t, k, net in engine.adapt_tasks(model, tasks, config, rec.max_inner_step):
        if k not in rec.inner_steps:
            continue
        qx, qy = queries[t]
        with torch.no_grad():
            if not torch.isfinite(net(px)).all():  # before the probe, which refuses them
                raise _NonFiniteOutputs(f"task {t}, inner step {k}: NaN or infinite outputs "
                                        "on the probe images")
            with probe.recording(checkpoint=step, task=t, inner_step=k, labels=py,
                                 image_ids=pids, role="probe", module=net):
                net(px)
            acc[0, t, rec.inner_steps.index(k)] = accuracy(net.logits(qx), qy).item()
    ds = probe.to_dataset(config=run_config, clear=True)
    # which held-out classes each task uses: analyses count only tasks with disjoint ones
    ds.attrs["task_classes"] = json.dumps([[int(c) for c in task.classes] for task in tasks])
    ds["accuracy"] = (("checkpoint", "task", "inner_step"), acc,
                      {"role": "metric", "long_name": "accuracy on the task's own query images"})
    if eval_episodes:
        k = config.inner_steps_eval if rec.eval_inner_steps is None else rec.eval_inner_steps
        final = evaluate_tasks(model, eval_episodes, config, k, engine=engine.name)[:, -1]
        ds = ds.assign_coords(eval_task=np.arange(len(final), dtype=np.int64))
        ds["eval_accuracy"] = (("checkpoint", "eval_task"), final[None],
                               {"role": "metric", "inner_steps": int(k),
                                "long_name": "accuracy of random held-out tasks"})
    return ds


def _layer_units(model, rec: RecordConfig, image_shape) -> int:
    """Values one probe image gives over the recorded layers, reduced as ``rec`` says."""
    reduce, units, hooks = parse_reduce(rec.reduce, rec.layers), {}, []
    for name in rec.layers:
        def hook(_, __, output, name=name):
            shape = tuple(output.shape[1:])
            units[name] = shape[0] if reduce[name] == "spatial_mean" else int(np.prod(shape))
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.zeros((2, *image_shape)))
    finally:
        for h in hooks:
            h.remove()
    return sum(units.values())


def check_memory(model, rec: RecordConfig, config, images, available: int | None = None) -> int:
    """Refuse a recording whose episodes and one checkpoint's activations exceed memory.

    The estimate counts the analysis tasks' images (support and query), the eval tasks'
    images, and one checkpoint's record (every
    task, inner step, probe image and recorded unit, held twice: the probe's buffers and
    the Dataset written). Returns the estimate in bytes.

    Examples
    --------
    >>> from repscope.training.config import get_preset
    >>> config = get_preset("quick", n_way=5)
    >>> images = np.zeros((20, 20, 28, 28), np.float32)
    >>> check_memory(build_model(config), RecordConfig(tasks=100000), config, images,
    ...              available=8 * 2**30)
    Traceback (most recent call last):
    ...
    repscope.training.errors.TrainingError: tasks (--tasks) 100000 needs about ... GB of memory ...
    """
    n_classes, n_examples = np.shape(images)[:2]
    pixels = int(np.prod(np.shape(images)[2:])) * 4  # float32
    n_way = min(config.n_way, n_classes)
    tasks = rec.tasks * n_way * n_examples * pixels
    evals = rec.eval_tasks * config.n_way * (config.k_shot + config.n_query_eval) * pixels
    image = tuple(np.shape(images)[2:]) if np.ndim(images) == 5 else (1, *np.shape(images)[2:])
    units = _layer_units(model, rec, image)
    record = 2 * rec.tasks * len(rec.inner_steps) * n_way * units * 4  # float16 is held as float32
    need = tasks + evals + record
    available = available_memory() if available is None else available
    if need > available:
        raise TrainingError(
            f"tasks (--tasks) {rec.tasks} needs about {need / 1e9:.1f} GB of memory "
            f"(analysis tasks {tasks / 1e9:.1f} GB, eval tasks {evals / 1e9:.1f} GB, one "
            f"checkpoint's record {record / 1e9:.1f} GB: {len(rec.inner_steps)} inner steps x "
            f"{n_way} probe images x {units} units per task), and {available / 1e9:.1f} GB "
            "are available. Record fewer --tasks, fewer --inner-steps or --layers, or reduce "
            "with --reduce spatial_mean")
    return need


def _check_same_settings(out: Path, step: int, run_config: dict) -> None:
    with xr.open_dataset(activation_file_path(out, step)) as existing:
        stored = json.loads(existing.attrs.get("config", "{}"))
    wanted = json.loads(json.dumps(run_config))
    if stored != wanted:
        old = stored.get("record", {})
        diff = [f"{k}: {old.get(k, '(not stored)')!r} in the folder, "
                f"{wanted['record'].get(k)!r} now"
                for k in sorted(set(old) | set(wanted["record"]))
                if old.get(k) != wanted["record"].get(k)]
        raise TrainingError(
            f"{str(out)!r} already holds recordings made with other settings "
            f"({'; '.join(diff) or 'run configuration differs'}); one folder holds one "
            "setting, so record into another --out, or delete it")


class _NonFiniteOutputs(TrainingError):
    """An adapted network's outputs on the probe images are not finite."""


def _refuse_non_finite(step: int, path, what: str) -> None:
    raise TrainingError(
        f"Checkpoint {step} ({str(path)!r}) cannot be recorded: {what}. The run diverged at or "
        f"after it; record the checkpoints before it (--checkpoints) and train again with a "
        "lower --meta-lr or --inner-lr (or --meta-clip)")


def _check_finite_weights(model, step: int, path) -> None:
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        _refuse_non_finite(step, path, f"its weights are not finite ({', '.join(bad)})")


def _check_finite_record(ds, step: int, path) -> None:
    """Refuse, before writing, a checkpoint whose outputs or accuracies are not finite."""
    bad = [name for name, v in ds.data_vars.items()
           if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v.values).all()]
    if bad:
        _refuse_non_finite(step, path, f"its network's outputs are not finite ({', '.join(bad)}: "
                                       "NaN or infinite values, no accuracy)")


def record_run(run_dir, rec: RecordConfig, out=None, log=print, group: Ranks | None = None) -> Path:
    """Record ``run_dir``'s checkpoints into ``out`` (default ``run_dir/activations``).

    Returns the activations folder. Checkpoints already recorded there are skipped.
    Under ``torchrun``, ``group`` (:func:`repscope.training.distributed.ranks`) deals the
    checkpoints to record out over the ranks; rank 0 alone logs and checks the folder.
    """
    group = group or Ranks()
    log = log if group.is_main else None
    run_dir = Path(run_dir)
    config, saved = load_run(run_dir)
    if not saved:
        raise TrainingError(f"Run {str(run_dir)!r} has no checkpoints yet (checkpoints/step_*.pt)")
    steps = select_checkpoints(rec.checkpoints, list(saved))
    out = Path(out) if out is not None else run_dir / "activations"
    if rec.data is not None:
        config = dataclasses.replace(config, data=rec.data)
    test = task_samplers(config)["test"]  # the run's held-out classes and test-task sampler
    images, image_ids = test.images, test.image_ids
    model = build_model(config)
    check_memory(model, rec, config, images)  # before the tasks are built or anything written
    with contextlib.ExitStack() as hold:
        done, error = set(), None
        if group.is_main:  # before any rank writes; every rank then uses rank 0's list
            try:  # one writer per activations folder, until every rank is done
                hold.enter_context(run_lock(out, "python -m repscope.training.record",
                                            TrainingError, log))
                done = _verified(out, log)
            except TrainingError as exc:
                if not group.distributed:
                    raise
                error = exc
        group.check(error)
        done = group.broadcast(done)
        return _record(run_dir, rec, out, log, group, config, saved, steps, done, test, model)


def _verified(out: Path, log) -> set:
    """Steps whose records in ``out`` read back whole; stale temporaries removed."""
    for path in clean_stale_temporaries(out):
        if log:
            log(f"removed {str(path)!r}, a temporary file left by a killed recorder")
    done = set(existing_checkpoints(out))
    for step in sorted(done):
        try:
            verify_checkpoint(out, step)
        except ProbeError as exc:
            done.discard(step)
            if log:
                log(f"recording checkpoint {step} again: {exc}")
    return done


def _record(run_dir, rec, out, log, group, config, saved, steps, done, test, model) -> Path:
    todo = [s for s in steps if s not in done]
    if rec.max_inner_step > max(config.inner_steps_eval, 0) and log:
        log(f"note: recording up to inner step {rec.max_inner_step}, beyond the run's "
            f"{config.inner_steps_eval} evaluation steps")
    images, image_ids = test.images, test.image_ids
    tasks = analysis_tasks(images, image_ids, config.n_way, rec.tasks)
    probe_set = _probe_set(images, image_ids, tasks[rec.probe_task], rec.probe_index)
    eval_episodes = [test.episode(i) for i in range(rec.eval_tasks)]
    # What decides the values; not which checkpoints, nor how visibly they ran. The engine
    # and the device type change float32 values beyond rounding (the guide gives the size),
    # so they are stored, resolved, and a folder holds one of each.
    settings = {k: v for k, v in asdict(rec).items()
                if k not in ("checkpoints", "device", "progress", "threads", "engine")}
    settings["engine"] = engine_for(config, rec.engine).name
    settings["device"] = torch.device(rec.device).type
    run_config = {"kind": "maml", "run": config.to_dict(), "record": settings,
                  "probe_set": {"task": rec.probe_task, "index": rec.probe_index,
                                "image_ids": probe_set[2]}}
    if done:
        _check_same_settings(out, min(done), run_config)
    if log:
        log(f"recording {len(todo)} of {len(steps)} checkpoints ({len(steps) - len(todo)} already "
            f"in {out}); {rec.tasks} tasks x inner steps {list(rec.inner_steps)}, "
            f"{rec.eval_tasks} eval tasks")
    device = group.device(rec.device)
    if rec.threads:  # 0: torch's default
        torch.set_num_threads(rec.threads)
    model = model.to(device)
    probe = make_probe(model, rec)
    mine = group.shard(todo)
    bar = mine
    if rec.progress and group.is_main:
        from tqdm import tqdm
        bar = tqdm(mine, desc="record", unit="ckpt", file=sys.stderr)
    for step in bar:
        load_meta_parameters(model, saved[step])
        _check_finite_weights(model, step, saved[step])
        try:
            ds = record_checkpoint(model, probe, config, rec, tasks, probe_set, eval_episodes,
                                   step, run_config)
        except _NonFiniteOutputs as err:
            _refuse_non_finite(step, saved[step], f"its network's outputs are not finite ({err})")
        _check_finite_record(ds, step, saved[step])
        # overwrite: a file of this step is there only when it failed verification
        write_checkpoint(out, ds, compress=rec.compress, overwrite=True)
        if bar is not mine:
            bar.set_postfix(step=step, acc=f"{np.nanmean(ds['accuracy'].values[..., -1]):.2f}")
    group.barrier()  # the folder is whole when any rank returns
    return out


def _eval_inner_steps(text: str):
    return None if text.strip().lower() in ("none", "-1") else int(text)


def _parser() -> argparse.ArgumentParser:
    groups = {
        "run and data": [
            arg("--run", required=True, metavar="DIR",
                help="Run folder written by python -m repscope.training.maml."),
            arg("--out", default=None, metavar="DIR",
                help="Activations folder (default: RUN/activations)."),
            "checkpoints", "data"],
        "analysis tasks": ["tasks", "probe_task", "probe_index", "eval_tasks"],
        "inner loop": ["inner_steps", "eval_inner_steps", "engine"],
        "recording": ["layers", "reduce", "dtype", "compress"],
        "runtime": ["device", "threads", "progress"],
    }
    return build_parser(
        "python -m repscope.training.record",
        "Probe a MAML run's checkpoints: adapt the meta-parameters on analysis tasks and "
        "record the probe set's layer outputs after chosen inner steps.",
        RecordConfig, groups,
        choices={"layers": LAYERS, "dtype": DTYPES, "device": DEVICES, "engine": ENGINE_NAMES},
        arguments={"reduce": reduce_argument(LAYERS), "data": {"metavar": "DIR"},
                   "eval_inner_steps": {"type": _eval_inner_steps, "metavar": "N"}},
        usage="%(prog)s --run DIR [OPTION ...]")


def main(argv=None) -> int:
    """Command line entry point."""
    args = _parser().parse_args(argv)
    group = None
    try:
        rec = RecordConfig(**given(args, RecordConfig))
        if args.show_config:
            return print_config(rec)
        group = ranks(rec.device)  # torchrun: one process per rank, else one process
        out = record_run(args.run, rec, args.out, log=lambda m: print(m, file=sys.stderr),
                         group=group)
    except (TrainingError, ProbeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if group is not None:
            leave(group)
    if group.is_main:
        print(wrote("activation records", out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
