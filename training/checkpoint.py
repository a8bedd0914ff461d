"""Checkpoints of a MAML run (``.pt`` training states): atomic writes, safe loads, exact resume.

A checkpoint here is a training state: a dict saved with :func:`torch.save` and read back
with ``torch.load(..., weights_only=True)``:

``format`` (``"repscope.maml.checkpoint"``), ``format_version`` (1), ``step`` (meta-updates
done), ``config`` (the resolved :class:`~repscope.training.config.MAMLConfig` as a dict),
``model`` (the meta-parameters' ``state_dict``), ``optimizer`` (the meta-optimiser's
``state_dict``), ``rng`` (torch, CUDA, Python and NumPy generator states, all seeded from
the run's seed, so two identical runs write byte-identical files),
``versions`` and ``content_sha256``: a SHA-256 over every other entry (tensor bytes with
their dtype and shape, and the plain values), verified on every load, so a flipped byte
in the weights is an error that names the file instead of a resumed run on damaged
weights. Checkpoints written before the hash existed have no ``content_sha256`` and
load without the check.

Files are written through :func:`repscope.probes.files.atomic_path` (a temporary
``.NAME.tmp-PID`` in the same folder, flushed to disk, renamed), so a crash never leaves
a half-written state under the final name; temporaries of killed processes are removed
by :func:`clean_run_folder` when the run is next trained. The activations recorded from
these states are a different kind of file (``activations/checkpoint_XXXXXXXX.nc``,
:mod:`repscope.probes.store`). Run folder layout: ``config.json``,
``checkpoints/step_XXXXXXXX.pt`` (the schedule, :func:`training_state_path`),
``state.pt`` (the latest resumable state, refreshed every ``config.state_every`` steps),
``metrics.jsonl``, ``validation.jsonl``, ``evaluation.json``.
"""
import hashlib
import json
import random
import re
from pathlib import Path

import numpy as np
import torch

from ..probes.files import atomic_path, clean_stale_temporaries

from .config import MAMLConfig
from .errors import TrainingError

__all__ = ["FORMAT", "training_state_path", "save_checkpoint", "load_checkpoint", "load_run",
           "load_meta_parameters", "seed_generators", "rng_state", "set_rng_state",
           "latest_resumable", "state_hash", "clean_run_folder"]

FORMAT = "repscope.maml.checkpoint"
FORMAT_VERSION = 1
_STEP_FILE = re.compile(r"^step_(\d{8})\.pt$")
_HASH = "content_sha256"
_FIX = ("Delete it (training resumes from an older state and writes it again; recording "
        "skips it), or restore it from a backup")


def training_state_path(run_dir, step: int) -> Path:
    """The scheduled training state of ``step``: ``run_dir/checkpoints/step_XXXXXXXX.pt``.

    Examples
    --------
    >>> training_state_path("runs/quick", 250).as_posix()
    'runs/quick/checkpoints/step_00000250.pt'
    """
    return Path(run_dir) / "checkpoints" / f"step_{int(step):08d}.pt"


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            h.update(repr(key).encode())
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _feed(h, item)
    else:
        h.update(f"V{obj!r}".encode())


def state_hash(payload: dict) -> str:
    """SHA-256 of a training state's entries other than ``content_sha256`` (hex).

    Tensors count with their dtype, shape and bytes; containers and plain values with
    their ``repr``; dict entries in key order, so the hash does not depend on insertion
    order.

    Examples
    --------
    >>> import torch
    >>> a = state_hash({"step": 1, "w": torch.zeros(2)})
    >>> a == state_hash({"w": torch.zeros(2), "step": 1}), len(a)
    (True, 64)
    >>> a == state_hash({"step": 1, "w": torch.tensor([0.0, 1e-45])})
    False
    """
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != _HASH})
    return h.hexdigest()


def clean_run_folder(run_dir) -> list:
    """Remove temporary files that killed processes left in a run folder; return them.

    A write is a temporary ``.NAME.tmp-PID`` renamed onto ``NAME``; a SIGKILL between the
    two leaves the temporary. Those of processes that no longer run are deleted (in the
    run folder and ``checkpoints/``); a live writer's are left alone.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / ".state.pt.tmp-999999999").write_bytes(b"half")
    >>> [p.name for p in clean_run_folder(d)], sorted(d.iterdir())
    (['.state.pt.tmp-999999999'], [])
    """
    run_dir = Path(run_dir)
    return clean_stale_temporaries(run_dir) + clean_stale_temporaries(run_dir / "checkpoints")


def seed_generators(seed: int) -> None:
    """Seed every generator :func:`rng_state` stores: torch (and CUDA), Python's and NumPy's
    global ones. Training does not draw from the last two, but they are stored for code that
    does, and seeded so that two identical runs write byte-identical checkpoints.

    Examples
    --------
    >>> seed_generators(3); a = (random.random(), np.random.random(), torch.rand(1).item())
    >>> seed_generators(3); a == (random.random(), np.random.random(), torch.rand(1).item())
    True
    """
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


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
    ...     p = save_checkpoint(training_state_path(d, 0), step=0, config=cfg, model=net, optimizer=opt)
    ...     load_checkpoint(p)["step"]
    0
    """
    path = Path(path)
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "step": int(step),
        "config": config.to_dict(), "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "rng": rng_state(),
        "versions": _versions(),
    }
    payload[_HASH] = state_hash(payload)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load and validate a checkpoint (``weights_only=True``).

    Raises
    ------
    TrainingError
        If the file is missing, truncated, not a torch file, not a repscope MAML
        checkpoint, or its content differs from the hash recorded when it was written.
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
            f"(it is loaded with weights_only=True). {_FIX}") from exc
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
    if _HASH in ckpt and not (isinstance(ckpt[_HASH], str) and re.fullmatch(r"[0-9a-f]{64}", ckpt[_HASH])):
        raise TrainingError(
            f"Checkpoint {str(path)!r} is damaged or edited: its {_HASH} entry is "
            f"{str(ckpt[_HASH])[:80]!r}, not a SHA-256 (64 hexadecimal digits). {_FIX}")
    if _HASH in ckpt and state_hash(ckpt) != ckpt[_HASH]:
        raise TrainingError(
            f"Checkpoint {str(path)!r} is corrupt: its content does not match the SHA-256 "
            f"recorded when it was written ({ckpt[_HASH][:16]}...), so some bytes changed on "
            f"disk. {_FIX}")
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
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise TrainingError(
            f"Cannot read {str(cfg_file)!r} ({exc}): it is truncated or corrupt. Restore it "
            "from a backup, or write it again from the configuration every checkpoint "
            "stores: json.dumps(repscope.training.load_checkpoint(path)['config'])") from exc
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


def latest_resumable(run_dir, log=None):
    """``(step, path)`` of the state to resume ``run_dir`` from, or ``None`` for step 0.

    Every scheduled checkpoint and ``state.pt`` is read whole (content hash included).
    The newest readable state before the first unreadable or corrupt file is chosen, and
    each file passed over is named through ``log``: every episode is a pure function of
    (seed, step), so training on from there writes the damaged files again, exactly.
    """
    run_dir = Path(run_dir)
    _, ckpts = load_run(run_dir)
    candidates = dict(ckpts)
    state = run_dir / "state.pt"
    bad_state = None
    if state.is_file():
        try:
            candidates.setdefault(int(load_checkpoint(state)["step"]), state)
        except TrainingError as exc:
            bad_state = exc
    good = None
    for step, path in sorted(candidates.items()):
        try:
            load_checkpoint(path)
        except TrainingError as exc:
            if log:
                log(f"passing over {path.name} and every later state: {exc}")
            break
        good = (step, path)
    if bad_state is not None and log:
        log(f"passing over state.pt: {bad_state}")
    return good
