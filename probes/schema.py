"""The activation record schema (version 1) and its validator.

The layout (the data format guide describes it in full): one variable per layer, named by its
module path, with dims ``(checkpoint, task, inner_step, stimulus, unit_<path>)``;
stimulus coordinates ``label``, ``image_id`` and ``role``; flat dataset attributes.
"""
from __future__ import annotations

import json

import numpy as np
import xarray as xr

from .errors import ProbeError

SCHEMA_VERSION = 1
CELL_DIMS = ("checkpoint", "task", "inner_step")
RECORD_DIMS = CELL_DIMS + ("stimulus",)
ROLES = ("support", "query", "probe")
REDUCTIONS = ("none", "spatial_mean")
DATASET_ATTRS = ("schema_version", "layers", "config", "versions", "created")
LAYER_ATTRS = ("module_path", "module_type", "feature_shape", "reduction", "role")
_INT_COORDS = RECORD_DIMS + ("label",)
_STR_COORDS = ("image_id", "role")


def unit_dim(path: str) -> str:
    """Name of the unit dimension of the layer at ``path``.

    Examples
    --------
    >>> unit_dim("encoder.conv2")
    'unit_encoder.conv2'
    """
    return f"unit_{path}"


def _json_attr(ds: xr.Dataset, name: str, problems: list[str]):
    try:
        return json.loads(ds.attrs[name])
    except (TypeError, ValueError):
        problems.append(f"dataset attribute {name!r} is not a JSON string: {ds.attrs[name]!r}")
        return None


def _check_coords(ds: xr.Dataset, problems: list[str]) -> None:
    for dim in RECORD_DIMS:
        if dim not in ds.dims:
            problems.append(f"missing dimension {dim!r}")
    for name in _INT_COORDS + _STR_COORDS:
        if name not in ds.coords:
            problems.append(f"missing coordinate {name!r}")
            continue
        coord = ds.coords[name]
        want = (name,) if name in RECORD_DIMS else ("stimulus",)
        if coord.dims != want:
            problems.append(f"coordinate {name!r} has dims {coord.dims}, expected {want}")
        if name in _INT_COORDS and coord.dtype != np.int64:
            problems.append(f"coordinate {name!r} has dtype {coord.dtype}, expected int64")
        if name in _STR_COORDS and coord.dtype.kind not in "UO":
            problems.append(f"coordinate {name!r} has dtype {coord.dtype}, expected str")
    if "role" in ds.coords and ds.coords["role"].size:
        bad = sorted(set(np.unique(ds.coords["role"].values).tolist()) - set(ROLES))
        if bad:
            problems.append(f"coordinate 'role' has values {bad}, expected only {list(ROLES)}")


def _check_layer(ds: xr.Dataset, path: str, problems: list[str]) -> None:
    if path not in ds.data_vars:
        problems.append(f"missing layer variable {path!r} (listed in attribute 'layers')")
        return
    var = ds[path]
    want = RECORD_DIMS + (unit_dim(path),)
    if var.dims != want:
        problems.append(f"layer variable {path!r} has dims {var.dims}, expected {want}")
    for attr in LAYER_ATTRS:
        if attr not in var.attrs:
            problems.append(f"layer variable {path!r} is missing attribute {attr!r}")
    if var.attrs.get("role", "layer") != "layer":
        problems.append(f"layer variable {path!r} has role {var.attrs['role']!r}, expected 'layer'")
    if var.attrs.get("reduction", "none") not in REDUCTIONS:
        problems.append(
            f"layer variable {path!r} has reduction {var.attrs['reduction']!r}, "
            f"expected one of {list(REDUCTIONS)}"
        )


def validate(ds: xr.Dataset, where: str = "dataset") -> xr.Dataset:
    """Check ``ds`` against the schema and name everything that is missing or wrong.

    Parameters
    ----------
    ds : xarray.Dataset
        An activation record.
    where : str
        Where ``ds`` came from (a file name), quoted in the error.

    Returns
    -------
    xarray.Dataset
        ``ds`` itself, so that ``validate`` can be chained.

    Raises
    ------
    ProbeError
        Listing every missing dimension, coordinate, attribute or layer variable.

    Examples
    --------
    >>> import xarray as xr
    >>> validate(xr.Dataset(), where="empty.nc")
    Traceback (most recent call last):
    ...
    repscope.probes.errors.ProbeError: empty.nc does not follow the activation schema (version 1): missing dimension 'checkpoint'; ...
    """
    problems: list[str] = []
    _check_coords(ds, problems)
    for attr in DATASET_ATTRS:
        if attr not in ds.attrs:
            problems.append(f"missing dataset attribute {attr!r}")
    version = ds.attrs.get("schema_version")
    if version is not None and version != SCHEMA_VERSION:
        problems.append(f"schema_version is {version!r}, expected {SCHEMA_VERSION}")
    layers = _json_attr(ds, "layers", problems) if "layers" in ds.attrs else []
    for attr in ("config", "versions"):
        if attr in ds.attrs:
            _json_attr(ds, attr, problems)
    if layers is not None and not (isinstance(layers, list) and all(isinstance(p, str) for p in layers)):
        problems.append(f"dataset attribute 'layers' is not a JSON list of str: {ds.attrs['layers']!r}")
        layers = []
    for path in layers or []:
        _check_layer(ds, path, problems)
    for name, var in ds.data_vars.items():
        if name not in (layers or []) and var.attrs.get("role") != "metric":
            problems.append(
                f"variable {name!r} is neither listed in 'layers' nor marked with attribute role='metric'"
            )
    if problems:
        raise ProbeError(
            f"{where} does not follow the activation schema (version {SCHEMA_VERSION}): "
            + "; ".join(problems)
        )
    return ds
