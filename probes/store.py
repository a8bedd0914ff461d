"""netCDF storage of activation records: one activation file per checkpoint in a folder.

A run's activations folder (``runs/NAME/activations``) holds ``checkpoint_XXXXXXXX.nc``
activation files, one per recorded training step (:func:`activation_file_path`), so a
recorder grows the run checkpoint by checkpoint while holding one checkpoint's
activations at a time. (The training states those steps were recorded from are the
``.pt`` files of :mod:`repscope.training.checkpoint`.) Every file is written through
:func:`repscope.probes.files.atomic_path`: a crash leaves either the old file or the new
one, never half a file. :func:`open_run` reads the folder back as one Dataset, validated
against the schema.

netCDF has no half-precision type: float16 layers are written as float32 (exact) with
the attribute ``repscope_dtype = "float16"`` and turned back into float16 on reading.

Every file carries the dataset attribute ``content_sha256``: a SHA-256 of its variables
and coordinates as stored (see :func:`record_hash`), checked whenever the file is read,
so a byte changed on disk is an error that names the file, never a silently different
number. Files written before the hash existed (no such attribute) are read without the
check. The attribute describes the file, so :func:`open_run` drops it.

A SIGKILL between writing a temporary ``.NAME.tmp-PID`` and renaming it leaves the
temporary behind; :func:`repscope.probes.files.clean_stale_temporaries` removes those of
processes that no longer run (:func:`open_run` does so and warns).
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import xarray as xr

from .errors import ProbeError
from .files import atomic_write, clean_stale_temporaries, environment_message
from .schema import validate

_PATTERN = re.compile(r"^checkpoint_(-?\d+)\.nc$")
_DTYPE_ATTR = "repscope_dtype"
_HASH_ATTR = "content_sha256"
_FIX = ("Delete it and record that checkpoint again (python -m repscope.training.record "
        "re-records missing files), or restore it from a backup")
PathLike = Union[str, os.PathLike]


def remove_recordings(folder: PathLike) -> list[Path]:
    """Delete the checkpoint files (and stale temporaries) of an activations folder.

    Only ``checkpoint_XXXXXXXX.nc`` files and temporaries of dead writers are removed;
    the folder itself goes only when nothing else is left in it. Used when a run is
    overwritten, so no recording of the old run stays beside the new one.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()) / "activations"
    >>> d.mkdir()
    >>> _ = (d / "checkpoint_00000000.nc").write_bytes(b"x")
    >>> _ = (d / "notes.txt").write_text("mine")
    >>> [p.name for p in remove_recordings(d)], sorted(p.name for p in d.iterdir())
    (['checkpoint_00000000.nc'], ['notes.txt'])
    """
    folder = Path(folder)
    removed = clean_stale_temporaries(folder)
    for step in existing_checkpoints(folder):
        path = activation_file_path(folder, step)
        path.unlink(missing_ok=True)
        removed.append(path)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return removed


def record_hash(ds: xr.Dataset) -> str:
    """SHA-256 (hex) of an activation record's variables and coordinates, as stored in a file.

    Stored in each activation file as ``content_sha256`` and checked on reading. (The
    hash of a ``.pt`` training state is :func:`repscope.training.checkpoint.state_hash`.)

    Each variable counts with its name, dims, dtype, shape and bytes (text arrays by
    their strings, NaNs in one canonical form), in name order; attributes do not count.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> a = xr.Dataset({"v": ("x", np.array([1.0, np.nan]))}, coords={"x": ["p", "q"]})
    >>> len(record_hash(a)), record_hash(a) == record_hash(a.copy(deep=True))
    (64, True)
    >>> record_hash(a) == record_hash(a.assign(v=("x", np.array([1.0, 2.0]))))
    False
    """
    h = hashlib.sha256()
    for name in sorted(ds.variables, key=str):
        var = ds.variables[name]
        values = np.asarray(var.values)
        if values.dtype.kind in "OUS":
            kind, data = "str", "\x00".join(str(v) for v in values.ravel()).encode()
        else:
            if values.dtype.kind in "fc" and np.isnan(values).any():
                values = np.where(np.isnan(values), np.nan, values).astype(values.dtype)
            kind, data = values.dtype.str, np.ascontiguousarray(values).data
        h.update(f"{name}|{var.dims}|{kind}|{values.shape}|".encode())
        h.update(data)
    return h.hexdigest()


def activation_file_path(folder: PathLike, checkpoint: int) -> Path:
    """The activation file that holds ``checkpoint`` in an activations folder.

    (The ``.pt`` training state of a step is
    :func:`repscope.training.checkpoint.training_state_path`.)

    Examples
    --------
    >>> activation_file_path("runs/x/activations", 2000).name
    'checkpoint_00002000.nc'
    """
    return Path(folder) / f"checkpoint_{int(checkpoint):08d}.nc"


def existing_checkpoints(folder: PathLike) -> list[int]:
    """Checkpoints already stored in ``folder`` (sorted), so a recorder can skip them.

    Only complete files are written under a final name; a file damaged later on disk
    is still listed (:func:`verify_checkpoint` reads one whole). A missing folder holds
    no checkpoints.

    Examples
    --------
    >>> existing_checkpoints("no/such/folder")
    []
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = (_PATTERN.match(p.name) for p in folder.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def _encoding(ds: xr.Dataset, compress: bool, complevel: int) -> tuple[xr.Dataset, dict]:
    encoding = {}
    ds = ds.copy(deep=False)
    for name, var in list(ds.data_vars.items()):
        enc = {"zlib": True, "complevel": complevel} if compress else {}
        if var.dtype == np.float16:
            ds[name] = var.astype(np.float32)
            ds[name].attrs[_DTYPE_ATTR] = "float16"
        encoding[name] = enc
    return ds, encoding


def write_checkpoint(folder: PathLike, ds: xr.Dataset, *, compress: bool = False,
                     complevel: int = 1, overwrite: bool = False) -> list[Path]:
    """Write each checkpoint of ``ds`` to its own netCDF4 file in ``folder``, atomically.

    Parameters
    ----------
    folder : str or path
        The run's activations folder; created if missing.
    ds : xarray.Dataset
        A valid activation record (usually one checkpoint from ``Probe.to_dataset``).
    compress : bool
        zlib-compress the data variables (lossless; slower to write).
    complevel : int
        zlib level 1-9 when ``compress`` is true. Level 1 is the default: on conv4
        activations it writes about twice as fast as level 4 for a file about 6 % larger.
    overwrite : bool
        Replace files of checkpoints that already exist (otherwise an error).

    Returns
    -------
    list of pathlib.Path
        The files written, one per checkpoint.

    Examples
    --------
    >>> import tempfile, torch
    >>> from torch import nn
    >>> from repscope.probes import Probe, open_run
    >>> net = nn.Sequential(nn.Linear(3, 2))
    >>> probe = Probe(net)
    >>> with probe.recording(checkpoint=7, labels=[0, 1], image_ids=["a", "b"]):
    ...     _ = net(torch.ones(2, 3))
    >>> folder = tempfile.mkdtemp()
    >>> [p.name for p in write_checkpoint(folder, probe.to_dataset())]
    ['checkpoint_00000007.nc']
    >>> existing_checkpoints(folder)
    [7]
    >>> open_run(folder)["0"].shape
    (1, 1, 1, 2, 2)
    """
    validate(ds)
    if not 1 <= complevel <= 9:
        raise ProbeError(f"complevel must be in 1..9, got {complevel!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    steps = [int(s) for s in ds["checkpoint"].values]
    if not overwrite:
        clash = sorted(set(steps) & set(existing_checkpoints(folder)))
        if clash:
            raise ProbeError(
                f"Checkpoints {clash} already exist in {folder}; pass overwrite=True to "
                "replace them, or skip them using existing_checkpoints()."
            )
    written = []
    for i, step in enumerate(steps):
        final = activation_file_path(folder, step)
        one = ds if len(steps) == 1 else ds.isel(checkpoint=[i])   # no copy for one
        one, encoding = _encoding(one, compress, complevel)
        one.attrs = {**one.attrs, _HASH_ATTR: record_hash(one)}
        try:
            atomic_write(final, lambda tmp: one.to_netcdf(tmp, engine="netcdf4", encoding=encoding))
        except (OSError, RuntimeError, ValueError, TypeError) as err:
            why = environment_message(err) if isinstance(err, OSError) else None  # disk full, ...
            raise ProbeError(why or f"Writing checkpoint {step} to {final} failed: {err}") from err
        written.append(final)
    return written


def _read(path: Path, chunks: Optional[dict] = None) -> xr.Dataset:
    try:
        if chunks is None:
            with xr.open_dataset(path, engine="netcdf4") as handle:
                ds = handle.load()
        else:  # lazily, dask-backed: one chunk per file unless ``chunks`` splits a dim
            ds = xr.open_dataset(path, engine="netcdf4")
    except (OSError, ValueError, RuntimeError) as err:
        raise ProbeError(f"Could not read activation file {path} ({err}): it is truncated "
                         f"or not a netCDF file. {_FIX}") from err
    if chunks is not None:
        unknown = sorted(set(chunks) - set(ds.dims))
        if unknown:
            raise ProbeError(f"chunks names dims {unknown} that {path} does not have. Expected "
                             f"some of {sorted(map(str, ds.dims))}")
        ds = ds.chunk({**{d: -1 for d in ds.dims}, **chunks})
    stored = ds.attrs.pop(_HASH_ATTR, None)
    if stored is not None and record_hash(ds) != stored:
        raise ProbeError(f"Activation file {path} is corrupt: its content does not match the "
                         f"SHA-256 recorded when it was written ({str(stored)[:16]}...), so "
                         f"some bytes changed on disk. {_FIX}")
    for name, var in list(ds.data_vars.items()):
        if var.attrs.get(_DTYPE_ATTR) == "float16":
            attrs = {k: v for k, v in var.attrs.items() if k != _DTYPE_ATTR}
            ds[name] = var.astype(np.float16)
            ds[name].attrs = attrs
        if "feature_shape" in var.attrs:
            ds[name].attrs["feature_shape"] = [int(s) for s in np.atleast_1d(var.attrs["feature_shape"])]
    validate(ds, where=str(path))
    return ds


def _check_chunks(chunks) -> None:
    if not isinstance(chunks, dict):
        raise ProbeError(f"chunks must be None or a dict of dim -> chunk size, got {chunks!r}")
    try:
        import dask  # noqa: F401
    except ImportError:
        raise ProbeError('open_run(chunks=...) reads lazily with dask, which is not installed. '
                         'Install it with: pip install "repscope[dask]"') from None


def verify_checkpoint(folder: PathLike, checkpoint: int) -> None:
    """Read ``checkpoint``'s file in ``folder`` whole: schema, content hash and step.

    Raises
    ------
    ProbeError
        Naming the file, what is wrong with it and what to do.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = activation_file_path(folder, 3).write_bytes(b"")
    >>> verify_checkpoint(folder, 3)
    Traceback (most recent call last):
    ...
    repscope.probes.errors.ProbeError: Could not read activation file .../checkpoint_00000003.nc (...): it is truncated or not a netCDF file. Delete it and record that checkpoint again ...
    """
    path = activation_file_path(folder, checkpoint)
    found = _read(path)["checkpoint"].values.tolist()
    if found != [int(checkpoint)]:
        raise ProbeError(f"{path} holds checkpoints {found}, expected [{int(checkpoint)}]. {_FIX}")


def open_run(folder: PathLike, checkpoints: Optional[Iterable[int]] = None,
             chunks: Optional[dict] = None) -> xr.Dataset:
    """Open a run's activations folder as one Dataset, concatenated along ``checkpoint``.

    Parameters
    ----------
    folder : str or path
        Folder written by :func:`write_checkpoint`.
    checkpoints : iterable of int, optional
        Only these checkpoints (default: all stored).
    chunks : dict, optional
        None (default): read every value into memory. A dict: open lazily, backed by
        dask arrays with one chunk per checkpoint file, further split along the dims
        the dict names (``{}``: one chunk per file; ``{"task": 10}``: ten tasks per
        chunk). Values are read when computed, so a record larger than memory can be
        analysed chunk by chunk (see :mod:`repscope.analyses.lazy`). Needs dask
        (``pip install "repscope[dask]"``).

    Returns
    -------
    xarray.Dataset
        Validated against the schema; attributes of the first file; cells missing in
        some checkpoints are NaN.

    Raises
    ------
    ProbeError
        If the folder holds no checkpoint files, a requested checkpoint is missing, a file
        is unreadable or fails its content hash, a file breaks the schema (naming the
        missing item), or files come from different runs.

    Examples
    --------
    Grow a run checkpoint by checkpoint, skipping finished ones, then read it back:

    >>> import tempfile, torch
    >>> from torch import nn
    >>> from repscope.probes import Probe
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
    >>> probe, folder = Probe(net), tempfile.mkdtemp()
    >>> for step in (0, 100, 200):
    ...     if step in existing_checkpoints(folder):
    ...         continue
    ...     with probe.recording(checkpoint=step, labels=[0, 1], image_ids=["a", "b"]):
    ...         _ = net(torch.ones(2, 3) * step)
    ...     _ = write_checkpoint(folder, probe.to_dataset(clear=True))
    >>> run = open_run(folder)
    >>> run["checkpoint"].values.tolist(), run["1"].dims
    ([0, 100, 200], ('checkpoint', 'task', 'inner_step', 'stimulus', 'unit_1'))

    The same record, lazily: one dask chunk per checkpoint file, read when computed.

    >>> lazy = open_run(folder, chunks={})
    >>> lazy["1"].chunks[0], bool((lazy["1"] == run["1"]).all())
    ((1, 1, 1), True)
    """
    folder = Path(folder)
    removed = clean_stale_temporaries(folder)
    if removed:
        warnings.warn(f"Removed {len(removed)} temporary files that killed writers left in "
                      f"{folder}: {[p.name for p in removed]}", stacklevel=2)
    stored = existing_checkpoints(folder)
    if not stored:
        raise ProbeError(f"No checkpoint_XXXXXXXX.nc files in {folder}.")
    wanted = stored if checkpoints is None else sorted({int(c) for c in checkpoints})
    missing = sorted(set(wanted) - set(stored))
    if missing:
        raise ProbeError(f"Checkpoints {missing} are not stored in {folder}. Stored: {stored}")
    if chunks is not None:
        _check_chunks(chunks)
    parts = [_read(activation_file_path(folder, step), chunks) for step in wanted]
    first = parts[0]
    for step, part in zip(wanted, parts):
        if part["checkpoint"].values.tolist() != [step]:
            raise ProbeError(
                f"{activation_file_path(folder, step)} holds checkpoints "
                f"{part['checkpoint'].values.tolist()}, expected [{step}]."
            )
        for attr in ("schema_version", "layers", "config"):
            if part.attrs[attr] != first.attrs[attr]:
                raise ProbeError(
                    f"Attribute {attr!r} of {activation_file_path(folder, step)} differs from that of "
                    f"{activation_file_path(folder, wanted[0])}: files from different runs in one folder?"
                )
    if len(parts) == 1:
        return first
    try:
        ds = xr.concat(parts, dim="checkpoint", data_vars="minimal", coords="minimal",
                       compat="equals", join="outer", combine_attrs="override")
    except ValueError as err:
        raise ProbeError(f"Checkpoint files in {folder} do not line up: {err}") from err
    return validate(ds, where=str(folder))
