"""Raghu et al.'s freezing test: adapt the head only, or the whole network, at test time.

Raghu et al. (2020, Table 1) take a MAML-trained network and, on held-out test tasks,
run the inner loop over the head alone (the conv blocks frozen at their
meta-learned values) or over every layer as in training; a small accuracy difference
says the body's inner-loop change is not what solves the tasks (feature reuse).

Compute only: the functions return arrays and dicts; ``repscope.feature_reuse`` (the
``feature-reuse`` command) stores them beside its results. Each test task is adapted
both ways from the same meta-parameters on the same support and query images, so the
two accuracies of a task are paired.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .checkpoint import load_meta_parameters, load_run
from .errors import TrainingError
from .evaluate import evaluate_tasks
from .model import build_model
from .tasks import task_samplers

__all__ = ["FREEZING_LAYERS", "adapted_layers_accuracy", "freezing_test"]

#: The adapted layers the freezing test compares (every layer, as MAML trains, and the head alone).
FREEZING_LAYERS = ("all", "head")


def adapted_layers_accuracy(model, episodes, config, layers=FREEZING_LAYERS, steps=None,
                            engine=None) -> dict:
    """Query accuracy of each task after the inner loop, once per choice of adapted layers.

    Parameters
    ----------
    model : torch.nn.Module
        Meta-parameters (not modified).
    episodes : iterable of Episode
        Test tasks; each is adapted once per entry of ``layers``.
    config : MAMLConfig
        Inner-loop settings; its ``adapt_layers`` is replaced by each entry of ``layers``.
    layers : sequence of str
        Values of ``adapt_layers`` (``"all"``, ``"head"``, ``"freeze:K"``, names).
    steps : int, optional
        Inner steps (default ``config.inner_steps_eval``).
    engine : str, optional
        Engine (default ``config.engine``).

    Returns
    -------
    dict
        ``{adapt_layers: float64 array (n_tasks,)}``, accuracy in [0, 1] after ``steps``.

    Examples
    --------
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from repscope.training.config import get_preset
    >>> cfg = get_preset("quick", n_way=3)
    >>> ep = SimpleNamespace(support_x=torch.rand(3, 1, 28, 28), support_y=torch.arange(3),
    ...                      query_x=torch.rand(3, 1, 28, 28), query_y=torch.arange(3))
    >>> acc = adapted_layers_accuracy(build_model(cfg), [ep, ep], cfg, steps=1)
    >>> sorted(acc), acc["head"].shape
    (['all', 'head'], (2,))
    """
    episodes = list(episodes)
    out = {}
    for spec in layers:
        cfg = dataclasses.replace(config, adapt_layers=str(spec))
        out[str(spec)] = np.asarray(evaluate_tasks(model, episodes, cfg, steps, engine)[:, -1],
                                    dtype=np.float64)
    return out


def freezing_test(run_dir, n_tasks: int | None = None, *, checkpoint: int | None = None,
                  data=None, layers=FREEZING_LAYERS, engine: str | None = None) -> dict:
    """The freezing test on a run's held-out test tasks, from one of its checkpoints.

    Parameters
    ----------
    run_dir : path-like
        Run folder written by ``python -m repscope.training.maml``.
    n_tasks : int, optional
        Test tasks (default: the run's ``test_tasks``), the first ones of its test
        sampler, so the same tasks as its ``evaluation.json``.
    checkpoint : int, optional
        Saved step (default: the last).
    data : path-like, optional
        Data folder (default: the run's, else ``$REPSCOPE_DATA``).
    layers : sequence of str
        Values of ``adapt_layers`` compared.
    engine : str, optional
        Engine (default: the run's).

    Returns
    -------
    dict
        ``accuracy`` (``{adapt_layers: array (n_tasks,)}``), ``checkpoint``,
        ``inner_steps``, ``n_way``, ``k_shot``, ``trained_adapt_layers`` (what the run
        adapted in meta-training) and ``config`` (the run's, as a dict).

    Raises
    ------
    TrainingError
        When the run, the checkpoint or ``n_tasks`` is not usable (naming it).

    Examples
    --------
    >>> import tempfile
    >>> from repscope.training.config import get_preset
    >>> from repscope.training.maml import train
    >>> cfg = get_preset("quick", n_way=5, meta_batch=1, steps=1, val_every=0, test_tasks=0,
    ...                  lake_eval=False, progress=False, data=str(DATA))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = train(cfg, d + "/run", log=None)
    ...     res = freezing_test(d + "/run", 3)
    >>> sorted(res["accuracy"]), res["accuracy"]["head"].shape, res["checkpoint"]
    (['all', 'head'], (3,), 1)
    """
    config, saved = load_run(run_dir)
    if not saved:
        raise TrainingError(f"Run {str(run_dir)!r} has no checkpoints; train it first")
    step = max(saved) if checkpoint is None else int(checkpoint)
    if step not in saved:
        raise TrainingError(f"checkpoint {step} is not saved in {str(run_dir)!r}; saved: "
                            f"{sorted(saved)}")
    n_tasks = config.test_tasks if n_tasks is None else n_tasks
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, (int, np.integer)) or n_tasks < 1:
        raise TrainingError(f"n_tasks must be a whole number >= 1; got {n_tasks!r}")
    if data is not None:
        config = dataclasses.replace(config, data=str(Path(data)))
    model = load_meta_parameters(build_model(config), saved[step])
    sampler = task_samplers(config)["test"]
    episodes = [sampler.episode(i) for i in range(int(n_tasks))]
    return {"accuracy": adapted_layers_accuracy(model, episodes, config, layers, engine=engine),
            "checkpoint": step, "inner_steps": config.inner_steps_eval, "n_way": config.n_way,
            "k_shot": config.k_shot, "trained_adapt_layers": config.adapt_layers,
            "config": config.to_dict()}
