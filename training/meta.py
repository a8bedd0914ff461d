"""One MAML meta-update over a batch of tasks (compute only; writes nothing).

For each task the inner loop (:func:`repscope.training.inner.adapt`) adapts on the support set
and the query loss of the adapted network is back-propagated into the
meta-parameters, task by task (so each task's graph is freed before the next).

* second order (default): the inner loop keeps its graph
  (``track_higher_grads=True``) and ``backward`` differentiates through it;
* first order (``config.first_order``): ``track_higher_grads=False`` gives detached
  fast weights; the query-loss gradient with respect to them is added to the
  meta-parameters' ``.grad`` (parameters that were not adapted receive their direct
  gradient, as in first-order MAML).

Then meta-gradients are optionally clipped elementwise to ``[-meta_clip, meta_clip]``
(cbfinn/maml's Mini-ImageNet setting) and the meta-optimiser steps.
"""
import torch

from .inner import _inner_loop, task_loss

__all__ = ["episode_tensors", "meta_step"]


def episode_tensors(episode, device="cpu", dtype=torch.float32):
    """``(support_x, support_y, query_x, query_y)`` of an episode as tensors on ``device``.

    Examples
    --------
    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> ep = SimpleNamespace(support_x=np.zeros((2, 1, 28, 28), "f4"), support_y=np.arange(2),
    ...                      query_x=np.zeros((2, 1, 28, 28), "f4"), query_y=np.arange(2))
    >>> [tuple(t.shape) for t in episode_tensors(ep)]
    [(2, 1, 28, 28), (2,), (2, 1, 28, 28), (2,)]
    """
    def conv(a, dt):
        return torch.as_tensor(a).to(device=device, dtype=dt)

    return (conv(episode.support_x, dtype), conv(episode.support_y, torch.long),
            conv(episode.query_x, dtype), conv(episode.query_y, torch.long))


def _accuracy(logits, labels) -> float:
    return (logits.argmax(dim=1) == labels).float().mean().item()


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
        Inner-loop and loss settings.
    group : repscope.training.distributed.Ranks, optional
        Data-parallel ranks: this rank adapts its share of ``episodes`` and the
        meta-gradients and metrics are summed over ranks before the step (default:
        one process, every episode).

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
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    params = list(model.parameters())
    meta_opt.zero_grad(set_to_none=True)
    sums = dict(pre_loss=0.0, pre_acc=0.0, post_loss=0.0, post_acc=0.0)
    for episode in (episodes if group is None else group.shard(episodes)):
        sx, sy, qx, qy = episode_tensors(episode, device, dtype)
        seen = {}

        def on_support(step, logits, seen=seen):
            if step == 0:
                seen["logits"] = logits.detach()

        fmodel = None
        for _, fmodel in _inner_loop(model, sx, sy, config, config.inner_steps,
                                     not config.first_order, on_support):
            pass
        if "logits" not in seen:  # no inner step: the unadapted network on the support set
            with torch.no_grad():
                seen["logits"] = fmodel(sx)
        sums["pre_loss"] += torch.nn.functional.cross_entropy(seen["logits"], sy).item()
        sums["pre_acc"] += _accuracy(seen["logits"], sy)
        logits = fmodel(qx)
        loss = task_loss(logits, qy, config.meta_loss, config.k_shot) / len(episodes)
        if config.first_order:
            fast = list(fmodel.parameters())
            grads = torch.autograd.grad(loss, fast, allow_unused=True)
            for p, g in zip(params, grads):
                if g is not None:
                    p.grad = g.detach().clone() if p.grad is None else p.grad + g
        else:
            loss.backward()
        with torch.no_grad():
            sums["post_loss"] += torch.nn.functional.cross_entropy(logits, qy).item()
            sums["post_acc"] += _accuracy(logits, qy)
    if group is not None:
        sums = group.reduce_gradients(params, sums)
    if config.meta_clip is not None:
        torch.nn.utils.clip_grad_value_(params, config.meta_clip)
    meta_opt.step()
    return {k: v / len(episodes) for k, v in sums.items()}
