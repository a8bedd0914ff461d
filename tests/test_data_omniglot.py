"""Omniglot from the real archives: counts, preprocessing, de-duplication, cache, bad input."""
import io
import zipfile
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from repscope.training.data import load_omniglot
from repscope.training.data.fetch import safe_extract
from repscope.training.data.omniglot import _cache_file, read_archive
from repscope.training.errors import DataError

SMALL = ("images_background_small1", "images_background_small2")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("omniglot_cache")


@pytest.fixture(scope="module")
def chars(data_root, cache):
    return load_omniglot(data_root, download=False, cache=cache)


def test_counts_of_the_two_small_archives(chars):
    assert chars.images.shape == (242, 20, 28, 28)
    assert len(chars) == len(set(chars.characters)) == 242
    assert chars.characters == sorted(chars.characters)
    assert Counter(chars.alphabets) == {
        "Japanese_(katakana)": 47, "Sanskrit": 42, "Korean": 40, "Latin": 26,
        "Balinese": 24, "Greek": 24, "Early_Aramaic": 22, "Tagalog": 17}
    # small1 has 136 characters and small2 156; Greek (24) + Latin (26) are in both.
    assert Counter(chars.sources)["images_background_small1+images_background_small2"] == 50
    assert 136 + 156 - 50 == 242
    assert chars.background_only
    assert str(chars.image_ids[chars.characters.index("Greek/character01"), 0]) == \
        "Greek/character01/0394_01"
    assert all(str(i).startswith(c + "/") for c, row in zip(chars.characters, chars.image_ids)
               for i in row)


def test_preprocessing_matches_a_hand_written_reference(chars, data_root):
    x = chars.images
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    assert (x < 0.05).mean() > 0.75          # mostly-zero background
    assert 0.02 < x.mean() < 0.2             # strokes are the minority, and they are 1
    row, col = chars.characters.index("Latin/character05"), 3
    with zipfile.ZipFile(data_root / "omniglot" / "images_background_small2.zip") as z:
        png = z.read(f"images_background_small2/{chars.image_ids[row, col]}.png")
    page = Image.open(io.BytesIO(png))
    assert page.mode == "1" and page.size == (105, 105)
    grey = np.asarray(page.convert("L").resize((28, 28), Image.LANCZOS), np.float64) / 255
    np.testing.assert_allclose(x[row, col], 1 - grey, atol=1e-6)
    ink = 1 - np.asarray(page, np.float64)   # 1 where the pen was
    assert ink.mean() < 0.2 and x[row, col].mean() == pytest.approx(ink.mean(), abs=0.05)


def test_finn_mode_is_binary_nearest(data_root, cache):
    finn = load_omniglot(data_root, archives=("images_background_small1",),
                         download=False, resample="finn", cache=cache)
    assert set(np.unique(finn.images).tolist()) == {0.0, 1.0}
    with zipfile.ZipFile(data_root / "omniglot" / "images_background_small1.zip") as z:
        page = Image.open(io.BytesIO(z.read(
            f"images_background_small1/{finn.image_ids[0, 0]}.png")))
    nearest = np.asarray(page.convert("L").resize((28, 28), Image.NEAREST)) / 255
    np.testing.assert_array_equal(finn.images[0, 0], 1 - nearest)


def test_cache_round_trip_and_unreadable_cache(chars, data_root, cache):
    # The cache file of exactly these characters: other tests of this module write
    # other caches (finn mode, one archive) into the same folder.
    own = _cache_file(cache, chars.meta)
    assert own.is_file() and not list(cache.glob(".*"))
    again = load_omniglot(data_root, download=False, cache=cache)
    np.testing.assert_array_equal(again.images, chars.images)
    assert again.characters == chars.characters and again.sources == chars.sources
    np.testing.assert_array_equal(again.image_ids, chars.image_ids)

    broken = cache / "broken"
    broken.mkdir()
    (broken / own.name).write_bytes(own.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="Ignoring unreadable Omniglot cache"):
        rebuilt = load_omniglot(data_root, download=False, cache=broken)
    np.testing.assert_array_equal(rebuilt.images, chars.images)
    assert (broken / own.name).stat().st_size == own.stat().st_size  # rewritten whole


def test_extracted_folder_gives_the_same_characters(chars, data_root, tmp_path):
    safe_extract(data_root / "omniglot" / "images_background_small1.zip", tmp_path / "x")
    root = tmp_path / "root"
    (root / "omniglot").mkdir(parents=True)
    (tmp_path / "x" / "images_background_small1").rename(
        root / "omniglot" / "images_background_small1")
    folder = load_omniglot(root, archives=("images_background_small1",), download=False,
                           cache=False)
    assert len(folder) == 136
    rows = [chars.characters.index(c) for c in folder.characters]
    np.testing.assert_array_equal(folder.images, chars.images[rows])
    np.testing.assert_array_equal(folder.image_ids, chars.image_ids[rows])

    # An empty alphabet folder is an error that names it.
    (root / "omniglot" / "images_background_small1" / "Klingon").mkdir()
    with pytest.raises(DataError, match="alphabet 'Klingon' is empty"):
        load_omniglot(root, archives=("images_background_small1",), download=False,
                      cache=False)


def test_subset_and_presets(chars, data_root, cache):
    sub = chars.subset([5, 0])
    assert sub.characters == [chars.characters[5], chars.characters[0]]
    np.testing.assert_array_equal(sub.images[1], chars.images[0])
    with pytest.raises(DataError, match="out of range for 242 characters"):
        chars.subset([242])
    one = load_omniglot(data_root, archives="images_background_small1", download=False,
                        cache=cache)
    assert len(one) == 136 and list(one.meta["archives"]) == ["images_background_small1"]
    with pytest.raises(DataError, match="Unknown Omniglot archives 'evalution'.*background"):
        load_omniglot(archives="evalution")
    with pytest.raises(DataError, match="Unknown resample mode 'bicubic'"):
        load_omniglot(archives="small", resample="bicubic")


def test_missing_folder_and_missing_archive(tmp_path):
    with pytest.raises(DataError, match="Data folder '.*nowhere' .*does not exist"):
        load_omniglot(tmp_path / "nowhere")
    with pytest.raises(DataError, match="'images_background.zip' not found"):
        load_omniglot(tmp_path, archives="background", download=False)


def _root_with(tmp_path, name, data):
    (tmp_path / "omniglot").mkdir(parents=True, exist_ok=True)
    (tmp_path / "omniglot" / name).write_bytes(data)
    return tmp_path


def test_corrupt_and_truncated_archives(data_root, tmp_path, cache):
    original = (data_root / "omniglot" / "images_background_small1.zip").read_bytes()
    before = sorted(p.name for p in cache.iterdir())
    truncated = _root_with(tmp_path / "t", "images_background_small1.zip", original[:50000])
    with pytest.raises(DataError, match="images_background_small1.zip': expected 1319022 "
                                        "bytes, found 50000"):
        load_omniglot(truncated, archives=SMALL[:1], download=False, cache=cache)
    flipped = bytearray(original)
    flipped[-100] ^= 0xFF
    corrupt = _root_with(tmp_path / "c", "images_background_small1.zip", bytes(flipped))
    with pytest.raises(DataError, match="Checksum mismatch.*expected sha256 f38eb80f"):
        load_omniglot(corrupt, archives=SMALL[:1], download=False, cache=cache)
    assert sorted(p.name for p in cache.iterdir()) == before  # no cache written

    # Structure checks run on archives without a published checksum (read_archive).
    (tmp_path / "garbage.zip").write_bytes(original[:50000])
    with pytest.raises(DataError, match="Cannot read zip archive .*garbage.zip"):
        read_archive(tmp_path / "garbage.zip", "images_background_small1")


def _zip(path, entries):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries:
            z.writestr(name, data)
    return path


def test_archive_layout_errors(tmp_path, data_root):
    with zipfile.ZipFile(data_root / "omniglot" / "images_background_small1.zip") as z:
        png = z.read("images_background_small1/Balinese/character01/0108_01.png")
    ok = "arch/Alpha/character01/0001_01.png"
    assert list(read_archive(_zip(tmp_path / "a.zip", [(ok, png)]), "arch")) == \
        ["Alpha/character01"]
    with pytest.raises(DataError, match="alphabet 'Empty' is empty"):
        read_archive(_zip(tmp_path / "b.zip", [(ok, png), ("arch/Empty/", b"")]), "arch")
    with pytest.raises(DataError, match="character 'Alpha/character02' has no drawings"):
        read_archive(_zip(tmp_path / "c.zip", [(ok, png), ("arch/Alpha/character02/", b"")]),
                     "arch")
    stray = _zip(tmp_path / "s.zip", [(ok, png), ("arch/Alpha/notes.txt", b"x")])
    assert list(read_archive(stray, "arch")) == ["Alpha/character01"]
    with pytest.raises(DataError, match="not inside the top folder 'arch/'"):
        read_archive(_zip(tmp_path / "d.zip", [(ok, png), ("other/x.png", png)]), "arch")
    with pytest.raises(DataError, match=r"'arch/\.\./x.png' is unsafe"):
        read_archive(_zip(tmp_path / "e.zip", [(ok, png), ("arch/../x.png", png)]), "arch")


def test_overlapping_archives_must_agree(tmp_path, data_root):
    with zipfile.ZipFile(data_root / "omniglot" / "images_background_small1.zip") as z:
        png = z.read("images_background_small1/Balinese/character01/0108_01.png")
    base = tmp_path / "omniglot"
    for archive, drawers in ((SMALL[0], ["0001_01", "0001_02"]), (SMALL[1], ["0001_01", "0009_02"])):
        folder = base / archive / "Alpha" / "character01"
        folder.mkdir(parents=True)
        for d in drawers:
            (folder / f"{d}.png").write_bytes(png)
    with pytest.raises(DataError, match="'Alpha/character01' differs between "
                                        "'images_background_small1'"):
        load_omniglot(tmp_path, download=False, cache=False)
    (base / SMALL[1] / "Alpha" / "character01" / "0009_02.png").rename(
        base / SMALL[1] / "Alpha" / "character01" / "0001_02.png")
    same = load_omniglot(tmp_path, download=False, cache=False)
    assert same.characters == ["Alpha/character01"] and same.sources == ["+".join(SMALL)]
    (base / SMALL[1] / "Beta" / "character01").mkdir(parents=True)
    (base / SMALL[1] / "Beta" / "character01" / "0002_01.png").write_bytes(png)
    with pytest.raises(DataError, match=r"different numbers of drawings \[1, 2\]"):
        load_omniglot(tmp_path, download=False, cache=False)
