"""Shared fixtures: the real data folder.

Tests run on the real data in ``../shared/data`` (or ``$REPSCOPE_DATA``). A missing
data folder is an error, never a skip: the tests are meant to exercise real data.
"""
import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tests never write into the user's cache (~/.cache/repscope): decoded arrays and any
# download go to a throw-away folder unless the caller chose one.
os.environ.setdefault("REPSCOPE_CACHE", tempfile.mkdtemp(prefix="repscope-test-cache-"))


def _data_root() -> Path:
    env = os.environ.get("REPSCOPE_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    if not (root / "omniglot").is_dir() or not (root / "mnist").is_dir():
        raise RuntimeError(
            f"Real data folder not found at {root!s} (from "
            f"{'$REPSCOPE_DATA' if env else 'the default ../shared/data'}). Expected "
            "subfolders 'omniglot' and 'mnist' laid out as ../shared/data/README.md says. "
            "Set REPSCOPE_DATA to a folder with that layout."
        )
    return root


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data folder, laid out like ``../shared/data``."""
    return _data_root()


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread per test: these small convolutions run fastest so, and two
    threads on a busy 2-core machine made single tests many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
