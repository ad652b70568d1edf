"""Evaluation switches a model to eval mode and restores every submodule's own train/eval flag afterwards.

The case that matters: a BatchNorm frozen by the user with ``.eval()`` inside a model in training mode. Restoring
with ``model.train(was_training)`` would switch it back to training; each test below fails that way on the code
before ``meta_learning._modes.eval_mode``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _continual import blobs
from meta_learning import Episode, PrototypicalNetwork, RelationNetwork
from meta_learning._modes import eval_mode
from meta_learning.continual import Naive, TrainConfig, fisher_diagonal
from meta_learning.nas.train import evaluate_accuracy


def frozen_bn_mlp(dim: int = 8, out: int = 4) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(dim, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, out)).train()
    model[1].eval()  # frozen by the user: running statistics must not move
    return model


def flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_eval_mode_sets_eval_inside_and_restores_each_flag_also_after_an_error():
    model = frozen_bn_mlp()
    before = flags(model)
    assert before == [True, True, False, True, True]
    with eval_mode(model):
        assert not any(flags(model))
    assert flags(model) == before
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        raise RuntimeError("boom")
    assert flags(model) == before


def test_protonet_evaluate_and_classify_keep_a_frozen_batchnorm_frozen():
    net = PrototypicalNetwork(encoder=frozen_bn_mlp(4, 3)).train()
    net.encoder[1].eval()  # .train() above switched it back on
    before = flags(net)
    assert before.count(False) == 1
    g = torch.Generator().manual_seed(0)
    ep = Episode(torch.randn(6, 4, generator=g), torch.arange(3).repeat(2), torch.randn(9, 4, generator=g),
                 torch.arange(3).repeat(3))  # fmt: skip
    for batch_norm in ("running", "episode"):
        net.evaluate([ep], batch_norm=batch_norm)
        assert flags(net) == before, batch_norm
    net.classify(ep.query_x, ep.support_x, ep.support_y)
    assert flags(net) == before


def test_relationnet_construction_keeps_a_frozen_batchnorm_frozen():
    embedding = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2)).train()
    embedding[1].eval()
    net = RelationNetwork(embedding=embedding, in_channels=1, image_size=8, hidden_channels=4)
    assert not net.embedding[1].training and net.embedding[0].training


def test_continual_predict_and_fisher_keep_a_frozen_batchnorm_frozen():
    x, y = blobs(8, range(4))
    model = frozen_bn_mlp()
    before = flags(model)
    naive = Naive(model, config=TrainConfig(iterations=1))
    naive.predict(x)
    assert flags(model) == before
    fisher_diagonal(model, x, y)
    assert flags(model) == before


def test_nas_evaluate_accuracy_keeps_a_frozen_batchnorm_frozen():
    x, y = blobs(8, range(4))
    model = frozen_bn_mlp()
    before = flags(model)
    evaluate_accuracy(model, x, y, batch_size=5)
    assert flags(model) == before
