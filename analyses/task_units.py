"""Which analysed tasks count as independent samples for a confidence interval.

Analysis tasks are drawn from held-out characters in a fixed order (task ``t`` takes
classes ``t*N .. t*N+N-1``, wrapping around), so with fewer than ``tasks * N`` held-out
characters tasks share characters and their values are not independent. The CIs of
the findings therefore use only a set of tasks whose characters are pairwise disjoint
(:func:`independent_tasks`, ``unit="disjoint"``, the default), or, when asked, every
task as if independent (``unit="task"``, labelled as such).

The tasks' classes come from the record's ``task_classes`` attribute (written by
``python -m repscope.training.record``), else from its configuration (the fixed-order
rule above with ``run.n_way``, ``run.n_test`` and ``record.tasks``).
"""
from __future__ import annotations

import json

import xarray as xr

from .errors import AnalysisError

__all__ = ["task_classes", "independent_tasks", "CI_UNITS"]

CI_UNITS = ("disjoint", "task")


def task_classes(ds: xr.Dataset) -> list[list[int]] | None:
    """Held-out class indices of each analysed task, or None when the record cannot tell.

    Examples
    --------
    >>> cfg = {"run": {"n_way": 3, "n_test": 7}, "record": {"tasks": 3}}
    >>> task_classes(xr.Dataset(attrs={"config": json.dumps(cfg)}))
    [[0, 1, 2], [3, 4, 5], [6, 0, 1]]
    """
    if "task_classes" in ds.attrs:
        return [[int(c) for c in row] for row in json.loads(ds.attrs["task_classes"])]
    try:
        cfg = json.loads(ds.attrs.get("config", "{}"))
        n_way, n_held = int(cfg["run"]["n_way"]), int(cfg["run"]["n_test"])
        n_tasks = int(cfg["record"]["tasks"])
    except (KeyError, TypeError, ValueError):
        return None
    if cfg["run"].get("dataset", "omniglot") != "omniglot":
        return None
    return [[(t * n_way + i) % n_held for i in range(n_way)] for t in range(n_tasks)]


def independent_tasks(ds: xr.Dataset, unit: str = "disjoint") -> tuple[list[int], str]:
    """The analysed tasks to resample for a CI, and a sentence saying which and why.

    ``unit="disjoint"`` keeps, in task order, each task that shares no character with
    a task already kept; ``unit="task"`` keeps every task and says it assumes them
    independent.

    Examples
    --------
    >>> cfg = {"run": {"n_way": 20, "n_test": 35}, "record": {"tasks": 8}}
    >>> ds = xr.Dataset(coords={"task": range(8)}, attrs={"config": json.dumps(cfg)})
    >>> independent_tasks(ds)[0]
    [0]
    >>> independent_tasks(ds, "task")[0]
    [0, 1, 2, 3, 4, 5, 6, 7]
    """
    if unit not in CI_UNITS:
        raise AnalysisError(f"Unknown ci unit {unit!r}. Expected one of {list(CI_UNITS)}")
    tasks = [int(t) for t in ds["task"].values]
    classes = task_classes(ds)
    if unit == "task":
        return tasks, (f"all {len(tasks)} analysed tasks, treated as independent (they may "
                       "share characters, so the CIs can be too narrow)")
    if classes is None:
        return tasks, (f"all {len(tasks)} analysed tasks, treated as independent: the record "
                       "does not say which characters its tasks use")
    if len(classes) < max(tasks) + 1:
        raise AnalysisError(f"task_classes lists {len(classes)} tasks; the record has tasks {tasks}")
    kept, used = [], set()
    for t in tasks:
        chars = set(classes[t])
        if not chars & used:
            kept.append(t)
            used |= chars
    n_chars = len({c for t in tasks for c in classes[t]})
    return kept, (f"{len(kept)} of {len(tasks)} analysed tasks whose characters are pairwise "
                  f"disjoint (tasks {kept}; {n_chars} held-out characters in all, "
                  f"{len(classes[tasks[0]])} per task)")
