"""What every engine shares: episodes as tensors (one task, or a meta-batch stacked
along a leading task axis), task accuracy, the meta-step's metrics, and the capture of
the unadapted network's support logits."""
import torch

from ..inner import task_loss

__all__ = ["episode_tensors", "stack_episodes", "accuracy", "task_metrics", "PreStepLogits"]


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


def stack_episodes(episodes, device="cpu", dtype=torch.float32):
    """The tensors of :func:`episode_tensors` stacked over tasks: ``(T, ...)`` each.

    All episodes must have the same support and query sizes.

    Examples
    --------
    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> ep = SimpleNamespace(support_x=np.zeros((2, 1, 28, 28), "f4"), support_y=np.arange(2),
    ...                      query_x=np.zeros((4, 1, 28, 28), "f4"), query_y=np.arange(4) % 2)
    >>> [tuple(t.shape) for t in stack_episodes([ep, ep, ep])]
    [(3, 2, 1, 28, 28), (3, 2), (3, 4, 1, 28, 28), (3, 4)]
    """
    parts = list(zip(*(episode_tensors(e, "cpu", dtype) for e in episodes)))
    return tuple(torch.stack(p).to(device) for p in parts)


def accuracy(logits, labels):
    """Share of correct argmax predictions over the last dim: one value per task.

    A task whose logits are not all finite has no accuracy (NaN), not that of the
    argmax of NaN.

    Examples
    --------
    >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0])).item()
    0.5
    >>> accuracy(torch.tensor([[float("nan"), 1.0], [0.0, 3.0]]), torch.tensor([0, 0])).item()
    nan
    """
    acc = (logits.argmax(dim=-1) == labels).double().mean(dim=-1)
    finite = torch.isfinite(logits).flatten(start_dim=-2).all(dim=-1)
    return torch.where(finite, acc, torch.full_like(acc, float("nan")))


def task_metrics(pre_logits, support_y, post_logits, query_y) -> dict:
    """cbfinn/maml's pre- and post-update numbers of one task or of stacked tasks.

    ``pre_loss``, ``pre_acc``: the unadapted network on the support set;
    ``post_loss``, ``post_acc``: the adapted network on the query set. Losses are mean
    cross-entropy per example, whatever the conventions. Computed without a graph.

    Returns
    -------
    dict of str to torch.Tensor
        Scalars for one task (logits ``(n, classes)``), ``(T,)`` for stacked tasks.

    Examples
    --------
    >>> m = task_metrics(torch.zeros(2, 2), torch.tensor([0, 1]),
    ...                  torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    >>> round(m["pre_loss"].item(), 4), m["post_acc"].item()
    (0.6931, 1.0)
    """
    with torch.no_grad():
        return {"pre_loss": task_loss(pre_logits, support_y, "mean", 1),
                "pre_acc": accuracy(pre_logits, support_y),
                "post_loss": task_loss(post_logits, query_y, "mean", 1),
                "post_acc": accuracy(post_logits, query_y)}


class PreStepLogits:
    """The support logits of the unadapted network, read from the first inner step.

    Pass it to an inner loop as ``on_support(step, logits)``: it keeps (detached) the
    logits of the forward pass before the first update, so the pre-update metrics cost
    nothing. :meth:`get` returns them, or, when no inner step ran, computes them
    with ``forward()`` without a graph.

    Examples
    --------
    >>> seen = PreStepLogits()
    >>> seen(0, torch.ones(1, 2, requires_grad=True)); seen(1, torch.zeros(1, 2))
    >>> seen.get(lambda: torch.full((1, 2), 5.0)).tolist()
    [[1.0, 1.0]]
    >>> PreStepLogits().get(lambda: torch.full((1, 2), 5.0)).tolist()  # no inner step
    [[5.0, 5.0]]
    """

    def __init__(self):
        self.logits = None

    def __call__(self, step, logits):
        if step == 0:
            self.logits = logits.detach()

    def get(self, forward):
        """The captured logits, else ``forward()`` computed without a graph."""
        if self.logits is None:
            with torch.no_grad():
                self.logits = forward()
        return self.logits
