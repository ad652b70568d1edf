"""Regression tests: one deterministic case per defect the fuzzers found (each failed before its fix).

Before the fixes each call below raised a RuntimeError/IndexError from inside torch, an error that did not name the
argument, or returned NaN silently. Now each one must raise the listed ``ValueError``/``TypeError`` naming it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from _toy import ToyDataset
from meta_learning.data import EpisodeSampler
from meta_learning.fewshot.protonet import PrototypicalNetwork
from meta_learning.fewshot.relation import RelationNetwork
from meta_learning.maml import MAML
from meta_learning.models.conv4 import Conv4

X = torch.rand(4, 1, 16, 16)
Y = torch.tensor([0, 1, 0, 1])
Q = torch.rand(2, 1, 16, 16)


def proto():
    torch.manual_seed(0)
    return PrototypicalNetwork(Conv4(in_channels=1, hidden_channels=4)).eval()


def maml():
    torch.manual_seed(0)
    return MAML(nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)), lr_inner=0.1, num_inner_steps=1)


X4, Y4 = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])

CASES = {
    # EpisodeSampler seeds: int() errors not naming `seed`, silent truncation of floats, overflow in torch
    "seed None": (lambda: EpisodeSampler(ToyDataset([5, 5]), 2, 1, 1, seed=None), TypeError, "seed must be an int"),
    "seed 1.5": (lambda: EpisodeSampler(ToyDataset([5, 5]), 2, 1, 1, seed=1.5), TypeError, "seed must be an int"),
    "seed 2**70": (lambda: EpisodeSampler(ToyDataset([5, 5]), 2, 1, 1, seed=2**70), ValueError, "seed=.* out of range"),
    "eval seed 'a'": (
        lambda: EpisodeSampler(ToyDataset([5, 5]), 2, 1, 1).evaluation_episodes(2, seed="a"),
        TypeError,
        "seed must be an int",
    ),
    # metric learners: no input validation
    "float labels": (lambda: proto().predict(X, Y.float(), Q), TypeError, "support_y must hold integer"),
    "negative labels": (lambda: proto().predict(X, Y - 1, Q), ValueError, "support_y must hold the labels 0..N-1"),
    "empty support": (lambda: proto().predict(X[:0], Y[:0], Q), ValueError, "support_x has shape"),
    "label count": (lambda: proto().predict(X, Y[:3], Q), ValueError, "support_y has shape"),
    "query shape": (lambda: proto().predict(X, Y, Q[:, :, :8]), ValueError, "query_x has examples of shape"),
    "nan support": (lambda: proto().predict(X.masked_fill(X > 0.9, math.nan), Y, Q), ValueError, "support_x holds NaN"),
    "inf query": (lambda: proto().predict(X, Y, Q * math.inf), ValueError, "query_x holds NaN or infinite"),
    "list query": (lambda: proto().predict(X, Y, Q.tolist()), TypeError, "query_x must be a torch.Tensor"),
    "double inputs": (lambda: proto().predict(X.double(), Y, Q.double()), TypeError, "support_x/query_x"),
    "classify list ids": (lambda: proto().classify(Q, X, ["a", "b", "a", "b"]), TypeError, "support_labels"),
    "relation labels": (
        lambda: RelationNetwork(image_size=16, hidden_channels=4).predict(X, Y[:3], Q),
        ValueError,
        "support_y has shape",
    ),
    # backbones: images too small for the pooling, wrong channels
    "conv4 12px": (lambda: Conv4()(torch.zeros(2, 1, 12, 12)), ValueError, "H, W >= 16"),
    "conv4 channels": (lambda: Conv4()(torch.zeros(2, 3, 28, 28)), ValueError, "in_channels = 1"),
    "protonet small images": (lambda: proto().predict(X[..., :8, :8], Y, Q[..., :8, :8]), ValueError, "H, W >= 16"),
    "relation image_size 2": (lambda: RelationNetwork(image_size=2, hidden_channels=4), ValueError, "image_size=2"),
    # MAML
    "maml inf lr": (lambda: MAML(nn.Linear(2, 2), lr_inner=math.inf), ValueError, "lr_inner=inf"),
    "maml inner_params int": (lambda: MAML(nn.Linear(2, 2), inner_params=3), TypeError, "inner_params"),
    "maml inner_params [1]": (lambda: MAML(nn.Linear(2, 2), inner_params=[1]), TypeError, "inner_params"),
    "maml nan support": (lambda: maml().adapt((X4 * math.nan, Y4)), ValueError, "support_x holds NaN"),
    "maml label 3 of 3": (lambda: maml().adapt((X4, Y4 + 1)), ValueError, "do not fit the model or its loss"),
    "maml wrong width": (lambda: maml().adapt((X4[:, :2], Y4)), ValueError, "support_x .* do not fit"),
    "maml str query": (lambda: maml().predict(X4, Y4, "q"), TypeError, "query_x must be a torch.Tensor"),
    "maml float targets [K]": (lambda: maml().adapt((X4, Y4.float())), ValueError, "float targets"),
    "maml diverges": (
        lambda: MAML(nn.Linear(4, 3), lr_inner=1e308).adapt((X4 * 1e3, Y4)),
        ValueError,
        "adaptation diverged",
    ),
    "maml None support": (lambda: maml().adapt((None, Y4)), TypeError, "support_x must be a torch.Tensor"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fuzz_finding_is_a_clean_error(case):
    call, error, pattern = CASES[case]
    with pytest.raises(error, match=pattern):
        call()


def test_valid_inputs_still_work():
    logits = proto().predict(X, Y, Q)
    assert logits.shape == (2, 2) and bool(torch.isfinite(logits).all())
    pred = proto().classify(Q, X, torch.tensor([7, 3, 7, 3]))
    assert set(pred.tolist()) <= {3, 7}
    sampler = EpisodeSampler(ToyDataset([5, 5]), 2, 1, 1, seed=np.int64(3))  # numpy integers are seeds too
    assert sampler.sample().support_x.shape[0] == 2
    adapted = maml().adapt((X4, Y4), num_steps=2)
    assert adapted(X4).shape == (5, 3)
