"""Doctest support for :mod:`training`: ``DATA`` is the real data folder.

``$REPSCOPE_DATA`` or ``../shared/data`` next to the repository, like the ``data_root``
fixture of ``tests/conftest.py``.
"""
import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _training_data_for_doctests(doctest_namespace):
    env = os.environ.get("REPSCOPE_DATA")
    doctest_namespace["DATA"] = (Path(env) if env else
                                 Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Doctests run single-threaded: fastest for these small networks on a shared CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
