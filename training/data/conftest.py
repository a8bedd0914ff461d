"""Doctest support: the examples of :mod:`training.data` read the real data folder.

``DATA`` in the doctest namespace is ``$REPSCOPE_DATA`` or ``../shared/data`` next to the
repository, like the ``data_root`` fixture of ``tests/conftest.py``.
"""
import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _data_for_doctests(doctest_namespace):
    env = os.environ.get("REPSCOPE_DATA")
    doctest_namespace["DATA"] = (Path(env) if env else
                                 Path(__file__).resolve().parents[3] / "shared" / "data")
