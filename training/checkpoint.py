"""Checkpoints of a MAML run: atomic writes, safe loads, exact resume state.

A checkpoint is a dict saved with :func:`torch.save` and read back with
``torch.load(..., weights_only=True)``:

``format`` (``"repscope.maml.checkpoint"``), ``format_version`` (1), ``step`` (meta-updates
done), ``config`` (the resolved :class:`~repscope.training.config.MAMLConfig` as a dict),
``model`` (the meta-parameters' ``state_dict``), ``optimizer`` (the meta-optimiser's
``state_dict``), ``rng`` (torch, CUDA, Python and NumPy generator states) and
``versions``.

Files are written to a temporary name in the same folder, flushed to disk, and renamed
with :func:`os.replace`, so a crash never leaves a half-written checkpoint under the
final name. Run folder layout: ``config.json``, ``checkpoints/step_XXXXXXXX.pt`` (the
schedule), ``state.pt`` (the latest resumable state, refreshed every
``config.state_every`` steps), ``metrics.jsonl``, ``validation.jsonl``,
``evaluation.json``.
"""
import json
import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from .config import MAMLConfig
from .errors import TrainingError

__all__ = ["FORMAT", "checkpoint_path", "save_checkpoint", "load_checkpoint", "load_run",
           "load_meta_parameters", "rng_state", "set_rng_state", "latest_resumable",
           "atomic_write_text"]

FORMAT = "repscope.maml.checkpoint"
FORMAT_VERSION = 1
_STEP_FILE = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_path(run_dir, step: int) -> Path:
    """``run_dir/checkpoints/step_XXXXXXXX.pt``.

    Examples
    --------
    >>> checkpoint_path("runs/quick", 250).as_posix()
    'runs/quick/checkpoints/step_00000250.pt'
    """
    return Path(run_dir) / "checkpoints" / f"step_{int(step):08d}.pt"


def _fsync_replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and :func:`os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        _fsync_replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def rng_state() -> dict:
    """Every generator state a run depends on, as weights-only-loadable objects."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": {"key": np_state[0], "pos": int(np_state[2]),
                  "state": torch.from_numpy(np_state[1].astype(np.int64)),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    n = state["numpy"]
    np.random.set_state((n["key"], n["state"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "higher", "repscope"):
        try:
            out[pkg] = str(version(pkg))
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def save_checkpoint(path, *, step: int, config: MAMLConfig, model, optimizer) -> Path:
    """Atomically save meta-parameters, optimiser and RNG state at ``step``.

    Examples
    --------
    >>> import tempfile, torch
    >>> from repscope.training.config import get_preset
    >>> from repscope.training.model import build_model
    >>> cfg = get_preset("quick")
    >>> net = build_model(cfg)
    >>> opt = torch.optim.Adam(net.parameters())
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = save_checkpoint(checkpoint_path(d, 0), step=0, config=cfg, model=net, optimizer=opt)
    ...     load_checkpoint(p)["step"]
    0
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "step": int(step),
        "config": config.to_dict(), "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "rng": rng_state(),
        "versions": _versions(),
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        _fsync_replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load and validate a checkpoint (``weights_only=True``).

    Raises
    ------
    TrainingError
        If the file is missing, truncated, not a torch file, or not a repscope MAML
        checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"Checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle of foreign objects, ...
        raise TrainingError(
            f"Cannot read checkpoint {str(path)!r} ({type(exc).__name__}: {exc}). The file is "
            "truncated, corrupt, or holds objects other than tensors and plain containers "
            "(it is loaded with weights_only=True).") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise TrainingError(f"{str(path)!r} is not a repscope MAML checkpoint: expected a dict "
                            f"with format={FORMAT!r}, found {found}")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise TrainingError(f"Checkpoint {str(path)!r} has format_version "
                            f"{ckpt.get('format_version')!r}; this code reads {FORMAT_VERSION}")
    missing = [k for k in ("step", "config", "model", "optimizer", "rng") if k not in ckpt]
    if missing:
        raise TrainingError(f"Checkpoint {str(path)!r} lacks the entries {missing}")
    return ckpt


def load_run(run_dir):
    """The configuration and scheduled checkpoints of a run folder.

    Returns
    -------
    config : MAMLConfig
        From ``run_dir/config.json``.
    checkpoints : dict
        ``{step: path}`` of ``run_dir/checkpoints/step_XXXXXXXX.pt``, sorted by step.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     load_run(d)
    Traceback (most recent call last):
    ...
    repscope.training.errors.TrainingError: No run at '...': config.json is missing ...
    """
    run_dir = Path(run_dir)
    cfg_file = run_dir / "config.json"
    if not cfg_file.is_file():
        raise TrainingError(f"No run at {str(run_dir)!r}: config.json is missing (expected a "
                            "folder written by python -m repscope.training.maml)")
    try:
        config = MAMLConfig.from_dict(json.loads(cfg_file.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise TrainingError(f"Cannot read {str(cfg_file)!r}: {exc}") from exc
    found = {}
    folder = run_dir / "checkpoints"
    if folder.is_dir():
        for f in folder.iterdir():
            m = _STEP_FILE.match(f.name)
            if m:
                found[int(m.group(1))] = f
    return config, dict(sorted(found.items()))


def load_meta_parameters(model, path):
    """Load a checkpoint's meta-parameters into ``model`` (in place) and return it.

    Raises :class:`TrainingError` when the checkpoint is unreadable or its parameters
    do not fit ``model`` (names and shapes are compared).
    """
    ckpt = load_checkpoint(path, map_location=next(model.parameters()).device)
    state = ckpt["model"]
    own = model.state_dict()
    bad = sorted(set(own) ^ set(state)) + sorted(
        k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if bad:
        raise TrainingError(f"Checkpoint {str(path)!r} does not fit the model: mismatched "
                            f"parameters {bad[:10]}")
    model.load_state_dict(state)
    return model


def latest_resumable(run_dir):
    """``(step, path)`` of the newest full state in ``run_dir`` (``state.pt`` or a
    scheduled checkpoint), or ``None`` when there is none."""
    run_dir = Path(run_dir)
    best = None
    _, ckpts = load_run(run_dir)
    candidates = list(ckpts.items())
    state = run_dir / "state.pt"
    if state.is_file():
        candidates.append((load_checkpoint(state)["step"], state))
    for step, path in candidates:
        if best is None or step > best[0]:
            best = (step, path)
    return best
