"""Fuzz the metric learners' ``predict``/``classify`` and constructors with malformed episodes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import strategies as st

from _fuzz import FAST, HEAVY, REJECTED, assert_finite, bad_ints, clean_call, corrupt, fuzz, junk
from meta_learning.fewshot.protonet import PrototypicalNetwork
from meta_learning.fewshot.relation import RelationNetwork
from meta_learning.models.conv4 import Conv4

torch.set_grad_enabled(True)
IMAGE = 16
_LEARNERS = {}


def learner(kind: str):
    if kind not in _LEARNERS:
        torch.manual_seed(0)
        if kind == "relation":
            _LEARNERS[kind] = RelationNetwork(in_channels=1, image_size=IMAGE, hidden_channels=4, relation_hidden=4)
        else:
            encoder = Conv4(in_channels=1, hidden_channels=4)
            _LEARNERS[kind] = PrototypicalNetwork(encoder, distance_metric=kind)
        _LEARNERS[kind].eval()
    return _LEARNERS[kind]


def _images(g: torch.Generator, n: int, size: int = IMAGE, channels: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=g)


@st.composite
def episodes(draw):
    """(support_x, support_y, query_x) valid for n_way/k_shot, then some parts corrupted."""
    n_way, k_shot, m = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(0, 5))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    valid = {
        "support_x": _images(g, n_way * k_shot),
        "support_y": torch.arange(n_way)[torch.randperm(n_way, generator=g)].repeat_interleave(k_shot),
        "query_x": _images(g, m),
    }

    def bad_x(n):
        return st.sampled_from([
            _images(g, n).squeeze(1),  # [B, H, W]: no channel dimension
            _images(g, n, channels=3),  # wrong channel count
            _images(g, n, size=2),  # too small for the backbone's pooling
            _images(g, n).double(),  # another float dtype: accepted (Conv weights are float32) or refused
            _images(g, n).masked_fill(torch.rand(n, 1, IMAGE, IMAGE, generator=g) < 0.1, float("nan")),
            _images(g, n).masked_fill(torch.rand(n, 1, IMAGE, IMAGE, generator=g) < 0.1, float("inf")),
            (_images(g, n) * 255).to(torch.uint8),  # raw bytes instead of floats
            _images(g, 0), _images(g, n).tolist(), None, "images",
        ])  # fmt: skip

    y = valid["support_y"]
    bad_y = st.sampled_from([
        y.float(), y.bool(), y - 1, y + 1, y * 2, y[:-1], torch.cat([y, y[:1]]), y.unsqueeze(1), y.tolist(),
        torch.zeros(0, dtype=torch.long), torch.full_like(y, n_way), None, y.to(torch.int32), y.to(torch.uint8),
    ])  # fmt: skip
    args = draw(corrupt(valid, {"support_x": bad_x(n_way * k_shot), "support_y": bad_y, "query_x": bad_x(m)}))
    return args["support_x"], args["support_y"], args["query_x"]


NAMES = ("support_x", "support_y", "query_x")
SEED_NAMES = ("query_samples", "support_samples", "support_labels")


def _predict_case(case):
    kind, (sx, sy, qx) = case
    net = learner(kind)
    with torch.no_grad():
        logits = clean_call(lambda: net.predict(sx, sy, qx), *NAMES)
    if logits is REJECTED:
        return
    n_way = int(sy.max()) + 1
    assert logits.shape == (qx.shape[0], n_way) and logits.dtype.is_floating_point
    assert_finite(logits, f"{kind} predict")


def _classify_case(case):
    kind, (sx, sy, qx), offset = case
    net = learner(kind)
    ids = sy * 7 + offset if isinstance(sy, torch.Tensor) and not sy.is_floating_point() else sy  # any integer ids
    pred = clean_call(lambda: net.classify(qx, sx, ids), *SEED_NAMES)
    if pred is REJECTED:
        return
    assert pred.shape == (qx.shape[0],) and set(pred.tolist()) <= set(torch.as_tensor(ids).tolist())
    proba = net.predict_proba(qx, sx, ids)
    assert_finite(proba, f"{kind} predict_proba")
    assert torch.allclose(proba.sum(-1), torch.ones(qx.shape[0]), atol=1e-5)


kinds = st.sampled_from(["euclidean", "cosine", "relation"])
predict_cases = st.tuples(kinds, episodes())
classify_cases = st.tuples(kinds, episodes(), st.integers(-50, 50))

test_predict = fuzz(predict_cases, FAST)(_predict_case)
test_classify = fuzz(classify_cases, FAST)(_classify_case)
test_predict_heavy = pytest.mark.slow(fuzz(predict_cases, HEAVY)(_predict_case))
test_classify_heavy = pytest.mark.slow(fuzz(classify_cases, HEAVY)(_classify_case))


def _constructor_case(args):
    def build():
        if args.pop("relation"):
            return RelationNetwork(**args)
        encoder = Conv4(in_channels=args["in_channels"], hidden_channels=args["hidden_channels"])
        return PrototypicalNetwork(encoder, distance_metric=args["loss"], temperature=args["relation_hidden"])

    names = (
        "in_channels",
        "image_size",
        "hidden_channels",
        "relation_hidden",
        "loss",
        "distance_metric",
        "temperature",
    )
    net = clean_call(build, *names)
    if net is not REJECTED:
        assert sum(p.numel() for p in net.parameters()) > 0


constructor_args = st.builds(
    dict,
    relation=st.booleans(),
    in_channels=st.one_of(st.integers(1, 3), bad_ints),
    image_size=st.one_of(st.integers(4, 20), bad_ints),
    hidden_channels=st.one_of(st.integers(1, 4), bad_ints),
    relation_hidden=st.one_of(st.integers(1, 4), bad_ints),
    loss=st.one_of(st.sampled_from(["mse", "cross_entropy", "euclidean", "cosine"]), junk),
)
test_constructors = fuzz(constructor_args, FAST)(_constructor_case)
test_constructors_heavy = pytest.mark.slow(fuzz(constructor_args, HEAVY)(_constructor_case))
