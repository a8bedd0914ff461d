"""Episode sampler on real Omniglot characters: determinism, labels, rotations, fixed tasks."""
import numpy as np
import pytest
import torch

from repscope.training.data import EpisodeSampler, load_omniglot, split_characters
from repscope.training.errors import DataError


@pytest.fixture(scope="module")
def chars(data_root, tmp_path_factory):
    return load_omniglot(data_root, download=False, cache=tmp_path_factory.mktemp("c"))


def _source(chars, image_id):
    """(class row, drawer column) of an image id, found by search, not by the sampler."""
    row, col = np.argwhere(chars.image_ids == image_id)[0]
    return int(row), int(col)


def test_episode_i_is_a_function_of_seed_and_i(chars):
    a = EpisodeSampler(chars.images, 20, 1, 1, rotate=True, seed=3)
    b = EpisodeSampler(chars.images, 20, 1, 1, rotate=True, seed=3)
    forward = [a.episode(i) for i in range(6)]
    backward = [b.episode(i) for i in reversed(range(6))][::-1]
    for x, y in zip(forward, backward):
        assert torch.equal(x.support_x, y.support_x) and torch.equal(x.query_x, y.query_x)
        assert np.array_equal(x.classes, y.classes)
        assert np.array_equal(x.rotations, y.rotations)
    assert torch.equal(a.batch(1, 3)[2].query_x, forward[5].query_x)
    other = EpisodeSampler(chars.images, 20, 1, 1, rotate=True, seed=4).episode(0)
    assert not np.array_equal(other.classes, forward[0].classes)
    assert len({tuple(e.classes) for e in forward}) == 6


def test_support_and_query_come_from_the_labelled_class(chars):
    sampler = EpisodeSampler(chars.images, 5, 2, 3, seed=0, image_ids=chars.image_ids)
    ep = sampler.episode(11)
    assert ep.support_x.shape == (10, 1, 28, 28) and ep.support_x.dtype == torch.float32
    assert ep.query_x.shape == (15, 1, 28, 28) and ep.query_y.dtype == torch.int64
    assert ep.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    for x, y, ids in ((ep.support_x, ep.support_y, ep.support_ids),
                      (ep.query_x, ep.query_y, ep.query_ids)):
        for img, label, image_id in zip(x, y, ids):
            row, col = _source(chars, image_id)
            assert row == ep.classes[label]
            np.testing.assert_array_equal(img[0].numpy(), chars.images[row, col])
    for j in range(5):  # support and query drawings of a class are distinct
        s = set(ep.support_ids[2 * j:2 * j + 2])
        q = set(ep.query_ids[3 * j:3 * j + 3])
        assert len(s) == 2 and len(q) == 3 and not s & q
    assert len(set(ep.classes.tolist())) == 5


def test_labels_are_permuted_per_task(chars):
    sampler = EpisodeSampler(chars.images[:5], 5, 1, 1, seed=0)
    label_of_class0 = [int(np.flatnonzero(sampler.episode(i).classes == 0)[0])
                       for i in range(40)]
    counts = np.bincount(label_of_class0, minlength=5)
    assert (counts > 0).all()  # class 0 gets every label at some point (p ~ 1e-3 to fail)


def test_rotation_matches_np_rot90(chars):
    sampler = EpisodeSampler(chars.images, 20, 1, 2, rotate=True, seed=1,
                             image_ids=chars.image_ids)
    seen = set()
    for i in range(3):
        ep = sampler.episode(i)
        seen.update(ep.rotations.tolist())
        for img, label, image_id in zip(ep.query_x, ep.query_y, ep.query_ids):
            row, col = _source(chars, image_id)
            expected = np.rot90(chars.images[row, col], k=int(ep.rotations[label]))
            np.testing.assert_array_equal(img[0].numpy(), expected)
    assert seen == {0, 1, 2, 3}
    assert not EpisodeSampler(chars.images, 20, 1, 1, seed=1).episode(0).rotations.any()


def test_fixed_tasks_are_the_papers_analysis_tasks(chars):
    parts = split_characters(chars, n_train=150, n_val=20, seed=0)
    held_out = chars.subset(parts["test"])
    tasks = EpisodeSampler.fixed_tasks(held_out.images, n_way=20, n_tasks=3,
                                       image_ids=held_out.image_ids)
    assert [t.index for t in tasks] == [0, 1, 2]
    for t, task in enumerate(tasks):
        assert task.classes.tolist() == list(range(20 * t, 20 * t + 20))
        assert task.support_y.tolist() == task.query_y.tolist() == list(range(20))
        assert not task.rotations.any()
        np.testing.assert_array_equal(task.support_x[:, 0].numpy(),
                                      held_out.images[20 * t:20 * t + 20, 0])
        np.testing.assert_array_equal(task.query_x[:, 0].numpy(),
                                      held_out.images[20 * t:20 * t + 20, 1])
        assert task.query_ids[0] == held_out.image_ids[20 * t, 1]
    again = EpisodeSampler.fixed_tasks(held_out.images, n_way=20, n_tasks=3)
    assert torch.equal(again[2].query_x, tasks[2].query_x)
    with pytest.raises(DataError, match="n_tasks=4 tasks of 20 classes need 80"):
        EpisodeSampler.fixed_tasks(held_out.images, n_way=20, n_tasks=4)


def test_colour_images_and_bad_arguments(chars):
    rgb = np.random.default_rng(0).random((6, 4, 3, 5, 5), dtype=np.float32)
    ep = EpisodeSampler(rgb, 3, 1, 2, rotate=True, seed=0).episode(0)
    assert ep.query_x.shape == (6, 3, 5, 5)
    cls, k = ep.classes[0], int(ep.rotations[0])
    candidates = [np.rot90(rgb[cls, i], k=k, axes=(-2, -1)) for i in range(4)]
    assert any(np.array_equal(c, ep.support_x[0].numpy()) for c in candidates)
    with pytest.raises(DataError, match="n_way=300 but only 242 classes"):
        EpisodeSampler(chars.images, 300, 1, 1)
    with pytest.raises(DataError, match="k_shot \\+ n_query = 21 but each class has only 20"):
        EpisodeSampler(chars.images, 5, 1, 20)
    with pytest.raises(DataError, match="expected \\(n_classes, n_examples, H, W\\)"):
        EpisodeSampler(chars.images[0], 5, 1, 1)
    with pytest.raises(DataError, match="image_ids has shape \\(2, 2\\)"):
        EpisodeSampler(chars.images, 5, 1, 1, image_ids=[["a", "b"], ["c", "d"]])
