"""Fuzz the episode sampler: arbitrary datasets, ways, shots, queries and seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import strategies as st

from _fuzz import FAST, HEAVY, REJECTED, bad_ints, clean_call, corrupt, fuzz, junk
from meta_learning.data import EpisodeSampler, TensorLabelledDataset


class Labelled(TensorLabelledDataset):
    """Example ``i`` is ``[i]``; labels as given (possibly malformed)."""

    def __init__(self, labels, n):
        self.labels = labels
        self._n = n
        self.x = torch.arange(n, dtype=torch.float32).unsqueeze(1)

    def __len__(self):
        return self._n

    def gather(self, indices):
        return self.x[indices]


@st.composite
def datasets(draw):
    counts = draw(st.lists(st.one_of(st.integers(6, 8), st.integers(0, 8)), min_size=0, max_size=7))
    labels = np.concatenate([np.full(c, k) for k, c in enumerate(counts)] or [np.zeros(0)]).astype(np.int64)
    n = len(labels)
    kind = draw(st.sampled_from(["ok"] * 10 + ["float", "2d", "short", "negative", "tensor", "list", "none"]))
    if kind == "float":
        return Labelled(labels.astype(np.float32), n)
    if kind == "2d":
        return Labelled(labels.reshape(-1, 1), n)
    if kind == "short":
        return Labelled(labels[:-1], n)
    if kind == "negative":
        return Labelled(labels - 3, n)
    if kind == "tensor":
        return Labelled(torch.as_tensor(labels), n)
    if kind == "list":
        return Labelled(labels.tolist(), n)
    if kind == "none":
        return draw(st.sampled_from([None, [1, 2, 3], "dataset", 5]))
    return Labelled(labels, n)


seeds = st.one_of(st.integers(-(2**70), 2**70), junk)


@st.composite
def cases(draw):
    valid = {
        "n_way": draw(st.integers(1, 4)), "k_shot": draw(st.integers(1, 3)), "n_query": draw(st.integers(0, 3)),
        "seed": draw(st.integers(0, 2**64 - 1)), "n_eval": draw(st.integers(1, 3)),
        "eval_seed": draw(st.integers(0, 9)),
    }  # fmt: skip
    bad = {"n_way": bad_ints, "k_shot": bad_ints, "n_query": bad_ints, "seed": seeds, "n_eval": bad_ints,
           "eval_seed": seeds}  # fmt: skip
    args = draw(corrupt(valid, bad))
    return draw(datasets()), *(args[k] for k in ("n_way", "k_shot", "n_query", "seed", "n_eval", "eval_seed"))


def _sampler_case(case):
    dataset, n_way, k_shot, n_query, seed, n_eval, eval_seed = case
    sampler = clean_call(
        lambda: EpisodeSampler(dataset, n_way, k_shot, n_query, seed=seed),
        "n_way",
        "k_shot",
        "n_query",
        "seed",
        "labels",
        "dataset",
    )
    if sampler is REJECTED:
        return
    episode = sampler.sample()
    assert episode.support_x.shape == (n_way * k_shot, 1) and episode.query_x.shape == (n_way * n_query, 1)
    assert sorted(set(episode.support_y.tolist())) == list(range(n_way))
    labels = np.asarray(dataset.labels.cpu() if isinstance(dataset.labels, torch.Tensor) else dataset.labels)
    support_ids = episode.support_x[:, 0].long()
    for y, i in zip(episode.support_y.tolist(), support_ids.tolist(), strict=True):  # one original class per label
        assert episode.classes[y] == labels[i]
    fixed = clean_call(lambda: sampler.evaluation_episodes(n_eval, seed=eval_seed), "n", "seed")
    if fixed is not REJECTED:
        again = sampler.evaluation_episodes(n_eval, seed=eval_seed)
        assert len(fixed) == n_eval and all(
            torch.equal(a.query_x, b.query_x) for a, b in zip(fixed, again, strict=True)
        )


test_episode_sampler = fuzz(cases(), FAST)(_sampler_case)
test_episode_sampler_heavy = pytest.mark.slow(fuzz(cases(), HEAVY)(_sampler_case))
