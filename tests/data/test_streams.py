"""Stream builders: class splits per scenario, permutations, the stratified split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meta_learning.data.streams import Stream, TensorClassificationDataset, permuted, split_classes, stratified_split


def dataset(n_per_class=4, classes=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    x = torch.randint(0, 256, (len(labels), 1, 2, 3), generator=g, dtype=torch.uint8)
    return TensorClassificationDataset(x, labels)


@pytest.mark.parametrize(
    ("scenario", "labels", "num_classes"),
    [("task", [[0, 1], [0, 1, 2]], 3), ("domain", [[0, 1], [0, 1, 2]], 3), ("class", [[0, 1], [2, 3, 4]], 5)],
)
def test_split_classes_relabels_per_scenario(scenario, labels, num_classes):
    train, test = dataset(), dataset(seed=1)
    stream = split_classes(train, test, [(4, 1), (0, 5, 2)], scenario, name="toy")
    assert isinstance(stream, Stream) and len(stream) == 2 and stream.num_classes == num_classes
    assert stream.name == f"toy({scenario})" and stream.multi_head == (scenario == "task")
    assert [e.classes for e in stream] == [(4, 1), (0, 5, 2)] and [e.task_id for e in stream] == [0, 1]
    for exp, group, expected in zip(stream, [(4, 1), (0, 5, 2)], labels, strict=True):
        for part, source in ((exp.train, train), (exp.test, test)):
            assert sorted(set(part.labels.tolist())) == expected
            # each example keeps its pixels, and its new label is the class's position
            x, y = part.tensors()
            src_idx = np.flatnonzero(np.isin(source.labels, group))
            assert torch.equal(x, source.gather(torch.from_numpy(src_idx)))
            offset = 0 if scenario != "class" else (0 if group == (4, 1) else 2)
            expected_labels = [group.index(int(c)) + offset for c in source.labels[src_idx]]
            assert y.tolist() == expected_labels


def test_split_classes_errors():
    train, test = dataset(), dataset()
    with pytest.raises(ValueError, match="repeats a class"):
        split_classes(train, test, [(0, 1), (1, 2)])
    with pytest.raises(ValueError, match=r"classes \[9\]"):
        split_classes(train, test, [(0, 9)])
    with pytest.raises(ValueError, match="scenario='online'"):
        split_classes(train, test, [(0, 1)], scenario="online")
    with pytest.raises(TypeError, match="class_groups"):
        split_classes(train, test, "01")


def test_permuted_applies_one_fixed_permutation_per_experience():
    train, test = dataset(classes=3), dataset(classes=3, seed=1)
    stream = permuted(train, test, 3, seed=7)
    again = permuted(train, test, 3, seed=7)
    base = train.tensors()[0].flatten(1)
    perms = []
    for exp, same in zip(stream, again, strict=True):
        x, y = exp.train.tensors()
        assert torch.equal(y, torch.from_numpy(train.labels)) and exp.classes == (0, 1, 2)
        perm = exp.train.permutation
        perms.append(perm)
        assert torch.equal(x.flatten(1), base[:, perm]) and x.shape == (12, 1, 2, 3)
        assert torch.equal(exp.test.permutation, perm) and torch.equal(same.train.permutation, perm)
        assert exp.train.x is train.x  # one shared storage
    assert not torch.equal(perms[0], perms[1])
    first = permuted(train, test, 2, first_unpermuted=True)
    assert first[0].train.permutation is None and first[1].train.permutation is not None
    cls = permuted(train, test, 2, scenario="class")
    assert cls.num_classes == 6 and cls[1].train.labels.min() == 3 and cls[1].classes == (3, 4, 5)


def test_stratified_split_is_exact_per_class_and_deterministic():
    labels = np.repeat(np.arange(4), [10, 7, 5, 20])
    tr, te = stratified_split(labels, 0.2, seed=3)
    tr2, te2 = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    assert not np.array_equal(te, stratified_split(labels, 0.2, seed=4)[1])
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[te]).tolist() == [2, 1, 1, 4]  # round(0.2 * n_c)
    with pytest.raises(ValueError, match="test_fraction=1.0"):
        stratified_split(labels, 1.0, 0)


def test_dataset_validation():
    with pytest.raises(ValueError, match="labels has shape"):
        TensorClassificationDataset(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="uint8 or floating"):
        TensorClassificationDataset(torch.zeros(3, 2, dtype=torch.int32), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="permutation"):
        TensorClassificationDataset(
            torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), permutation=torch.tensor([0, 0])
        )
    ds = TensorClassificationDataset(torch.full((2, 2), 255, dtype=torch.uint8), torch.tensor([1, 0]))
    assert torch.equal(ds.gather(torch.tensor([1])), torch.ones(1, 2)) and ds[0][1] == 1
