from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from _toy import ToyDataset
from meta_learning.data import EpisodeSampler


class PlainDataset:
    """Not a TensorLabelledDataset: exercises the generic per-item path."""

    def __init__(self, counts):
        self.inner = ToyDataset(counts)
        self.labels = list(self.inner.labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.inner.x[i], self.labels[i]


@pytest.mark.parametrize("cls", [ToyDataset, PlainDataset])
def test_episode_structure(cls):
    ds = cls([10] * 12)
    sampler = EpisodeSampler(ds, n_way=5, k_shot=2, n_query=3, seed=0)
    for _ in range(20):
        ep = sampler.sample()
        assert ep.support_x.shape == (10, 2) and ep.query_x.shape == (15, 2)
        assert ep.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
        assert len(set(ep.classes)) == 5  # distinct classes
        # every example's true class equals the class behind its episode label
        for x, y in ((ep.support_x, ep.support_y), (ep.query_x, ep.query_y)):
            true = x[:, 1].long()
            assert torch.equal(true, torch.tensor(ep.classes)[y])
        idx = torch.cat([ep.support_x[:, 0], ep.query_x[:, 0]])
        assert idx.unique().numel() == idx.numel()  # no example twice


def test_labels_are_remapped_in_random_order():
    sampler = EpisodeSampler(ToyDataset([5] * 6), n_way=5, k_shot=1, n_query=1, seed=0)
    orders = {tuple(sampler.sample().classes) for _ in range(30)}
    assert any(list(o) != sorted(o) for o in orders)


def test_same_seed_same_episodes_and_generators_are_private():
    ds = ToyDataset([8] * 10)
    a = EpisodeSampler(ds, 4, 1, 2, seed=3)
    torch.manual_seed(0)
    first = [a.sample().support_x for _ in range(5)]
    b = EpisodeSampler(ds, 4, 1, 2, seed=3)
    torch.manual_seed(123)  # the global RNG must not matter
    second = [b.sample().support_x for _ in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))
    c = EpisodeSampler(ds, 4, 1, 2, seed=4)
    assert not all(torch.equal(x, c.sample().support_x) for x in first)


def test_evaluation_episodes_are_fixed_and_leave_the_stream_alone():
    ds = ToyDataset([8] * 10)
    s = EpisodeSampler(ds, 4, 1, 2, seed=0)
    state = s.state_dict()["generator"].clone()
    e1 = s.evaluation_episodes(5, seed=1)
    assert torch.equal(s.state_dict()["generator"], state)
    e2 = EpisodeSampler(ds, 4, 1, 2, seed=99).evaluation_episodes(5, seed=1)
    assert all(torch.equal(x.query_x, y.query_x) for x, y in zip(e1, e2, strict=True))


def test_state_dict_resumes_the_stream():
    ds = ToyDataset([8] * 10)
    s = EpisodeSampler(ds, 4, 1, 2, seed=0)
    s.sample()
    state = s.state_dict()
    expected = [s.sample().support_x for _ in range(3)]
    t = EpisodeSampler(ds, 4, 1, 2, seed=7)
    t.load_state_dict(state)
    assert all(torch.equal(x, t.sample().support_x) for x in expected)


def test_same_seed_same_episodes_in_another_process():
    code = (
        "import numpy as np, torch\n"
        "from meta_learning.data import EpisodeSampler\n"
        "class D:\n"
        "    labels = np.repeat(np.arange(10), 8)\n"
        "    def __len__(self): return 80\n"
        "    def __getitem__(self, i): return torch.tensor([float(i)]), int(self.labels[i])\n"
        "s = EpisodeSampler(D(), 4, 1, 2, seed=5)\n"
        "print([int(v) for _ in range(3) for v in s.sample().query_x[:, 0]])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    ds = PlainDataset([8] * 10)
    s = EpisodeSampler(ds, 4, 1, 2, seed=5)
    here = [int(v) for _ in range(3) for v in s.sample().query_x[:, 0]]
    assert out.strip() == str(here)


def test_errors_name_the_numbers():
    ds = ToyDataset([5, 5, 3, 5])
    with pytest.raises(ValueError, match="n_way=5 but the dataset has 4 classes"):
        EpisodeSampler(ds, 5, 1, 1)
    with pytest.raises(ValueError, match=r"k_shot \+ n_query = 1 \+ 3 = 4 but class 2 has only 3"):
        EpisodeSampler(ds, 2, 1, 3)
    with pytest.raises(ValueError, match="k_shot=0"):
        EpisodeSampler(ds, 2, 0, 1)
    with pytest.raises(ValueError, match="n_way=-1"):
        EpisodeSampler(ds, -1, 1, 1)
    with pytest.raises(TypeError, match="n_query must be an int"):
        EpisodeSampler(ds, 2, 1, 1.5)
    with pytest.raises(TypeError, match="no `labels` attribute"):
        EpisodeSampler([(torch.zeros(1), 0)], 1, 1, 1)


@pytest.mark.parametrize("n_query", [0, -2])
def test_episodes_need_a_query_per_class(n_query):
    # an episode without queries has no accuracy (evaluate would average an empty set to NaN)
    with pytest.raises(ValueError, match=f"n_query={n_query} but it must be a positive integer"):
        EpisodeSampler(ToyDataset([5, 5, 5]), 2, 1, n_query)
