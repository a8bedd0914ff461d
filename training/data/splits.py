"""Character-level train/val/test splits with a fixed seed.

A split is consecutive slices of one seeded permutation, as Finn et al. shuffle the
character folders and slice them (1100 / 100 / 423 over all 1623 characters). Indices are
returned in that permuted order, not sorted, so fixed analysis tasks built from the test
slice mix alphabets as the paper's do.
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError

__all__ = ["split_characters", "SPLIT_BY"]

SPLIT_BY = ("character", "alphabet")


def split_characters(chars, n_train: int, n_val: int, n_test: int | None = None,
                     seed: int = 0, *, by: str = "character",
                     background_only: bool = False) -> dict:
    """Split characters into train / val / test index arrays.

    Parameters
    ----------
    chars : OmniglotCharacters or sequence of str
        The characters (``"Alphabet/characterNN"`` keys) to split.
    n_train, n_val : int
        Number of characters (``by="character"``) or alphabets (``by="alphabet"``) in
        the train and val parts.
    n_test : int, optional
        Size of the test part; ``None`` takes all that remain.
    seed : int
        Seed of the permutation (``numpy.random.default_rng(seed)``).
    by : {"character", "alphabet"}
        Split characters individually, or whole alphabets (no alphabet in two parts).
    background_only : bool
        Draw train and val only from characters of the background archives (never from
        ``images_evaluation``, whose alphabets make up Lake's one-shot benchmark); test
        takes from the rest. Needs an :class:`~repscope.training.data.omniglot.OmniglotCharacters`.

    Returns
    -------
    dict
        ``{"train", "val", "test"}`` -> int64 arrays of row indices into ``chars``,
        disjoint, in permuted order.

    Examples
    --------
    >>> keys = [f"A{a}/character{c:02d}" for a in range(3) for c in range(1, 5)]
    >>> parts = split_characters(keys, n_train=6, n_val=2, seed=1)
    >>> [len(parts[k]) for k in ("train", "val", "test")]
    [6, 2, 4]
    >>> sorted(np.concatenate(list(parts.values())).tolist()) == list(range(12))
    True
    >>> by_alpha = split_characters(keys, 1, 1, seed=0, by="alphabet")
    >>> [sorted({keys[i][:2] for i in by_alpha[k]}) for k in ("train", "val", "test")]
    [['A2'], ['A0'], ['A1']]
    """
    if by not in SPLIT_BY:
        raise DataError(f"Unknown split mode by={by!r}. Expected one of {list(SPLIT_BY)}")
    keys = list(getattr(chars, "characters", chars))
    rng = np.random.default_rng(seed)
    eligible = np.arange(len(keys))
    if background_only:
        if not hasattr(chars, "sources"):
            raise DataError("background_only=True needs OmniglotCharacters (with sources "
                            f"per character); got {type(chars).__name__}.")
        from .omniglot import BACKGROUND_ARCHIVES
        eligible = np.array([i for i, s in enumerate(chars.sources)
                             if set(s.split("+")) <= set(BACKGROUND_ARCHIVES)], np.int64)
    units, members = _units(keys, by)
    unit_ok = np.array([np.isin(m, eligible).all() for m in members], bool)
    order = rng.permutation(len(units))
    first, rest = order[unit_ok[order]], order[~unit_ok[order]]
    _check_sizes(n_train, n_val, n_test, len(first), len(units), by, background_only)
    train, val = first[:n_train], first[n_train:n_train + n_val]
    remaining = np.concatenate([first[n_train + n_val:], rest])
    test = remaining if n_test is None else remaining[:n_test]
    return {name: np.concatenate([members[u] for u in part] or [np.zeros(0, np.int64)])
            for name, part in (("train", train), ("val", val), ("test", test))}


def _units(keys: list, by: str):
    if by == "character":
        return keys, [np.array([i], np.int64) for i in range(len(keys))]
    alphabets = sorted({k.split("/")[0] for k in keys})
    members = [np.array([i for i, k in enumerate(keys) if k.split("/")[0] == a], np.int64)
               for a in alphabets]
    return alphabets, members


def _check_sizes(n_train, n_val, n_test, n_first, n_all, by, background_only):
    what = f"{by}s" + (" from background archives" if background_only else "")
    for name, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if n is not None and (not isinstance(n, (int, np.integer)) or n < 0):
            raise DataError(f"{name}={n!r} must be a non-negative integer.")
    if n_train + n_val > n_first:
        raise DataError(f"n_train + n_val = {n_train + n_val} but only {n_first} {what} "
                        "are available.")
    if n_test is not None and n_train + n_val + n_test > n_all:
        raise DataError(f"n_train + n_val + n_test = {n_train + n_val + n_test} but only "
                        f"{n_all} {by}s are available.")
