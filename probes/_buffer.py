"""Per-layer storage for one recording: one CPU tensor, filled in place, and recycled.

The hook does one ``copy_`` of the detached output into a slice of the buffer (this is
the clone that protects against later in-place ops), so stimuli fed in several
batches end up concatenated in order without a final ``torch.cat``. CUDA outputs are
copied asynchronously into pinned memory; :meth:`_LayerBuffer.wait` synchronises.

Writing into freshly allocated memory costs page faults on top of the copy, so when
``Probe.clear`` forgets a recording, :class:`BufferPool` keeps each of its tensors for
the next recording of the same shape, but only if nothing outside the Probe still
refers to its array (checked with ``sys.getrefcount``); arrays a caller kept are let
go. What this saves is measured by ``bench/bench_probe.py`` (see the benchmark page).
"""
from __future__ import annotations

import math
import sys
from collections import defaultdict
from typing import Optional

import numpy as np
import torch

from ._outputs import OutputKey, pick_tensor
from .errors import ProbeError


def _refcount(array: np.ndarray) -> int:
    return sys.getrefcount(array)


def _calibrate() -> int:
    array = np.empty(1)          # one local name, as in BufferPool.recycle
    return _refcount(array)


_PRIVATE = _calibrate()


class BufferPool:
    """Free ``(stimulus, unit)`` CPU tensors by shape, dtype and pinning."""

    def __init__(self):
        self._free: dict[tuple, list[torch.Tensor]] = defaultdict(list)

    def take(self, n: int, units: int, dtype: torch.dtype, pinned: bool) -> torch.Tensor:
        """A ``(n, units)`` tensor with undefined contents, reused when one is free."""
        free = self._free.get((n, units, dtype, pinned))
        if free:
            return free.pop()
        return torch.empty((n, units), dtype=dtype, pin_memory=pinned)

    def recycle(self, arrays: dict[str, np.ndarray], tensors: dict[str, torch.Tensor]) -> None:
        """Empty ``arrays`` (and ``tensors``); keep the tensors nobody else refers to."""
        for path in list(arrays):
            array = arrays.pop(path)
            tensor = tensors.pop(path)
            if _refcount(array) <= _PRIVATE:
                self._free[(*tensor.shape, tensor.dtype, tensor.is_pinned())].append(tensor)


class _LayerBuffer:
    __slots__ = ("path", "n", "dtype", "spatial_mean", "key", "order", "pool",
                 "flat", "buf", "pos", "calls", "feature_shape", "reduced", "_dims", "_device")

    def __init__(self, path: str, n: int, dtype: torch.dtype, spatial_mean: bool,
                 key: Optional[OutputKey], order: list[str], pool: BufferPool):
        self.path, self.n, self.dtype = path, n, dtype
        self.spatial_mean, self.key, self.order, self.pool = spatial_mean, key, order, pool
        self.flat: Optional[torch.Tensor] = None      # (stimulus, unit)
        self.buf: Optional[torch.Tensor] = None       # the same memory, (stimulus, *stored)
        self.pos = self.calls = 0
        self.feature_shape: tuple[int, ...] = ()
        self.reduced = False
        self._dims: tuple[int, ...] = ()
        self._device: Optional[torch.device] = None

    def _start(self, out: torch.Tensor) -> None:
        if out.ndim < 1:
            raise ProbeError(
                f"Layer {self.path!r} returned a 0-dim tensor; expected a batch dimension first."
            )
        self.feature_shape = tuple(out.shape[1:])
        self.reduced = self.spatial_mean and out.ndim > 2
        self._dims = tuple(range(2, out.ndim)) if self.reduced else ()
        stored = self.feature_shape[:1] if self.reduced else self.feature_shape
        pinned = out.device.type == "cuda"
        self._device = out.device if pinned else None
        self.flat = self.pool.take(self.n, math.prod(stored), self.dtype, pinned)
        self.buf = self.flat.view(self.n, *stored)
        self.order.append(self.path)

    def hook(self, module, inputs, output) -> None:
        """Forward hook: select, reduce, detach and copy the output to the CPU buffer."""
        if self.key is None and isinstance(output, torch.Tensor):
            out = output
        else:
            out = pick_tensor(output, self.key, self.path)
        if self.buf is None:
            self._start(out)
        elif out.shape[1:] != self.feature_shape:
            raise ProbeError(
                f"Layer {self.path!r} returned per-stimulus shape {tuple(out.shape[1:])} after "
                f"{self.feature_shape} earlier in the same recording; batches must agree."
            )
        end = self.pos + out.shape[0]
        if end > self.n:
            raise ProbeError(
                f"Layer {self.path!r} produced {end} stimuli (call {self.calls + 1}) but the "
                f"recording was given {self.n} labels. Either more stimuli went in than were "
                "labelled, or the module runs more than once per forward pass (a shared "
                "module); select the modules that call it instead."
            )
        if self._dims:
            out = out.mean(dim=self._dims)
        try:
            self.buf[self.pos:end].copy_(out.detach(), non_blocking=self._device is not None)
        except RuntimeError as err:
            raise ProbeError(
                f"Could not copy the output of layer {self.path!r} (shape {tuple(out.shape)}, "
                f"dtype {out.dtype}, device {out.device}) to the CPU: {err}"
            ) from err
        self.pos = end
        self.calls += 1

    def wait(self) -> None:
        """Block until asynchronous copies from a GPU have landed."""
        if self._device is not None:
            torch.cuda.synchronize(self._device)
