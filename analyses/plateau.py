"""Where a run has converged, and which saved checkpoints lie a given gap apart there.

The paper reads F2 late in its 60000-step run, "converged ... only fluctuates". A
record says where that is through its held-out accuracy, stored per task
(``eval_accuracy``: the same random held-out tasks at every checkpoint, else the
analysed tasks' ``accuracy``). :func:`find_plateau` calls checkpoint ``c`` the start of a
plateau when, over the rest of the run, the accuracy provably moves by less than a
tolerance: the Student-t CIs over tasks of (i) the rise across the checkpoints from
``c`` to the end (least-squares slope times span) and (ii) the step from ``c`` to the
mean of the later checkpoints both lie inside ``+-tolerance``, and the rest of the run
spans at least a minimum fraction of it. Each task's accuracies are compared with its
own accuracies at other checkpoints (paired), so task difficulty cancels.
:func:`plateau_scan` is the same rule on plain arrays, many curves at once.
:func:`gap_pairs` lists the checkpoint pairs exactly ``gap`` steps apart inside that
window, :func:`disjoint_pairs` a subset whose intervals do not overlap; nothing falls
back to checkpoint 0.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from .errors import AnalysisError
from .uncertainty import t_interval

__all__ = ["find_plateau", "plateau_scan", "gap_pairs", "disjoint_pairs", "available_gaps",
           "scaled_gap", "PAPER_RUN_STEPS", "TOLERANCE", "MIN_SPAN_FRACTION"]

#: Length of the paper's meta-training run; gaps scale by ``gap / PAPER_RUN_STEPS``.
PAPER_RUN_STEPS = 60000
#: Default tolerance in accuracy; the whole CI of the rise over the rest of the run must
#: lie within +-2 points. A curve that still rises by 0.10 over the run rises by 0.033
#: over the shortest allowed rest (a third of the run), clearly outside.
TOLERANCE = 0.02
#: The rest of the run after the plateau's start must span at least this fraction of it.
MIN_SPAN_FRACTION = 1 / 3


def _accuracy_curve(ds: xr.Dataset, inner_step: int | None) -> tuple[xr.DataArray, str]:
    """Accuracy per (checkpoint, sample) and a description of where it comes from."""
    if "eval_accuracy" in ds:
        ev = ds["eval_accuracy"]
        return ev.rename({"eval_task": "sample"}), (
            f"accuracy of {ev.sizes['eval_task']} random held-out tasks (the same at every "
            f"checkpoint) after {ev.attrs.get('inner_steps', '?')} inner steps (eval_accuracy)")
    if "accuracy" in ds:
        steps = ds["inner_step"].values.tolist()
        k = steps[-1] if inner_step is None or inner_step not in steps else inner_step
        acc = ds["accuracy"].sel(inner_step=k, drop=True)
        return acc.rename({"task": "sample"}), (
            f"accuracy of the {acc.sizes['task']} analysed tasks after {k} inner steps (accuracy)")
    raise AnalysisError("The record holds neither eval_accuracy nor accuracy, so no plateau "
                        f"can be found; variables: {sorted(map(str, ds.data_vars))}")


def plateau_scan(checkpoints, acc, *, tolerance: float = TOLERANCE,
                 min_span_fraction: float = MIN_SPAN_FRACTION, level: float = 0.95) -> dict:
    """The plateau rule on arrays: per curve, the first checkpoint that starts a plateau.

    Parameters
    ----------
    checkpoints : numpy.ndarray
        Shape (checkpoint,).
    acc : numpy.ndarray
        Shape (..., checkpoint, task).
        Accuracy of each task at each checkpoint (the same tasks at every checkpoint);
        leading axes are independent curves.
    tolerance : float
        Largest rise (or fall) over the rest of the run that still counts as flat.
    min_span_fraction : float
        Shortest rest of the run, as a fraction of the recorded run.
    level : float
        Coverage of the two-sided t CIs (0.95: each bound errs 2.5%).

    Returns
    -------
    dict
        ``start_index`` (array of int, -1 where none), ``candidates`` (checkpoint indices
        tried), ``rise``/``rise_lower``/``rise_upper`` and ``step``/``step_lower``/
        ``step_upper`` (arrays (..., candidate)), and ``learned`` (the plateau level
        is above the first checkpoint by more than the tolerance, CI-wise).

    Examples
    --------
    >>> ck = np.arange(0, 2401, 200)
    >>> y = 0.1 + 0.6 * np.minimum(ck, 1200) / 1200
    >>> acc = y[:, None] + np.random.default_rng(0).normal(0, 0.1, (len(ck), 600))
    >>> int(ck[plateau_scan(ck, acc)["start_index"]])
    1200
    """
    ck = np.asarray(checkpoints, dtype=float)
    acc = np.asarray(acc, dtype=float)
    if acc.shape[-2] != ck.size:
        raise AnalysisError(f"acc has {acc.shape[-2]} checkpoints on its axis -2; checkpoints lists {ck.size}")
    min_span = min_span_fraction * (ck[-1] - ck[0])
    cand = [i for i in range(ck.size - 2) if ck[-1] - ck[i] >= min_span - 1e-9]
    batch = acc.shape[:-2]
    keys = ("rise", "rise_lower", "rise_upper", "step", "step_lower", "step_upper", "learned")
    stats = {k: np.full(batch + (len(cand),), np.nan) for k in keys}
    for j, i in enumerate(cand):
        t = ck[i:] - ck[i:].mean()
        w = t * (ck[-1] - ck[i]) / (t ** 2).sum()  # rise = slope * span, per task
        rise = np.einsum("...ct,c->...t", acc[..., i:, :], w)
        step = acc[..., i + 1:, :].mean(-2) - acc[..., i, :]
        learned = acc[..., i:, :].mean(-2) - acc[..., 0, :]
        for name, v in (("rise", rise), ("step", step)):
            m, lo, hi = t_interval(v, level)
            stats[name][..., j], stats[name + "_lower"][..., j], stats[name + "_upper"][..., j] = m, lo, hi
        stats["learned"][..., j] = t_interval(learned, level)[1] > tolerance
    flat = ((stats["rise_lower"] > -tolerance) & (stats["rise_upper"] < tolerance)
            & (stats["step_lower"] > -tolerance) & (stats["step_upper"] < tolerance))
    first = np.argmax(flat, axis=-1) if cand else np.zeros(batch, int)
    found = flat.any(-1) if cand else np.zeros(batch, bool)
    start = np.where(found, np.asarray(cand, int)[first] if cand else -1, -1)
    return {"start_index": start, "candidates": cand, "flat": flat, **stats}


def find_plateau(ds: xr.Dataset, inner_step: int | None = None, tolerance: float | None = None, *,
                 min_span_fraction: float = MIN_SPAN_FRACTION, level: float = 0.95) -> dict:
    """The first checkpoint from which the run's held-out accuracy has converged.

    The rule of :func:`plateau_scan` on a record: at checkpoint ``c``, with ``W`` the
    checkpoints from ``c`` to the end (at least 3, spanning at least
    ``min_span_fraction`` of the recorded run), the t CIs over tasks of the rise across
    ``W`` and of the step from ``c`` to the mean of the rest of ``W`` both lie inside
    ``+-tolerance``. There is no plateau when no checkpoint passes (still rising, or
    too few tasks to resolve the tolerance: the CI's half-width is reported) or when
    the plateau's level is not above the first checkpoint by more than the tolerance
    (nothing was learned).

    Parameters
    ----------
    ds : xarray.Dataset
        Activation record with ``eval_accuracy`` (checkpoint, eval_task) or
        ``accuracy`` (checkpoint, task, inner_step).
    inner_step : int, optional
        Inner step of ``accuracy`` when there is no ``eval_accuracy`` (default: last).
    tolerance : float, optional
        Default :data:`~repscope.analyses.plateau.TOLERANCE` (0.02).

    Returns
    -------
    dict
        ``start`` (int step, or None with ``reason``), ``level`` (mean accuracy over
        the plateau), ``tolerance``, ``rise`` with ``rise_ci`` and ``step_ci`` (over the
        plateau), ``half_width`` (of the rise CI at the last candidate), ``n_tasks``,
        ``source``, and ``curve`` (list of ``[checkpoint, mean accuracy]``).

    Examples
    --------
    >>> ck = np.arange(0, 3001, 250)
    >>> y = np.minimum(ck / 1500, 1.0) * 0.6 + 0.05
    >>> noise = np.random.default_rng(0).normal(0, 0.1, (len(ck), 600))
    >>> acc = xr.DataArray(y[:, None] + noise, dims=("checkpoint", "eval_task"),
    ...                    coords={"checkpoint": ck}, attrs={"inner_steps": 5})
    >>> find_plateau(xr.Dataset({"eval_accuracy": acc}))["start"]
    1500
    """
    tol = TOLERANCE if tolerance is None else float(tolerance)
    if not 0 < tol < 1:
        raise AnalysisError(f"tolerance must lie in (0, 1); got {tolerance}")
    acc, source = _accuracy_curve(ds, inner_step)
    acc = acc.transpose("checkpoint", "sample")
    keep = acc.notnull().all("sample").values
    acc = acc.isel(checkpoint=np.flatnonzero(keep))
    ck = acc["checkpoint"].values.astype(np.int64)
    y = acc.mean("sample").values
    out = {"source": source, "tolerance": tol, "n_tasks": int(acc.sizes["sample"]),
           "min_span_fraction": float(min_span_fraction), "level": level,
           "curve": [[int(c), float(v)] for c, v in zip(ck, y)]}
    if len(ck) < 3:
        return {**out, "start": None, "reason": f"only {len(ck)} checkpoints with accuracy of every task"}
    if acc.sizes["sample"] < 2:
        return {**out, "start": None, "reason": "accuracy of fewer than 2 tasks per checkpoint: no CI"}
    s = plateau_scan(ck, acc.values, tolerance=tol, min_span_fraction=min_span_fraction, level=level)
    if not s["candidates"]:
        return {**out, "start": None, "reason": "no checkpoint leaves 3 checkpoints and "
                f"{min_span_fraction:.2g} of the run after it"}
    half = float((s["rise_upper"][-1] - s["rise_lower"][-1]) / 2)
    out["half_width"] = half
    i = int(s["start_index"])
    if i < 0:
        ci = (f"from {int(ck[s['candidates'][-1]])} on the rise is {s['rise'][-1]:+.3f} "
              f"[{s['rise_lower'][-1]:+.3f}, {s['rise_upper'][-1]:+.3f}]")
        if half >= tol:
            why = (f"the accuracy is too noisy to locate a plateau: with {out['n_tasks']} tasks per checkpoint "
                   f"the {level:.0%} CI of the rise over the rest of the run has a half-width of {half:.3f}, "
                   f"not below the tolerance {tol:.3f} ({ci}); record more evaluation tasks (about "
                   f"{int(np.ceil(out['n_tasks'] * (2 * half / tol) ** 2))} for a half-width of half the tolerance)")
        else:
            why = (f"the accuracy is still rising: from no checkpoint on does the {level:.0%} CI of the rise "
                   f"over the rest of the run (>= {min_span_fraction:.2g} of it) and of the step into it lie "
                   f"inside +-{tol:.3f}; {ci}")
        return {**out, "start": None, "reason": why}
    j = s["candidates"].index(i)
    if not s["learned"][j]:
        return {**out, "start": None, "reason": (
            f"the accuracy never rose above its first value {y[0]:.3f} by more than {tol:.3f}: "
            "nothing learned to plateau from")}
    return {**out, "start": int(ck[i]), "level": float(y[i:].mean()), "rise": float(s["rise"][j]),
            "rise_ci": [float(s["rise_lower"][j]), float(s["rise_upper"][j])],
            "step_ci": [float(s["step_lower"][j]), float(s["step_upper"][j])]}


def gap_pairs(checkpoints, gap: int, start: int | None = None) -> list[tuple[int, int]]:
    """Pairs ``(a, b)`` of saved checkpoints with ``b - a == gap`` and ``a >= start``.

    Examples
    --------
    >>> quick = [0, 1, 2, 5, 10, 20] + list(range(50, 751, 50))
    >>> gap_pairs(quick, 1000), gap_pairs(quick, 100, start=600)
    ([], [(600, 700), (650, 750)])
    """
    if int(gap) < 1:
        raise AnalysisError(f"gap must be a positive number of steps, got {gap}")
    ck = sorted({int(c) for c in checkpoints})
    have = set(ck)
    lo = ck[0] if start is None else int(start)
    return [(a, a + int(gap)) for a in ck if a >= lo and a + int(gap) in have]


def disjoint_pairs(pairs) -> list[tuple[int, int]]:
    """Pairs whose intervals do not overlap, taken in order (they may share an end).

    Meta-training changes over overlapping intervals share steps, so they are not
    independent samples; over intervals that only touch they are separate stretches
    of the run.

    Examples
    --------
    >>> disjoint_pairs([(1760, 1800), (1800, 1840), (1820, 1860), (1840, 1880)])
    [(1760, 1800), (1800, 1840), (1840, 1880)]
    """
    kept, end = [], None
    for a, b in sorted((int(a), int(b)) for a, b in pairs):
        if end is None or a >= end:
            kept.append((a, b))
            end = b
    return kept


def available_gaps(checkpoints, start: int) -> list[int]:
    """Every gap between two saved checkpoints at or after ``start``, ascending.

    Examples
    --------
    >>> available_gaps([0, 100, 200, 250], 100)
    [50, 100, 150]
    """
    ck = sorted(int(c) for c in checkpoints if int(c) >= int(start))
    return sorted({b - a for i, a in enumerate(ck) for b in ck[i + 1:]})


def scaled_gap(gap: int, run_steps: int) -> int:
    """``gap`` steps of the paper's 60000-step run, scaled to a run of ``run_steps``.

    Examples
    --------
    >>> scaled_gap(1000, 3000), scaled_gap(10000, 3000)
    (50, 500)
    """
    return max(1, int(round(gap * run_steps / PAPER_RUN_STEPS)))
