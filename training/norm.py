"""Batch norm as in Finn et al.'s MAML: batch statistics always, offset, no scale.

The original TF code calls ``tf.contrib.layers.batch_norm`` with its defaults
(``center=True``, ``scale=False``, ``epsilon=1e-3``) and ``is_training`` left on, so
every forward pass, at training, test and analysis time, normalises with the
statistics of the batch it sees. This module writes that formula from plain
``mean``/``var`` ops, which keeps second-order gradients exact (no fused kernel, no
running statistics, nothing that ``torch.func.vmap`` or ``higher`` could get wrong).
"""
import torch
from torch import nn

__all__ = ["BatchNormNoScale", "batch_norm_no_scale"]


def batch_norm_no_scale(x: torch.Tensor, beta: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """The batch-norm formula of :class:`BatchNormNoScale` as a function.

    Parameters
    ----------
    x : torch.Tensor
        Input with channels on dim 1.
    beta : torch.Tensor
        Offset per channel, ``(x.shape[1],)``.
    eps : float, default 1e-3
        Added to the variance.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(8, 3, 5, 5, dtype=torch.float64)
    >>> ref = torch.nn.functional.batch_norm(x, None, None, None, torch.ones(3, dtype=x.dtype),
    ...                                      True, 0.0, 1e-3)
    >>> bool((batch_norm_no_scale(x, torch.ones(3, dtype=x.dtype)) - ref).abs().max() < 1e-12)
    True
    """
    dims = [d for d in range(x.dim()) if d != 1]
    mean = x.mean(dim=dims, keepdim=True)
    var = (x - mean).square().mean(dim=dims, keepdim=True)
    shape = [1] * x.dim()
    shape[1] = x.shape[1]
    return (x - mean) / torch.sqrt(var + eps) + beta.view(shape)


class BatchNormNoScale(nn.Module):
    r"""Per-channel batch norm on batch statistics, with a learned offset and no scale.

    .. math:: y = \frac{x - \mathrm{mean}(x)}{\sqrt{\mathrm{var}(x) + \epsilon}} + \beta

    with mean and (biased) variance over every dimension except the channel (dim 1).

    Parameters
    ----------
    n_channels : int
        Number of channels (size of dim 1).
    eps : float, default 1e-3
        Added to the variance (the TF default used by Finn et al.).

    Examples
    --------
    >>> import torch
    >>> bn = BatchNormNoScale(3)
    >>> y = bn(torch.randn(8, 3, 5, 5) * 4 + 2)
    >>> y.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    tensor(True)
    >>> [name for name, _ in bn.named_parameters()]
    ['beta']
    """

    def __init__(self, n_channels: int, eps: float = 1e-3):
        super().__init__()
        self.n_channels = int(n_channels)
        self.eps = float(eps)
        self.beta = nn.Parameter(torch.zeros(self.n_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return batch_norm_no_scale(x, self.beta, self.eps)

    def extra_repr(self) -> str:
        return f"{self.n_channels}, eps={self.eps}"
