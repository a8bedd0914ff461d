"""Record any ``nn.Module``'s layers as labelled xarray, and store them as netCDF.

The public API:

* :class:`Probe` with :meth:`Probe.recording` and :meth:`Probe.to_dataset`, and the
  :class:`Recording` each ``with`` block yields;
* :func:`write_checkpoint`, :func:`open_run`, :func:`existing_checkpoints` (netCDF store,
  one file per checkpoint);
* :func:`validate` and :data:`SCHEMA_VERSION` (the record schema of the
  data format guide);
* :class:`ProbeError`, the one exception class.

Examples
--------
Wrap your own model in a few lines, here inside a ``higher`` inner loop:

>>> import tempfile, torch, higher
>>> from torch import nn
>>> from repscope import probes
>>> net = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2), nn.ReLU(), nn.Flatten(),
...                     nn.Linear(8 * 13 * 13, 5))
>>> probe = probes.Probe(net, layers=["0", "3"], reduce="spatial_mean")
>>> x, y = torch.randn(10, 1, 28, 28), torch.arange(10) % 5
>>> ids = [f"img{i}" for i in range(10)]
>>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
>>> with higher.innerloop_ctx(net, opt, copy_initial_weights=False) as (fnet, diffopt):
...     for step in range(3):
...         with probe.recording(checkpoint=0, task=0, inner_step=step, labels=y,
...                              image_ids=ids, role="probe", module=fnet):
...             _ = fnet(x)
...         _ = diffopt.step(nn.functional.cross_entropy(fnet(x), y))
>>> ds = probe.to_dataset(config={"inner_lr": 0.1}, clear=True)
>>> dict(ds["0"].sizes)
{'checkpoint': 1, 'task': 1, 'inner_step': 3, 'stimulus': 10, 'unit_0': 8}
>>> folder = tempfile.mkdtemp()
>>> _ = probes.write_checkpoint(folder, ds)
>>> probes.open_run(folder)["3"].sel(inner_step=2).shape
(1, 1, 10, 5)
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
