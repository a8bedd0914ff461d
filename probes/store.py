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

Every file carries the dataset attribute ``content_sha256``: a SHA-256 of its variables,
coordinates and attributes as stored (see :func:`record_hash`; the definition is named by
``content_hash_version``), checked whenever the file is read, so a byte changed on disk
is an error that names the file, never a silently different number. The hash is unkeyed:
it finds accidental damage, not a deliberate edit (whoever edits a file can compute the
hash again, or remove it). Files without the attribute are read without the check, with a
warning; lazy reads (``chunks=``) check the bytes when the file is opened, not again when
the values are computed. Both attributes describe the file, so :func:`open_run` drops
them. Every file holds finite activations: NaN only in the cells never recorded (NaN in
every layer of that cell), never Inf; :func:`write_checkpoint` and :func:`open_run`
refuse anything else, naming the layer and the cells.

A SIGKILL between writing a temporary ``.NAME.tmp-PID`` and renaming it leaves the
temporary behind; :func:`repscope.probes.files.clean_stale_temporaries` removes those of
processes that no longer run (:func:`open_run` does so and warns).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import xarray as xr

from .errors import ProbeError
from .files import atomic_write, clean_stale_temporaries, environment_message
from .schema import CELL_DIMS, validate

_PATTERN = re.compile(r"^checkpoint_(-?\d+)\.nc$")
_DTYPE_ATTR = "repscope_dtype"
_HASH_ATTR = "content_sha256"
_HASH_VERSION_ATTR = "content_hash_version"
#: The content hash definition new files are written with (1 covered the variables and
#: coordinates; 2 covers their attributes and the dataset's attributes too).
HASH_VERSION = 2
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SHOWN = 5  # cells named in an error message
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


def _attr_bytes(value) -> bytes:
    """One attribute value, the same before writing and after reading it back (netCDF
    turns lists into arrays and one-element arrays into scalars)."""
    arr = np.atleast_1d(np.asarray(value))
    if arr.dtype.kind in "OUS":
        return ("s" + "\x00".join(str(v) for v in arr.ravel())).encode()
    return ("n" + repr(arr.tolist())).encode()


def _hash_attrs(h, attrs: dict) -> None:
    for key in sorted(attrs, key=str):
        if key in (_HASH_ATTR, _HASH_VERSION_ATTR):
            continue
        h.update(f"@{key}|".encode())
        h.update(_attr_bytes(attrs[key]))


def _hash_variable(h, name, var: xr.Variable, values: np.ndarray, version: int) -> None:
    if values.dtype.kind in "OUS":
        kind, data = "str", "\x00".join(str(v) for v in values.ravel()).encode()
    else:
        if values.dtype.kind in "fc" and np.isnan(values).any():
            values = np.where(np.isnan(values), np.nan, values).astype(values.dtype)
        kind, data = values.dtype.str, np.ascontiguousarray(values).data
    h.update(f"{name}|{var.dims}|{kind}|{values.shape}|".encode())
    h.update(data)
    if version >= 2:
        _hash_attrs(h, var.attrs)


def _hashed_values(ds: xr.Dataset, version: int, on_values=None) -> str:
    """The content hash, reading each variable once; ``on_values(name, values)`` sees them."""
    h = hashlib.sha256()
    for name in sorted(ds.variables, key=str):
        var = ds.variables[name]
        values = np.asarray(var.values)
        _hash_variable(h, name, var, values, version)
        if on_values is not None:
            on_values(name, values)
    if version >= 2:
        h.update(b"#dataset")
        _hash_attrs(h, ds.attrs)
    return h.hexdigest()


def record_hash(ds: xr.Dataset, version: int = HASH_VERSION) -> str:
    """SHA-256 (hex) of an activation record's variables, coordinates and attributes, as stored.

    Stored in each activation file as ``content_sha256`` and checked on reading. (The
    hash of a ``.pt`` training state is :func:`repscope.training.checkpoint.state_hash`.)

    Each variable counts with its name, dims, dtype, shape and bytes (text arrays by
    their strings, NaNs in one canonical form), then its attributes, in name order; then
    the dataset's attributes (all but ``content_sha256`` and ``content_hash_version``).
    ``version=1`` is the earlier definition, without any attributes, kept to check files
    written with it.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> a = xr.Dataset({"v": ("x", np.array([1.0, np.nan]))}, coords={"x": ["p", "q"]},
    ...                attrs={"config": "{}"})
    >>> len(record_hash(a)), record_hash(a) == record_hash(a.copy(deep=True))
    (64, True)
    >>> record_hash(a) == record_hash(a.assign(v=("x", np.array([1.0, 2.0]))))
    False
    >>> record_hash(a) == record_hash(a.assign_attrs(config='{"seed": 1}'))
    False
    >>> record_hash(a, 1) == record_hash(a.assign_attrs(config='{"seed": 1}'), 1)
    True
    """
    return _hashed_values(ds, version)


def _cells(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per (checkpoint, task, inner_step) cell of a layer: entirely NaN, and what else is
    non-finite in it ("" when nothing)."""
    flat = values.reshape(int(np.prod(values.shape[:len(CELL_DIMS)])), -1)
    nan_all = np.zeros(len(flat), bool)
    kinds = np.full(len(flat), "", dtype=object)
    with np.errstate(over="ignore", invalid="ignore"):
        total = flat.sum(1, dtype=np.float32 if flat.dtype == np.float16 else None)
        suspect = np.flatnonzero(~np.isfinite(total))  # NaN and Inf survive a sum; exact below
    for k in suspect:
        nan = np.isnan(flat[k])
        if not (nan.any() or np.isinf(flat[k]).any()):
            continue  # finite values whose sum overflowed
        nan_all[k] = nan.all()
        kinds[k] = " and ".join(word for word, has in (("partly NaN", nan.any() and not nan_all[k]),
                                                         ("Inf", np.isinf(flat[k]).any())) if has)
    return nan_all, kinds


def _cell_names(ds: xr.Dataset, which: np.ndarray) -> str:
    shape = [ds.sizes[d] for d in CELL_DIMS]
    found = np.flatnonzero(which)
    names = []
    for k in found[:_SHOWN]:
        idx = np.unravel_index(k, shape)
        names.append(", ".join(f"{d}={ds[d].values[i]}" for d, i in zip(CELL_DIMS, idx)))
    more = f"; and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
    return "; ".join(names) + more


def _value_problems(ds: xr.Dataset, cells: dict[str, tuple]) -> list[str]:
    """What breaks the value contract: finite activations, NaN only in cells never
    recorded (NaN in every layer), at least one recorded cell per checkpoint."""
    layers = [p for p in json.loads(ds.attrs["layers"]) if p in cells]
    if not layers:
        return []
    problems = []
    missing = np.logical_and.reduce([cells[p][0] for p in layers])
    for path in layers:
        nan_all, kinds = cells[path]
        for kind in sorted(set(kinds[kinds != ""])):
            problems.append(f"layer {path!r} is {kind} in {(kinds == kind).sum()} cell(s): "
                            f"{_cell_names(ds, kinds == kind)}")
        odd = nan_all & ~missing
        if odd.any():
            problems.append(f"layer {path!r} is all NaN in {odd.sum()} cell(s) that other layers "
                            f"recorded: {_cell_names(ds, odd)}")
    empty = missing.reshape(ds.sizes["checkpoint"], -1).all(1)
    for c in ds["checkpoint"].values[empty]:
        problems.append(f"checkpoint {c} holds no values: every cell of every layer is all NaN")
    return problems


def _refuse_values(problems: list[str], where: str) -> None:
    if problems:
        raise ProbeError(
            f"{where} holds non-finite activations: {'; '.join(problems)}. An activation record "
            "holds finite values, and NaN only in the cells never recorded (NaN in every layer). "
            "NaN or Inf activations come from a diverged network (see the run's metrics.jsonl) "
            "or a float16 overflow: record an earlier checkpoint, retrain, or record as float32")


def check_values(ds: xr.Dataset, where: str = "dataset") -> xr.Dataset:
    """Refuse non-finite activations, naming the layer and the cells.

    A valid record's layer variables are finite, except the cells never recorded, which
    are NaN in every layer. Inf anywhere, a partly NaN cell, a cell NaN in one layer
    but recorded in another, or a checkpoint without any recorded cell is an error.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from repscope.probes import Probe
    >>> net = nn.Sequential(nn.Linear(2, 3))
    >>> probe = Probe(net)
    >>> with probe.recording(checkpoint=0, labels=[0, 1], image_ids=["a", "b"]):
    ...     _ = net(torch.ones(2, 2))
    >>> ds = probe.to_dataset()
    >>> ds["0"][0, 0, 0, 1, 2] = float("inf")
    >>> check_values(ds)
    Traceback (most recent call last):
    ...
    repscope.probes.errors.ProbeError: dataset holds non-finite activations: layer '0' is Inf in 1 cell(s): checkpoint=0, task=0, inner_step=0. ...
    """
    cells = {}
    for path in json.loads(ds.attrs["layers"]):
        if path in ds.data_vars and ds[path].ndim > len(CELL_DIMS):
            cells[path] = _cells(np.asarray(ds[path].values))
    _refuse_values(_value_problems(ds, cells), where)
    return ds


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

    Raises
    ------
    ProbeError
        Before anything is written, if ``ds`` breaks the schema or holds non-finite
        activations (:func:`check_values`), or if a checkpoint exists and not
        ``overwrite``.

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
    check_values(ds)
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
        one.attrs = {**one.attrs, _HASH_VERSION_ATTR: HASH_VERSION}
        one.attrs[_HASH_ATTR] = record_hash(one)
        try:
            atomic_write(final, lambda tmp: one.to_netcdf(tmp, engine="netcdf4", encoding=encoding))
        except (OSError, RuntimeError, ValueError, TypeError) as err:
            why = environment_message(err) if isinstance(err, OSError) else None  # disk full, ...
            raise ProbeError(why or f"Writing checkpoint {step} to {final} failed: {err}") from err
        written.append(final)
    return written


def _plain(value):
    return value.tolist() if isinstance(value, (np.generic, np.ndarray)) else value


def _stored_hash(ds: xr.Dataset, path: Path) -> tuple[Optional[str], int]:
    """The file's ``content_sha256`` and hash version (popped from ``ds.attrs``), checked."""
    stored = _plain(ds.attrs.pop(_HASH_ATTR, None))
    version = _plain(ds.attrs.pop(_HASH_VERSION_ATTR, 1))
    if stored is not None and not (isinstance(stored, str) and _HEX64.match(stored)):
        raise ProbeError(f"Activation file {path} is damaged or edited: its attribute {_HASH_ATTR!r} "
                         f"is {stored!r}, not a SHA-256 (64 hexadecimal digits). {_FIX}")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= HASH_VERSION:
        raise ProbeError(f"Activation file {path} has {_HASH_VERSION_ATTR} = {version!r}; this version of "
                         f"repscope checks 1 to {HASH_VERSION}. A newer repscope wrote it: update "
                         f"repscope, or record that checkpoint again")
    return stored, version


def _read(path: Path, chunks: Optional[dict] = None) -> tuple[xr.Dataset, bool]:
    """One file, checked (hash, schema, values); and whether it carried a hash."""
    try:
        if chunks is None:
            with xr.open_dataset(path, engine="netcdf4") as handle:
                ds = handle.load()
        else:  # lazily: read once here for the checks (not kept), dask-backed below
            ds = xr.open_dataset(path, engine="netcdf4", cache=False)
    except (OSError, ValueError, RuntimeError) as err:
        raise ProbeError(f"Could not read activation file {path} ({err}): it is truncated "
                         f"or not a netCDF file. {_FIX}") from err
    if chunks is not None:
        unknown = sorted(set(chunks) - set(ds.dims))
        if unknown:
            raise ProbeError(f"chunks names dims {unknown} that {path} does not have. Expected "
                             f"some of {sorted(map(str, ds.dims))}")
    stored, version = _stored_hash(ds, path)
    cells = {}

    def summarise(name, values):  # each variable is read once, for the hash and this check
        if ds[name].attrs.get("role") == "layer" and values.ndim > len(CELL_DIMS):
            cells[name] = _cells(values)
    found = _hashed_values(ds, version, summarise)
    if stored is not None and found != stored:
        raise ProbeError(f"Activation file {path} is corrupt: its content does not match the "
                         f"SHA-256 recorded when it was written ({stored[:16]}...), so "
                         f"some bytes changed on disk. {_FIX}")
    if chunks is not None:
        ds = _lazy_layers(ds, path, chunks)
    for name, var in list(ds.data_vars.items()):
        if var.attrs.get(_DTYPE_ATTR) == "float16":
            attrs = {k: v for k, v in var.attrs.items() if k != _DTYPE_ATTR}
            ds[name] = var.astype(np.float16)
            ds[name].attrs = attrs
        if "feature_shape" in var.attrs:
            ds[name].attrs["feature_shape"] = [int(s) for s in np.atleast_1d(var.attrs["feature_shape"])]
    validate(ds, where=str(path))
    _refuse_values(_value_problems(ds, cells), str(path))
    return ds, stored is not None


class _StoredVariable:
    """One variable of a netCDF file, read slice by slice for ``dask.array.from_array``.

    Each read opens the file, reads the slice and closes it, all under the lock xarray
    takes around netCDF4 and HDF5: neither library is thread-safe, and a file handle
    left open and closed later by the garbage collector, on whatever thread it runs,
    can corrupt HDF5 and crash the process. Holds no handle, so it pickles for the
    workers of a dask cluster.
    """

    def __init__(self, path: Path, name: str, shape: tuple, dtype):
        self.path, self.name, self.shape, self.dtype = str(path), name, shape, np.dtype(dtype)
        self.ndim = len(shape)

    def __getitem__(self, key):
        import netCDF4
        from xarray.backends.netCDF4_ import NETCDF4_PYTHON_LOCK

        with NETCDF4_PYTHON_LOCK:
            with netCDF4.Dataset(self.path, "r") as nc:
                var = nc.variables[self.name]
                var.set_auto_maskandscale(False)
                return np.asarray(var[key], dtype=self.dtype)


def _lazy_layers(ds: xr.Dataset, path: Path, chunks: dict) -> xr.Dataset:
    """``ds`` (opened lazily, already checked) with its layers as dask arrays that read
    the file per chunk (one chunk per file unless ``chunks`` splits a dim), everything
    else in memory, and the file closed."""
    import dask.array as da

    out = ds.copy()
    for name, var in ds.variables.items():
        if var.attrs.get("role") == "layer":
            sizes = tuple(chunks.get(d, -1) for d in var.dims)
            stored = _StoredVariable(path, name, var.shape, var.dtype)
            out[name] = xr.Variable(var.dims, da.from_array(stored, chunks=sizes, lock=False,
                                                            asarray=False, name=False),
                                    var.attrs)
        else:
            out[name] = var.load()  # metrics and coordinates are small: read here
    ds.close()
    return out


def _warn_unchecked(paths: list[Path]) -> None:
    if paths:
        warnings.warn(f"{len(paths)} activation file(s) carry no {_HASH_ATTR} and were read without "
                      f"the content check: {[str(p) for p in paths[:_SHOWN]]}. Files written by "
                      "repscope carry it; one without it is older or was edited. Record those "
                      "checkpoints again to add it", stacklevel=3)


def _check_chunks(chunks) -> None:
    if not isinstance(chunks, dict):
        raise ProbeError(f"chunks must be None or a dict of dim -> chunk size, got {chunks!r}")
    for dim, size in chunks.items():
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)) \
                or not (size >= 1 or size == -1):
            raise ProbeError(f"chunks[{dim!r}] is {size!r}; expected an int >= 1 (that many entries "
                             "per chunk) or -1 (the whole dim in one chunk)")
    try:
        import dask  # noqa: F401
    except ImportError:
        raise ProbeError('open_run(chunks=...) reads lazily with dask, which is not '
                         'installed. Install it from the repscope checkout with: '
                         'pip install -e ".[dask]"') from None


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
    ds, hashed = _read(path)
    if not hashed:
        _warn_unchecked([path])
    found = ds["checkpoint"].values.tolist()
    if found != [int(checkpoint)]:
        raise ProbeError(f"{path} holds checkpoints {found}, expected [{int(checkpoint)}]. {_FIX}")


def _config_difference(first: str, other: str) -> str:
    """Which settings two files' ``config`` attributes (JSON) differ in, for a message.

    Examples
    --------
    >>> _config_difference('{"record": {"engine": "higher"}}', '{"record": {"engine": "batched"}}')
    " (record.engine: 'higher' in the first file, 'batched' in this one)"
    """
    try:
        a, b = json.loads(first), json.loads(other)
    except (TypeError, ValueError):
        return ""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return ""
    diff = []
    for section in sorted(set(a) | set(b)):
        x, y = a.get(section), b.get(section)
        if isinstance(x, dict) and isinstance(y, dict):
            diff += [f"{section}.{k}: {x.get(k, '(not stored)')!r} in the first file, "
                     f"{y.get(k, '(not stored)')!r} in this one"
                     for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
        elif x != y:
            diff.append(f"{section}: {x!r} in the first file, {y!r} in this one")
    return f" ({'; '.join(diff[:6])})" if diff else ""
def _wanted(checkpoints, stored: list[int], folder: Path) -> list[int]:
    if isinstance(checkpoints, (str, bytes)) or not np.iterable(checkpoints):
        raise ProbeError(f"checkpoints must be None or a list of int, got {checkpoints!r}")
    try:
        wanted = sorted({int(c) for c in checkpoints})
    except (TypeError, ValueError):
        raise ProbeError(f"checkpoints must be None or a list of int, got {list(checkpoints)!r}") from None
    if not wanted:
        raise ProbeError(f"checkpoints is empty: pass None for every stored checkpoint, or some of "
                         f"{stored} (stored in {folder})")
    return wanted


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
        (``pip install -e ".[dask]"`` in a checkout of repscope). Each file's content hash and values are
        checked when it is opened (which reads it once), not again when the values are
        computed: bytes changed on disk after opening are read unchecked.

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
        missing item) or holds non-finite activations (naming the layer and cells), or
        files come from different runs.

    Warns
    -----
    UserWarning
        For files without a content hash, read unchecked.

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
    wanted = stored if checkpoints is None else _wanted(checkpoints, stored, folder)
    missing = sorted(set(wanted) - set(stored))
    if missing:
        raise ProbeError(f"Checkpoints {missing} are not stored in {folder}. Stored: {stored}")
    if chunks is not None:
        _check_chunks(chunks)
    read = [_read(activation_file_path(folder, step), chunks) for step in wanted]
    _warn_unchecked([activation_file_path(folder, s) for s, (_, hashed) in zip(wanted, read) if not hashed])
    parts = [ds for ds, _ in read]
    first = parts[0]
    for step, part in zip(wanted, parts):
        if part["checkpoint"].values.tolist() != [step]:
            raise ProbeError(
                f"{activation_file_path(folder, step)} holds checkpoints "
                f"{part['checkpoint'].values.tolist()}, expected [{step}]."
            )
        for attr in ("schema_version", "layers", "config"):
            if part.attrs[attr] != first.attrs[attr]:
                which = (_config_difference(first.attrs[attr], part.attrs[attr])
                         if attr == "config" else "")
                raise ProbeError(
                    f"Attribute {attr!r} of {activation_file_path(folder, step)} differs from that of "
                    f"{activation_file_path(folder, wanted[0])}{which}"
                    ": files from different runs or recordings in one folder?"
                )
    if len(parts) == 1:
        return first
    try:
        ds = xr.concat(parts, dim="checkpoint", data_vars="minimal", coords="minimal",
                       compat="equals", join="outer", combine_attrs="override")
    except ValueError as err:
        raise ProbeError(f"Checkpoint files in {folder} do not line up: {err}") from err
    return validate(ds, where=str(folder))
