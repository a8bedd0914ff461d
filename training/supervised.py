"""The supervised MNIST control of the paper's Figure 2: ``python -m repscope.training.supervised``.

The conv4 network of Finn et al. (Omniglot variant: 28x28 input, 64 filters, stride 2,
batch norm on batch statistics, spatial mean) with a 10-way head is trained from random
weights with Adam (lr 1e-4, batch 100, 200 steps, as the paper), and the first 100 MNIST
test images are recorded with :class:`repscope.probes.Probe` at step 0 and every 5 steps. The
record has the layout of a MAML recording (:ref:`data-format`) with
``checkpoint`` = training step, one task (0) and ``inner_step`` 0, so the same analyses
apply.

Data: with the MNIST training set (in the data folder or downloadable), the network
trains on it and accuracy is reported on the 10,000 test images. With only the test set
(as in a data folder without the training files, or ``--mnist offline``), it trains on test images ``[100:]``, probes
on ``[0:100]``, reports accuracy on those 100 held-out probe images, and says so in its
output and in every file's metadata.

Outputs in ``--out``: ``config.json``, ``metrics.jsonl`` (loss per step, accuracy at
every recording), ``summary.json`` (final accuracy, data mode), and ``activations/`` (one
netCDF file per recorded step, opened with :func:`repscope.probes.open_run`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..probes import Probe, ProbeError, existing_checkpoints, write_checkpoint
from ..probes.store import verify_checkpoint

from ..probes.files import atomic_write_text, clean_stale_temporaries, remove_own, run_lock
from .data.mnist import load_mnist, mnist_offline_split
from .data.paths import DATA_ENV
from .errors import DataError, TrainingError
from .model import Conv4
from .cli import arg, build_parser, given, print_config, wrote
from .options import (DEVICES, THREADS_HELP, check_choice, check_device, check_int,
                      check_positive, check_threads)
from .reduce_option import PAPER_REDUCE, REDUCE_HELP, parse_reduce, reduce_argument

__all__ = ["SupervisedConfig", "load_data", "train_and_record", "run_supervised", "main"]

MNIST_MODES = ("auto", "full", "offline")
DTYPES = ("float32", "float16")
#: Settings that change how a run executes, not its results.
RUNTIME_FIELDS = ("device", "progress", "threads", "data")
LAYERS = ("conv1", "conv2", "conv3", "conv4", "head")


def _f(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class SupervisedConfig:
    """Settings of the supervised control (defaults: the paper's).

    Examples
    --------
    >>> SupervisedConfig().recording_steps()[:4]
    [0, 5, 10, 15]
    >>> SupervisedConfig(steps=12, record_every=5).recording_steps()
    [0, 5, 10, 12]
    """

    steps: int = _f(200, "Training steps (Adam updates).")
    batch_size: int = _f(100, "Training images per step.")
    lr: float = _f(1e-4, "Adam learning rate.")
    record_every: int = _f(5, "Record the probe images every this many steps (and at 0 and the last step).")
    n_probe: int = _f(100, "Probe images: the first n MNIST test images.")
    seed: int = _f(0, "Seed of the initial weights and the batch order.")
    mnist: str = _f("auto", "Training data: 'full' (the 60,000 training images, downloaded if "
                    "missing), 'offline' (train on test images [n_probe:]), or 'auto' (full "
                    "when the training files are in the data folder or, without a local data "
                    "folder, downloadable; else offline).")
    data: Optional[str] = _f(None, f"Data folder holding mnist/; none: ${DATA_ENV}, else the "
                             "download cache.")
    reduce: str = _f(PAPER_REDUCE, REDUCE_HELP)
    dtype: str = _f("float32", "Storage dtype of recorded activations.")
    device: str = _f("cpu", "Device.")
    threads: int = _f(1, THREADS_HELP)
    progress: bool = _f(True, "Show a progress bar.")

    def __post_init__(self):
        check_choice("mnist", self.mnist, MNIST_MODES)
        for name in ("steps", "batch_size", "record_every", "n_probe"):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, 0)
        check_positive("lr", self.lr)
        parse_reduce(self.reduce, LAYERS)
        check_choice("dtype", self.dtype, DTYPES)
        check_device(self.device)
        self.threads = check_threads(self.threads)

    def recording_steps(self) -> list[int]:
        """Training steps at which the probe images are recorded."""
        return sorted(set(range(0, self.steps + 1, self.record_every)) | {self.steps})


def _results_fields(config: SupervisedConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in RUNTIME_FIELDS}


def load_data(config: SupervisedConfig) -> dict:
    """Training images, probe images and evaluation images for ``config``.

    Returns
    -------
    dict
        ``train``, ``probe``, ``eval``: ``(x, y)`` with x float32 ``(n, 1, 28, 28)`` in
        [0, 1] and y int64; ``meta``: a JSON-ready description of where each came from.
    """
    def as_float(x):
        return (x.astype(np.float32) / 255.0)[:, None]

    mode = config.mnist
    local_folder = config.data is not None or bool(os.environ.get(DATA_ENV))
    full = None
    if mode in ("auto", "full"):
        try:
            full = load_mnist(config.data, "train", download=(mode == "full" or not local_folder))
        except DataError:
            if mode == "full":
                raise
    if full is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # announced by main() and stored in meta
            split = mnist_offline_split(config.data, n_probe=config.n_probe)
        probe = split["probe"]
        data = {"train": split["train"], "probe": probe, "eval": probe,
                "meta": {**split["meta"], "eval": split["meta"]["probe"]}}
    else:
        test = load_mnist(config.data, "test", download=mode == "full" or not local_folder)
        probe = (test[0][:config.n_probe], test[1][:config.n_probe])
        data = {"train": full, "probe": probe, "eval": test,
                "meta": {"mode": "full", "train": "train[0:60000]",
                         "probe": f"t10k[0:{config.n_probe}]", "eval": "t10k[0:10000]",
                         "note": ""}}
    for key in ("train", "probe", "eval"):
        data[key] = (torch.from_numpy(as_float(data[key][0])), torch.from_numpy(data[key][1]))
    data["probe_ids"] = [f"t10k/{i:05d}" for i in range(len(data["probe"][1]))]
    return data


def _accuracy(model, x, y, batch: int = 1000) -> float:
    # Batch statistics in every forward, as in training; evaluate in large batches.
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(x)


def _diverged(step: int, what: str, out: Path):
    raise TrainingError(
        f"Training diverged at step {step}: {what}. The run stops here, before writing "
        f"anything of step {step}; the records of earlier steps stay in "
        f"{str(out / 'activations')!r}. Lower --lr and start again with --overwrite")


def train_and_record(config: SupervisedConfig, out: Path, data: dict, log=None) -> dict:
    """Train the network, recording the probe images into ``out / "activations"``.

    Recorded steps already in ``out / "activations"`` are not written again (their
    files stay as they are); training itself is deterministic given ``config.seed``.

    Returns
    -------
    dict
        ``final_accuracy`` (on the evaluation images), ``data`` (the data description),
        and ``accuracy_by_step`` on the probe images.
    """
    device = torch.device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    model = Conv4(n_way=10).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    train_x, train_y = data["train"]
    probe_x, probe_y = (t.to(device) for t in data["probe"])
    rng = np.random.default_rng(config.seed)
    order, cursor = rng.permutation(len(train_x)), 0
    probe = Probe(model, layers=list(LAYERS), reduce=parse_reduce(config.reduce, LAYERS),
                  dtype=config.dtype)
    done = set(existing_checkpoints(out / "activations"))
    for step in sorted(done):
        try:
            verify_checkpoint(out / "activations", step)
        except ProbeError as exc:
            done.discard(step)
            if log:
                log({"step": step, "recorded_again": str(exc)})
    record_at = config.recording_steps()
    run_config = {"kind": "supervised", **_results_fields(config), "data_meta": data["meta"]}
    accuracy_by_step = {}
    steps = range(config.steps + 1)
    if config.progress:
        from tqdm import tqdm
        steps = tqdm(steps, desc="supervised MNIST", unit="step", file=sys.stderr)
    for step in steps:
        if step in record_at:
            with torch.no_grad():
                logits = model(probe_x)
            if not torch.isfinite(logits).all():  # before the probe, which refuses them
                _diverged(step, "the network's outputs on the probe images are not finite", out)
            if step not in done:
                with torch.no_grad(), probe.recording(checkpoint=step, labels=probe_y,
                                                      image_ids=data["probe_ids"], role="probe"):
                    model(probe_x)
            acc = (logits.argmax(1) == probe_y).double().mean().item()
            accuracy_by_step[step] = acc
            if step not in done:
                ds = probe.to_dataset(config=run_config, clear=True)
                ds["accuracy"] = (("checkpoint", "task", "inner_step"), np.full((1, 1, 1), acc),
                                  {"role": "metric", "long_name": "accuracy on the probe images"})
                ds.attrs["data_note"] = data["meta"].get("note", "")
                write_checkpoint(out / "activations", ds, overwrite=True)  # only a corrupt one
            if log:
                log({"step": step, "probe_accuracy": acc})
        if step == config.steps:
            break
        if cursor + config.batch_size > len(order):
            order, cursor = rng.permutation(len(train_x)), 0
        idx = torch.from_numpy(order[cursor:cursor + config.batch_size])
        cursor += config.batch_size
        x, y = train_x[idx].to(device), train_y[idx].to(device)
        loss = F.cross_entropy(model(x), y)
        if not math.isfinite(loss.item()):
            _diverged(step + 1, f"the loss is {loss.item()}", out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log:
            log({"step": step + 1, "loss": loss.item()})
        if config.progress:
            steps.set_postfix(loss=f"{loss.item():.3f}")
    eval_x, eval_y = (t.to(device) for t in data["eval"])
    return {"final_accuracy": _accuracy(model, eval_x, eval_y), "data": data["meta"],
            "accuracy_by_step": accuracy_by_step}


#: What a run folder holds that this command wrote (subfolder -> names, a regular
#: expression): all that --overwrite removes.
_ARTEFACTS = {"": r"config\.json|metrics\.jsonl|summary\.json",
              "activations": r"checkpoint_-?\d+\.nc"}


def _stored_fields(cfg_file: Path) -> dict:
    """The result-deciding settings of a stored supervised run; refuses another file."""
    try:
        stored = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as exc:
        stored = exc
    names = {f.name for f in dataclasses.fields(SupervisedConfig)}
    if not isinstance(stored, dict) or not set(stored) <= names:
        raise TrainingError(
            f"{str(cfg_file)!r} is not the configuration of a run of python -m "
            "repscope.training.supervised, so the folder holds someone else's files. Nothing "
            "was changed; choose another --out, or move them away yourself")
    return {k: v for k, v in stored.items() if k not in RUNTIME_FIELDS}


def check_batch_size(config: SupervisedConfig, n_train: int) -> None:
    """Refuse a batch larger than the training images (it would silently be all of them).

    Examples
    --------
    >>> check_batch_size(SupervisedConfig(batch_size=100000), 9900)
    Traceback (most recent call last):
    ...
    repscope.training.errors.TrainingError: batch_size (--batch-size) 100000 is larger than the 9900 training images; choose at most 9900
    """
    if config.batch_size > n_train:
        raise TrainingError(f"batch_size (--batch-size) {config.batch_size} is larger than the "
                            f"{n_train} training images; choose at most {n_train}")


def run_supervised(config: SupervisedConfig, out, overwrite: bool = False, log=None) -> dict:
    """Train and record into the run folder ``out``; return the summary (also written).

    Every check comes before anything is written: the data, the batch size, one writer
    per folder (:func:`repscope.probes.files.run_lock`), a stored run's configuration.
    A folder holding a run of the same configuration goes on from its recorded steps;
    ``overwrite`` removes the files an earlier run wrote (and nothing else) first.
    ``log`` receives one-line messages (default: none).

    Examples
    --------
    >>> import tempfile
    >>> config = SupervisedConfig(steps=1, record_every=1, mnist="offline", data=str(DATA),
    ...                           progress=False)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     sorted(run_supervised(config, Path(d) / "mnist")["accuracy_by_step"])
    [0, 1]
    """
    out = Path(out)
    log = log or (lambda _: None)
    data = load_data(config)  # data errors come before --overwrite removes anything
    check_batch_size(config, len(data["train"][1]))
    with run_lock(out, "python -m repscope.training.supervised", TrainingError, log):
        cfg_file = out / "config.json"
        for path in clean_stale_temporaries(out) + clean_stale_temporaries(out / "activations"):
            log(f"removed {str(path)!r}, a temporary file left by a killed process")
        if cfg_file.exists():
            stored = _stored_fields(cfg_file)
            if overwrite:
                remove_own(out, _ARTEFACTS, TrainingError)  # all checked, then removed
            elif stored != _results_fields(config):
                raise TrainingError(f"{str(out)!r} holds a run with another configuration; "
                                    "choose another --out or pass --overwrite.")
        atomic_write_text(cfg_file, json.dumps(dataclasses.asdict(config), indent=2))
        if data["meta"]["mode"] != "full":
            log(data["meta"]["note"])
        lines = []
        summary = train_and_record(config, out, data, log=lambda rec: lines.append(json.dumps(rec)))
        atomic_write_text(out / "metrics.jsonl", "\n".join(lines) + "\n")
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def _parser() -> argparse.ArgumentParser:
    groups = {
        "data": ["mnist", "data", "n_probe"],
        "training": ["steps", "batch_size", "lr", "seed"],
        "recording": ["record_every", "reduce", "dtype"],
        "output": [arg("--out", required=True, metavar="DIR", help="Run folder to write."),
                   arg("--overwrite", action="store_true",
                       help="Replace an existing run folder's records instead of refusing.")],
        "runtime": ["device", "threads", "progress"],
    }
    return build_parser(
        "python -m repscope.training.supervised",
        "Train the conv4 network on MNIST from random weights and record the first test "
        "images every few steps (the paper's Figure 2 control).",
        SupervisedConfig, groups, choices={"mnist": MNIST_MODES, "dtype": DTYPES,
                                           "device": DEVICES},
        arguments={"reduce": reduce_argument(LAYERS), "data": {"metavar": "DIR"}},
        usage="%(prog)s --out DIR [OPTION ...]")


def main(argv=None) -> int:
    """Command line entry: ``python -m repscope.training.supervised --out runs/mnist``."""
    args = _parser().parse_args(argv)
    try:
        config = SupervisedConfig(**given(args, SupervisedConfig))
        if args.show_config:
            return print_config(config)
        out = Path(args.out)
        summary = run_supervised(config, out, args.overwrite,
                                 log=lambda line: print(line, file=sys.stderr))
    except (TrainingError, ProbeError) as exc:  # ProbeError: writing a record failed
        print(f"error: {exc}", file=sys.stderr)
        return 2
    where = f"the {config.n_probe} held-out probe images" if summary["data"]["mode"] != "full" else "the 10,000 test images"
    print(f"final accuracy {100 * summary['final_accuracy']:.1f}% on {where} (chance 10%)")
    print(wrote("run folder", out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
