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

An engine computes; it never steps an optimiser. :func:`meta_step` is the one place
that turns an engine's meta-gradients into a meta-update, for every engine and for
``torchrun`` ranks: zero the gradients, let the engine fill them, sum them over ranks
(:class:`repscope.training.distributed.Ranks`), clip, step (as :mod:`higher`'s own
``innerloop_ctx`` leaves the outer optimiser to its caller).

A run may be resumed, evaluated or recorded with the other engine, but in float32 the
values are not the same: rounding differs between the engines and the inner steps
amplify it. On a quick run recorded with each engine, activations agree exactly at
inner step 0 and differ by up to 4e-5 after 1 inner step and up to 5e-2 after 5 (most
tasks 1e-4 or less; 1 of 700 evaluation accuracies changed by 0.05); in float64 they
agree to 1e-10. So a record stores its engine in every file and one folder holds one
engine (see the reproduction guide).
"""
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import TrainingError
from .batched import batched_adapt_tasks, batched_evaluate
from .cuda_graph import graph_meta_gradients
from .higher_loop import higher_adapt_tasks, higher_evaluate, higher_meta_gradients

__all__ = ["Engine", "ENGINES", "get_engine", "engine_for", "meta_step"]


@dataclass(frozen=True)
class Engine:
    """What an engine computes: meta-gradients, an evaluation, an adaptation for recording.

    Attributes
    ----------
    name : str
        The value of ``MAMLConfig.engine``.
    meta_gradients : callable
        ``meta_gradients(model, episodes, config) -> dict``: adds the meta-gradient of
        ``episodes`` (the mean over them of each task's query loss, differentiated as
        ``config`` says) to the ``.grad`` of ``model``'s parameters and returns the
        metrics (numbers or 0-d tensors) that :func:`meta_step` returns. Steps nothing.
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
    meta_gradients: Callable
    evaluate: Callable
    adapt_tasks: Callable


ENGINES = {
    "higher": Engine("higher", higher_meta_gradients, higher_evaluate, higher_adapt_tasks),
    "batched": Engine("batched", graph_meta_gradients, batched_evaluate, batched_adapt_tasks),
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


def engine_for(config, engine=None) -> Engine:
    """The engine a computation runs on: ``engine`` if given, else ``config.engine``.

    Examples
    --------
    >>> from repscope.training.config import get_preset
    >>> engine_for(get_preset("quick")).name, engine_for(get_preset("quick"), "higher").name
    ('batched', 'higher')
    """
    return get_engine(engine or config.engine)


def meta_step(model, meta_opt, episodes, config, group=None, engine=None) -> dict:
    """One MAML meta-update of ``model`` with ``meta_opt`` on ``episodes`` (a meta-batch).

    The engine (``engine``, default ``config.engine``) computes the meta-gradient:

    * second order (default): the query loss is differentiated through the inner loop;
    * first order (``config.first_order``): the query-loss gradient at the adapted
      weights is added to the meta-parameters' ``.grad`` (parameters that were not
      adapted receive their direct gradient, as in first-order MAML).

    Then, here and for every engine: with ``group``, each rank's share is weighted by
    its size and meta-gradients and metrics are summed over the ranks; meta-gradients
    are optionally clipped elementwise to ``[-meta_clip, meta_clip]`` (cbfinn/maml's
    Mini-ImageNet setting; the sum is clipped, not a share) and the meta-optimiser
    steps. Compute only; writes nothing.

    Parameters
    ----------
    model : torch.nn.Module
        Meta-parameters; updated in place.
    meta_opt : torch.optim.Optimizer
        Optimiser over ``model.parameters()`` (Adam in the paper).
    episodes : sequence of Episode
        The meta-batch (anything with ``support_x``, ``support_y``, ``query_x``,
        ``query_y``).
    config : MAMLConfig
        Inner-loop and loss settings, ``meta_clip``, and the ``engine``.
    group : repscope.training.distributed.Ranks, optional
        Data-parallel ranks: the engine runs on this rank's share of ``episodes``
        (:meth:`~repscope.training.distributed.Ranks.batch_share`), and every rank takes
        the same step. Default: one process.
    engine : str, optional
        Engine that computes the meta-gradient (default ``config.engine``).

    Returns
    -------
    dict
        Means over the meta-batch, as cbfinn/maml's pre- and post-update numbers:
        ``pre_loss``, ``pre_acc`` of the unadapted network on the support set (read
        from the first inner step's forward pass, so they cost nothing), and
        ``post_loss``, ``post_acc`` on the query set after ``config.inner_steps`` inner
        steps. Losses are mean cross-entropy per example, whatever the conventions.

    Examples
    --------
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from repscope.training.config import get_preset
    >>> from repscope.training.model import build_model
    >>> cfg = get_preset("quick", n_way=3, meta_batch=2, inner_steps=1)
    >>> _ = torch.manual_seed(0)
    >>> net = build_model(cfg)
    >>> opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    >>> eps = [SimpleNamespace(support_x=torch.randn(3, 1, 28, 28), support_y=torch.arange(3),
    ...                        query_x=torch.randn(3, 1, 28, 28), query_y=torch.arange(3))] * 2
    >>> sorted(meta_step(net, opt, eps, cfg))
    ['post_acc', 'post_loss', 'pre_acc', 'pre_loss']
    >>> sorted(meta_step(net, opt, eps, cfg, engine="higher"))
    ['post_acc', 'post_loss', 'pre_acc', 'pre_loss']
    """
    compute = engine_for(config, engine).meta_gradients
    params = list(model.parameters())
    meta_opt.zero_grad(set_to_none=True)
    if group is not None and group.distributed:
        mine, weight = group.batch_share(episodes)
        metrics = compute(model, mine, config)
        for p in params:
            if p.grad is not None:
                p.grad.mul_(weight)
        metrics = group.reduce_gradients(params, {k: float(v) * weight for k, v in metrics.items()})
    else:
        metrics = compute(model, episodes, config)
    if config.meta_clip is not None:
        torch.nn.utils.clip_grad_value_(params, config.meta_clip)
    meta_opt.step()
    return {k: float(v) for k, v in metrics.items()}
