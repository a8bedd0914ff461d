"""Lake et al.'s (2015) 20-run one-shot classification benchmark (``all_runs.zip``).

Each run is one 20-way 1-shot task: ``runNN/training/classMM.png`` (one drawing of each of
20 characters) and ``runNN/test/itemMM.png`` (20 test drawings), with the true class of
each test item in ``runNN/class_labels.txt`` (lines ``test/itemXX.png
training/classYY.png``, optionally prefixed by ``runNN/``). The characters come from the
evaluation alphabets: train on background archives only when evaluating on it
(``load_omniglot(archives="background")``).
"""
from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

from .fetch import check_zip, member_problem, open_zip
from .preprocess import RESAMPLE_MODES, decode_png, preprocess_omniglot
from .sources import OMNIGLOT_FILES, locate
from ..errors import DataError

__all__ = ["LakeRun", "load_lake_runs"]

_N_RUNS = 20
_N_WAY = 20


@dataclass
class LakeRun:
    """One run of the benchmark as a 20-way 1-shot task.

    Attributes
    ----------
    run : int
        Run number, 1..20.
    train_x : torch.Tensor
        float32 ``(20, 1, 28, 28)``: ``classMM.png`` for MM = 1..20, strokes 1.
    train_y : torch.Tensor
        int64 ``(20,)``: ``MM - 1``.
    test_x : torch.Tensor
        float32 ``(20, 1, 28, 28)``: ``itemXX.png`` for XX = 1..20.
    test_y : torch.Tensor
        int64 ``(20,)``: true class of each test item (``YY - 1``).
    train_ids, test_ids : list of str
        ``"runNN/training/classMM"`` and ``"runNN/test/itemXX"``.
    """

    run: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    train_ids: list
    test_ids: list


def load_lake_runs(root=None, download: bool = True, *, resample: str = "lanczos",
                   size: int = 28, base_url: str | None = None) -> list:
    """Load the 20 runs of Lake's one-shot benchmark.

    Parameters
    ----------
    root : path-like, optional
        Data folder with ``omniglot/all_runs.zip`` (or an extracted ``omniglot/all_runs/``).
    download : bool
        Download ``all_runs.zip`` (sha256-checked) when not found.
    resample : {"lanczos", "finn"}
        As for :func:`~repscope.training.data.omniglot.load_omniglot`.
    size : int
        Output side length.
    base_url : str, optional
        Download source, see :func:`~repscope.training.data.sources.base_url`.

    Returns
    -------
    list of LakeRun
        20 runs, in order.

    Examples
    --------
    >>> runs = load_lake_runs(DATA)
    >>> len(runs), tuple(runs[0].test_x.shape), runs[0].test_y[:4].tolist()
    (20, (20, 1, 28, 28), [7, 8, 1, 18])
    """
    path = locate("omniglot", ["all_runs.zip", "all_runs"], root=root,
                  download_ok=download, url=base_url, known=OMNIGLOT_FILES["all_runs.zip"],
                  check=check_zip)
    if resample not in RESAMPLE_MODES:
        raise DataError(f"Unknown resample mode {resample!r}. Expected one of "
                        f"{list(RESAMPLE_MODES)}")
    if path.is_dir():
        return [_run(n, lambda m: (path / m).read_bytes() if (path / m).is_file() else None,
                     str(path), size, resample) for n in range(1, _N_RUNS + 1)]
    with open_zip(path) as z:
        for info in z.infolist():
            if member_problem(info):
                raise DataError(f"{str(path)!r}: unsafe member {info.filename!r} "
                                f"({member_problem(info)}).")
        names = set(z.namelist())

        def read(member):
            if member not in names:
                return None
            try:
                return z.read(member)
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise DataError(f"Corrupt zip archive {str(path)!r}: cannot read "
                                f"{member!r} ({err}).") from err

        return [_run(n, read, str(path), size, resample) for n in range(1, _N_RUNS + 1)]


def _run(n: int, read, where: str, size: int, resample: str) -> LakeRun:
    run = f"run{n:02d}"
    labels = read(f"{run}/class_labels.txt")
    if labels is None:
        raise DataError(f"{where!r}: {run}/class_labels.txt is missing. Expected 20 runs "
                        "run01..run20 with class_labels.txt, training/ and test/.")
    pairs = _parse_labels(labels.decode("utf-8", "replace"), f"{where}:{run}")

    def image(member):
        data = read(f"{run}/{member}")
        if data is None:
            raise DataError(f"{where!r}: {run}/{member} is missing (named in "
                            f"{run}/class_labels.txt or expected as one of 20 classes).")
        return preprocess_omniglot(decode_png(data, f"{where}:{run}/{member}"), size,
                                   resample)

    train = np.stack([image(f"training/class{c:02d}.png") for c in range(1, _N_WAY + 1)])
    test = np.stack([image(f"test/item{i:02d}.png") for i in range(1, _N_WAY + 1)])
    return LakeRun(
        run=n, train_x=torch.from_numpy(train[:, None]),
        train_y=torch.arange(_N_WAY, dtype=torch.int64),
        test_x=torch.from_numpy(test[:, None]),
        test_y=torch.tensor([pairs[i] - 1 for i in range(1, _N_WAY + 1)], dtype=torch.int64),
        train_ids=[f"{run}/training/class{c:02d}" for c in range(1, _N_WAY + 1)],
        test_ids=[f"{run}/test/item{i:02d}" for i in range(1, _N_WAY + 1)])


_LINE = re.compile(r"^(?:run\d+/)?test/item(\d+)\.png\s+(?:run\d+/)?training/class(\d+)\.png$")


def _parse_labels(text: str, where: str) -> dict:
    """``{item number: class number}`` from ``class_labels.txt``."""
    pairs = {}
    for line in filter(None, (s.strip() for s in text.splitlines())):
        m = _LINE.match(line)
        if not m:
            raise DataError(f"{where}/class_labels.txt: cannot parse {line!r}. Expected "
                            "'test/itemXX.png training/classYY.png'.")
        item, cls = int(m.group(1)), int(m.group(2))
        if not 1 <= cls <= _N_WAY or item in pairs:
            raise DataError(f"{where}/class_labels.txt: bad line {line!r} (class must be "
                            f"1..{_N_WAY}, each item listed once).")
        pairs[item] = cls
    if sorted(pairs) != list(range(1, _N_WAY + 1)):
        raise DataError(f"{where}/class_labels.txt lists items {sorted(pairs)}; expected "
                        f"items 1..{_N_WAY}.")
    return pairs
