"""The batched engine: many tasks in one forward and one backward.

``T`` tasks (a chunk of :data:`TASK_CHUNK` of them: 4 on a CPU, a whole meta-batch on a
GPU) adapt at once through :func:`repscope.training.engines.network.batched_forward`
(tasks side by side as the groups of grouped convolutions): the fast weights carry a
leading task dimension, one ``torch.autograd.grad`` of the summed support losses gives
every task's own inner gradient (the tasks share no weights, so the sum separates), and
the inner SGD step is the same ``theta - lr * grad`` as the ``higher`` engine's.

* second order: the inner gradients keep their graph (``create_graph=True``) and the
  query loss is differentiated through the whole inner loop into the meta-parameters,
  which enter as ``theta.expand(T, ...)`` (so their gradient sums over tasks);
* first order: the fast weights are detached after each inner step; the query-loss
  gradient at the final fast weights is summed over tasks into the adapted
  meta-parameters, and non-adapted ones get their direct gradient, as in the ``higher``
  engine.

Losses, conventions and metrics are those of
:mod:`repscope.training.engines.higher_loop` (:func:`repscope.training.inner.task_loss`,
:func:`~repscope.training.engines.tensors.task_metrics`); the two engines agree to
rounding (``tests/test_engines.py`` checks 1e-10 in float64). Clipping and the
meta-optimiser step are :func:`repscope.training.engines.meta_step`'s.
"""
import numpy as np
import torch
from torch.func import functional_call

from ..inner import adapted_parameter_names, task_loss
from .network import batched_forward
from .tensors import PreStepLogits, accuracy as _accuracy, stack_episodes, task_metrics

__all__ = ["TASK_CHUNK", "task_chunk", "batched_meta_gradients", "meta_gradients", "set_gradients",
           "batched_adapt", "batched_evaluate", "batched_adapt_tasks", "TaskNetwork"]

#: Batch-norm kernel of the batched network (see ``network.BATCH_NORMS``).
NORM = "fused"
#: Tasks computed together, by device type. On one CPU thread grouped convolutions
#: of more than a few tasks get slower per task (bench/bench_maml.py), so the CPU takes
#: 4 at a time; a GPU takes 150 (a whole meta-batch; a 600-task evaluation in 4 calls,
#: whose largest activation, Mini-ImageNet's 75 query images per task, is 10 GB).
TASK_CHUNK = {"cpu": 4, "cuda": 150}


def task_chunk(device) -> int:
    """How many tasks one batched call takes on ``device`` (see :data:`TASK_CHUNK`).

    Examples
    --------
    >>> task_chunk("cpu")
    4
    """
    return TASK_CHUNK.get(torch.device(device).type, TASK_CHUNK["cpu"])


def _per_task(model, n_tasks, detach):
    out = {}
    for name, p in model.named_parameters():
        p = p.detach() if detach else p
        out[name] = p.unsqueeze(0).expand(n_tasks, *p.shape)
    return out


def _inner_steps(model, fast, sx, sy, config, steps, names, create_graph, on_support=None):
    """Take ``steps`` SGD steps on every task's support loss; returns the new ``fast``."""
    fast = dict(fast)
    for step in range(steps):
        if not create_graph:
            for n in names:
                fast[n] = fast[n].detach().requires_grad_()
        logits = batched_forward(model, fast, sx, NORM)
        if on_support is not None:
            on_support(step, logits)
        loss = task_loss(logits, sy, config.inner_loss, config.k_shot).sum()
        grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=create_graph)
        for n, g in zip(names, grads):
            fast[n] = fast[n] - config.inner_lr * g
    if not create_graph:
        fast = {n: (v.detach() if n in names else v) for n, v in fast.items()}
    return fast


def batched_meta_gradients(model, episodes, config) -> dict:
    """Meta-gradients of ``episodes`` into ``.grad``, :func:`task_chunk` tasks at a time.

    Sets the ``.grad`` of every parameter of ``model`` to the meta-gradient (a sum over
    the chunks of :func:`meta_gradients`) and returns the metrics as 0-d tensors, so
    that nothing waits for the device before the optimiser step; zeroing, clipping and
    the step are :func:`repscope.training.engines.meta_step`'s.

    Examples
    --------
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from repscope.training.config import get_preset
    >>> from repscope.training.model import build_model
    >>> cfg = get_preset("quick", n_way=3, meta_batch=2, inner_steps=1, engine="batched")
    >>> _ = torch.manual_seed(0)
    >>> net = build_model(cfg)
    >>> eps = [SimpleNamespace(support_x=torch.randn(3, 1, 28, 28), support_y=torch.arange(3),
    ...                        query_x=torch.randn(3, 1, 28, 28), query_y=torch.arange(3))] * 2
    >>> sorted(batched_meta_gradients(net, eps, cfg)), net.head.weight.grad.shape
    (['post_acc', 'post_loss', 'pre_acc', 'pre_loss'], torch.Size([3, 64]))
    """
    p0 = next(model.parameters())
    sx, sy, qx, qy = stack_episodes(episodes, p0.device, p0.dtype)
    n, size = len(sx), task_chunk(p0.device)
    grads, metrics = None, None
    for i in range(0, n, size):  # the meta-gradient is a sum over tasks: chunks add up
        g, m = meta_gradients(model, sx[i:i + size], sy[i:i + size], qx[i:i + size],
                              qy[i:i + size], config, n_total=n)
        grads = g if grads is None else [a + b for a, b in zip(grads, g)]
        metrics = m if metrics is None else {k: metrics[k] + m[k] for k in m}
    set_gradients(model, grads)
    return metrics


def set_gradients(model, grads) -> None:
    """Set the ``.grad`` of ``model.parameters()`` to ``grads`` (in that order).

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> set_gradients(net, [torch.ones(1, 2), torch.zeros(1)])
    >>> net.weight.grad.tolist()
    [[1.0, 1.0]]
    """
    for p, g in zip(model.parameters(), grads):
        p.grad = g


def meta_gradients(model, sx, sy, qx, qy, config, n_total=None):
    """Meta-gradients (one per ``model.parameters()``) and metric tensors of stacked tasks.

    Losses and metrics are summed over the tasks given and divided by ``n_total``
    (default: their number), so that chunks of a meta-batch add up to the whole. Pure
    tensor code with no host synchronisation, so that it can also be captured in a CUDA
    graph (:mod:`repscope.training.engines.cuda_graph`).

    Examples
    --------
    >>> import torch
    >>> from repscope.training.config import get_preset
    >>> from repscope.training.model import build_model
    >>> cfg = get_preset("quick", n_way=3, inner_steps=1)
    >>> _ = torch.manual_seed(0)
    >>> net, x, y = build_model(cfg), torch.randn(2, 3, 1, 28, 28), torch.arange(3).repeat(2, 1)
    >>> grads, metrics = meta_gradients(net, x, y, x, y, cfg)
    >>> len(grads) == len(list(net.parameters())), sorted(metrics)
    (True, ['post_acc', 'post_loss', 'pre_acc', 'pre_loss'])
    """
    n_tasks = sx.shape[0] if n_total is None else n_total  # divides losses and metrics
    names = adapted_parameter_names(model, config)
    params = dict(model.named_parameters())
    first_order = config.first_order
    seen = PreStepLogits()
    fast = _inner_steps(model, _per_task(model, sx.shape[0], detach=False), sx, sy, config,
                        config.inner_steps, names, not first_order, seen)
    pre = seen.get(lambda: batched_forward(model, fast, sx, NORM))
    leaves = []
    if first_order and config.inner_steps > 0:
        leaves = names
        fast = {n: (v.requires_grad_() if n in names else v) for n, v in fast.items()}
    logits = batched_forward(model, fast, qx, NORM)
    loss = task_loss(logits, qy, config.meta_loss, config.k_shot, "meta_loss").sum() / n_tasks
    inputs = list(params.values()) + [fast[n] for n in leaves]
    raw = torch.autograd.grad(loss, inputs, allow_unused=True)
    grads = list(raw[:len(params)])
    index = {n: i for i, n in enumerate(params)}
    for n, g in zip(leaves, raw[len(params):]):
        i = index[n]
        grads[i] = g.sum(dim=0) if grads[i] is None else grads[i] + g.sum(dim=0)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params.values(), grads)]
    metrics = {k: v.sum() / n_tasks for k, v in task_metrics(pre, sy, logits.detach(), qy).items()}
    return grads, metrics


def batched_adapt(model, support_x, support_y, config, steps):
    """Adapt ``T`` stacked tasks at once; yield ``(step, fast)`` for step 0..``steps``.

    ``fast`` maps every parameter name of ``model`` to a detached ``(T, *shape)``
    tensor: task ``t``'s weights after ``step`` inner steps (step 0: the meta-parameters).
    Run one task with ``torch.func.functional_call(model, {k: v[t] ...}, (x,))`` (forward
    hooks on ``model`` fire) or all at once with
    :func:`~repscope.training.engines.network.batched_forward`.

    Examples
    --------
    >>> import torch
    >>> from repscope.training.config import get_preset
    >>> from repscope.training.model import build_model
    >>> cfg = get_preset("quick", n_way=5)
    >>> _ = torch.manual_seed(0)
    >>> net, x, y = build_model(cfg), torch.randn(2, 5, 1, 28, 28), torch.arange(5).repeat(2, 1)
    >>> [(k, tuple(f["head.weight"].shape)) for k, f in batched_adapt(net, x, y, cfg, 2)]
    [(0, (2, 5, 64)), (1, (2, 5, 64)), (2, (2, 5, 64))]
    """
    names = adapted_parameter_names(model, config)
    fast = _per_task(model, support_x.shape[0], detach=True)
    yield 0, fast
    for step in range(1, int(steps) + 1):
        with torch.enable_grad():
            fast = _inner_steps(model, fast, support_x, support_y, config, 1, names, False)
        yield step, fast


def _same_shape_chunks(episodes, size):
    chunk, key = [], None
    for ep in episodes:
        k = (np.shape(ep.support_x), np.shape(ep.query_x))
        if chunk and (k != key or len(chunk) == size):
            yield chunk
            chunk = []
        chunk.append(ep)
        key = k
    if chunk:
        yield chunk


def batched_evaluate(model, episodes, config, steps) -> np.ndarray:
    """Query accuracy ``(n_tasks, steps + 1)`` of ``episodes``, :func:`task_chunk` at a time.

    Examples
    --------
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from repscope.training.config import get_preset
    >>> from repscope.training.model import build_model
    >>> cfg = get_preset("quick", n_way=3)
    >>> ep = SimpleNamespace(support_x=torch.rand(3, 1, 28, 28), support_y=torch.arange(3),
    ...                      query_x=torch.rand(3, 1, 28, 28), query_y=torch.arange(3))
    >>> batched_evaluate(build_model(cfg), [ep, ep], cfg, steps=2).shape
    (2, 3)
    """
    p0 = next(model.parameters())
    rows = []
    for chunk in _same_shape_chunks(episodes, task_chunk(p0.device)):
        sx, sy, qx, qy = stack_episodes(chunk, p0.device, p0.dtype)
        acc = []
        for _, fast in batched_adapt(model, sx, sy, config, steps):
            with torch.no_grad():
                acc.append(_accuracy(batched_forward(model, fast, qx, NORM), qy))
        rows.append(torch.stack(acc, dim=1).cpu().numpy())
    if not rows:
        return np.zeros((0, int(steps) + 1))
    return np.concatenate(rows).astype(np.float64)


class TaskNetwork:
    """One task's adapted network, run as ``model`` with the task's weights.

    Calling it runs ``torch.func.functional_call(model, params, (x,))``: the real
    ``model`` runs, so forward hooks on its submodules fire. ``named_modules`` are the
    model's, so ``Probe.recording(..., module=network)`` hooks the modules that run.
    :meth:`logits` computes the same logits through
    :func:`~repscope.training.engines.network.batched_forward` (faster; no hooks fire).

    Parameters
    ----------
    model : torch.nn.Module
        The network whose modules run.
    params : dict of str to torch.Tensor
        The task's weights (every parameter of ``model``).

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> params = {"weight": torch.ones(1, 2), "bias": torch.zeros(1)}
    >>> TaskNetwork(net, params)(torch.tensor([[1.0, 2.0]])).item()
    3.0
    """

    def __init__(self, model, params):
        self.model = model
        self.params = params

    def named_modules(self, *args, **kwargs):
        return self.model.named_modules(*args, **kwargs)

    def __call__(self, x):
        return functional_call(self.model, self.params, (x,))

    def logits(self, x):
        """The logits of ``x`` by the batched network (hooks on ``model`` do not fire)."""
        params = {n: v.unsqueeze(0) for n, v in self.params.items()}
        return batched_forward(self.model, params, x.unsqueeze(0), NORM)[0]


def batched_adapt_tasks(model, tasks, config, steps):
    """Yield ``(task, step, network)`` for every task and step 0..``steps``.

    Tasks adapt :func:`task_chunk` at a time with :func:`batched_adapt` (tasks of one
    chunk need equal support sizes); for each step, every task of the chunk is yielded
    as a :class:`TaskNetwork` before the next step is taken.

    Examples
    --------
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from repscope.training.config import get_preset
    >>> from repscope.training.model import build_model
    >>> cfg = get_preset("quick", n_way=3)
    >>> ep = SimpleNamespace(support_x=torch.rand(3, 1, 28, 28), support_y=torch.arange(3),
    ...                      query_x=torch.rand(3, 1, 28, 28), query_y=torch.arange(3))
    >>> [(t, k) for t, k, _ in batched_adapt_tasks(build_model(cfg), [ep, ep], cfg, 1)]
    [(0, 0), (1, 0), (0, 1), (1, 1)]
    """
    p0 = next(model.parameters())
    first = 0
    for chunk in _same_shape_chunks(tasks, task_chunk(p0.device)):
        sx, sy, _, _ = stack_episodes(chunk, p0.device, p0.dtype)
        for k, fast in batched_adapt(model, sx, sy, config, steps):
            for t in range(len(chunk)):
                yield first + t, k, TaskNetwork(model, {n: v[t] for n, v in fast.items()})
        first += len(chunk)
