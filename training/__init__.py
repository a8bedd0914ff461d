"""MAML training of the conv4 network of Finn et al. (2017): the ``higher`` engine (the
reference) or the ``batched`` engine (all tasks of a meta-batch at once, equal to rounding).

Public API
----------
- :class:`MAMLConfig`, :func:`get_preset`, :data:`PRESETS`: run configuration.
- :func:`build_model`: the conv4 network a configuration describes.
- :func:`adapt`: the inner loop, yielding ``(step, fmodel)`` for step 0..steps.
- :func:`meta_step`: one meta-update over a batch of tasks.
- :func:`train`: a whole run, written to a run folder (``python -m repscope.training.maml``).
- :func:`load_run`, :func:`load_meta_parameters`, :func:`load_checkpoint`: read a run.
- :func:`evaluate_tasks`, :func:`summarize`: held-out accuracy.
- :class:`TrainingError`, :class:`DataError`.
"""
from .checkpoint import load_checkpoint, load_meta_parameters, load_run
from .config import PRESETS, MAMLConfig, get_preset
from .errors import DataError, TrainingError
from .evaluate import evaluate_tasks, summarize
from .engines import meta_step
from .inner import adapt, adapted_parameter_names
from .model import build_model

__all__ = ["MAMLConfig", "PRESETS", "get_preset", "build_model", "adapt",
           "adapted_parameter_names", "meta_step", "train", "load_run", "load_meta_parameters",
           "load_checkpoint", "evaluate_tasks", "summarize", "TrainingError", "DataError"]


def __getattr__(name):
    # imported lazily so that ``python -m repscope.training.maml`` does not import it twice
    if name == "train":
        from .maml import train

        return train
    raise AttributeError(f"module 'training' has no attribute {name!r}")
