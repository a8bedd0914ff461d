"""Assemble recorded cells into one labelled ``xarray.Dataset`` (schema version 1)."""
from __future__ import annotations

import dataclasses
import json
import platform
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from typing import Any, Sequence

import numpy as np
import xarray as xr

from .errors import ProbeError
from .schema import CELL_DIMS, RECORD_DIMS, SCHEMA_VERSION, unit_dim

_PACKAGES = ("repscope", "torch", "numpy", "xarray", "netCDF4", "higher")


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that shape a record.

    Examples
    --------
    >>> sorted(package_versions())[:3]
    ['higher', 'netCDF4', 'numpy']
    """
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def config_json(config: Any) -> str:
    """The resolved run config as one JSON string (dict, dataclass, JSON str or None).

    Examples
    --------
    >>> config_json({"b": 1, "a": [2, 3]})
    '{"a": [2, 3], "b": 1}'
    """
    if config is None:
        return "{}"
    if isinstance(config, str):
        try:
            json.loads(config)
        except ValueError as err:
            raise ProbeError(f"config is a str but not valid JSON: {config[:80]!r}") from err
        return config
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise ProbeError(
            f"config of type {type(config).__name__} is not supported. "
            "Expected a dict, a dataclass instance, a JSON string or None."
        )
    return json.dumps(dict(config), sort_keys=True, default=str)


def _check_same_stimuli(cells: Sequence) -> None:
    first = cells[0]
    for cell in cells[1:]:
        for name in ("labels", "image_ids", "roles"):
            if not np.array_equal(getattr(first, name), getattr(cell, name)):
                raise ProbeError(
                    f"Recording {cell.key} used different stimulus {name} than recording "
                    f"{first.key}. One dataset holds one aligned stimulus set; record other "
                    "stimulus sets with another Probe (or call to_dataset(clear=True) in between)."
                )


def assemble(cells: Sequence, layers: Sequence[str], layer_attrs: Mapping[str, dict],
             dtype: np.dtype, config: Any) -> xr.Dataset:
    """Stack recorded cells into dense ``(checkpoint, task, inner_step, stimulus, unit)``
    arrays; combinations that were not recorded are NaN."""
    if not cells:
        raise ProbeError("Nothing recorded yet: use `with probe.recording(...)` before to_dataset().")
    _check_same_stimuli(cells)
    axes = [np.unique(np.array([c.key[i] for c in cells], dtype=np.int64)) for i in range(3)]
    n = len(cells[0].labels)
    data_vars = {}
    for path in layers:
        units = int(np.prod(layer_attrs[path]["stored_shape"]))
        dense = np.full([len(a) for a in axes] + [n, units], np.nan, dtype=dtype)
        for cell in cells:
            index = tuple(int(np.searchsorted(a, k)) for a, k in zip(axes, cell.key))
            dense[index] = cell.activations[path]
        attrs = {k: v for k, v in layer_attrs[path].items() if k != "stored_shape"}
        data_vars[path] = (RECORD_DIMS + (unit_dim(path),), dense, attrs)
    coords = dict(zip(CELL_DIMS, axes))
    coords["stimulus"] = np.arange(n, dtype=np.int64)
    coords["label"] = ("stimulus", cells[0].labels)
    coords["image_id"] = ("stimulus", cells[0].image_ids)
    coords["role"] = ("stimulus", cells[0].roles)
    attrs = {
        "schema_version": SCHEMA_VERSION,
        "layers": json.dumps(list(layers)),
        "config": config_json(config),
        "versions": json.dumps(package_versions(), sort_keys=True),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)
