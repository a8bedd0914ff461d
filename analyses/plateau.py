"""Where a run has converged, and which saved checkpoints lie a given gap apart there.

The paper reads F2 late in its 60000-step run, "converged ... only fluctuates". A
record says where that is through its accuracy: :func:`find_plateau` finds the first
checkpoint from which the held-out accuracy (``eval_accuracy``, else the analysed
tasks' ``accuracy``) neither rises further nor sits below its later level, both up to
a tolerance set by the accuracy's own noise. :func:`gap_pairs` then lists the
checkpoint pairs exactly ``gap`` steps apart inside that window; nothing falls back to
checkpoint 0.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from repscope.analyses.errors import AnalysisError

__all__ = ["find_plateau", "gap_pairs", "scaled_gap", "PAPER_RUN_STEPS"]

#: Length of the paper's meta-training run; gaps scale by ``gap / PAPER_RUN_STEPS``.
PAPER_RUN_STEPS = 60000
#: Smallest tolerance in accuracy (a 1-point change never counts as a rise).
MIN_TOLERANCE = 0.01
#: Largest tolerance: noisier accuracy (too few evaluation tasks) cannot locate a plateau.
MAX_TOLERANCE = 0.05
#: A plateau must span at least this fraction of the run (the paper's 10000 of 60000).
MIN_SPAN_FRACTION = 10000 / 60000


def _accuracy_curve(ds: xr.Dataset, inner_step: int | None) -> tuple[xr.DataArray, str]:
    """Accuracy per (checkpoint, sample) and a description of where it comes from."""
    if "eval_accuracy" in ds:
        ev = ds["eval_accuracy"]
        return ev.rename({"eval_task": "sample"}), (
            f"mean accuracy of {ev.sizes['eval_task']} random held-out tasks after "
            f"{ev.attrs.get('inner_steps', '?')} inner steps (eval_accuracy)")
    if "accuracy" in ds:
        steps = ds["inner_step"].values.tolist()
        k = steps[-1] if inner_step is None or inner_step not in steps else inner_step
        acc = ds["accuracy"].sel(inner_step=k, drop=True)
        return acc.rename({"task": "sample"}), (
            f"mean accuracy of the {acc.sizes['task']} analysed tasks after {k} inner steps (accuracy)")
    raise AnalysisError("The record holds neither eval_accuracy nor accuracy, so no plateau "
                        f"can be found; variables: {sorted(map(str, ds.data_vars))}")


def find_plateau(ds: xr.Dataset, inner_step: int | None = None,
                 tolerance: float | None = None) -> dict:
    """The first checkpoint from which the run's accuracy has stopped rising.

    With ``y`` the mean accuracy per checkpoint and ``W`` the checkpoints from ``c``
    on, ``c`` starts the plateau when (i) ``y[c] >= mean(y[W]) - tol`` (it has reached
    the later level), (ii) the least-squares rise of ``y`` across ``W`` (slope times
    span) is at most ``tol``, (iii) ``W`` holds at least 3 checkpoints and spans at
    least 1/6 of the recorded run (the paper's 10000 of 60000 steps). ``tol`` defaults
    to ``max(0.01, 1.96 * sqrt(2) * median SEM)``: the 95% half-width of a difference
    between two checkpoints' means. There is no plateau when ``tol`` exceeds 0.05 (too
    few evaluation tasks to tell) or when the plateau's level is not above the first
    checkpoint's accuracy by more than ``tol`` (nothing was learned).

    Parameters
    ----------
    ds : xarray.Dataset
        Activation record with ``eval_accuracy`` (checkpoint, eval_task) or
        ``accuracy`` (checkpoint, task, inner_step).
    inner_step : int, optional
        Inner step of ``accuracy`` when there is no ``eval_accuracy`` (default: last).
    tolerance : float, optional
        Override ``tol``.

    Returns
    -------
    dict
        ``start`` (int step, or None with ``reason``), ``level`` (mean accuracy over
        the plateau), ``tolerance``, ``rise`` (over the plateau), ``source``, and
        ``curve`` (list of ``[checkpoint, mean accuracy]``).

    Examples
    --------
    >>> ck = np.arange(0, 3001, 250)
    >>> y = np.minimum(ck / 1500, 1.0) * 0.6 + 0.05
    >>> acc = xr.DataArray(np.repeat(y[:, None], 4, 1), dims=("checkpoint", "eval_task"),
    ...                    coords={"checkpoint": ck}, attrs={"inner_steps": 5})
    >>> find_plateau(xr.Dataset({"eval_accuracy": acc}))["start"]
    1500
    """
    acc, source = _accuracy_curve(ds, inner_step)
    acc = acc.transpose("checkpoint", "sample")
    ck = acc["checkpoint"].values.astype(np.int64)
    y = acc.mean("sample").values
    n = acc.count("sample").values
    sem = acc.std("sample", ddof=1).values / np.sqrt(np.maximum(n, 1))
    finite = np.isfinite(y)
    ck, y, sem = ck[finite], y[finite], sem[finite]
    out = {"source": source, "curve": [[int(c), float(v)] for c, v in zip(ck, y)]}
    if len(ck) < 3:
        return {**out, "start": None, "reason": f"only {len(ck)} checkpoints with accuracy"}
    good_sem = sem[np.isfinite(sem)]
    tol = float(tolerance if tolerance is not None else
                max(MIN_TOLERANCE, 1.96 * np.sqrt(2) * (np.median(good_sem) if good_sem.size else 0.0)))
    min_span = MIN_SPAN_FRACTION * (ck[-1] - ck[0])
    out["tolerance"] = tol
    if tol > MAX_TOLERANCE:
        return {**out, "start": None, "reason": (
            f"the accuracy is too noisy to locate a plateau (tolerance {tol:.3f} > {MAX_TOLERANCE}); "
            "record more evaluation tasks")}
    for i in range(len(ck) - 2):
        w_ck, w_y = ck[i:], y[i:]
        span = float(w_ck[-1] - w_ck[0])
        if span < min_span:
            break
        rise = float(np.polyfit(w_ck.astype(float), w_y, 1)[0] * span)
        if w_y[0] >= w_y.mean() - tol and rise <= tol:
            if w_y.mean() - y[0] <= tol:
                return {**out, "start": None, "reason": (
                    f"the accuracy never rose above its first value {y[0]:.3f} by more than "
                    f"{tol:.3f}: nothing learned to plateau from")}
            return {**out, "start": int(ck[i]), "level": float(w_y.mean()), "rise": rise}
    last = ck[-3:]
    rise = float(np.polyfit(last.astype(float), y[-3:], 1)[0] * (last[-1] - last[0]))
    return {**out, "start": None, "reason": (
        f"the accuracy is still rising: no window of at least 3 checkpoints spanning "
        f">= {min_span:.0f} steps (1/6 of the run) ends the run with a rise <= {tol:.3f} "
        f"(the last 3 checkpoints rise by {rise:.3f})")}


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


def scaled_gap(gap: int, run_steps: int) -> int:
    """``gap`` steps of the paper's 60000-step run, scaled to a run of ``run_steps``.

    Examples
    --------
    >>> scaled_gap(1000, 3000), scaled_gap(10000, 3000)
    (50, 500)
    """
    return max(1, int(round(gap * run_steps / PAPER_RUN_STEPS)))
