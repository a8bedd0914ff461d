"""The batched meta-step on CUDA, captured once as a CUDA graph and replayed.

On a GPU the batched meta-step is a few hundred small kernels whose launch cost
exceeds their run time. :func:`graph_meta_gradients` captures the whole meta-gradient
computation of :func:`repscope.training.engines.batched.meta_gradients` (inner loop,
query loss, second-order backward, the metrics) in a :class:`torch.cuda.CUDAGraph` with
static input buffers, the first time it sees a (model, shapes, configuration); later
steps copy the episode tensors into the buffers and replay the graph. Gradient
clipping and the meta-optimiser step (:func:`repscope.training.engines.meta_step`) run
as usual after the replay, so the optimiser and its checkpoints stay the same as
without capture (and as the ``higher`` engine's).

Where capture is impossible (not CUDA, :data:`ENABLED` false, or capture raises) the
same computation runs eagerly; a failed capture says so once, with the reason.
"""
import json
import warnings
import weakref

import torch

from .batched import batched_meta_gradients, meta_gradients, set_gradients
from .tensors import stack_episodes

__all__ = ["graph_meta_gradients", "ENABLED"]

#: Capture on CUDA (set False to compare with the eager batched step).
ENABLED = True
#: Replays run on the captured graph only after this many eager warm-up passes.
WARMUP = 3

_GRAPHS = weakref.WeakKeyDictionary()  # model -> {key: _Captured, or None where capture failed}
_WARNED = []


class _Captured:
    """One captured meta-gradient computation and its static inputs and outputs."""

    def __init__(self, model, config, inputs):
        self.inputs = [t.clone() for t in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                meta_gradients(model, *self.inputs, config)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.grads, self.metrics = meta_gradients(model, *self.inputs, config)

    def replay(self, inputs):
        for static, new in zip(self.inputs, inputs):
            static.copy_(new, non_blocking=True)
        self.graph.replay()
        return self.grads, self.metrics


def _key(model, config, inputs) -> tuple:
    return (tuple(tuple(t.shape) for t in inputs), inputs[0].dtype,
            tuple(p.data_ptr() for p in model.parameters()),
            json.dumps(config.to_dict(), sort_keys=True, default=str))


def _capture(model, config, inputs):
    try:
        return _Captured(model, config, inputs)
    except Exception as exc:  # any capture failure falls back to the eager step
        torch.cuda.synchronize()
        if not _WARNED:
            _WARNED.append(exc)
            warnings.warn(f"CUDA graph capture of the batched meta-step failed ({exc!r}); "
                          "running the batched engine without capture", RuntimeWarning,
                          stacklevel=3)
        return None


def graph_meta_gradients(model, episodes, config) -> dict:
    """The batched meta-gradients, replayed from a CUDA graph where possible.

    Same arguments and result as
    :func:`~repscope.training.engines.batched.batched_meta_gradients` (meta-gradients
    into ``.grad``, metrics returned); on CPU (or with :data:`ENABLED` false) it is that
    function.

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
    >>> sorted(graph_meta_gradients(net, eps, cfg))  # on CPU: the eager batched gradients
    ['post_acc', 'post_loss', 'pre_acc', 'pre_loss']
    """
    p0 = next(model.parameters())
    if p0.device.type != "cuda" or not ENABLED:
        return batched_meta_gradients(model, episodes, config)
    inputs = stack_episodes(episodes, p0.device, p0.dtype)
    graphs = _GRAPHS.setdefault(model, {})
    key = _key(model, config, inputs)
    if key not in graphs:
        graphs[key] = _capture(model, config, inputs)
    captured = graphs[key]
    if captured is None:
        grads, metrics = meta_gradients(model, *inputs, config)
    else:
        grads, metrics = captured.replay(inputs)
    set_gradients(model, grads)
    return metrics
