"""On real MNIST (the shared 10k test images, split 8k/2k), EWC, SI and replay forget less than fine-tuning."""

from __future__ import annotations

import pytest
import torch

from meta_learning.continual import EWC, SI, ExperienceReplay, Naive, TrainConfig, train_stream
from meta_learning.data.mnist import SplitMNIST
from meta_learning.models import MLP


@pytest.fixture(scope="module")
def two_task_stream(data_root):
    if not (data_root / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST test images not found under {data_root / 'mnist'}")
    # domain-incremental: digits (0, 1) then (2, 3) on the same two output units
    return SplitMNIST(data_root, "domain", source="test10k", class_groups=[(0, 1), (2, 3)])


def forgetting_of(cls, stream, **kwargs):
    torch.manual_seed(0)
    strategy = cls(MLP(784, [100], 2), seed=0, config=TrainConfig(iterations=100, batch_size=64), **kwargs)
    r = train_stream(strategy, stream, eval_initial=False).accuracy_matrix
    return r[0][0] - r[1][0], r[1][1]


def test_ewc_si_and_replay_forget_less_than_naive(two_task_stream):
    naive, _ = forgetting_of(Naive, two_task_stream)
    assert naive > 0.10  # fine-tuning on (2, 3) overwrites (0, 1)
    for cls, kwargs in [(EWC, {"ewc_lambda": 1e4}), (SI, {"c": 100.0}), (ExperienceReplay, {"memory_size": 100})]:
        forgot, new_task = forgetting_of(cls, two_task_stream, **kwargs)
        assert forgot < naive - 0.08, f"{cls.__name__} forgot {forgot:.3f}, naive {naive:.3f}"
        assert new_task > 0.9, f"{cls.__name__} did not learn the second task ({new_task:.3f})"
