"""The ``--reduce`` option of the recording commands, parsed into the per-layer
reductions of :class:`repscope.probes.Probe` (this module parses; the probe reduces).

``none`` and ``spatial_mean`` apply to every layer; ``conv4=spatial_mean`` (comma
separated ``layer=reduction`` entries) to the named layers only, the others keep their
full maps. ``paper`` is the paper's recording: its code records conv4 after the
spatial mean (64 units, the head's input) and the other blocks in full; it is the
default of the recording commands and applies to whichever of those layers are
recorded.
"""
from __future__ import annotations

from typing import Sequence

from ..probes.schema import REDUCTIONS
from .errors import TrainingError

__all__ = ["PAPER_REDUCE", "REDUCE_HELP", "parse_reduce", "reduce_argument"]

#: The paper's recording (conv4 after the spatial mean, everything else in full).
PAPER_REDUCE = "paper"
#: The help of the ``--reduce`` option.
REDUCE_HELP = ("Reduction of recorded maps: 'paper' (conv4 after its spatial mean, 64 units, the "
               "rest in full, as the paper's code), 'none', 'spatial_mean' (every layer) or "
               "comma-separated LAYER=REDUCTION entries such as 'conv3=spatial_mean,"
               "conv4=spatial_mean'.")
_NAMED = {PAPER_REDUCE: {"conv4": "spatial_mean"}}


def parse_reduce(text: str, layers: Sequence[str]) -> dict[str, str]:
    """``--reduce`` text to the ``reduce`` dict of :class:`repscope.probes.Probe`.

    Examples
    --------
    >>> parse_reduce("conv4=spatial_mean", ["conv1", "conv4", "head"])
    {'conv1': 'none', 'conv4': 'spatial_mean', 'head': 'none'}
    >>> parse_reduce("paper", ["conv1", "conv4", "head"]) == parse_reduce("conv4=spatial_mean", ["conv1", "conv4", "head"])
    True
    >>> parse_reduce("spatial_mean", ["conv1", "head"])
    {'conv1': 'spatial_mean', 'head': 'spatial_mean'}
    >>> parse_reduce("conv9=spatial_mean", ["conv1"])
    Traceback (most recent call last):
    ...
    repscope.training.errors.TrainingError: --reduce 'conv9=spatial_mean' names layer 'conv9', which is not recorded; recorded layers: ['conv1']
    """
    layers = list(layers)
    text = str(text).strip()
    allowed = (f"Expected one of {[PAPER_REDUCE, *REDUCTIONS]} or comma-separated "
               "LAYER=REDUCTION entries such as 'conv4=spatial_mean'")
    if text in REDUCTIONS:
        return {name: text for name in layers}
    out = {name: "none" for name in layers}
    if text in _NAMED:
        return {**out, **{k: v for k, v in _NAMED[text].items() if k in out}}
    for entry in text.split(","):
        name, sep, how = (s.strip() for s in entry.partition("="))
        if not sep or not name or how not in REDUCTIONS:
            where = "" if entry.strip() == text else f" (entry {entry.strip()!r})"
            raise TrainingError(f"Unknown reduce (--reduce) {text!r}{where}. {allowed}")
        if name not in out:
            raise TrainingError(f"--reduce {text!r} names layer {name!r}, which is not recorded; "
                                f"recorded layers: {layers}")
        out[name] = how
    return out


def reduce_argument(layers: Sequence[str]) -> dict:
    """The ``--reduce`` option of a command that records ``layers``: the parser refuses a
    value :func:`parse_reduce` refuses, with the allowed forms.

    Examples
    --------
    >>> reduce_argument(["conv4"])["metavar"]
    '{paper,none,spatial_mean,LAYER=REDUCTION,...}'
    """
    from .cli import checked

    forms = ",".join([PAPER_REDUCE, *REDUCTIONS, "LAYER=REDUCTION", "..."])
    return {"type": checked(lambda text: parse_reduce(text, layers), "reduce"),
            "metavar": "{%s}" % forms}
