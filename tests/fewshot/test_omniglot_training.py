"""A few hundred episodes on real Omniglot must reach well above chance on held-out characters."""

from __future__ import annotations

import pytest
import torch

from meta_learning import Conv4, EpisodeSampler, Omniglot, PrototypicalNetwork, RelationNetwork


@pytest.fixture(scope="module")
def splits(data_root, omniglot_session_cache):
    train = Omniglot(data_root, split="train", cache_dir=omniglot_session_cache)
    test = Omniglot(data_root, split="test", cache_dir=omniglot_session_cache)
    return train, test


@pytest.mark.parametrize(
    ("make", "threshold"),
    [
        (lambda: PrototypicalNetwork(Conv4(hidden_channels=32)), 0.75),
        (lambda: RelationNetwork(hidden_channels=32), 0.7),
    ],
    ids=["protonet", "relationnet"],
)
def test_few_hundred_episodes_beat_chance_on_held_out_characters(splits, make, threshold):
    train, test = splits
    torch.manual_seed(0)
    learner = make()
    held_out = EpisodeSampler(test, n_way=5, k_shot=1, n_query=5).evaluation_episodes(100, seed=1)
    before = learner.evaluate(held_out)
    learner.train_episodes(EpisodeSampler(train, 5, 1, 5, seed=0), num_episodes=300, lr=1e-3, progress=False)
    after = learner.evaluate(held_out)
    # chance is 20%; test characters (and alphabets) are never seen in training
    assert after.mean > threshold, f"{after} (before training: {before})"
    assert after.mean > before.mean + 0.2


@pytest.mark.slow
def test_protonet_reaches_95_percent_5way_1shot_after_1000_episodes(splits):
    """Minutes-long: 1,000 20-way episodes of the paper's recipe clear 95% on held-out 5-way 1-shot tasks."""
    train, test = splits
    torch.manual_seed(0)
    learner = PrototypicalNetwork(Conv4())
    learner.train_episodes(EpisodeSampler(train, 20, 1, 5, seed=0), num_episodes=1000, lr=1e-3, progress=False)
    acc = learner.evaluate(EpisodeSampler(test, 5, 1, 15).evaluation_episodes(300, seed=1))
    assert acc.mean > 0.95, str(acc)
