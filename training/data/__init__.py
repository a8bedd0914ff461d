"""Data sets of repscope: Omniglot, Lake's one-shot benchmark, MNIST, Mini-ImageNet.

Data are read from ``root=`` / ``$REPSCOPE_DATA`` (a folder with the subfolders
``omniglot/`` and ``mnist/``) or downloaded into ``cache_dir() / "data"`` with checksums; every
failure raises :class:`~repscope.training.errors.DataError`.
"""
from .episodes import Episode, EpisodeSampler
from .fetch import download, safe_extract, verify
from .lake import LakeRun, load_lake_runs
from .miniimagenet import load_miniimagenet
from .mnist import OfflineDataWarning, load_mnist, mnist_offline_split
from .omniglot import OmniglotCharacters, load_omniglot
from .paths import cache_dir, data_root
from .splits import split_characters

__all__ = [
    "data_root", "cache_dir",
    "load_omniglot", "OmniglotCharacters", "split_characters",
    "EpisodeSampler", "Episode",
    "load_lake_runs", "LakeRun",
    "load_mnist", "mnist_offline_split", "OfflineDataWarning",
    "load_miniimagenet",
    "download", "verify", "safe_extract",
]
