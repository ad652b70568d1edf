"""NAS-Bench-201 cell space: canonical strings, parameters, the cell's arithmetic, the network."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from meta_learning.nas import NB201_OPS, NASBench201Space, NB201Architecture
from meta_learning.nas.nb201 import EDGES, NB201Cell

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"  # index 6111


def test_string_round_trip_over_all_15625_cells():
    space = NASBench201Space()
    seen = set()
    for arch in space:
        text = str(arch)
        assert NB201Architecture.from_string(text) == arch
        assert space.from_params(space.to_params(arch)) == arch
        assert NB201Architecture.from_json(json.loads(json.dumps(arch.to_json()))) == arch
        seen.add(text)
    assert len(seen) == len(space) == 5**6 == 15_625


def test_round_trip_matches_the_benchmark_strings(nb201_table_path):
    """Every string in the benchmark file parses to a cell whose canonical string is that exact string."""
    lines = nb201_table_path.read_text().splitlines()[1:]
    strings = [line.rsplit(",", 1)[0] for line in lines]
    ours = {str(a) for a in NASBench201Space()}
    assert all(str(NB201Architecture.from_string(s)) == s for s in strings)
    assert set(strings) == ours


def test_canonical_string_layout():
    arch = NB201Architecture.from_string(BEST)
    assert arch.ops == ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "nor_conv_1x1")
    assert EDGES == ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
    assert str(arch) == BEST


@pytest.mark.parametrize(
    "bad",
    [
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|",  # two nodes
        "|nor_conv_3x3~1|+|none~0|none~1|+|none~0|none~1|none~2|",  # wrong input index
        "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",  # unknown op
        "|none~0|+|none~0|+|none~0|none~1|none~2|",  # node 2 with one input
        "none~0+|none~0|none~1|+|none~0|none~1|none~2|",  # missing bars
    ],
)
def test_malformed_strings_raise(bad):
    with pytest.raises(ValueError):
        NB201Architecture.from_string(bad)


def test_space_restricted_operations():
    space = NASBench201Space(operations=("skip_connect", "nor_conv_3x3"))
    assert len(space) == 64 and len(list(space)) == 64
    with pytest.raises(ValueError, match="outside"):
        space.to_params(NB201Architecture.from_string(BEST.replace("skip_connect", "none")))
    with pytest.raises(ValueError, match="unknown"):
        NASBench201Space(operations=("skip_connect", "sep_conv_3x3"))


def _cell(ops):
    return NB201Cell(NB201Architecture(tuple(ops)), channels=3).eval()


def test_cell_arithmetic_matches_closed_forms():
    x = torch.randn(2, 3, 6, 6)
    # all skips: n1 = x, n2 = x + n1 = 2x, n3 = x + n1 + n2 = 4x
    torch.testing.assert_close(_cell(["skip_connect"] * 6)(x), 4 * x)
    # only the 0->3 edge survives
    torch.testing.assert_close(_cell(["none"] * 3 + ["skip_connect", "none", "none"])(x), x)
    assert torch.count_nonzero(_cell(["none"] * 6)(x)) == 0
    # chain 0 -> 1 -> 2 -> 3 through average pools (padding excluded from the mean)
    pool = lambda t: F.avg_pool2d(t, 3, 1, 1, count_include_pad=False)  # noqa: E731
    ops = ["avg_pool_3x3", "none", "avg_pool_3x3", "none", "none", "avg_pool_3x3"]
    torch.testing.assert_close(_cell(ops)(x), pool(pool(pool(x))))


def test_network_shapes_and_size():
    space = NASBench201Space(channels=4, cells_per_stage=1, num_classes=7, in_channels=1)
    arch = NB201Architecture.from_string(BEST)
    model = space.build(arch)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 7)
    assert model(torch.randn(3, 1, 9, 9)).shape == (3, 7)  # odd sizes through both reductions
    # a cell of 'none' and skips has no parameters: the network reduces to stem + residual blocks + head
    empty = space.build(NB201Architecture(("none",) * 6))
    convs = space.build(NB201Architecture(("nor_conv_1x1",) * 6))
    # each 1x1 ReLU-Conv-BN edge at width c adds c*c weights + 2c BN parameters; 6 edges, widths 4, 8, 16
    extra = sum(6 * (c * c + 2 * c) for c in (4, 8, 16))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(convs) - count(empty) == extra
    with pytest.raises(TypeError, match="unknown build arguments"):
        space.build(arch, layers=3)


def test_ops_constant():
    assert NB201_OPS == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
