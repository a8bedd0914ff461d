"""Character-level splits on the real Omniglot characters."""
import numpy as np
import pytest

from repscope.training.data import OmniglotCharacters, load_omniglot, split_characters
from repscope.training.errors import DataError


@pytest.fixture(scope="module")
def chars(data_root, tmp_path_factory):
    return load_omniglot(data_root, download=False, cache=tmp_path_factory.mktemp("c"))


def test_disjoint_complete_and_seeded(chars):
    parts = split_characters(chars, n_train=150, n_val=30, seed=5)
    sizes = {k: len(v) for k, v in parts.items()}
    assert sizes == {"train": 150, "val": 30, "test": 62}
    together = np.concatenate([parts["train"], parts["val"], parts["test"]])
    assert sorted(together.tolist()) == list(range(242))
    again = split_characters(chars.characters, 150, 30, seed=5)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    other = split_characters(chars, 150, 30, seed=6)
    assert not np.array_equal(parts["train"], other["train"])
    # The split is slices of one seeded permutation (Finn et al.: shuffle, then slice).
    perm = np.random.default_rng(5).permutation(242)
    assert np.array_equal(together, perm)
    assert len(split_characters(chars, 100, 20, n_test=40)["test"]) == 40


def test_by_alphabet_keeps_alphabets_whole(chars):
    parts = split_characters(chars, n_train=5, n_val=1, seed=0, by="alphabet")
    alphabets = {k: {chars.alphabets[i] for i in v} for k, v in parts.items()}
    assert [len(alphabets[k]) for k in ("train", "val", "test")] == [5, 1, 2]
    assert not (alphabets["train"] & alphabets["val"] or alphabets["train"] & alphabets["test"]
                or alphabets["val"] & alphabets["test"])
    assert sum(len(v) for v in parts.values()) == 242


def test_background_only_keeps_evaluation_characters_out_of_training(chars):
    """Relabel 3 real alphabets as coming from images_evaluation (Lake's alphabets)."""
    evaluation = {"Korean", "Tagalog", "Sanskrit"}
    sources = ["images_evaluation" if a in evaluation else s
               for a, s in zip(chars.alphabets, chars.sources)]
    mixed = OmniglotCharacters(chars.images, chars.characters, chars.image_ids, sources)
    assert not mixed.background_only
    n_background = sum(a not in evaluation for a in chars.alphabets)
    for seed in range(3):
        parts = split_characters(mixed, n_train=n_background - 10, n_val=10, seed=seed,
                                 background_only=True)
        for part in ("train", "val"):
            assert not {chars.alphabets[i] for i in parts[part]} & evaluation
            assert mixed.subset(parts[part]).background_only
        assert {chars.alphabets[i] for i in parts["test"]} == evaluation
    with pytest.raises(DataError, match=f"only {n_background} characters from background"):
        split_characters(mixed, n_train=n_background, n_val=1, background_only=True)
    with pytest.raises(DataError, match="needs OmniglotCharacters"):
        split_characters(chars.characters, 10, 1, background_only=True)


def test_bad_sizes_and_modes(chars):
    with pytest.raises(DataError, match="n_train \\+ n_val = 250 but only 242 characters"):
        split_characters(chars, 200, 50)
    with pytest.raises(DataError, match="n_train \\+ n_val \\+ n_test = 243"):
        split_characters(chars, 200, 20, n_test=23)
    with pytest.raises(DataError, match="n_val=-1 must be a non-negative integer"):
        split_characters(chars, 200, -1)
    with pytest.raises(DataError, match="Unknown split mode by='drawer'"):
        split_characters(chars, 1, 1, by="drawer")
