"""Data-parallel meta-training and recording over ``torch.distributed`` ranks.

Started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address), :func:`ranks` joins the process group (gloo on CPU, NCCL on GPU,
one GPU per local rank) and returns a :class:`Ranks`; started without it, the same
object describes one process and calls nothing in :mod:`torch.distributed`, so the
single-process path is the old one unchanged.

What the ranks share:

* meta-training (:func:`repscope.training.engines.meta_step`): every rank builds the
  whole meta-batch (episodes are a pure function of ``(seed, step)``) and the engine
  computes the meta-gradient of its own share (:meth:`Ranks.batch_share`: tasks
  ``rank, rank + K, ...``); the meta-step weights the share's mean meta-gradient and
  metrics by its size, sums them over ranks (:meth:`Ranks.reduce_gradients`), clips,
  and every rank takes the same Adam step.
  The result is the one-process result up to the order of a float sum, with either
  engine.
* recording (:mod:`repscope.training.record`): checkpoints are dealt out the same way,
  each rank writing its own ``checkpoint_XXXXXXXX.nc`` files.
* files: rank 0 alone writes run files; :meth:`Ranks.broadcast` hands its decisions
  (resume or not, which checkpoints are already recorded) to the others.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import TrainingError
from .options import check_device

__all__ = ["Ranks", "ranks", "leave"]

#: Seconds a rank tries to reach torchrun's rendezvous before it gives up.
RENDEZVOUS_WAIT = 60.0


@dataclass(frozen=True)
class Ranks:
    """This process's place among ``size`` data-parallel ranks.

    Examples
    --------
    >>> one = Ranks(rank=0, size=1)
    >>> one.is_main, one.shard(["a", "b", "c"])
    (True, ['a', 'b', 'c'])
    >>> Ranks(rank=1, size=2).shard(["a", "b", "c"])
    ['b']
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one process that writes run files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, items: Sequence) -> list:
        """This rank's share of ``items``: items ``rank, rank + size, ...``."""
        return list(items)[self.rank::self.size]

    def device(self, name: str) -> torch.device:
        """The device of this rank for a configured device name (``cuda``: one GPU per local rank)."""
        if name == "cuda" and self.distributed:
            return torch.device("cuda", self.local_rank)
        return torch.device(name)

    def reduce_gradients(self, params: Sequence[torch.Tensor], sums: dict) -> dict:
        """Sum ``.grad`` of ``params`` and the numbers in ``sums`` over ranks, in place.

        A parameter that got no gradient on any rank keeps ``.grad = None`` (so the
        optimiser skips it exactly as in one process). Returns the summed ``sums``.
        """
        if not self.distributed:
            return sums
        import torch.distributed as dist

        params = list(params)
        ref = params[0]
        flat = [p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1)
                for p in params]
        had = torch.tensor([p.grad is not None for p in params], dtype=ref.dtype, device=ref.device)
        keys = list(sums)
        extra = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=ref.device)
        buf = torch.cat(flat + [had])
        dist.all_reduce(buf)
        dist.all_reduce(extra)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = buf[offset:offset + n].view_as(p).clone()
            offset += n
        for p, h in zip(params, buf[offset:].tolist()):
            if h == 0:
                p.grad = None
        return {k: float(v) for k, v in zip(keys, extra.tolist())}

    def batch_share(self, episodes: Sequence) -> tuple[list, float]:
        """This rank's share of a meta-batch and its weight (share size / batch size).

        The meta-step (:func:`repscope.training.engines.meta_step`) weights the share's
        mean meta-gradient and metrics by it before :meth:`reduce_gradients` sums them.
        Every rank needs at least one episode.

        Examples
        --------
        >>> Ranks(rank=1, size=2).batch_share(["a", "b", "c"])
        (['b'], 0.3333333333333333)
        >>> Ranks(rank=3, size=4).batch_share(["a", "b"])
        Traceback (most recent call last):
        ...
        repscope.training.errors.TrainingError: 4 processes for a meta-batch of 2 tasks: every process needs a task. Use at most --meta-batch processes
        """
        mine = self.shard(episodes)
        if not mine:
            raise TrainingError(f"{self.size} processes for a meta-batch of {len(episodes)} tasks: "
                                "every process needs a task. Use at most --meta-batch processes")
        return mine, len(mine) / len(episodes)

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def check(self, error: Exception | None) -> None:
        """Raise rank 0's ``error`` (a :class:`TrainingError` or None) on every rank."""
        message = self.broadcast(None if error is None else str(error))
        if message is not None:
            raise TrainingError(message)


def ranks(device: str = "cpu") -> Ranks:
    """Join the ``torchrun`` process group, if this process was started by ``torchrun``.

    Parameters
    ----------
    device : {"cpu", "cuda"}
        gloo for ``cpu``, NCCL for ``cuda`` (each local rank takes GPU ``LOCAL_RANK``).

    Returns
    -------
    Ranks
        ``Ranks(0, 1)`` without ``torchrun`` (or with one process): nothing is initialised.

    Examples
    --------
    >>> "WORLD_SIZE" in os.environ or ranks("cpu") == Ranks(rank=0, size=1)
    True
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return Ranks()
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    check_device(device)
    if device == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        _reach_rendezvous()
        try:
            dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
        except (RuntimeError, ValueError) as err:  # DistError and its kinds are RuntimeErrors
            raise TrainingError(f"Cannot join the torchrun process group at {_address()}: "
                                f"{str(err).splitlines()[0] if str(err) else type(err).__name__}. "
                                f"{_AGAIN}") from None
    return Ranks(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local)


_AGAIN = ("The torchrun process that started this one stopped, or another rank failed: start "
          "the command again with torchrun (add --resume to continue a run)")


def _address() -> str:
    return f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"


def _reach_rendezvous() -> None:
    """Wait at most :data:`RENDEZVOUS_WAIT` s for torchrun's rendezvous store to accept a
    connection: with its agent gone, joining the group would wait half an hour."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "MASTER_PORT" not in os.environ:
        return  # rank 0 of a hand-started group hosts the store itself
    host, port = os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ["MASTER_PORT"])
    deadline = time.monotonic() + RENDEZVOUS_WAIT
    while True:
        try:
            with socket.create_connection((host, port), timeout=5):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise TrainingError(f"Cannot reach the torchrun rendezvous at {host}:{port} within "
                                    f"{RENDEZVOUS_WAIT:g} s ({err}). {_AGAIN}") from None
            time.sleep(0.5)


def leave(group: Ranks) -> None:
    """Leave the process group that :func:`ranks` joined (nothing for one process).

    Examples
    --------
    >>> leave(Ranks())  # one process: no group to leave
    """
    if group.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            # every rank arrives before any tears down: a rank that destroyed the group
            # while another still ran its last collective aborted in gloo's threads
            # ("terminate called without an active exception")
            dist.barrier()
            dist.destroy_process_group()
