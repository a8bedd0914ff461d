"""repscope: what do a network's layers represent, and how does that change during
meta-learning?

One import name, three subpackages that follow the data flow:

* :mod:`repscope.training`: MAML (through ``higher``) and the supervised MNIST control,
  writing checkpoints;
* :mod:`repscope.probes`: :class:`~repscope.probes.Probe` records any ``nn.Module``'s
  layers as labelled xarray and stores them as netCDF;
* :mod:`repscope.analyses`: RSA (through rsatoolbox), CKA, the paper's figures and
  findings.

The most used names are re-exported here; the subpackages are imported on first use.

Examples
--------
>>> import repscope
>>> from repscope import Probe
>>> Probe is repscope.probes.Probe
True
>>> sorted(repscope.COMMANDS)
['feature-reuse', 'layer-similarity', 'maml', 'record', 'supervised']
"""
from __future__ import annotations

import importlib
from typing import NamedTuple

from .probes import Probe, open_run, write_checkpoint

class Command(NamedTuple):
    """A command line: ``module``, whose ``main(argv)`` runs it, and ``summary``, one line
    on what it does (shown by ``repscope --help``).

    Examples
    --------
    >>> COMMANDS["maml"].module
    'repscope.training.maml'
    """

    module: str
    summary: str


#: ``python -m repscope NAME`` (and the ``repscope NAME`` console script) runs the module's
#: ``main(argv)``.
COMMANDS = {
    "maml": Command("repscope.training.maml",
                    "Meta-train the conv4 network with MAML; writes a run folder."),
    "record": Command("repscope.training.record",
                      "Record a MAML run's layer outputs over its checkpoints and inner steps."),
    "supervised": Command("repscope.training.supervised",
                          "Train and record the supervised MNIST control."),
    "layer-similarity": Command("repscope.reproduce",
                                "Train, record and analyse: the paper's figures and findings."),
    "feature-reuse": Command("repscope.feature_reuse",
                             "MAML vs ANIL: rapid learning or feature reuse (Raghu et al.)?"),
}

__all__ = ["Probe", "open_run", "write_checkpoint", "COMMANDS", "Command"]


def __getattr__(name):
    # the subpackages load on first use: ``import repscope`` does not import rsatoolbox
    if name in ("probes", "training", "analyses"):
        return importlib.import_module(f"repscope.{name}")
    raise AttributeError(f"module 'repscope' has no attribute {name!r}")
