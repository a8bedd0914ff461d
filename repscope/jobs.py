"""Run dependent jobs on a fixed number of cores, keeping every core busy.

:func:`run_jobs` is how ``python analyses/layer_similarity.py --seeds N`` spreads the
stages of several seeds (train, then record, then analyse; the supervised control) over
``--jobs`` cores. A job is a callable given the number of processes it may use; the jobs
are started in the order given (their priority) as soon as their prerequisites have
finished and a core is free, one at a time within a lane. A job marked ``wide`` that starts with more than one core free and
nothing else ready to start takes every free core: the recording of the last seed,
which would otherwise run alone on one core while the others idle, is spread over
``torchrun`` ranks instead.
"""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Optional

__all__ = ["Job", "Outcome", "run_jobs"]


@dataclass(frozen=True)
class Job:
    """One unit of work for :func:`run_jobs`.

    Attributes
    ----------
    key : object
        Names the job (hashable) in the outcomes and in other jobs' ``after``.
    work : callable
        ``work(width)`` does the job with ``width`` processes (1 unless ``wide``); what
        it returns is the outcome's value, what it raises the outcome's error.
    after : tuple
        Keys of jobs given earlier that must succeed first; when one fails, this job is
        skipped.
    wide : bool
        May take every free core when nothing else is ready to start.
    lane : object, optional
        Jobs of one lane run one at a time (e.g. those that share one process's state).

    Examples
    --------
    >>> record = Job(("record", 0), lambda width: f"{width} processes", after=(("train", 0),),
    ...              wide=True)
    >>> record.after, record.work(2)
    ((('train', 0),), '2 processes')
    """

    key: Hashable
    work: Callable[[int], Any]
    after: tuple = ()
    wide: bool = False
    lane: Optional[Hashable] = None


@dataclass(frozen=True)
class Outcome:
    """How a job ended: ``value`` when it succeeded, else ``error`` (what it raised, or,
    when it was skipped, what its prerequisite raised) and ``skipped``; ``width``: the
    processes it was given (0 when skipped).

    Examples
    --------
    >>> out = run_jobs([Job("a", lambda width: 1 / 0), Job("b", print, after=("a",))], cores=1)
    >>> out["a"].ok, type(out["b"].error).__name__, out["b"].skipped, out["b"].width
    (False, 'ZeroDivisionError', True, 0)
    """

    value: Any = None
    error: Optional[BaseException] = None
    skipped: bool = False
    width: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


def run_jobs(jobs, cores: int) -> dict:
    """Run ``jobs`` (:class:`Job`) with at most ``cores`` processes at once.

    Parameters
    ----------
    jobs : sequence of Job
        In priority order; each ``after`` names jobs given earlier.
    cores : int
        Processes at once (a wide job counts as its width).

    Returns
    -------
    dict
        Every job's :class:`Outcome` by its key, in the order given. One job's error does not stop the
        others (only those that need it).

    Examples
    --------
    Two trainings on two cores, each followed by its recording; the recording that
    finds both cores free and nothing else to start takes both:

    >>> import time
    >>> def work(name, seconds):
    ...     return lambda width: time.sleep(seconds) or f"{name} on {width}"
    >>> out = run_jobs([Job("train 0", work("train 0", 0.1)), Job("train 1", work("train 1", 0.3)),
    ...                 Job("record 0", work("record 0", 0.5), after=("train 0",), wide=True),
    ...                 Job("record 1", work("record 1", 0.1), after=("train 1",), wide=True)], cores=2)
    >>> [out[k].value for k in out]
    ['train 0 on 1', 'train 1 on 1', 'record 0 on 1', 'record 1 on 1']
    >>> out = run_jobs([Job("train", work("train", 0.1)),
    ...                 Job("record", work("record", 0.1), after=("train",), wide=True)], cores=2)
    >>> out["record"].value
    'record on 2'
    """
    jobs = list(jobs)
    if cores < 1:
        raise ValueError(f"cores must be >= 1, got {cores}")
    seen = set()
    for job in jobs:
        if job.key in seen:
            raise ValueError(f"job {job.key!r} is given twice")
        if not isinstance(job.after, tuple):
            raise ValueError(f"job {job.key!r}: after={job.after!r}; expected a tuple of keys")
        missing = [key for key in job.after if key not in seen]
        if missing:
            raise ValueError(f"job {job.key!r} runs after {missing[0]!r}, which is not given "
                             "before it")
        seen.add(job.key)
    outcomes: dict = {}
    waiting, running = list(jobs), {}
    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:  # each job waits on processes
        while waiting or running:
            _start_ready(waiting, running, outcomes, cores, pool)
            if not running:
                continue  # only skipped jobs were left
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job, width = running.pop(future)
                error = future.exception()
                outcomes[job.key] = (Outcome(error=error, width=width) if error is not None
                                     else Outcome(value=future.result(), width=width))
    return {job.key: outcomes[job.key] for job in jobs}


def _start_ready(waiting: list, running: dict, outcomes: dict, cores: int, pool) -> None:
    """Start, in priority order, the waiting jobs whose prerequisites are done, while cores
    are free and their lane is; skip those whose prerequisite failed."""
    busy = sum(width for _, width in running.values())
    lanes = {job.lane for job, _ in running.values() if job.lane is not None}

    def ready(job) -> bool:
        return (all(key in outcomes for key in job.after)
                and (job.lane is None or job.lane not in lanes))

    for job in list(waiting):
        if busy >= cores:
            return
        if not ready(job):
            continue
        waiting.remove(job)
        failed = next((outcomes[key] for key in job.after if not outcomes[key].ok), None)
        if failed is not None:
            outcomes[job.key] = Outcome(error=failed.error, skipped=True)
            continue
        others = any(ready(other) for other in waiting)
        width = cores - busy if job.wide and not others else 1
        running[pool.submit(job.work, width)] = (job, width)
        busy += width
        if job.lane is not None:
            lanes.add(job.lane)
