"""SearchSpace: encoding round trips, conditions, sampling distributions, validation errors."""

from __future__ import annotations

import math

import pytest
import torch

from meta_learning.search import Categorical, Condition, Float, Int, SearchSpace


def space():
    return SearchSpace(
        {
            "opt": Categorical(("adam", "sgd")),
            "lr": Float(1e-5, 1e-1, log=True),
            "width": Int(8, 512, log=True),
            "depth": Int(1, 4),
            "momentum": Float(0.0, 0.99, condition=Condition("opt", ("sgd",))),
            "nesterov": Categorical((True, False), condition=("opt", "sgd")),
        }
    )


def test_layout_and_round_trip():
    s = space()
    assert s.dim == 2 + 1 + 1 + 1 + 1 + 2
    assert s.continuous_columns == [2, 3, 4, 5]
    assert s.categorical_groups == [[0, 1], [6, 7]]
    cfgs = [
        {"opt": "sgd", "lr": 3e-3, "width": 37, "depth": 4, "momentum": 0.9, "nesterov": False},
        {"opt": "adam", "lr": 1e-5, "width": 512, "depth": 1},
    ]
    x = s.encode(cfgs)
    assert x.dtype == torch.float64 and x.shape == (2, s.dim)
    assert ((x >= 0) & (x <= 1)).all()
    back = s.decode(x)
    assert back[0]["opt"] == "sgd" and back[0]["width"] == 37 and back[0]["depth"] == 4
    assert back[0]["nesterov"] is False
    assert math.isclose(back[0]["lr"], 3e-3, rel_tol=1e-12) and math.isclose(back[0]["momentum"], 0.9, rel_tol=1e-12)
    # inactive parameters are absent after decoding and sit at the inactive encoding
    assert set(back[1]) == {"opt", "lr", "width", "depth"}
    assert x[1, 5] == 0.5 and (x[1, 6:] == 0).all()
    for cfg in back:
        s.validate_params(cfg)


def test_every_int_survives_the_round_trip():
    for p in (Int(-3, 7), Int(1, 1000, log=True)):
        s = SearchSpace({"k": p})
        values = list(range(p.low, p.high + 1))
        assert [c["k"] for c in s.decode(s.encode([{"k": v} for v in values]))] == values


def test_int_bins_are_equal_on_their_scale():
    s = SearchSpace({"k": Int(0, 3)})
    u = torch.linspace(0, 1, 4001, dtype=torch.float64).unsqueeze(1)
    counts = torch.bincount(torch.tensor([c["k"] for c in s.decode(u)]))
    assert counts.tolist() == pytest.approx([1000, 1000, 1000, 1000], abs=2)


def test_sampling_follows_the_scale():
    s = SearchSpace({"lr": Float(1e-4, 1.0, log=True), "c": Categorical(("a", "b", "c"))})
    g = torch.Generator().manual_seed(0)
    draws = s.decode(s.sample_encoded(4000, g))
    logs = torch.tensor([math.log10(d["lr"]) for d in draws])
    assert abs(float(logs.median()) + 2.0) < 0.1  # log-uniform on [1e-4, 1]: median 1e-2
    counts = torch.bincount(torch.tensor([("a", "b", "c").index(d["c"]) for d in draws]))
    assert (counts - 4000 / 3).abs().max() < 120


def test_canonical_resets_inactive_columns():
    s = space()
    x = s.sample_encoded(64, torch.Generator().manual_seed(1))
    c = s.canonical(x)
    adam = c[:, 0] == 1.0
    assert adam.any() and (c[adam, 5] == 0.5).all() and (c[adam, 6:] == 0).all()
    assert torch.equal(s.canonical(c), c)


def test_enumerate_encoded_lists_each_configuration_once():
    s = SearchSpace(
        {
            "opt": Categorical(("adam", "sgd", "rmsprop")),
            "depth": Int(1, 4),
            "width": Int(8, 64, log=True),
            "nesterov": Categorical((True, False), condition=("opt", "sgd")),
        }
    )
    assert s.num_configurations == 3 * 4 * 57 * 2  # an upper bound: nesterov exists only under sgd
    every = s.enumerate_encoded()
    configs = s.decode(every)
    # the reference: the product of the active parameters' values, written out by hand
    expected = {(o, d, w, n) for o in ("adam", "sgd", "rmsprop") for d in range(1, 5) for w in range(8, 65)
                for n in ((True, False) if o == "sgd" else (None,))}  # fmt: skip
    got = [(c["opt"], c["depth"], c["width"], c.get("nesterov")) for c in configs]
    assert len(got) == len(set(got)) == len(expected) and set(got) == expected
    assert torch.equal(s.canonical(every), every)  # valid encodings, inactive columns reset
    for c in configs:
        s.validate_params(c)
    assert space().num_configurations is None
    with pytest.raises(ValueError, match="float parameters"):
        space().enumerate_encoded()


def test_from_dict_shorthand():
    s = SearchSpace.from_dict({"a": (0.0, 1.0), "b": (1, 10), "c": (1e-3, 1.0, "log"), "d": ["x", "y"]})
    assert s.params["a"] == Float(0.0, 1.0)
    assert s.params["b"] == Int(1, 10)
    assert s.params["c"] == Float(1e-3, 1.0, log=True)
    assert s.params["d"] == Categorical(("x", "y"))
    assert SearchSpace.from_dict(s) is s


@pytest.mark.parametrize(
    ("spec", "err", "match"),
    [
        ({"a": (1.0, 0.0)}, ValueError, "low=1.0 must be < high=0.0"),
        ({"a": (0.0, 1.0, "log")}, ValueError, "log-scaled parameter needs low > 0"),
        ({"a": (0.0, 1.0, "exp")}, ValueError, "third element must be 'log'"),
        ({"a": []}, ValueError, "choices is empty"),
        ({"a": ["x", "x"]}, ValueError, "duplicates"),
        ({"a": [object()]}, TypeError, "not storable"),
        ({"a": "x"}, TypeError, "not understood"),
        ({"act": ("relu", "gelu")}, TypeError, r"search_space\['act'\]=\('relu', 'gelu'\).*e.g. \['relu', 'gelu'\]"),
        ({"act": ("relu", "gelu", "tanh")}, TypeError, r"needs numbers for low and high.*\['relu', 'gelu', 'tanh'\]"),
        ({"flag": (True, False)}, TypeError, r"search_space\['flag'\].*give a list, e.g. \[True, False\]"),
        ({}, ValueError, "non-empty mapping"),
    ],
)
def test_validation_errors(spec, err, match):
    with pytest.raises(err, match=match):
        SearchSpace.from_dict(spec)


def test_condition_errors():
    with pytest.raises(ValueError, match="not defined before it"):
        SearchSpace({"m": Float(0, 1, condition=("opt", "sgd")), "opt": Categorical(("adam", "sgd"))})
    with pytest.raises(ValueError, match="not in the range of parent"):
        SearchSpace({"opt": Categorical(("adam", "sgd")), "m": Float(0, 1, condition=("opt", "rmsprop"))})
    with pytest.raises(TypeError, match="condition of"):
        Float(0, 1, condition="opt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="inactive"):
        space().validate_params({"opt": "adam", "lr": 1e-3, "width": 8, "depth": 1, "momentum": 0.5})
    with pytest.raises(ValueError, match="outside"):
        space().validate_params({"opt": "adam", "lr": 1.0, "width": 8, "depth": 1})
