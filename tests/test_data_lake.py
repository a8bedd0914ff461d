"""Lake's 20-run one-shot benchmark from the real all_runs.zip."""
import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from repscope.training.data import load_lake_runs
from repscope.training.data.fetch import safe_extract
from repscope.training.errors import DataError


@pytest.fixture(scope="module")
def runs(data_root):
    return load_lake_runs(data_root, download=False)


def test_twenty_runs_of_twenty_items(runs):
    assert [r.run for r in runs] == list(range(1, 21))
    assert sum(len(r.test_y) for r in runs) == 400
    for r in runs:
        assert r.train_x.shape == r.test_x.shape == (20, 1, 28, 28)
        assert r.train_x.dtype == torch.float32 and r.test_y.dtype == torch.int64
        assert r.train_y.tolist() == list(range(20))
        assert sorted(r.test_y.tolist()) == list(range(20))  # each class tested once
        assert 0 <= float(r.test_x.min()) and float(r.test_x.max()) <= 1
        assert float((r.test_x < 0.05).float().mean()) > 0.75  # strokes = 1 on 0


def test_labels_follow_class_labels_txt(runs, data_root):
    with zipfile.ZipFile(data_root / "omniglot" / "all_runs.zip") as z:
        lines = z.read("run07/class_labels.txt").decode().split()
        page = Image.open(io.BytesIO(z.read("run07/test/item13.png")))
    pairs = dict(zip(lines[0::2], lines[1::2]))
    cls = int(pairs["run07/test/item13.png"].split("class")[1][:2])
    assert runs[6].test_y[12] == cls - 1
    assert runs[6].test_ids[12] == "run07/test/item13"
    grey = np.asarray(page.convert("L").resize((28, 28), Image.LANCZOS), np.float64) / 255
    np.testing.assert_allclose(runs[6].test_x[12, 0].numpy(), 1 - grey, atol=1e-6)


def test_pixel_nearest_neighbour_is_far_above_chance(runs):
    """Misaligned labels would give ~5 %; pixel 1-NN gives about 21 % here."""
    hits = [(torch.cdist(r.test_x.flatten(1), r.train_x.flatten(1)).argmin(1) == r.test_y)
            .float().mean().item() for r in runs]
    assert 0.15 < np.mean(hits) < 0.35


def test_extracted_folder_and_broken_labels(runs, data_root, tmp_path):
    safe_extract(data_root / "omniglot" / "all_runs.zip", tmp_path / "omniglot" / "all_runs")
    folder = load_lake_runs(tmp_path, download=False)
    assert all(torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)
               for a, b in zip(runs, folder))
    labels = tmp_path / "omniglot" / "all_runs" / "run03" / "class_labels.txt"
    labels.write_text("\n".join(line for line in labels.read_text().splitlines()
                                 if "item05" not in line))
    with pytest.raises(DataError, match="run03/class_labels.txt lists items"):
        load_lake_runs(tmp_path, download=False)
    labels.write_text("test/item01.png training/class21.png\n")
    with pytest.raises(DataError, match="class must be 1..20"):
        load_lake_runs(tmp_path, download=False)
    labels.unlink()
    with pytest.raises(DataError, match="run03/class_labels.txt is missing"):
        load_lake_runs(tmp_path, download=False)


def test_checksum_and_missing(data_root, tmp_path):
    (tmp_path / "omniglot").mkdir()
    data = (data_root / "omniglot" / "all_runs.zip").read_bytes()
    flipped = data[:-30] + bytes([data[-30] ^ 1]) + data[-29:]
    (tmp_path / "omniglot" / "all_runs.zip").write_bytes(flipped)
    with pytest.raises(DataError, match="all_runs.zip': expected sha256 437c1eea"):
        load_lake_runs(tmp_path, download=False)
    (tmp_path / "omniglot" / "all_runs.zip").unlink()
    with pytest.raises(DataError, match="'all_runs.zip' not found"):
        load_lake_runs(tmp_path, download=False)
