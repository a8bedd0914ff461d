"""The :class:`Probe`: scoped forward hooks that record labelled layer outputs."""
from __future__ import annotations

import operator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import xarray as xr
from torch import nn

from ._assemble import assemble
from ._buffer import BufferPool, _LayerBuffer
from ._outputs import OutputKey
from ._select import LayerSelector, resolve_layers
from .errors import ProbeError
from .schema import REDUCTIONS, ROLES

_DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}


@dataclass
class Recording:
    """One recorded cell: a forward pass (or several batches) at one
    ``(checkpoint, task, inner_step)``, on one labelled stimulus set.

    ``activations`` (module path to a ``(stimulus, unit)`` NumPy array) is filled when
    the ``with`` block exits normally, and emptied when the Probe forgets the recording
    (:meth:`Probe.clear`, ``to_dataset(clear=True)``); arrays taken out before that stay
    valid.
    """

    key: tuple[int, int, int]
    labels: np.ndarray
    image_ids: np.ndarray
    roles: np.ndarray
    activations: dict[str, np.ndarray] = field(default_factory=dict)
    _tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


def _as_int(value: Any, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise ProbeError(f"{name} must be an integer, got {value!r}") from None


def _stimuli(labels: Any, image_ids: Any, role: Union[str, Sequence[str]]):
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels_arr = np.asarray(labels)
    if labels_arr.ndim != 1 or labels_arr.size == 0:
        raise ProbeError(f"labels must be a non-empty 1-D sequence of int, got shape {labels_arr.shape}")
    if labels_arr.dtype.kind not in "iu":
        raise ProbeError(f"labels must be integers, got dtype {labels_arr.dtype}")
    n = len(labels_arr)
    if isinstance(image_ids, str):
        raise ProbeError(f"image_ids must be a sequence of str, one per stimulus, got the str {image_ids!r}")
    ids = np.asarray([str(i) for i in image_ids])
    if ids.shape != (n,):
        raise ProbeError(f"image_ids has {ids.size} entries for {n} labels; give one per stimulus")
    roles = np.asarray([role] * n if isinstance(role, str) else [str(r) for r in role])
    if roles.shape != (n,):
        raise ProbeError(f"role has {roles.size} entries for {n} labels; give one str or one per stimulus")
    bad = sorted(set(roles.tolist()) - set(ROLES))
    if bad:
        raise ProbeError(f"Unknown role {bad[0]!r}. Expected one of {list(ROLES)}")
    return labels_arr.astype(np.int64), ids, roles


def _check_finite(flat: torch.Tensor, path: str, key: tuple, dtype: str) -> None:
    """Refuse a recorded layer output holding NaN or Inf, naming the layer and cell."""
    finite = torch.isfinite(flat)
    if bool(finite.all()):
        return
    bad = (~finite).any(1)
    kinds = [k for k, has in (("NaN", bool(torch.isnan(flat).any())), ("Inf", bool(torch.isinf(flat).any())))
             if has]
    overflow = (" Stored as float16, whose largest value is 65504: record as float32 if the "
                "outputs are large but finite." if dtype == "float16" and "Inf" in kinds else "")
    raise ProbeError(
        f"Layer {path!r} output {' and '.join(kinds)} for {int(bad.sum())} of {len(flat)} stimuli "
        f"in recording (checkpoint, task, inner_step) = {key}; a record holds finite activations. "
        f"NaN or Inf outputs come from non-finite weights or inputs (a diverged network).{overflow}")


class Probe:
    """Record the outputs of chosen modules of any ``nn.Module`` as labelled xarray.

    Hooks exist only inside :meth:`recording`. Each recording is one cell of the
    ``(checkpoint, task, inner_step)`` grid on one labelled stimulus set;
    :meth:`to_dataset` stacks every cell recorded so far into the activation record
    schema (:mod:`repscope.probes.schema`).

    Parameters
    ----------
    model : torch.nn.Module
        The network; layer names are its ``named_modules()`` paths.
    layers : None, str, list of str or callable, optional
        Which modules to record. ``None`` (default): the direct children of ``model``.
        A callable is called as ``predicate(path, module)``. Unknown paths raise
        :class:`~repscope.probes.errors.ProbeError` listing the valid paths and close matches.
    reduce : {None, "none", "spatial_mean"} or dict, optional
        ``"spatial_mean"`` averages every output with more than 2 dims over its
        trailing (spatial) dims, leaving channels. A dict maps module paths to a
        reduction (missing paths: ``"none"``).
    dtype : {"float32", "float16", "float64"}
        Storage dtype of the recorded values (on the CPU).
    output_keys : dict, optional
        Module path to an ``int`` index or ``str`` key choosing the tensor in a tuple
        or dict output. Without one, the first tensor is recorded (depth-first).

    Notes
    -----
    A module that runs more than once per forward pass (a shared module) is refused
    with an error once it produces more stimuli than were labelled; record the
    modules that call it instead. To record a ``higher`` patched copy, or any copy of
    ``model`` with the same module paths, pass it as ``recording(..., module=fmodel)``.
    ``torch.func.functional_call(model, ...)`` runs ``model`` itself, so nothing is
    needed there.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> probe = Probe(net, layers=["0", "2"])
    >>> x = torch.randn(5, 4)
    >>> with probe.recording(checkpoint=0, labels=[0, 1, 2, 0, 1],
    ...                      image_ids=[f"img{i}" for i in range(5)]) as rec:
    ...     _ = net(x[:3]); _ = net(x[3:])      # two batches, concatenated in order
    >>> rec.activations["2"].shape
    (5, 3)
    >>> ds = probe.to_dataset(config={"seed": 0})
    >>> ds["0"].dims
    ('checkpoint', 'task', 'inner_step', 'stimulus', 'unit_0')
    >>> net[0]._forward_hooks
    OrderedDict()
    """

    def __init__(self, model: nn.Module, layers: LayerSelector = None, *,
                 reduce: Union[None, str, Mapping[str, str]] = None, dtype: str = "float32",
                 output_keys: Optional[Mapping[str, OutputKey]] = None):
        if not isinstance(model, nn.Module):
            raise ProbeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.layers = resolve_layers(model, layers)
        if dtype not in _DTYPES:
            raise ProbeError(f"Unknown dtype {dtype!r}. Expected one of {sorted(_DTYPES)}")
        self.dtype = dtype
        self.reduce = self._normalise_reduce(reduce)
        self.output_keys = dict(output_keys or {})
        unknown = sorted(set(self.output_keys) - set(self.layers))
        if unknown:
            raise ProbeError(f"output_keys names {unknown}, which are not recorded layers {self.layers}")
        modules = dict(model.named_modules())
        self._types = {p: type(modules[p]) for p in self.layers}
        self._cells: dict[tuple[int, int, int], Recording] = {}
        self._layer_attrs: dict[str, dict] = {}
        self._order: list[str] = []
        self._pool = BufferPool()
        self._active = False

    def _normalise_reduce(self, reduce) -> dict[str, str]:
        if reduce is None or isinstance(reduce, str):
            chosen = {p: reduce or "none" for p in self.layers}
        elif isinstance(reduce, Mapping):
            unknown = sorted(set(reduce) - set(self.layers))
            if unknown:
                raise ProbeError(f"reduce names {unknown}, which are not recorded layers {self.layers}")
            chosen = {p: reduce.get(p) or "none" for p in self.layers}
        else:
            raise ProbeError(f"reduce must be None, a str or a dict, got {type(reduce).__name__}")
        for value in chosen.values():
            if value not in REDUCTIONS:
                raise ProbeError(f"Unknown reduction {value!r}. Expected one of {list(REDUCTIONS)} or None")
        return chosen

    def _target_modules(self, module: Optional[nn.Module]) -> dict[str, nn.Module]:
        target = self.model if module is None else module
        found = dict(target.named_modules())
        chosen = {}
        for path in self.layers:
            sub = found.get(path)
            if sub is None:
                raise ProbeError(
                    f"The module passed to recording() has no submodule {path!r}; it must have "
                    f"the model's module paths. Its paths: {[p for p in found if p]}"
                )
            if not isinstance(sub, self._types[path]):
                raise ProbeError(
                    f"Submodule {path!r} of the module passed to recording() is a "
                    f"{type(sub).__name__}, but the model's is a {self._types[path].__name__}."
                )
            chosen[path] = sub
        return chosen

    @property
    def recorded(self) -> list[tuple[int, int, int]]:
        """The ``(checkpoint, task, inner_step)`` cells recorded so far, in order."""
        return list(self._cells)

    @contextmanager
    def recording(self, *, checkpoint: int, task: int = 0, inner_step: int = 0,
                  labels: Any, image_ids: Sequence[str], role: Union[str, Sequence[str]] = "probe",
                  module: Optional[nn.Module] = None) -> Iterator[Recording]:
        """Record every forward pass run inside the ``with`` block as one cell.

        Parameters
        ----------
        checkpoint, task, inner_step : int
            Where in training and adaptation these activations come from.
        labels : sequence of int or torch.Tensor
            Class label of each stimulus (a 1-D tensor is accepted), in the order the
            stimuli go through the model.
        image_ids : sequence of str
            Source image identifier of each stimulus.
        role : str or sequence of str
            ``"support"``, ``"query"`` or ``"probe"``, for all stimuli or one per stimulus.
        module : torch.nn.Module, optional
            The module actually run, if it is not ``model`` itself: a ``higher``
            patched copy (``fmodel``) or another copy with the same module paths.

        Yields
        ------
        Recording
            Its ``activations`` are filled when the block exits without an exception.

        Raises
        ------
        ProbeError
            If a selected layer never ran, if the number of recorded stimuli differs from
            ``len(labels)``, if a layer output NaN or Inf, if this cell was recorded
            before, or on nested use.
        """
        if self._active:
            raise ProbeError("This Probe is already recording; recordings of one Probe cannot nest.")
        key = (_as_int(checkpoint, "checkpoint"), _as_int(task, "task"), _as_int(inner_step, "inner_step"))
        if key in self._cells:
            raise ProbeError(f"(checkpoint, task, inner_step) = {key} was already recorded by this Probe.")
        labels_arr, ids, roles = _stimuli(labels, image_ids, role)
        targets = self._target_modules(module)
        order: list[str] = []
        buffers = {
            path: _LayerBuffer(path, len(labels_arr), _DTYPES[self.dtype],
                               self.reduce[path] == "spatial_mean", self.output_keys.get(path), order,
                               self._pool)
            for path in self.layers
        }
        rec = Recording(key, labels_arr, ids, roles)
        handles = []
        self._active = True
        try:
            for path, sub in targets.items():
                handles.append(sub.register_forward_hook(buffers[path].hook))
            yield rec
        finally:
            for handle in handles:
                handle.remove()
            self._active = False
        self._finish(rec, buffers, order, module is None)

    def _finish(self, rec: Recording, buffers: dict[str, _LayerBuffer], order: list[str],
                on_model: bool) -> None:
        silent = [p for p in self.layers if buffers[p].calls == 0]
        if silent:
            hint = (" Hooks sit on the modules of `model`; if the forward ran a copy (a higher "
                    "patched `fmodel`, a deepcopy), pass it as recording(..., module=copy)."
                    if on_model else "")
            raise ProbeError(
                f"Layers {silent} never ran during recording {rec.key}; every selected layer "
                f"must run inside the block.{hint}"
            )
        for path, buf in buffers.items():
            buf.wait()
            if buf.pos != buf.n:
                raise ProbeError(
                    f"Layer {path!r} recorded {buf.pos} stimuli in recording {rec.key}, "
                    f"but {buf.n} labels were given."
                )
            attrs = {
                "module_path": path,
                "module_type": self._types[path].__name__,
                "feature_shape": [int(s) for s in buf.feature_shape],
                "reduction": "spatial_mean" if buf.reduced else "none",
                "role": "layer",
                "stored_shape": tuple(buf.buf.shape[1:]),
            }
            previous = self._layer_attrs.setdefault(path, attrs)
            if previous != attrs:
                raise ProbeError(
                    f"Layer {path!r} has feature shape {attrs['feature_shape']} in recording "
                    f"{rec.key}, but {previous['feature_shape']} before; one dataset needs one shape."
                )
            _check_finite(buf.flat, path, rec.key, self.dtype)
            rec._tensors[path] = buf.flat
            rec.activations[path] = buf.flat.numpy()
        if not self._order:
            self._order = list(order)
        self._cells[rec.key] = rec

    def to_dataset(self, config: Any = None, *, clear: bool = False) -> xr.Dataset:
        """Everything recorded so far, as one ``xarray.Dataset`` (schema version 1).

        Parameters
        ----------
        config : dict, str or None
            The resolved run config (a dict, a dataclass instance or a JSON string),
            stored as one JSON string in ``attrs["config"]``.
        clear : bool
            Forget the recorded cells afterwards, so that a recorder holds at most one
            checkpoint's activations at a time.

        Returns
        -------
        xarray.Dataset
            Layers in forward (first-recording) order; unrecorded cells are NaN.

        Examples
        --------
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 3))
        >>> probe = Probe(net)
        >>> for task, inner_step in [(0, 0), (1, 5)]:
        ...     with probe.recording(checkpoint=0, task=task, inner_step=inner_step,
        ...                          labels=[1, 0], image_ids=["x", "y"], role="query"):
        ...         _ = net(torch.ones(2, 2))
        >>> ds = probe.to_dataset(config={"seed": 1}, clear=True)
        >>> bool(ds["0"].sel(task=0, inner_step=5).isnull().all())   # not recorded
        True
        >>> ds.attrs["config"], probe.recorded
        ('{"seed": 1}', [])
        """
        np_dtype = np.dtype(self.dtype)
        ds = assemble(list(self._cells.values()), self._order, self._layer_attrs, np_dtype, config)
        if clear:
            self.clear()
        return ds

    def clear(self) -> None:
        """Forget every recorded cell (the layer selection stays).

        Their buffers are reused by later recordings unless the caller still holds one
        of their arrays; the forgotten :class:`Recording` objects are emptied.
        """
        for rec in self._cells.values():
            self._pool.recycle(rec.activations, rec._tensors)
        self._cells.clear()
