"""Normalise a layer selector into module paths, in one place."""
from __future__ import annotations

import difflib
from typing import Callable, Iterable, Union

from torch import nn

from .errors import ProbeError

LayerSelector = Union[None, str, Iterable[str], Callable[[str, nn.Module], bool]]


def _named_submodules(model: nn.Module) -> dict[str, nn.Module]:
    """All submodules by their ``named_modules()`` path, without the root ``""``."""
    return {name: module for name, module in model.named_modules() if name}


def _unknown_path_message(path: object, valid: list[str]) -> str:
    close = difflib.get_close_matches(str(path), valid, n=3, cutoff=0.5)
    hint = f" Close matches: {close}." if close else ""
    return f"Unknown layer {path!r}.{hint} Expected module paths from model.named_modules(): {valid}"


def resolve_layers(model: nn.Module, layers: LayerSelector = None) -> list[str]:
    """Turn a layer selector into a list of module paths of ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        The network whose ``named_modules()`` paths are the only valid names.
    layers : None, str, list of str or callable
        ``None`` selects the direct children of ``model`` (its top-level blocks);
        a string selects one path; a list selects those paths (no duplicates);
        a callable ``predicate(path, module) -> bool`` selects every non-root
        submodule for which it returns true, in ``named_modules()`` order.

    Returns
    -------
    list of str
        Module paths, in the order given (list) or in ``named_modules()`` order.

    Raises
    ------
    ProbeError
        For an unknown path (listing the valid paths and the close matches), a
        duplicate, an empty selection, or a selector of another type.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> resolve_layers(net)
    ['0', '1', '2']
    >>> resolve_layers(net, lambda path, m: isinstance(m, nn.Linear))
    ['0', '2']
    >>> resolve_layers(net, "3")
    Traceback (most recent call last):
    ...
    repscope.probes.errors.ProbeError: Unknown layer '3'. ...
    """
    modules = _named_submodules(model)
    valid = list(modules)
    if layers is None:
        paths = [name for name, _ in model.named_children()]
        where = "the direct children of the model (the default)"
    elif isinstance(layers, str):
        paths = [layers]
        where = "the given path"
    elif callable(layers):
        paths = [name for name, module in modules.items() if layers(name, module)]
        where = "the predicate"
    elif isinstance(layers, Iterable):
        paths = list(layers)
        where = "the given list"
    else:
        raise ProbeError(
            f"Unsupported layer selector {layers!r} of type {type(layers).__name__}. "
            "Expected None, a module path, a list of module paths, or a predicate(path, module)."
        )
    for path in paths:
        if not isinstance(path, str) or path not in modules:
            raise ProbeError(_unknown_path_message(path, valid))
    duplicates = sorted({p for p in paths if paths.count(p) > 1})
    if duplicates:
        raise ProbeError(f"Layer paths given more than once: {duplicates}. Each layer is recorded once.")
    if not paths:
        raise ProbeError(f"No layers selected by {where}. Module paths of this model: {valid}")
    return paths
