"""Compute the values behind the paper's figures from an activation record.

Every function takes an activation record (schema_version 1, see
the data format guide) and returns labelled xarray results; nothing is written.
The scripts save these results as netCDF so the plots (:mod:`repscope.analyses.plots`) can be
redrawn without recomputing.
"""
from __future__ import annotations

import json
from typing import Mapping, Sequence

import numpy as np
import xarray as xr

from .errors import AnalysisError
from .measures import compare, compare_all, get_measure

__all__ = ["layer_names", "inner_loop_change", "meta_change", "identical_over", "training_change",
           "rdm_of_rdms", "default_selection", "accuracy_curves"]

MeasureSpec = Sequence[str] | Mapping[str, Mapping]


def _measures(measures: MeasureSpec) -> dict[str, dict]:
    spec = {m: {} for m in measures} if not isinstance(measures, Mapping) else {
        k: dict(v or {}) for k, v in measures.items()}
    for name in spec:
        get_measure(name)
    return spec


def layer_names(ds: xr.Dataset) -> list[str]:
    """Layer variables in recording order (dataset attr ``layers``).

    Examples
    --------
    >>> ds = xr.Dataset({"conv1": ("x", [0.0]), "head": ("x", [0.0])},
    ...                 attrs={"layers": '["conv1", "head"]'})
    >>> layer_names(ds)
    ['conv1', 'head']
    """
    if "layers" in ds.attrs:
        names = json.loads(ds.attrs["layers"])
    else:
        names = [str(v) for v in ds.data_vars if ds[v].attrs.get("role") == "layer"]
    missing = [n for n in names if n not in ds.data_vars]
    if missing or not names:
        raise AnalysisError(
            f"Activation record lists layers {names} but holds variables "
            f"{sorted(map(str, ds.data_vars))}; missing: {missing}"
        )
    return names


def _select_layers(ds: xr.Dataset, layers: Sequence[str] | None) -> list[str]:
    names = layer_names(ds)
    if layers is None:
        return names
    bad = [x for x in layers if x not in names]
    if bad:
        raise AnalysisError(f"Unknown layer(s) {bad}. Expected some of {names}")
    return list(layers)


def _per_layer(ds, layers, measures, pair_fn) -> xr.Dataset:
    """Run ``pair_fn(da) -> (a, b)`` per layer and compare with every measure."""
    out = {}
    for name, opts in _measures(measures).items():
        per = []
        for layer in _select_layers(ds, layers):
            a, b = pair_fn(ds[layer])
            per.append(compare(a, b, name, **opts).expand_dims(layer=[layer]))
        res = xr.concat(per, "layer")
        res.attrs = {"measure": name, "direction": get_measure(name).direction,
                     "options": json.dumps({k: str(v) for k, v in opts.items()})}
        out[name] = res
    return xr.Dataset(out)


def inner_loop_change(ds: xr.Dataset, measures: MeasureSpec = ("rsa", "cka_linear"), *,
                      before: int = 0, after: int | str | None = "all",
                      layers: Sequence[str] | None = None) -> xr.Dataset:
    """Figure 1a: representation before vs after the inner loop, per layer.

    Parameters
    ----------
    ds : xarray.Dataset
        Activation record with an ``inner_step`` dim.
    measures : list of str or dict of {name: options}
    before : int
        The inner step compared against (0: the meta-initialised representation).
    after : int, None or "all"
        The other inner step: ``None`` is the last recorded step, ``"all"`` (default)
        compares ``before`` with every recorded step (so figure 1a and F3 come from
        one computation).
    layers : list of str, optional

    Returns
    -------
    xarray.Dataset
        One variable per measure, dims (layer, checkpoint, task) or, with
        ``after="all"``, (layer, checkpoint, task, inner_step).
    """
    steps = ds["inner_step"].values.tolist()
    after = steps[-1] if after is None else after
    for s in (before,) + (() if after == "all" else (after,)):
        if s not in steps:
            raise AnalysisError(f"inner_step {s!r} not recorded; available: {steps}")
    res = _per_layer(ds, layers, measures,
                     lambda x: (x.sel(inner_step=before), x if after == "all" else x.sel(inner_step=after)))
    res.attrs = {"figure": "1a", "before": before, "after": after}
    return res


def meta_change(ds: xr.Dataset, measures: MeasureSpec = ("rsa", "cka_linear"), *,
                lag: int = 1, inner_step: int = 0, pairs: Sequence[tuple[int, int]] | None = None,
                layers: Sequence[str] | None = None, once_if_identical: bool = False) -> xr.Dataset:
    """Figure 1b: representation at checkpoint ``t`` vs ``lag`` checkpoints earlier.

    Parameters
    ----------
    ds : xarray.Dataset
    measures : list of str or dict of {name: options}
    lag : int
        Compare each checkpoint with the one ``lag`` positions earlier.
    inner_step : int
        The inner step compared (0: the meta-initialised representation).
    pairs : list of tuple, optional
        Explicit ``(earlier, later)`` checkpoint steps instead of ``lag``; each later
        step at most once (used by F2 to compare checkpoints an exact number of steps
        apart).
    layers : list of str, optional
    once_if_identical : bool
        When every task's representation at ``inner_step`` is the same (inner step 0:
        the meta-initialised network on a shared probe set), compare it once and drop
        the ``task`` dim; the attr ``identical_over_tasks`` holds the number of tasks.
        Figure 1b does so: a spread over identical copies would be exactly zero.

    Returns
    -------
    xarray.Dataset
        One variable per measure, dims (layer, checkpoint, task), or (layer,
        checkpoint) when stored once; ``checkpoint`` is the later checkpoint and the
        coordinate ``previous`` the earlier one.

    Examples
    --------
    >>> ds = xr.Dataset({"fc": (("checkpoint", "task", "inner_step", "stimulus", "unit_fc"),
    ...                         np.random.default_rng(0).normal(size=(3, 1, 1, 6, 4)),
    ...                         {"role": "layer"})},
    ...                 coords={"checkpoint": [0, 50, 100], "task": [0], "inner_step": [0]},
    ...                 attrs={"layers": '["fc"]'})
    >>> meta_change(ds, ["rsa"], pairs=[(0, 100)])["previous"].values.tolist()
    [0]
    >>> two = xr.concat([ds, ds.assign_coords(task=[1])], "task")  # two identical tasks
    >>> meta_change(two, ["rsa"], once_if_identical=True)["rsa"].dims
    ('layer', 'checkpoint')
    """
    ck = ds["checkpoint"].values
    if pairs is None:
        if len(ck) <= lag:
            raise AnalysisError(f"meta_change needs more than lag={lag} checkpoints; got {ck.tolist()}")
        earlier_ck, later_ck = ck[:-lag], ck[lag:]
    else:
        pairs = [(int(a), int(b)) for a, b in pairs]
        missing = sorted({c for p in pairs for c in p} - set(ck.tolist()))
        if missing or not pairs:
            raise AnalysisError(f"meta_change pairs {pairs} need checkpoints {missing or 'given'}; "
                                f"recorded: {ck.tolist()}")
        later_ck = np.asarray([b for _, b in pairs])
        if len(set(later_ck.tolist())) != len(later_ck):
            raise AnalysisError(f"meta_change pairs {pairs} repeat a later checkpoint")
        earlier_ck = np.asarray([a for a, _ in pairs])

    def pair(x):
        x = x.sel(inner_step=inner_step)
        later = x.sel(checkpoint=later_ck)
        earlier = x.sel(checkpoint=earlier_ck).assign_coords(checkpoint=later["checkpoint"].values)
        return later, earlier

    n_tasks = ds.sizes.get("task", 1)
    once = once_if_identical and n_tasks > 1 and identical_over(
        ds, "task", _select_layers(ds, layers), inner_step=inner_step)
    res = _per_layer(ds.isel(task=[0]) if once else ds, layers, measures, pair)
    if once:
        res = res.squeeze("task", drop=True)
    res = res.assign_coords(previous=("checkpoint", np.asarray(earlier_ck)))
    res.attrs = {"figure": "1b", "inner_step": inner_step,
                 **({"lag_checkpoints": lag} if pairs is None else {"pairs": json.dumps(pairs)}),
                 **({"identical_over_tasks": n_tasks} if once else {})}
    return res


def identical_over(ds: xr.Dataset, dim: str, layers: Sequence[str], **sel) -> bool:
    """Whether every layer's activations are exactly equal along ``dim`` (after ``sel``).

    Works chunk by chunk on a dask-backed record.

    Examples
    --------
    >>> ds = xr.Dataset({"fc": (("task", "inner_step", "unit"), [[[1.0], [2.0]], [[1.0], [3.0]]])},
    ...                 coords={"inner_step": [0, 1]})
    >>> identical_over(ds, "task", ["fc"], inner_step=0), identical_over(ds, "task", ["fc"])
    (True, False)
    """
    for layer in layers:
        x = ds[layer].sel(sel) if sel else ds[layer]
        if x.sizes.get(dim, 1) > 1 and bool((x != x.isel({dim: 0})).any()):
            return False
    return True


def training_change(ds: xr.Dataset, measures: MeasureSpec = ("rsa", "cka_linear"), *,
                    reference: int | None = None,
                    layers: Sequence[str] | None = None) -> xr.Dataset:
    """Figure 2: each checkpoint vs the reference (first) checkpoint, per layer.

    For the supervised control (one task, inner_step 0) the size-1 dims are dropped.

    Returns
    -------
    xarray.Dataset
        One variable per measure, dims (layer, checkpoint[, task, inner_step when
        larger than one]).
    """
    ck = ds["checkpoint"].values.tolist()
    reference = ck[0] if reference is None else reference
    if reference not in ck:
        raise AnalysisError(f"reference checkpoint {reference} not recorded; available: {ck}")

    def pair(x):
        x = x.squeeze([d for d in ("task", "inner_step") if x.sizes.get(d) == 1], drop=True)
        return x, x.sel(checkpoint=reference)

    res = _per_layer(ds, layers, measures, pair)
    res.attrs = {"figure": "2", "reference_checkpoint": reference}
    return res


def default_selection(ds: xr.Dataset, n_checkpoints: int = 5, n_tasks: int = 4,
                      inner_steps: Sequence[int] = (0, 1, 5, 10)) -> dict[str, list[int]]:
    """The paper's figure 3 selection adapted to what a record holds.

    The paper uses checkpoints 20k..60k (the later two thirds of training), 4 tasks and
    inner steps {0, 1, 5, 10}. Here: up to ``n_checkpoints`` evenly spaced over the
    last two thirds of the recorded checkpoints, the first ``n_tasks`` tasks, and the
    requested inner steps that were recorded (else all).

    Examples
    --------
    >>> ds = xr.Dataset(coords={"checkpoint": np.arange(0, 61000, 1000), "task": np.arange(50),
    ...                         "inner_step": [0, 1, 5, 10]})
    >>> default_selection(ds)["checkpoint"]
    [20000, 30000, 40000, 50000, 60000]
    """
    ck = ds["checkpoint"].values
    late = ck[int(np.floor(len(ck) / 3)):] if len(ck) > 2 else ck
    pick = np.unique(np.linspace(0, len(late) - 1, min(n_checkpoints, len(late))).round().astype(int))
    steps = [s for s in inner_steps if s in ds["inner_step"].values] or ds["inner_step"].values.tolist()
    return {"checkpoint": [int(c) for c in late[pick]],
            "task": [int(t) for t in ds["task"].values[:n_tasks]],
            "inner_step": [int(s) for s in steps]}


def rdm_of_rdms(ds: xr.Dataset, measure: str = "rsa", *, selection: Mapping | None = None,
                layers: Sequence[str] | None = None, **options) -> xr.DataArray:
    """Figures 3, 5, 6: second-order dissimilarity between all selected conditions.

    Parameters
    ----------
    ds : xarray.Dataset
    measure : str
        ``rsa`` gives ``1 - Spearman`` between RDMs (the paper); a CKA measure gives
        ``1 - CKA``.
    selection : dict, optional
        Coordinates to keep: ``checkpoint``, ``task``, ``inner_step`` (default
        :func:`default_selection`).
    layers : list of str, optional

    Returns
    -------
    xarray.DataArray
        Dims (layer, condition, condition_b); coordinates checkpoint/task/inner_step
        along both condition dims.
    """
    sel = default_selection(ds) if selection is None else dict(selection)
    sub = ds.sel({k: list(v) for k, v in sel.items()})
    mats = []
    for layer in _select_layers(ds, layers):
        m = compare_all(sub[layer], measure, **options)
        if get_measure(measure).direction == "similarity":
            m = (1 - m).assign_attrs(m.attrs)
        if m.sizes["condition"] != int(np.prod([len(v) for v in sel.values()])):
            raise AnalysisError(
                f"Layer {layer!r}: some selected conditions {sel} are missing (NaN) in the record"
            )
        mats.append(m.expand_dims(layer=[layer]))
    out = xr.concat(mats, "layer")
    out.name = "rdm_of_rdms"
    out.attrs = {"measure": measure, "second_order": "1 - Spearman" if measure == "rsa" else "1 - CKA",
                 "selection": json.dumps(sel), "options": json.dumps({k: str(v) for k, v in options.items()})}
    return out


def accuracy_curves(ds: xr.Dataset, inner_step: int | None = 5, z: float = 1.96,
                    tasks: Sequence[int] | int | None = 4) -> xr.Dataset:
    """Figure 4: analysed tasks' accuracy and the eval-task mean with a 95% CI.

    Parameters
    ----------
    ds : xarray.Dataset
        Record with ``accuracy`` (checkpoint, task, inner_step) and optionally
        ``eval_accuracy`` (checkpoint, eval_task).
    inner_step : int, optional
        Inner step of ``accuracy`` to show: 5 (the paper's text) when recorded;
        ``None`` or an unrecorded step falls back to ``eval_accuracy``'s
        ``inner_steps`` attr when recorded, else the last step. The result's
        ``inner_step`` attr says which was used.
    z : float
        CI half-width in standard errors (``mean +- 1.96 std / sqrt(n)``, as MAML).
    tasks : int, list of int or None
        The analysed tasks shown: the first ``tasks`` (default 4, the tasks of
        figure 3), the listed ones, or all (None).

    Returns
    -------
    xarray.Dataset
        ``accuracy`` (checkpoint, task), and ``eval_mean``, ``eval_lower``,
        ``eval_upper`` (checkpoint) when ``eval_accuracy`` exists.

    Examples
    --------
    >>> acc = xr.DataArray(np.full((2, 6, 3), 0.5), dims=("checkpoint", "task", "inner_step"),
    ...                    coords={"checkpoint": [0, 100], "task": np.arange(6), "inner_step": [0, 5, 10]})
    >>> res = accuracy_curves(xr.Dataset({"accuracy": acc}))
    >>> res.attrs["inner_step"], res["task"].values.tolist()
    (5, [0, 1, 2, 3])
    """
    if "accuracy" not in ds:
        raise AnalysisError(f"Record has no 'accuracy' variable; has {sorted(map(str, ds.data_vars))}")
    steps = ds["inner_step"].values.tolist()
    if inner_step is None or inner_step not in steps:
        want = ds["eval_accuracy"].attrs.get("inner_steps") if "eval_accuracy" in ds else None
        inner_step = int(want) if want is not None and int(want) in steps else steps[-1]
    acc = ds["accuracy"].sel(inner_step=inner_step, drop=True)
    if isinstance(tasks, int):
        acc = acc.isel(task=slice(0, tasks))
    elif tasks is not None:
        missing = sorted(set(int(t) for t in tasks) - set(acc["task"].values.tolist()))
        if missing:
            raise AnalysisError(f"tasks {missing} not recorded; available: {acc['task'].values.tolist()}")
        acc = acc.sel(task=list(tasks))
    out = xr.Dataset({"accuracy": acc}, attrs={"figure": "4", "inner_step": inner_step})
    if "eval_accuracy" in ds:
        ev = ds["eval_accuracy"]
        n = ev.count("eval_task")
        mean = ev.mean("eval_task")
        half = z * ev.std("eval_task", ddof=0) / np.sqrt(n)
        out["eval_mean"], out["eval_lower"], out["eval_upper"] = mean, mean - half, mean + half
        out["eval_count"] = n
        out.attrs["eval_inner_steps"] = int(ev.attrs.get("inner_steps", -1))
    return out
