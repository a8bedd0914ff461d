"""Inner-loop engines: how a meta-step, an evaluation and an adaptation are computed.

Two engines compute the same numbers (to rounding; ``tests/test_engines.py`` checks
1e-10 in float64) and are chosen by ``MAMLConfig.engine`` (``--engine``):

``"higher"``
    The reference: tasks one after another through the :mod:`higher` library
    (:mod:`repscope.training.engines.higher_loop`).
``"batched"``
    Many tasks at once (a few on a CPU, a whole meta-batch or evaluation on a GPU):
    the tasks' convolutions become grouped convolutions, one autograd call per inner
    step (:mod:`repscope.training.engines.batched`); on CUDA the whole meta-gradient is
    captured in a CUDA graph (:mod:`repscope.training.engines.cuda_graph`).

Checkpoints, metrics and recordings do not depend on the engine: a run may be
resumed, evaluated or recorded with the other one.
"""
from dataclasses import dataclass
from typing import Callable

from ..errors import TrainingError
from .batched import batched_adapt_tasks, batched_evaluate
from .cuda_graph import graph_meta_step
from .higher_loop import higher_adapt_tasks, higher_evaluate, higher_meta_step

__all__ = ["Engine", "ENGINES", "get_engine"]


@dataclass(frozen=True)
class Engine:
    """What an engine does: a meta-step, an evaluation, an adaptation for recording.

    Attributes
    ----------
    name : str
        The value of ``MAMLConfig.engine``.
    meta_step : callable
        ``meta_step(model, meta_opt, episodes, config) -> dict`` of metrics
        (see :func:`repscope.training.meta.meta_step`).
    evaluate : callable
        ``evaluate(model, episodes, config, steps) -> ndarray`` ``(n_tasks, steps + 1)``
        of query accuracies (see :func:`repscope.training.evaluate.evaluate_tasks`).
    adapt_tasks : callable
        ``adapt_tasks(model, tasks, config, steps)`` yields ``(task, step, network)``
        for every task and step 0..``steps`` (in any order). ``network(x)`` runs the
        task's adapted weights through modules with ``model``'s paths, listed by
        ``network.named_modules()``: forward hooks on those fire
        (``Probe.recording(..., module=network)``); ``network.logits(x)`` gives the
        same logits by the engine's fastest path. Valid until the next item.

    Examples
    --------
    >>> sorted(ENGINES)
    ['batched', 'higher']
    >>> get_engine("batched").name
    'batched'
    """

    name: str
    meta_step: Callable
    evaluate: Callable
    adapt_tasks: Callable


ENGINES = {
    "higher": Engine("higher", higher_meta_step, higher_evaluate, higher_adapt_tasks),
    "batched": Engine("batched", graph_meta_step, batched_evaluate, batched_adapt_tasks),
}


def get_engine(name: str) -> Engine:
    """The :class:`Engine` called ``name``; an unknown name raises and lists the known ones.

    Examples
    --------
    >>> get_engine("higher").name
    'higher'
    >>> get_engine("jax")
    Traceback (most recent call last):
    ...
    repscope.training.errors.TrainingError: Unknown engine 'jax'. Expected one of ['batched', 'higher']
    """
    if name not in ENGINES:
        raise TrainingError(f"Unknown engine {name!r}. Expected one of {sorted(ENGINES)}")
    return ENGINES[name]
