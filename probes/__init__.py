"""Record any ``nn.Module``'s layers as labelled xarray, and store them as netCDF.

The public API:

* :class:`Probe` with :meth:`Probe.recording` and :meth:`Probe.to_dataset`;
* :func:`write_checkpoint`, :func:`open_run`, :func:`existing_checkpoints` (netCDF store);
* :func:`validate` and :data:`SCHEMA_VERSION` (the record schema);
* :class:`ProbeError`, the one exception class.
"""
from .errors import ProbeError
from .probe import Probe, Recording
from .schema import SCHEMA_VERSION, validate
from .store import existing_checkpoints, open_run, write_checkpoint

__all__ = [
    "Probe",
    "Recording",
    "ProbeError",
    "SCHEMA_VERSION",
    "validate",
    "write_checkpoint",
    "open_run",
    "existing_checkpoints",
]
