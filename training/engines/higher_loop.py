"""The ``higher`` engine, the reference: tasks one after another through :mod:`higher`.

For each task the inner loop (:func:`repscope.training.inner.adapt`) adapts on the
support set and the query loss of the adapted network is back-propagated into the
meta-parameters, task by task (so each task's graph is freed before the next).

* second order (default): the inner loop keeps its graph
  (``track_higher_grads=True``) and ``backward`` differentiates through it;
* first order (``config.first_order``): ``track_higher_grads=False`` gives detached
  fast weights; the query-loss gradient with respect to them is added to the
  meta-parameters' ``.grad`` (parameters that were not adapted receive their direct
  gradient, as in first-order MAML).

The gradients land in ``.grad``; :func:`repscope.training.engines.meta_step` clips
them and steps the meta-optimiser.
"""
import numpy as np
import torch

from ..inner import _inner_loop, adapt, task_loss
from .tensors import PreStepLogits, accuracy, episode_tensors, task_metrics

__all__ = ["higher_meta_gradients", "higher_evaluate", "higher_adapt_tasks", "PatchedNetwork"]


def _accuracy(logits, labels) -> float:
    return accuracy(logits, labels).item()


def higher_meta_gradients(model, episodes, config) -> dict:
    """Meta-gradients of ``episodes`` into ``.grad``, task by task; returns the metrics.

    Adds each task's query-loss gradient (divided by the number of tasks) to the
    ``.grad`` of ``model``'s parameters; zeroing, clipping and the optimiser step are
    :func:`repscope.training.engines.meta_step`'s.

    Examples
    --------
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from repscope.training.config import get_preset
    >>> from repscope.training.model import build_model
    >>> cfg = get_preset("quick", n_way=3, meta_batch=2, inner_steps=1)
    >>> _ = torch.manual_seed(0)
    >>> net = build_model(cfg)
    >>> eps = [SimpleNamespace(support_x=torch.randn(3, 1, 28, 28), support_y=torch.arange(3),
    ...                        query_x=torch.randn(3, 1, 28, 28), query_y=torch.arange(3))] * 2
    >>> sorted(higher_meta_gradients(net, eps, cfg)), net.head.weight.grad.shape
    (['post_acc', 'post_loss', 'pre_acc', 'pre_loss'], torch.Size([3, 64]))
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    params = list(model.parameters())
    sums = dict(pre_loss=0.0, pre_acc=0.0, post_loss=0.0, post_acc=0.0)
    for episode in episodes:
        sx, sy, qx, qy = episode_tensors(episode, device, dtype)
        seen = PreStepLogits()
        fmodel = None
        for _, fmodel in _inner_loop(model, sx, sy, config, config.inner_steps,
                                     not config.first_order, seen):
            pass
        pre = seen.get(lambda: fmodel(sx))
        logits = fmodel(qx)
        loss = task_loss(logits, qy, config.meta_loss, config.k_shot, "meta_loss") / len(episodes)
        if config.first_order:
            fast = list(fmodel.parameters())
            grads = torch.autograd.grad(loss, fast, allow_unused=True)
            for p, g in zip(params, grads):
                if g is not None:
                    p.grad = g.detach().clone() if p.grad is None else p.grad + g
        else:
            loss.backward()
        metrics = task_metrics(pre, sy, logits, qy)
        for k, v in metrics.items():
            sums[k] += v.item()
    return {k: v / len(episodes) for k, v in sums.items()}


def higher_evaluate(model, episodes, config, steps) -> np.ndarray:
    """Query accuracy ``(n_tasks, steps + 1)``, one task after another.

    Examples
    --------
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from repscope.training.config import get_preset
    >>> from repscope.training.model import build_model
    >>> cfg = get_preset("quick", n_way=3)
    >>> ep = SimpleNamespace(support_x=torch.rand(3, 1, 28, 28), support_y=torch.arange(3),
    ...                      query_x=torch.rand(3, 1, 28, 28), query_y=torch.arange(3))
    >>> higher_evaluate(build_model(cfg), [ep, ep], cfg, steps=2).shape
    (2, 3)
    """
    steps = int(steps)
    p = next(model.parameters())
    rows = []
    for episode in episodes:
        sx, sy, qx, qy = episode_tensors(episode, p.device, p.dtype)
        row = []
        for _, fmodel in adapt(model, sx, sy, config, steps, track_higher_grads=False):
            with torch.no_grad():
                row.append(_accuracy(fmodel(qx), qy))
        rows.append(row)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), steps + 1)


class PatchedNetwork:
    """A task's ``higher`` patched copy as an engine's adapted network.

    ``named_modules`` are the patched copy's (hook those: hooks on ``model`` do not
    fire on the copy); calling it or :meth:`logits` runs the copy.

    Parameters
    ----------
    fmodel : torch.nn.Module
        A ``higher`` patched copy.

    Examples
    --------
    >>> import torch
    >>> net = PatchedNetwork(torch.nn.Linear(2, 1))
    >>> [name for name, _ in net.named_modules()], net(torch.zeros(1, 2)).shape
    ([''], torch.Size([1, 1]))
    """

    def __init__(self, fmodel):
        self.fmodel = fmodel

    def named_modules(self, *args, **kwargs):
        return self.fmodel.named_modules(*args, **kwargs)

    def __call__(self, x):
        return self.fmodel(x)

    logits = __call__


def higher_adapt_tasks(model, tasks, config, steps):
    """Yield ``(task, step, network)`` for every task and step 0..``steps``, task by task.

    ``network`` is the task's ``higher`` patched copy after ``step`` inner steps, as a
    :class:`PatchedNetwork`; it is valid until the next item is drawn.

    Examples
    --------
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from repscope.training.config import get_preset
    >>> from repscope.training.model import build_model
    >>> cfg = get_preset("quick", n_way=3)
    >>> ep = SimpleNamespace(support_x=torch.rand(3, 1, 28, 28), support_y=torch.arange(3),
    ...                      query_x=torch.rand(3, 1, 28, 28), query_y=torch.arange(3))
    >>> [(t, k) for t, k, _ in higher_adapt_tasks(build_model(cfg), [ep, ep], cfg, 1)]
    [(0, 0), (0, 1), (1, 0), (1, 1)]
    """
    p = next(model.parameters())
    for t, task in enumerate(tasks):
        sx, sy, _, _ = episode_tensors(task, p.device, p.dtype)
        for k, fmodel in adapt(model, sx, sy, config, steps, track_higher_grads=False):
            yield t, k, PatchedNetwork(fmodel)
