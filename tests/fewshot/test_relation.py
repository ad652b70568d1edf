from __future__ import annotations

import pytest
import torch
from torch import nn

from meta_learning import Conv4, Episode, RelationNetwork
from meta_learning.fewshot.relation import RelationModule


class AsMap(nn.Module):
    """[B, D] -> [B, D, 1, 1]: an embedding that leaves features visible."""

    def forward(self, x):
        return x[:, :, None, None]


class LinearRelation(nn.Module):
    """logit = w . [class ; query] on the 1x1 maps; weights fixed for hand computation."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, pairs):
        return pairs.flatten(1) @ self.w


SUPPORT = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
LABELS = torch.tensor([0, 0, 1, 1])
QUERY = torch.tensor([[1.0, 1.0]])


def net(loss="mse"):
    return RelationNetwork(embedding=AsMap(), relation=LinearRelation([1.0, 2.0, 10.0, 100.0]), loss=loss)


def test_k_shot_class_features_are_summed_and_paired_class_first():
    logits = net().predict(SUPPORT, LABELS, QUERY)
    # class 0 feature (4, 0), class 1 feature (0, 3); query (1, 1) -> pair [c0, c1, q0, q1]
    expected = torch.tensor([[4 * 1 + 0 * 2 + 10 + 100, 0 * 1 + 3 * 2 + 10 + 100]])
    torch.testing.assert_close(logits, expected.float())


def test_shuffled_support_same_scores():
    perm = torch.tensor([3, 1, 0, 2])
    torch.testing.assert_close(net().predict(SUPPORT[perm], LABELS[perm], QUERY), net().predict(SUPPORT, LABELS, QUERY))


def test_mse_loss_on_one_hot_relation_scores():
    n = RelationNetwork(embedding=AsMap(), relation=LinearRelation([0.1, -0.2, 0.3, 0.05]))
    ep = Episode(SUPPORT, LABELS, QUERY, torch.tensor([1]))
    logits = n.predict(SUPPORT, LABELS, QUERY)
    expected = ((torch.sigmoid(logits) - torch.tensor([[0.0, 1.0]])) ** 2).mean()
    torch.testing.assert_close(n.training_step(ep).loss, expected)
    torch.testing.assert_close(n.relation_scores(SUPPORT, LABELS, QUERY), torch.sigmoid(logits))


def test_cross_entropy_option():
    n = RelationNetwork(embedding=AsMap(), relation=LinearRelation([0.1, -0.2, 0.3, 0.05]), loss="cross_entropy")
    ep = Episode(SUPPORT, LABELS, QUERY, torch.tensor([1]))
    logits = n.predict(SUPPORT, LABELS, QUERY)
    torch.testing.assert_close(n.training_step(ep).loss, nn.functional.cross_entropy(logits, torch.tensor([1])))


def test_default_modules_follow_the_paper_shapes():
    rn = RelationNetwork(in_channels=1, image_size=28)
    feats = rn.embedding(torch.zeros(2, 1, 28, 28))
    assert feats.shape == (2, 64, 7, 7)  # pooling in the first two blocks only
    assert isinstance(rn.relation, RelationModule)
    assert rn.relation.fc[0].in_features == 64 and rn.relation.fc[0].out_features == 8
    sx = torch.rand(10, 1, 28, 28)
    logits = rn.predict(sx, torch.arange(5).repeat(2), torch.rand(7, 1, 28, 28))
    assert logits.shape == (7, 5)


def test_errors():
    with pytest.raises(ValueError, match="loss='hinge'"):
        RelationNetwork(loss="hinge")
    with pytest.raises(ValueError, match="needs \\[B, C, H, W\\] feature maps"):
        RelationNetwork(embedding=nn.Flatten())


def test_a_given_embedding_is_used_even_when_it_is_falsy():
    # an empty nn.Sequential has len 0, so `embedding or Conv4(...)` would silently replace it by the default
    identity = nn.Sequential()
    rn = RelationNetwork(embedding=identity, in_channels=1, image_size=4, hidden_channels=8)
    assert rn.embedding is identity
    assert rn.predict(torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), torch.rand(3, 1, 4, 4)).shape == (3, 2)


def test_evaluate_refuses_an_episode_without_queries():
    rn = RelationNetwork(embedding=AsMap(), relation=LinearRelation([1.0, 0.0, 1.0, 0.0]))
    ok = Episode(SUPPORT, LABELS, SUPPORT[:1], LABELS[:1])
    empty = Episode(SUPPORT, LABELS, SUPPORT[:0], LABELS[:0])
    assert rn.evaluate([ok]).n == 1
    with pytest.raises(ValueError, match=r"episodes\[1\] has no query examples"):
        rn.evaluate([ok, empty])  # instead of a NaN mean


def test_the_authors_unpadded_embedding_gets_a_matching_relation_module():
    # Sung et al.'s code: first two blocks unpadded, 28 -> 26 -> 13 -> 11 -> 5; the relation module pools 5 -> 2 -> 1
    rn = RelationNetwork(embedding=Conv4(pool_blocks=2, flatten=False, padding=(0, 0, 1, 1)), image_size=28)
    assert rn.embedding(torch.zeros(2, 1, 28, 28)).shape == (2, 64, 5, 5)
    assert rn.relation.fc[0].in_features == 64
    logits = rn.predict(torch.rand(10, 1, 28, 28), torch.arange(5).repeat(2), torch.rand(7, 1, 28, 28))
    assert logits.shape == (7, 5)
