"""N-way K-shot episodes from per-class image arrays.

Random episodes (:meth:`EpisodeSampler.episode`) are a pure function of
``(seed, index)``: episode ``i`` is drawn with ``numpy.random.default_rng([seed, i])``, so
it is the same whatever was sampled before and in whatever order. Within an episode:

1. ``classes = rng.choice(n_classes, n_way, replace=False)``; label ``j`` is
   ``classes[j]``, so the label of a class is a fresh random permutation per task;
2. per class, ``k_shot + n_query`` distinct examples ``rng.permutation(n_examples)``
   (support first, then query);
3. with ``rotate=True``, one rotation per class ``rng.integers(0, 4)`` quarter turns
   counter-clockwise (``numpy.rot90``), applied to all its images (support and query).

Support and query are ordered by label: ``support_y = [0]*K + [1]*K + ...``.

Fixed analysis tasks (:meth:`EpisodeSampler.fixed_task`, :meth:`EpisodeSampler.fixed_tasks`)
follow the paper: held-out characters, no rotation, no label shuffling, fixed order;
task ``t`` uses classes ``[t*N, (t+1)*N)``, support = first drawing, query = second
drawing, label ``j`` = ``j``-th class of the task. The paper's shared probe set (the
second drawing of each character of task 0) is ``fixed_tasks(...)[0].query_x``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..errors import DataError

__all__ = ["Episode", "EpisodeSampler"]


@dataclass
class Episode:
    """One N-way K-shot task.

    Attributes
    ----------
    support_x : torch.Tensor
        float32 ``(N*K, C, H, W)`` (``C=1`` added for grayscale).
    support_y : torch.Tensor
        int64 ``(N*K,)`` labels in ``0..N-1``.
    query_x : torch.Tensor
        float32 ``(N*Q, C, H, W)``.
    query_y : torch.Tensor
        int64 ``(N*Q,)``.
    classes : numpy.ndarray
        int64 ``(N,)``: index into the class axis of the source array of label ``j``.
    rotations : numpy.ndarray
        int64 ``(N,)``: quarter turns (counter-clockwise) applied to class ``j``.
    support_ids, query_ids : list of str or None
        Image ids of the support and query images, when the sampler was given ids.
    index : int
        Episode number (``-1`` for fixed tasks built directly).
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: np.ndarray
    rotations: np.ndarray
    support_ids: list | None = None
    query_ids: list | None = None
    index: int = -1

    @property
    def n_way(self) -> int:
        return len(self.classes)

    def to(self, device) -> "Episode":
        """A copy with the four tensors on ``device``."""
        return replace(self, support_x=self.support_x.to(device),
                       support_y=self.support_y.to(device),
                       query_x=self.query_x.to(device), query_y=self.query_y.to(device))


def _as_classes(images, image_ids):
    x = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.ndim == 4:
        x = x[:, :, None]
    if x.ndim != 5:
        raise DataError(f"images has shape {x.shape}; expected (n_classes, n_examples, H, W)"
                        " or (n_classes, n_examples, C, H, W).")
    ids = None
    if image_ids is not None:
        ids = np.asarray(image_ids).astype(str)
        if ids.shape != x.shape[:2]:
            raise DataError(f"image_ids has shape {ids.shape}; expected {x.shape[:2]} "
                            "(n_classes, n_examples) to match images.")
    return x, ids


def _build(x, ids, classes, support_idx, query_idx, rotations, index):
    """Gather an episode; ``support_idx``/``query_idx`` are (N, K)/(N, Q) example indices."""
    n = len(classes)

    def gather(idx):
        imgs = x[classes[:, None], idx]  # (N, K, C, H, W)
        imgs = np.stack([np.rot90(imgs[j], k=int(rotations[j]), axes=(-2, -1))
                         for j in range(n)]) if np.any(rotations) else imgs
        flat = torch.from_numpy(np.ascontiguousarray(imgs, dtype=np.float32))
        labels = torch.arange(n, dtype=torch.int64).repeat_interleave(idx.shape[1])
        names = None if ids is None else ids[classes[:, None], idx].reshape(-1).tolist()
        return flat.reshape(-1, *flat.shape[2:]), labels, names

    sx, sy, sid = gather(support_idx)
    qx, qy, qid = gather(query_idx)
    return Episode(sx, sy, qx, qy, np.asarray(classes, np.int64),
                   np.asarray(rotations, np.int64), sid, qid, index)


class EpisodeSampler:
    """Seeded N-way K-shot episodes with Q queries per class.

    Parameters
    ----------
    images : array-like
        ``(n_classes, n_examples, H, W)`` or ``(n_classes, n_examples, C, H, W)``, float.
    n_way, k_shot, n_query : int
        Classes per task, support and query examples per class.
    rotate : bool
        Random quarter-turn rotation per class (Finn et al.'s Omniglot augmentation).
    seed : int
        Episode ``i`` is drawn from ``numpy.random.default_rng([seed, i])``.
    image_ids : array-like of str, optional
        ``(n_classes, n_examples)``; fills ``Episode.support_ids`` / ``query_ids``.

    Examples
    --------
    >>> x = np.arange(10 * 4 * 2 * 2, dtype=np.float32).reshape(10, 4, 2, 2)
    >>> sampler = EpisodeSampler(x, n_way=3, k_shot=1, n_query=2, seed=7)
    >>> ep = sampler.episode(5)
    >>> tuple(ep.support_x.shape), tuple(ep.query_x.shape), ep.query_y.tolist()
    ((3, 1, 2, 2), (6, 1, 2, 2), [0, 0, 1, 1, 2, 2])
    >>> torch.equal(EpisodeSampler(x, 3, 1, 2, seed=7).episode(5).query_x, ep.query_x)
    True
    >>> [e.index for e in sampler.batch(step=2, meta_batch=4)]
    [8, 9, 10, 11]
    """

    def __init__(self, images, n_way: int, k_shot: int, n_query: int,
                 rotate: bool = False, seed: int = 0, image_ids=None):
        self.images, self.image_ids = _as_classes(images, image_ids)
        n_classes, n_examples = self.images.shape[:2]
        for name, v in (("n_way", n_way), ("k_shot", k_shot), ("n_query", n_query)):
            if not isinstance(v, (int, np.integer)) or v < (0 if name == "n_query" else 1):
                raise DataError(f"{name}={v!r} must be a positive integer"
                                f"{' or 0' if name == 'n_query' else ''}.")
        if n_way > n_classes:
            raise DataError(f"n_way={n_way} but only {n_classes} classes are available.")
        if k_shot + n_query > n_examples:
            raise DataError(f"k_shot + n_query = {k_shot + n_query} but each class has only "
                            f"{n_examples} examples.")
        if rotate and self.images.shape[-1] != self.images.shape[-2]:
            raise DataError(f"rotate=True needs square images; got {self.images.shape[-2:]}.")
        self.n_way, self.k_shot, self.n_query = int(n_way), int(k_shot), int(n_query)
        self.rotate, self.seed = bool(rotate), int(seed)

    def episode(self, i: int) -> Episode:
        """Episode ``i``: a pure function of ``(seed, i)``."""
        if i < 0:
            raise DataError(f"Episode index must be >= 0; got {i}.")
        rng = np.random.default_rng([self.seed, int(i)])
        n_classes, n_examples = self.images.shape[:2]
        classes = rng.choice(n_classes, self.n_way, replace=False)
        picks = np.stack([rng.permutation(n_examples)[:self.k_shot + self.n_query]
                          for _ in range(self.n_way)])
        rotations = (rng.integers(0, 4, self.n_way) if self.rotate
                     else np.zeros(self.n_way, np.int64))
        return _build(self.images, self.image_ids, classes, picks[:, :self.k_shot],
                      picks[:, self.k_shot:], rotations, int(i))

    def batch(self, step: int, meta_batch: int) -> list:
        """Episodes ``step*meta_batch + j`` for ``j`` in ``range(meta_batch)``."""
        return [self.episode(step * meta_batch + j) for j in range(meta_batch)]

    @staticmethod
    def fixed_task(images, classes, support_index=0, query_index=1,
                   image_ids=None) -> Episode:
        """A deterministic task: given classes in order, no rotation, no shuffling.

        Parameters
        ----------
        images : array-like
            As for :class:`EpisodeSampler`.
        classes : sequence of int
            Class indices; label ``j`` is ``classes[j]``.
        support_index, query_index : int or sequence of int
            Example index (or indices) used as support / query for every class. The
            paper's analysis tasks use the first drawing (0) as support and the second
            (1) as query.
        image_ids : array-like of str, optional

        Examples
        --------
        >>> x = np.random.default_rng(0).random((6, 3, 4, 4), dtype=np.float32)
        >>> t = EpisodeSampler.fixed_task(x, [4, 2])
        >>> t.support_y.tolist(), bool(np.array_equal(t.query_x[1, 0], x[2, 1]))
        ([0, 1], True)
        """
        x, ids = _as_classes(images, image_ids)
        classes = np.asarray(classes, np.int64).reshape(-1)
        if classes.size == 0 or classes.min() < 0 or classes.max() >= x.shape[0]:
            raise DataError(f"classes {classes.tolist()} must be non-empty indices into "
                            f"{x.shape[0]} classes.")
        s = np.atleast_1d(np.asarray(support_index, np.int64))
        q = np.atleast_1d(np.asarray(query_index, np.int64))
        if min(s.min(), q.min()) < 0 or max(s.max(), q.max()) >= x.shape[1]:
            raise DataError(f"support_index {s.tolist()} / query_index {q.tolist()} out of "
                            f"range for {x.shape[1]} examples per class.")
        n = len(classes)
        return _build(x, ids, classes, np.tile(s, (n, 1)), np.tile(q, (n, 1)),
                      np.zeros(n, np.int64), -1)

    @staticmethod
    def fixed_tasks(images, n_way: int, n_tasks: int | None = None, support_index=0,
                    query_index=1, image_ids=None) -> list:
        """The paper's analysis tasks: task ``t`` = classes ``[t*n_way, (t+1)*n_way)``.

        ``n_tasks=None`` gives every complete group of ``n_way`` classes. Pass the held-out
        (test) characters, e.g. ``chars.subset(split["test"]).images``.

        Examples
        --------
        >>> x = np.zeros((45, 2, 28, 28), np.float32)
        >>> tasks = EpisodeSampler.fixed_tasks(x, n_way=20)
        >>> len(tasks), tasks[1].classes[:3].tolist()
        (2, [20, 21, 22])
        """
        n_classes = np.shape(images)[0]
        available = n_classes // n_way
        n_tasks = available if n_tasks is None else n_tasks
        if n_tasks > available:
            raise DataError(f"n_tasks={n_tasks} tasks of {n_way} classes need "
                            f"{n_tasks * n_way} classes; only {n_classes} available.")
        tasks = []
        for t in range(n_tasks):
            task = EpisodeSampler.fixed_task(images, np.arange(t * n_way, (t + 1) * n_way),
                                             support_index, query_index, image_ids)
            task.index = t
            tasks.append(task)
        return tasks
