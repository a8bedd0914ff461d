"""Which tensor of a module's output is recorded: the documented rule.

* a tensor is recorded as it is;
* a tuple or list: its first element that is a tensor (nested tuples, lists and
  dicts are searched depth-first), unless a key says otherwise;
* a dict (or any mapping, e.g. a HuggingFace ``ModelOutput``): its first tensor value
  in insertion order, unless a key says otherwise;
* a key (``int`` index for sequences, ``str`` for mappings) chooses one element
  explicitly, per layer, via ``Probe(..., output_keys={path: key})``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import torch

from .errors import ProbeError

OutputKey = Union[int, str]


def _first_tensor(output: Any) -> Optional[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        items = output.values()
    elif isinstance(output, Sequence) and not isinstance(output, (str, bytes)):
        items = output
    else:
        return None
    for item in items:
        found = _first_tensor(item)
        if found is not None:
            return found
    return None


def pick_tensor(output: Any, key: Optional[OutputKey], path: str) -> torch.Tensor:
    """Return the tensor of ``output`` that the rule above selects.

    Parameters
    ----------
    output : Any
        What the module at ``path`` returned.
    key : int, str or None
        Explicit index or key; ``None`` applies the first-tensor rule.
    path : str
        Module path, for the error message.

    Examples
    --------
    >>> import torch
    >>> a, b = torch.zeros(1), torch.ones(1)
    >>> pick_tensor((None, a, b), None, "enc") is a
    True
    >>> pick_tensor({"hidden": a, "logits": b}, "logits", "enc") is b
    True
    """
    if key is None:
        found = _first_tensor(output)
        if found is None:
            raise ProbeError(
                f"Layer {path!r} returned {type(output).__name__} without any tensor in it. "
                "Expected a tensor, or a tuple/list/dict holding one."
            )
        return found
    try:
        found = output[key]
    except (KeyError, IndexError, TypeError) as err:
        available = list(output.keys()) if isinstance(output, Mapping) else (
            f"indices 0..{len(output) - 1}" if isinstance(output, Sequence) else "none")
        raise ProbeError(
            f"Output key {key!r} for layer {path!r} not found in its {type(output).__name__} "
            f"output. Available: {available}"
        ) from err
    if not isinstance(found, torch.Tensor):
        raise ProbeError(
            f"Output key {key!r} of layer {path!r} selects a {type(found).__name__}, not a tensor."
        )
    return found
