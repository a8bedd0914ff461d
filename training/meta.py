"""One MAML meta-update over a batch of tasks (compute only; writes nothing).

:func:`meta_step` runs the engine that ``config.engine`` names (see
:mod:`repscope.training.engines`): ``"higher"``, the reference, adapts the tasks one
after another through :mod:`higher`; ``"batched"`` adapts them all at once. Both
compute the same meta-gradient:

* second order (default): the query loss is differentiated through the inner loop;
* first order (``config.first_order``): the query-loss gradient at the adapted weights
  is added to the meta-parameters' ``.grad`` (parameters that were not adapted receive
  their direct gradient, as in first-order MAML).

Then meta-gradients are optionally clipped elementwise to ``[-meta_clip, meta_clip]``
(cbfinn/maml's Mini-ImageNet setting) and the meta-optimiser steps.
"""
from .engines import get_engine
from .engines.tensors import episode_tensors

__all__ = ["episode_tensors", "meta_step"]


def meta_step(model, meta_opt, episodes, config, group=None) -> dict:
    """One meta-update of ``model`` with ``meta_opt`` on ``episodes`` (a meta-batch).

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
        Inner-loop and loss settings, and the ``engine`` that computes the step.
    group : repscope.training.distributed.Ranks, optional
        Data-parallel ranks: the engine runs on this rank's share of ``episodes`` and
        the meta-gradients and metrics are summed over ranks before the one step
        (:meth:`~repscope.training.distributed.Ranks.meta_step`). Default: one process.

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
    """
    step = get_engine(config.engine).meta_step
    if group is not None and group.distributed:
        return group.meta_step(step, model, meta_opt, episodes, config)
    return step(model, meta_opt, episodes, config)
