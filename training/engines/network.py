"""The conv4 network run for many tasks at once, each with its own weights.

Tasks are laid out side by side along the channel axis: ``T`` tasks' batches
``(T, n, C, H, W)`` become one ``(n, T*C, H, W)`` tensor, each conv layer is one grouped
convolution with ``groups=T`` (task ``t``'s filters see only task ``t``'s channels),
and batch norm over ``(n, H, W)`` per channel is then exactly each task's own batch
norm per channel. The head is one batched matrix product. So one call does what ``T``
calls of :class:`repscope.training.model.Conv4` do, with the same arithmetic, and
autograd (including double backward) runs through standard kernels only; no
:func:`torch.func.vmap` is needed.

Parameters are a dict from :class:`~repscope.training.model.Conv4` parameter names to
tensors with a leading task dimension, ``(T, *shape)``.
"""
import torch
import torch.nn.functional as F

from ..model import same_padding
from ..norm import batch_norm_no_scale

__all__ = ["batched_forward", "BATCH_NORMS"]

#: How batch norm is computed over the task-major channels (both are exact:
#: tests/test_engines.py compares them in float64). ``"fused"`` is PyTorch's own
#: kernel with a unit scale (with no scale at all its double backward fails when the
#: offsets are adapted), used by the engine: it is the faster on a CPU. ``"plain"`` is
#: the mean/var formula of :mod:`repscope.training.norm`.
BATCH_NORMS = {
    "fused": lambda x, beta, eps: F.batch_norm(x, None, None, torch.ones_like(beta), beta, True,
                                               0.0, eps),
    "plain": lambda x, beta, eps: batch_norm_no_scale(x, beta, eps),
}


def _block(x, params, prefix, block, n_tasks, norm):
    w = params[prefix + ".conv.weight"]
    b = params[prefix + ".conv.bias"]
    beta = params[prefix + ".norm.beta"]
    top, bottom = same_padding(x.shape[-2], block.kernel_size, block.stride)
    left, right = same_padding(x.shape[-1], block.kernel_size, block.stride)
    x = F.pad(x, (left, right, top, bottom))
    x = F.conv2d(x, w.reshape(-1, *w.shape[2:]), b.reshape(-1), stride=block.stride,
                 groups=n_tasks)
    x = F.relu(BATCH_NORMS[norm](x, beta.reshape(-1), block.norm.eps))
    if hasattr(block, "pool"):
        x = F.max_pool2d(x, 2, stride=2)
    return x


def batched_forward(model, params, x, norm="fused"):
    """Logits ``(T, n, n_way)`` of ``T`` tasks' inputs ``x`` ``(T, n, C, H, W)``.

    Parameters
    ----------
    model : repscope.training.model.Conv4
        Supplies the architecture (strides, pooling, features); its own weights are
        not used.
    params : dict of str to torch.Tensor
        Every parameter of ``model`` with a leading task dimension ``T``.
    x : torch.Tensor
        ``(T, n, C, H, W)``: ``n`` images per task.
    norm : {"fused", "plain"}
        Batch-norm implementation (see :data:`BATCH_NORMS`).

    Returns
    -------
    torch.Tensor
        ``(T, n, n_way)``, equal to ``model`` run on each task with its own weights.

    Examples
    --------
    >>> import torch
    >>> from torch.func import functional_call
    >>> from repscope.training.model import Conv4
    >>> _ = torch.manual_seed(0)
    >>> net, x = Conv4(n_way=5).double(), torch.randn(3, 5, 1, 28, 28, dtype=torch.float64)
    >>> params = {k: torch.stack([p + 0.01 * t for t in range(3)])
    ...           for k, p in net.named_parameters()}
    >>> out = batched_forward(net, params, x)
    >>> ref = torch.stack([functional_call(net, {k: v[t] for k, v in params.items()}, (x[t],))
    ...                    for t in range(3)])
    >>> bool((out - ref).abs().max() < 1e-10)
    True
    """
    n_tasks, n = x.shape[:2]
    h = x.transpose(0, 1).reshape(n, -1, *x.shape[3:])  # (n, T*C, H, W), task-major channels
    for name in ("conv1", "conv2", "conv3", "conv4"):
        h = _block(h, params, name, getattr(model, name), n_tasks, norm)
    if model.features == "mean":
        feats = h.mean(dim=(2, 3)).view(n, n_tasks, -1)
    else:
        feats = h.reshape(n, n_tasks, -1)
    feats = feats.transpose(0, 1)  # (T, n, features)
    return torch.baddbmm(params["head.bias"].unsqueeze(1), feats,
                         params["head.weight"].transpose(1, 2))
