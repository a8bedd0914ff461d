"""Held-out evaluation of meta-parameters: many tasks, and Lake et al.'s 20 runs.

Compute only: functions return arrays and dicts; the training script writes them.
Accuracy of a task is measured on its query images after each inner step (step 0 is
the unadapted network); a summary reports the mean over tasks and the 95% confidence
interval ``1.96 * std / sqrt(n_tasks)`` (population std, as cbfinn/maml's
``np.std``).
"""
from types import SimpleNamespace

import numpy as np

from .engines import engine_for

__all__ = ["PUBLISHED", "evaluate_tasks", "summarize", "lake_episodes"]

#: Published numbers to print beside ours (accuracy in %).
PUBLISHED = {
    "finn2017_omniglot_20way_1shot": {"mean": 95.8, "ci95": 0.3,
                                      "what": "Finn et al. 2017, MAML, Omniglot 20-way 1-shot "
                                              "(standard 1200/423 split, 600 test tasks with "
                                              "rotated classes: rotate_eval)"},
    "finn2017_miniimagenet_5way_1shot": {"mean": 48.70, "ci95": 1.84,
                                         "what": "Finn et al. 2017, MAML, Mini-ImageNet 5-way "
                                                 "1-shot (1 query per class in test tasks: "
                                                 "n_query_eval=1)"},
    "lake2015_human_20way_1shot": {"mean": 95.5, "ci95": None,
                                   "what": "Lake et al. 2015, people, 20-run one-shot "
                                           "classification benchmark"},
}


def evaluate_tasks(model, episodes, config, steps=None, engine=None) -> np.ndarray:
    """Query accuracy of each task after 0..``steps`` inner steps.

    Parameters
    ----------
    model : torch.nn.Module
        Meta-parameters (not modified).
    episodes : iterable of Episode
        Anything with ``support_x``, ``support_y``, ``query_x``, ``query_y``.
    config : MAMLConfig
        Inner-loop settings.
    steps : int, optional
        Inner steps (default ``config.inner_steps_eval``).
    engine : str, optional
        Engine that adapts the tasks (default ``config.engine``); both give the same
        accuracies (to rounding), ``"batched"`` many tasks at once.

    Returns
    -------
    numpy.ndarray
        float64 ``(n_tasks, steps + 1)``, accuracy in [0, 1].

    Examples
    --------
    >>> import torch
    >>> from repscope.training.config import get_preset
    >>> from repscope.training.model import build_model
    >>> cfg = get_preset("quick", n_way=3)
    >>> ep = SimpleNamespace(support_x=torch.rand(3, 1, 28, 28), support_y=torch.arange(3),
    ...                      query_x=torch.rand(3, 1, 28, 28), query_y=torch.arange(3))
    >>> evaluate_tasks(build_model(cfg), [ep, ep], cfg, steps=2).shape
    (2, 3)
    """
    steps = config.inner_steps_eval if steps is None else int(steps)
    return engine_for(config, engine).evaluate(model, episodes, config, steps)


def summarize(accuracy) -> dict:
    """Mean and 95% CI (in %) of the last column of an :func:`evaluate_tasks` array.

    Examples
    --------
    >>> summarize(np.array([[0.1, 0.5], [0.2, 1.0]]))
    {'mean': 75.0, 'ci95': 34.6482, 'n_tasks': 2, 'per_step_mean': [15.0, 75.0]}
    """
    acc = np.asarray(accuracy, dtype=np.float64)
    final = acc[:, -1] * 100
    n = len(final)
    return {"mean": round(float(final.mean()), 4),
            "ci95": round(float(1.96 * final.std() / np.sqrt(n)), 4),
            "n_tasks": n,
            "per_step_mean": [round(float(v), 4) for v in acc.mean(axis=0) * 100]}


def lake_episodes(runs) -> list:
    """Lake et al.'s runs as episodes: support = the 20 training images, query = the 20 tests.

    Examples
    --------
    >>> run = SimpleNamespace(train_x=np.zeros((20, 1, 28, 28)), train_y=np.arange(20),
    ...                       test_x=np.zeros((20, 1, 28, 28)), test_y=np.arange(20))
    >>> lake_episodes([run])[0].query_y.shape
    (20,)
    """
    return [SimpleNamespace(support_x=r.train_x, support_y=r.train_y, query_x=r.test_x,
                            query_y=r.test_y) for r in runs]
