"""MNIST IDX reader on the real test set, the offline split, and bad files."""
import gzip
import hashlib
import warnings

import numpy as np
import pytest

from repscope.training.data import OfflineDataWarning, load_mnist, mnist_offline_split
from repscope.training.data.mnist import read_idx
from repscope.training.errors import DataError

COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def test_set(data_root):
    return load_mnist(data_root, "test", download=False)


def test_counts_and_values(test_set, data_root):
    x, y = test_set
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.bincount(y).tolist() == COUNTS
    assert x.min() == 0 and x.max() == 255
    raw = gzip.decompress((data_root / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert hashlib.md5(raw).hexdigest() == "2646ac647ad5339dbf082846283269ea"
    # Reference: the IDX layout by hand (16-byte header, row-major uint8).
    np.testing.assert_array_equal(x[1234], np.frombuffer(raw, np.uint8, 784, 16 + 1234 * 784)
                                  .reshape(28, 28))
    labels = gzip.decompress((data_root / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert y[:10].tolist() == list(labels[8:18]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_raw_files_read_like_gzip(test_set, data_root, tmp_path):
    (tmp_path / "mnist").mkdir()
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / "mnist" / name).write_bytes(
            gzip.decompress((data_root / "mnist" / f"{name}.gz").read_bytes()))
    x, y = load_mnist(tmp_path, "test", download=False)
    np.testing.assert_array_equal(x, test_set[0])
    np.testing.assert_array_equal(y, test_set[1])


def test_offline_split_announces_itself(test_set, data_root):
    with pytest.warns(OfflineDataWarning, match=r"OFFLINE MNIST.*test images \[100:\]"):
        split = mnist_offline_split(data_root)
    np.testing.assert_array_equal(split["train"][0], test_set[0][100:])
    np.testing.assert_array_equal(split["probe"][1], test_set[1][:100])
    assert split["meta"]["mode"] == "offline-test-split"
    assert split["meta"]["probe"] == "t10k[0:100]" and "t10k" in split["note"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OfflineDataWarning)
        with pytest.raises(DataError, match="n_probe=0 must be between 1 and 9999"):
            mnist_offline_split(data_root, n_probe=0)


def test_missing_training_set_names_the_file(data_root):
    with pytest.raises(DataError, match="'train-images-idx3-ubyte.gz' not found; looked for"):
        load_mnist(data_root, "train", download=False)
    with pytest.raises(DataError, match="Unknown MNIST split 'validation'"):
        load_mnist(data_root, "validation")


def test_corrupt_truncated_and_tampered_files(data_root, tmp_path):
    raw = gzip.decompress((data_root / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "trunc.gz").write_bytes(gzip.compress(raw)[:-20])
    with pytest.raises(DataError, match="Corrupt gzip file .*trunc.gz"):
        read_idx(tmp_path / "trunc.gz")
    (tmp_path / "short").write_bytes(raw[:-5])
    with pytest.raises(DataError, match=r"header says shape \(10000,\) \(10008 bytes\) but "
                                        "the file has 10003"):
        read_idx(tmp_path / "short")
    (tmp_path / "noidx").write_bytes(b"\x89PNG....")
    with pytest.raises(DataError, match="is not an IDX file"):
        read_idx(tmp_path / "noidx")
    (tmp_path / "mnist").mkdir()
    tampered = bytearray(raw)
    tampered[100] = (tampered[100] + 1) % 10
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(tampered)))
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(
        (data_root / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())
    with pytest.raises(DataError, match="expected md5 27ae3e4e09519cfbb04c329615203637 of the "
                                        "uncompressed bytes"):
        load_mnist(tmp_path, "test", download=False)
