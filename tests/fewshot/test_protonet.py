from __future__ import annotations

import pytest
import torch
from torch import nn

from meta_learning import Conv4, Episode, PrototypicalNetwork
from meta_learning.fewshot.protonet import class_prototypes

SUPPORT = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 2.0]])
LABELS = torch.tensor([0, 0, 1, 1])
QUERY = torch.tensor([[1.0, 1.0], [0.0, 3.0]])


def identity_net(metric="euclidean"):
    return PrototypicalNetwork(encoder=nn.Flatten(), distance_metric=metric)


def test_prototypes_are_class_means():
    protos = class_prototypes(SUPPORT, LABELS, 2)
    assert torch.equal(protos, torch.tensor([[1.0, 0.0], [0.0, 3.0]]))


def test_euclidean_logits_are_negative_squared_distances():
    logits = identity_net().predict(SUPPORT, LABELS, QUERY)
    # query (1,1): to (1,0) -> 1, to (0,3) -> 1 + 4 = 5; query (0,3): 1 + 9 = 10 and 0
    assert torch.equal(logits, torch.tensor([[-1.0, -5.0], [-10.0, -0.0]]))


def test_cosine_logits_use_the_temperature():
    net = identity_net("cosine")
    logits = net.predict(SUPPORT, LABELS, torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    expected = 10.0 * torch.tensor([[1.0, 0.0], [2**-0.5, 2**-0.5]])
    torch.testing.assert_close(logits, expected)
    assert net.temperature is not None and net.temperature.requires_grad


def test_shuffled_support_gives_the_same_logits():
    perm = torch.tensor([2, 0, 3, 1])
    net = identity_net()
    torch.testing.assert_close(net.predict(SUPPORT[perm], LABELS[perm], QUERY), net.predict(SUPPORT, LABELS, QUERY))


def test_classify_returns_labels_in_the_callers_label_space():
    net = identity_net()
    labels = torch.tensor([42, 42, 7, 7])  # arbitrary ids, larger one first
    pred = net.classify(query_samples=QUERY, support_samples=SUPPORT, support_labels=labels)
    assert pred.tolist() == [42, 7]
    proba = net.predict_proba(QUERY, SUPPORT, labels)  # columns: sorted ids (7, 42)
    expected = torch.tensor([[-5.0, -1.0], [0.0, -10.0]]).softmax(-1)
    torch.testing.assert_close(proba, expected)


def test_training_step_loss_is_cross_entropy_of_logits():
    net = identity_net()
    ep = Episode(SUPPORT, LABELS, QUERY, torch.tensor([0, 1]))
    out = net.training_step(ep)
    logits = torch.tensor([[-1.0, -5.0], [-10.0, 0.0]])
    torch.testing.assert_close(out.loss, nn.functional.cross_entropy(logits, torch.tensor([0, 1])))
    assert out.accuracy == 1.0


def test_errors():
    with pytest.raises(ValueError, match="distance_metric='manhattan'"):
        PrototypicalNetwork(nn.Flatten(), distance_metric="manhattan")
    with pytest.raises(TypeError, match="encoder must be a torch.nn.Module"):
        PrototypicalNetwork(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="support_labels has shape"):
        identity_net().classify(QUERY, SUPPORT, torch.tensor([0, 1]))


def test_conv4_protonet_learns_a_separable_toy_problem():
    # Classes are distinguished by which quadrant is lit; a few steps must beat chance clearly.
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    def batch(n_per_class):
        xs, ys = [], []
        for c in range(4):
            x = 0.3 * torch.rand(n_per_class, 1, 28, 28, generator=g)
            r, col = divmod(c, 2)
            x[:, :, r * 14 : (r + 1) * 14, col * 14 : (col + 1) * 14] += 1.0
            xs.append(x)
            ys.append(torch.full((n_per_class,), c))
        return torch.cat(xs), torch.cat(ys)

    net = PrototypicalNetwork(Conv4(hidden_channels=16))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(20):
        sx, sy = batch(1)
        qx, qy = batch(5)
        opt.zero_grad()
        net.training_step(Episode(sx, sy, qx, qy)).loss.backward()
        opt.step()
    episodes = []
    for _ in range(10):
        sx, sy = batch(1)
        qx, qy = batch(5)
        episodes.append(Episode(sx, sy, qx, qy))
    acc = net.evaluate(episodes)
    assert acc.mean > 0.9 and acc.n == 10
