"""DARTS cell space and the macro space: genotype strings/JSON round trips, parameters, networks."""

from __future__ import annotations

import json

import pytest
import torch

from meta_learning.nas import DARTSGenotype, DARTSSpace, MacroArchitecture, MacroSpace, ParamSpace
from meta_learning.search import Categorical, Condition, Int, SearchSpace

# DARTS_V2 from the reference code (genotypes.py), as it prints it
DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)


def test_darts_v2_string_round_trip_and_range_concat():
    g = DARTSGenotype.from_string(DARTS_V2)
    assert str(g) == DARTS_V2
    assert (
        g.normal[7] == ("dil_conv_3x3", 2) and g.count("skip_connect") == 2 and g.count("skip_connect", "reduce") == 3
    )
    assert DARTSGenotype.from_string(DARTS_V2.replace("[2, 3, 4, 5]", "range(2, 6)")) == g
    assert DARTSGenotype.from_json(json.loads(json.dumps(g.to_json()))) == g


def test_darts_params_round_trip_on_random_genotypes():
    space = DARTSSpace()
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        params = space.search_space.sample(gen)
        g = space.from_params(params)
        assert space.to_params(g) == params
        assert space.parse(str(g)) == g
        # each node reads two distinct earlier nodes
        for cell in (g.normal, g.reduce):
            for i in range(4):
                (_, a), (_, b) = cell[2 * i : 2 * i + 2]
                assert a != b and max(a, b) < i + 2


@pytest.mark.parametrize(
    "text, match",
    [
        (DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 5)"), "can only read"),
        (DARTS_V2.replace("'sep_conv_3x3', 0", "'none', 0", 1), "not a DARTS genotype op"),
        (DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[2, 6]"), "distinct intermediate"),
        ("Genotype(normal=[], reduce=[])", "fields"),
        ("Genotype(__import__('os'))", "cannot parse"),
    ],
)
def test_darts_bad_genotypes_raise(text, match):
    with pytest.raises(ValueError, match=match):
        DARTSGenotype.from_string(text)


def test_darts_network_shapes_and_reductions():
    g = DARTSGenotype.from_string(DARTS_V2)
    net = DARTSSpace().build(g, channels=4, layers=5, in_channels=1, num_classes=3)
    sizes = []
    for cell in net.cells:
        cell.register_forward_hook(lambda m, i, out: sizes.append(tuple(out.shape[1:])))
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    # layers // 3 = 1 and 2 * layers // 3 = 3 are reduction cells: half the resolution, twice the width
    assert sizes == [(16, 28, 28), (32, 14, 14), (32, 14, 14), (64, 7, 7), (64, 7, 7)]
    assert net.classifier.in_features == 4 * 16  # concatenation of 4 nodes at the last width


def test_macro_space_round_trips_and_conditions():
    space = MacroSpace("cnn", input_shape=(1, 12, 12), num_classes=5, depths=(1, 3), widths=(4, 8), kernels=(3, 5))
    gen = torch.Generator().manual_seed(1)
    depths = set()
    for _ in range(100):
        params = space.search_space.sample(gen)
        arch = space.from_params(params)
        depths.add(len(arch.widths))
        assert set(params) == {"depth", "activation"} | {f"{p}_{i}" for i in range(params["depth"])
                                                         for p in ("width", "kernel")}  # fmt: skip
        assert space.to_params(arch) == params
        assert space.parse(str(arch)) == arch
        assert MacroArchitecture.from_json(arch.to_json()) == arch
    assert depths == {1, 2, 3}
    arch = space.parse("cnn:8k3-4k5-8k3/gelu")
    assert space.build(arch)(torch.randn(2, 1, 12, 12)).shape == (2, 5)
    with pytest.raises(ValueError):
        space.parse("cnn:16k3/relu")  # width 16 is not a choice of this space
    with pytest.raises(ValueError):
        MacroArchitecture.from_string("cnn:8-4/relu")


def test_macro_mlp_network():
    space = MacroSpace("mlp", input_shape=(6,), num_classes=2, depths=(2, 2), widths=(3,), activations=("tanh",))
    arch = space.parse("mlp:3-3/tanh")
    net = space.build(arch)
    assert net(torch.randn(4, 6)).shape == (4, 2)
    assert sum(p.numel() for p in net.parameters()) == (6 * 3 + 3) + (3 * 3 + 3) + (3 * 2 + 2)


def test_param_space_wraps_a_search_space():
    space = ParamSpace(
        SearchSpace({"kind": Categorical(("a", "b")), "n": Int(1, 3, condition=Condition("kind", ("b",)))})
    )
    arch = space.from_params({"kind": "b", "n": 2})
    assert space.parse(space.to_string(arch)) == arch
    with pytest.raises(ValueError, match="inactive"):
        space.from_params({"kind": "a", "n": 2})
    with pytest.raises(TypeError, match="no builder"):
        space.build(arch)
