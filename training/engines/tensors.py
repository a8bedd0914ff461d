"""Episodes as tensors: one task, or a meta-batch stacked along a leading task axis."""
import torch

__all__ = ["episode_tensors", "stack_episodes"]


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

    Examples
    --------
    >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0])).item()
    0.5
    """
    return (logits.argmax(dim=-1) == labels).double().mean(dim=-1)
