"""Fuzz MAML's constructor, ``adapt`` and ``predict`` with malformed hyper-parameters and support sets."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import strategies as st
from torch import nn

from _fuzz import FAST, HEAVY, REJECTED, assert_finite, bad_ints, clean_call, corrupt, fuzz, junk
from meta_learning.maml import MAML

N_OUT, D_IN = 3, 4
pytestmark = pytest.mark.filterwarnings("error::UserWarning")  # e.g. mse_loss broadcasting [K] against [K, C]
bad_lrs = st.one_of(st.sampled_from([0.0, -0.1, math.nan, math.inf, -math.inf, 1e308]), junk)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D_IN, 6), nn.ReLU(), nn.Linear(6, N_OUT))


@st.composite
def constructor_args(draw):
    valid = {
        "lr_inner": draw(st.floats(1e-3, 0.5)), "lr_outer": draw(st.floats(1e-4, 0.1)),
        "num_inner_steps": draw(st.integers(0, 3)), "meta_batch_size": draw(st.integers(1, 4)),
        "inner_params": draw(st.sampled_from([None, ["2"], ["0.weight"], lambda n: n.startswith("2")])),
        "learn_inner_lr": draw(st.sampled_from(["fixed", "per_parameter", "per_step"])),
        "first_order": draw(st.booleans()),
    }  # fmt: skip
    bad = {
        "lr_inner": bad_lrs, "lr_outer": bad_lrs, "num_inner_steps": bad_ints, "meta_batch_size": bad_ints,
        "inner_params": st.sampled_from(["2", ["nope"], [], lambda n: False, 3]),
        "learn_inner_lr": st.one_of(st.text(max_size=4), junk),
    }  # fmt: skip
    return draw(corrupt(valid, bad))


def _constructor_case(kwargs):
    maml = clean_call(lambda: MAML(_model(), **kwargs), *kwargs, "model")
    if maml is not REJECTED:
        assert math.isfinite(maml.lr_inner) and maml.lr_inner > 0 and math.isfinite(maml.lr_outer)


@st.composite
def support_sets(draw):
    s, m = draw(st.integers(1, 6)), draw(st.integers(0, 4))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    x, qx = torch.randn(s, D_IN, generator=g), torch.randn(m, D_IN, generator=g)
    y = torch.randint(0, N_OUT, (s,), generator=g)
    valid = {"x": x, "y": y, "query_x": qx, "num_steps": draw(st.integers(0, 3))}
    bad = {
        "x": st.sampled_from([
            x.masked_fill(torch.rand(x.shape, generator=g) < 0.2, math.nan), x * math.inf, x[:, :2], x[:0],
            x.unsqueeze(0), x.double(), x.long(), x.tolist(), None,
        ]),
        "y": st.sampled_from([y + N_OUT, y - N_OUT, y[:-1], torch.cat([y, y]), y.unsqueeze(1), y.bool(), y.tolist(),
                              y.float(), None]),
        "query_x": st.sampled_from([qx[:, :2], qx.double(), qx.masked_fill(qx > 0, math.nan), "q", None]),
        "num_steps": bad_ints,
    }  # fmt: skip
    return draw(corrupt(valid, bad))


def _adapt_case(args):
    maml = MAML(_model(), lr_inner=0.1, num_inner_steps=1)
    before = {k: v.clone() for k, v in maml.state_dict().items()}
    names = ("x", "y", "support_x", "support_y", "task_support", "num_steps")
    adapted = clean_call(lambda: maml.adapt((args["x"], args["y"]), num_steps=args["num_steps"]), *names)
    for k, v in maml.state_dict().items():
        assert torch.equal(v, before[k]), f"adapt changed the meta-parameter {k}"
    if adapted is not REJECTED:
        for name, p in adapted.named_parameters():
            assert_finite(p, f"adapted parameter {name}")
    logits = clean_call(
        lambda: maml.predict(args["x"], args["y"], args["query_x"], num_steps=args["num_steps"]), *names, "query_x"
    )
    if logits is not REJECTED:
        assert logits.shape[0] == args["query_x"].shape[0]
        assert_finite(logits, "MAML.predict")


test_maml_constructor = fuzz(constructor_args(), FAST // 2)(_constructor_case)
test_maml_adapt = fuzz(support_sets(), FAST)(_adapt_case)
test_maml_constructor_heavy = pytest.mark.slow(fuzz(constructor_args(), HEAVY)(_constructor_case))
test_maml_adapt_heavy = pytest.mark.slow(fuzz(support_sets(), HEAVY)(_adapt_case))
