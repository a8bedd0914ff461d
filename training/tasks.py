"""Where a run's tasks come from: data set, character split and episode samplers.

Seeds: meta-training episodes use ``config.seed``, validation tasks ``seed + 1`` and test
tasks ``seed + 2``; episode ``i`` of a sampler is a pure function of ``(seed, i)`` (see
:mod:`repscope.training.data.episodes`), and meta-step ``s`` uses episodes
``s*meta_batch .. s*meta_batch + meta_batch - 1``, which makes resumed runs exact.
Validation and test tasks are held out and the same at every validation; their classes
are rotated only with ``config.rotate_eval`` (as cbfinn/maml evaluates Omniglot).
"""
import numpy as np

from .data.episodes import EpisodeSampler
from .errors import DataError

__all__ = ["task_samplers", "lake_runs"]


def _omniglot_images(config):
    from .data.omniglot import load_omniglot
    from .data.splits import split_characters

    try:
        chars = load_omniglot(config.data, archives=tuple(config.archives))
    except DataError as exc:
        raise DataError(
            f"{exc}\nPreset {config.preset!r} trains on the Omniglot archives "
            f"{list(config.archives)}. The full archives (images_background.zip, "
            "images_evaluation.zip) are downloaded from github.com/brendenlake/omniglot "
            "(python/ folder) when the machine is online; offline, put them into "
            "<data>/omniglot/ and pass --data <data> (or set $REPSCOPE_DATA). Without them, "
            "use --preset quick, or --archives images_background_small1,"
            "images_background_small2 with --n-train/--n-val/--n-test that fit 242 "
            "characters.") from exc
    parts = split_characters(chars, config.n_train, config.n_val, config.n_test,
                             seed=config.seed)
    return {name: (chars.images[idx], chars.image_ids[idx]) for name, idx in parts.items()}


def _miniimagenet_images(config):
    from .data.miniimagenet import load_miniimagenet

    out = {}
    for split in ("train", "val", "test"):
        images, names = load_miniimagenet(config.data, split, config.image_size)
        ids = np.array([[f"{name}/{j:04d}" for j in range(images.shape[1])] for name in names])
        out[split] = (images, ids)
    return out


def task_samplers(config) -> dict:
    """``{"train", "val", "test"}`` -> :class:`EpisodeSampler` for ``config``.

    Examples
    --------
    >>> from repscope.training.config import get_preset
    >>> s = task_samplers(get_preset("quick", data=str(DATA)))
    >>> s["train"].images.shape[0], s["val"].images.shape[0], s["test"].images.shape[0]
    (172, 35, 35)
    >>> tuple(s["train"].batch(0, 4)[0].support_x.shape)
    (20, 1, 28, 28)
    >>> s["test"].image_ids.shape  # "Alphabet/characterNN/drawer" of every image
    (35, 20)
    """
    if config.dataset == "omniglot":
        images = _omniglot_images(config)
    else:
        images = _miniimagenet_images(config)
    return {
        "train": EpisodeSampler(images["train"][0], config.n_way, config.k_shot, config.n_query,
                                rotate=config.rotate, seed=config.seed,
                                image_ids=images["train"][1]),
        "val": EpisodeSampler(images["val"][0], config.n_way, config.k_shot, config.n_query_eval,
                              rotate=config.rotate_eval, seed=config.seed + 1, image_ids=images["val"][1]),
        "test": EpisodeSampler(images["test"][0], config.n_way, config.k_shot,
                               config.n_query_eval, rotate=config.rotate_eval, seed=config.seed + 2,
                               image_ids=images["test"][1]),
    }


def lake_runs(config) -> list:
    """Lake et al.'s 20 one-shot runs (20-way 1-shot tasks)."""
    from .data.lake import load_lake_runs

    return load_lake_runs(config.data)
