"""Mini-ImageNet loader on a generated fixture in the Ravi & Larochelle layout."""
import numpy as np
import pytest
from PIL import Image

from repscope.training.data import EpisodeSampler, load_miniimagenet
from repscope.training.errors import DataError

COLOURS = {"n01532829": (200, 30, 30), "n01558993": (30, 200, 30), "n01704323": (30, 30, 200),
           "n01749939": (200, 200, 30), "n02110063": (90, 90, 90), "n02111277": (250, 250, 250)}
SPLITS = {"train": list(COLOURS)[:3], "val": list(COLOURS)[3:5], "test": list(COLOURS)[5:]}


@pytest.fixture
def mini(tmp_path):
    """Three split CSVs and tiny JPEGs (two sizes) named like the real files."""
    folder = tmp_path / "data" / "miniimagenet"
    (folder / "images").mkdir(parents=True)
    for split, classes in SPLITS.items():
        rows = ["filename,label"]
        for c in classes:
            for i in range(4):
                name = f"{c}{i + 1:08d}.jpg"
                size = (84, 84) if i % 2 else (30, 20)
                Image.new("RGB", size, COLOURS[c]).save(folder / "images" / name, quality=95)
                rows.append(f"{name},{c}")
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_layout_shapes_and_values(mini):
    x, classes = load_miniimagenet(mini.parent, "train")
    assert x.shape == (3, 4, 3, 84, 84) and x.dtype == np.float32
    assert classes == sorted(SPLITS["train"])
    for row, c in enumerate(classes):
        expected = np.array(COLOURS[c], np.float32) / 255
        np.testing.assert_allclose(x[row].mean(axis=(0, 2, 3)), expected, atol=0.02)
    assert 0 <= x.min() and x.max() <= 1
    val, val_classes = load_miniimagenet(mini, "val", image_size=32)
    assert val.shape == (2, 4, 3, 32, 32) and val_classes == sorted(SPLITS["val"])
    ep = EpisodeSampler(x, n_way=3, k_shot=1, n_query=3, seed=0).episode(0)
    assert tuple(ep.support_x.shape) == (3, 3, 84, 84) and tuple(ep.query_x.shape) == (9, 3, 84, 84)


def test_bad_input(mini, tmp_path):
    with pytest.raises(DataError, match="Unknown Mini-ImageNet split 'training'"):
        load_miniimagenet(mini, "training")
    with pytest.raises(DataError, match="No Mini-ImageNet found in"):
        load_miniimagenet(tmp_path / "data" / "miniimagenet" / "images")
    victim = sorted((mini / "images").iterdir())[0]
    victim.unlink()
    with pytest.raises(DataError, match=f"image '.*{victim.name}' is missing"):
        load_miniimagenet(mini, "train")
    (mini / "test.csv").write_text("file,class\nx.jpg,n1\n")
    with pytest.raises(DataError, match="header \\['file', 'class'\\]; expected"):
        load_miniimagenet(mini, "test")
    lines = (mini / "val.csv").read_text().splitlines()
    (mini / "val.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="different numbers of images \\[3, 4\\]"):
        load_miniimagenet(mini, "val")
    Image.new("RGB", (5, 5)).save(mini / "images" / "ok.jpg")
    (mini / "images" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    (mini / "test.csv").write_text("filename,label\nbroken.jpg,n1\n")
    with pytest.raises(DataError, match="Cannot decode Mini-ImageNet image .*broken.jpg"):
        load_miniimagenet(mini, "test")
