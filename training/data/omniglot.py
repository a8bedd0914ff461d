"""Omniglot characters from the canonical archives, preprocessed as in Finn et al.

Archives (``images_background``, ``images_evaluation``, ``images_background_small1``,
``images_background_small2``) are read straight from the zip or from an extracted
folder ``omniglot/<archive>/<Alphabet>/characterNN/<drawer>.png``; missing archives are
downloaded (see :mod:`repscope.training.data.sources`). A character that appears in several
archives (small1 and small2 share Greek and Latin) counts once, keyed
``Alphabet/characterNN``.

Decoded arrays are cached as ``.npz`` under ``cache_dir() / "preprocessed"``, keyed by the
archives' sha256 and the preprocessing options (``bench/bench_data.py`` measures the gain).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...probes.files import atomic_path
from .fetch import check_zip, file_digest, member_problem, open_zip
from .paths import cache_dir
from .preprocess import decode_png, preprocess_omniglot, RESAMPLE_MODES
from .sources import OMNIGLOT_FILES, locate
from ..errors import DataError

__all__ = ["OmniglotCharacters", "load_omniglot", "read_archive", "ARCHIVES",
           "BACKGROUND_ARCHIVES", "EVALUATION_ARCHIVES", "ARCHIVE_SETS"]

BACKGROUND_ARCHIVES = ("images_background", "images_background_small1",
                       "images_background_small2")
EVALUATION_ARCHIVES = ("images_evaluation",)
ARCHIVES = BACKGROUND_ARCHIVES + EVALUATION_ARCHIVES
ARCHIVE_SETS = {
    "small": ("images_background_small1", "images_background_small2"),
    "background": ("images_background",),
    "evaluation": ("images_evaluation",),
    "all": ("images_background", "images_evaluation"),
}
_CACHE_VERSION = 1


@dataclass
class OmniglotCharacters:
    """Preprocessed Omniglot characters, one row per character.

    Attributes
    ----------
    images : numpy.ndarray
        float32 ``(n_characters, n_drawers, 28, 28)`` in [0, 1], strokes 1.
    characters : list of str
        ``"Alphabet/characterNN"``, one per row (sorted as loaded).
    image_ids : numpy.ndarray of str
        ``(n_characters, n_drawers)``, e.g. ``"Greek/character01/0394_01"``.
    sources : list of str
        Per character, the archive(s) it was read from, joined by ``"+"``.
    meta : dict
        What was loaded (archives with their paths and sha256, preprocessing), for
        callers to record in their metadata.

    Examples
    --------
    >>> chars = OmniglotCharacters(
    ...     images=np.zeros((2, 3, 28, 28), np.float32),
    ...     characters=["Greek/character01", "Latin/character02"],
    ...     image_ids=np.array([[f"c{i}_{j}" for j in range(3)] for i in range(2)]),
    ...     sources=["images_background_small1"] * 2)
    >>> len(chars), chars.alphabets, chars.background_only
    (2, ['Greek', 'Latin'], True)
    >>> chars.subset([1]).characters
    ['Latin/character02']
    """

    images: np.ndarray
    characters: list
    image_ids: np.ndarray
    sources: list
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.characters)
        if self.images.ndim != 4 or self.images.shape[0] != n:
            raise DataError(f"images has shape {self.images.shape}; expected "
                            f"({n}, n_drawers, H, W) for {n} characters.")
        if self.image_ids.shape != self.images.shape[:2] or len(self.sources) != n:
            raise DataError(f"image_ids {self.image_ids.shape} and sources "
                            f"({len(self.sources)}) must match images "
                            f"{self.images.shape[:2]}.")

    def __len__(self) -> int:
        return len(self.characters)

    @property
    def alphabets(self) -> list:
        """The alphabet of each character."""
        return [c.split("/")[0] for c in self.characters]

    @property
    def background_only(self) -> bool:
        """True when every character comes from a background archive (never from
        ``images_evaluation``, the alphabets of Lake's one-shot benchmark)."""
        return all(set(s.split("+")) <= set(BACKGROUND_ARCHIVES) for s in self.sources)

    def subset(self, indices) -> "OmniglotCharacters":
        """Rows ``indices`` (in that order) as a new :class:`OmniglotCharacters`."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise DataError(f"Character indices out of range for {len(self)} characters: "
                            f"min {idx.min()}, max {idx.max()}.")
        return OmniglotCharacters(
            images=self.images[idx], characters=[self.characters[i] for i in idx],
            image_ids=self.image_ids[idx], sources=[self.sources[i] for i in idx],
            meta=dict(self.meta))


def _archive_names(archives) -> tuple:
    if isinstance(archives, str):
        names = ARCHIVE_SETS.get(archives, (archives,) if archives in ARCHIVES else None)
    else:
        names = tuple(archives)
    if names is None or not names or any(a not in ARCHIVES for a in names):
        raise DataError(f"Unknown Omniglot archives {archives!r}. Expected a named set "
                        f"{sorted(ARCHIVE_SETS)} or a tuple of names from {list(ARCHIVES)}")
    return tuple(dict.fromkeys(names))


def read_archive(path: str | os.PathLike, name: str) -> dict:
    """List an archive's characters without decoding: ``{key: [(drawer, entry), ...]}``.

    ``path`` is the zip file or the extracted folder of archive ``name``. Keys are
    ``"Alphabet/characterNN"``, drawers are file stems (``"0394_01"``) sorted, and each
    entry is ``(zip member name, CRC)`` or ``(file path, size)``.

    Raises
    ------
    DataError
        Unreadable archive, wrong top folder, unsafe member names, an alphabet without
        characters, or a character without drawings.
    """
    path = Path(path)
    if path.is_dir():
        return _read_folder(path / name if (path / name).is_dir() else path)
    with open_zip(path) as z:
        return _read_zip(z, path, name)


def _read_zip(z: zipfile.ZipFile, path: Path, name: str) -> dict:
    alphabets, chars = set(), {}
    for info in z.infolist():
        problem = member_problem(info)
        if problem:
            raise DataError(f"Omniglot archive {str(path)!r}: member {info.filename!r} "
                            f"is unsafe ({problem}).")
        parts = info.filename.rstrip("/").split("/")
        if parts[0] == "__MACOSX" or parts[-1].startswith("."):
            continue
        if parts[0] != name:
            raise DataError(f"Omniglot archive {str(path)!r}: member {info.filename!r} is "
                            f"not inside the top folder {name + '/'!r}. Expected "
                            f"{name}/<Alphabet>/characterNN/<drawer>.png")
        if len(parts) >= 2:
            alphabets.add(parts[1])
        if len(parts) >= 4 or (len(parts) == 3 and info.is_dir()):
            chars.setdefault(f"{parts[1]}/{parts[2]}", [])
        if len(parts) == 4 and not info.is_dir() and parts[3].lower().endswith(".png"):
            chars[f"{parts[1]}/{parts[2]}"].append(
                (parts[3][:-4], (info.filename, info.CRC)))
    return _finish(chars, alphabets, path)


def _read_folder(folder: Path) -> dict:
    if not any(folder.iterdir()):
        raise DataError(f"Omniglot folder {str(folder)!r} is empty. Expected "
                        "<Alphabet>/characterNN/<drawer>.png inside.")
    alphabets, chars = set(), {}
    for alphabet in folder.iterdir():
        if not alphabet.is_dir() or alphabet.name.startswith("."):
            continue
        alphabets.add(alphabet.name)
        for char in alphabet.iterdir():
            if char.is_dir():
                chars[f"{alphabet.name}/{char.name}"] = [
                    (f.stem, (str(f), f.stat().st_size)) for f in char.glob("*.png")]
    return _finish(chars, alphabets, folder)


def _finish(chars: dict, alphabets: set, where: Path) -> dict:
    if not alphabets:
        raise DataError(f"Omniglot archive {str(where)!r} holds no alphabets. Expected "
                        "<Alphabet>/characterNN/<drawer>.png entries.")
    for alphabet in sorted(alphabets):
        if not any(k.split("/")[0] == alphabet for k in chars):
            raise DataError(f"Omniglot archive {str(where)!r}: alphabet {alphabet!r} is "
                            "empty. Expected at least one characterNN folder with drawings.")
    for key, drawers in chars.items():
        if not drawers:
            raise DataError(f"Omniglot archive {str(where)!r}: character {key!r} has no "
                            "drawings. Expected <drawer>.png files.")
        drawers.sort()
    return chars


def _merge(listings: dict) -> dict:
    """Merge per-archive listings; a shared character must have identical drawings."""
    merged = {}
    for name, (path, chars) in listings.items():
        for key, drawers in chars.items():
            if key not in merged:
                merged[key] = (drawers, path, name, [name])
                continue
            first, first_path, first_name, names = merged[key]
            if [(d, e[1]) for d, e in first] != [(d, e[1]) for d, e in drawers]:
                raise DataError(f"Character {key!r} differs between {first_name!r} "
                                f"({str(first_path)!r}) and {name!r} ({str(path)!r}). "
                                "Expected the same drawers and files where archives "
                                "overlap.")
            names.append(name)
    counts = {len(v[0]) for v in merged.values()}
    if len(counts) > 1:
        odd = sorted(merged, key=lambda k: len(merged[k][0]))[0]
        raise DataError(f"Characters have different numbers of drawings {sorted(counts)}; "
                        f"e.g. {odd!r} has {len(merged[odd][0])}. Expected the same number "
                        "for every character.")
    return merged


def _decode(merged: dict, size: int, resample: str):
    keys = sorted(merged)
    n_drawers = len(merged[keys[0]][0])
    images = np.empty((len(keys), n_drawers, size, size), np.float32)
    ids = np.empty((len(keys), n_drawers), dtype=object)
    zips = {}
    try:
        for i, key in enumerate(keys):
            drawers, path, _, _ = merged[key]
            for j, (stem, (entry, _)) in enumerate(drawers):
                data = _read_entry(path, entry, zips)
                images[i, j] = preprocess_omniglot(decode_png(data, f"{path}:{entry}"),
                                                   size, resample)
                ids[i, j] = f"{key}/{stem}"
    finally:
        for z in zips.values():
            z.close()
    sources = ["+".join(merged[k][3]) for k in keys]
    return images, keys, ids.astype(str), sources


def _read_entry(path: Path, entry: str, zips: dict) -> bytes:
    if path.is_dir():
        return Path(entry).read_bytes()
    if path not in zips:
        zips[path] = open_zip(path)
    try:
        return zips[path].read(entry)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as err:
        raise DataError(f"Corrupt zip archive {str(path)!r}: cannot read {entry!r} "
                        f"({err}). Expected an intact zip file.") from err


def _fingerprint(path: Path) -> str:
    if path.is_file():
        return file_digest(path)
    h = hashlib.sha256()
    for f in sorted(path.rglob("*.png")):
        st = f.stat()
        h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return "folder-" + h.hexdigest()


def _cache_file(folder: Path, meta: dict) -> Path:
    key = json.dumps({"v": _CACHE_VERSION, "archives": meta["archives"],
                      "size": meta["size"], "resample": meta["resample"]}, sort_keys=True)
    return folder / f"omniglot-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"


def _load_cached(path: Path):
    try:
        with np.load(path, allow_pickle=False) as f:
            return (f["images"], [str(c) for c in f["characters"]], f["image_ids"],
                    [str(s) for s in f["sources"]])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        warnings.warn(f"Ignoring unreadable Omniglot cache {str(path)!r} ({err}); "
                      "decoding the archives again.", stacklevel=3)
        return None


def _save_cached(path: Path, images, keys, ids, sources) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, images=images, characters=np.array(keys), image_ids=ids,
                     sources=np.array(sources))


def load_omniglot(root=None, archives=("images_background_small1",
                                        "images_background_small2"),
                  download: bool = True, *, resample: str = "lanczos", size: int = 28,
                  cache: bool | str | os.PathLike = True,
                  base_url: str | None = None) -> OmniglotCharacters:
    """Load Omniglot characters from one or more canonical archives.

    Parameters
    ----------
    root : path-like, optional
        Data folder (``omniglot/<archive>.zip`` or ``omniglot/<archive>/``); default
        ``$REPSCOPE_DATA``, else the download cache. See :func:`~repscope.training.data.paths.data_root`.
    archives : tuple of str or str
        Archive names from :data:`ARCHIVES` (one name or a tuple), or a named set of
        :data:`ARCHIVE_SETS`: ``"small"`` (small1 + small2, 242 characters),
        ``"background"`` (964), ``"evaluation"`` (659), ``"all"``.
        Use background archives only when evaluating on Lake's benchmark.
    download : bool
        Download archives not found locally (checked against known checksums).
    resample : {"lanczos", "finn"}
        See :mod:`repscope.training.data.preprocess`.
    size : int
        Output side length (28 in MAML).
    cache : bool or path-like
        Cache the decoded arrays as ``.npz`` (True: under ``cache_dir()/"preprocessed"``;
        a path: in that folder; False: never).
    base_url : str, optional
        Download source; default ``$REPSCOPE_DOWNLOAD_URL/omniglot/`` or the canonical
        GitHub folder.

    Returns
    -------
    OmniglotCharacters

    Raises
    ------
    DataError
        Missing, corrupt or mis-laid-out archives; checksum mismatch; empty alphabets.

    Examples
    --------
    >>> chars = load_omniglot(DATA, cache=False)
    >>> chars.images.shape, len(chars), chars.characters[0], str(chars.image_ids[0, 0])
    ((242, 20, 28, 28), 242, 'Balinese/character01', 'Balinese/character01/0108_01')
    >>> chars.background_only, sorted(set(chars.alphabets))[:3]
    (True, ['Balinese', 'Early_Aramaic', 'Greek'])
    """
    names = _archive_names(archives)
    if resample not in RESAMPLE_MODES:
        raise DataError(f"Unknown resample mode {resample!r}. Expected one of "
                        f"{list(RESAMPLE_MODES)}")
    paths = {}
    for name in names:
        paths[name] = locate("omniglot", [f"{name}.zip", name], root=root,
                             download_ok=download, url=base_url,
                             known=OMNIGLOT_FILES[f"{name}.zip"], check=check_zip)
    meta = {"dataset": "omniglot", "size": size, "resample": resample, "inverted": True,
            "archives": {n: {"path": str(p), "sha256": _fingerprint(p)}
                         for n, p in paths.items()}}
    cache_path = None
    if cache:
        folder = cache_dir() / "preprocessed" if cache is True else Path(cache)
        cache_path = _cache_file(folder, meta)
        if cache_path.is_file():
            cached = _load_cached(cache_path)
            if cached is not None:
                return OmniglotCharacters(*cached, meta=meta)
    listings = {n: (p, read_archive(p, n)) for n, p in paths.items()}
    images, keys, ids, sources = _decode(_merge(listings), size, resample)
    if cache_path is not None:
        _save_cached(cache_path, images, keys, ids, sources)
    return OmniglotCharacters(images, keys, ids, sources, meta=meta)
