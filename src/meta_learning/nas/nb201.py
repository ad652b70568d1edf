"""The NAS-Bench-201 cell space (Dong & Yang 2020): genotypes, their canonical strings, and the cell network.

A cell is a DAG on 4 nodes; node ``i`` (1..3) is the sum of one op applied to every earlier node ``j < i``, so
there are 6 edges ``(1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2)`` and, with 5 candidate ops, ``5^6 = 15,625``
cells. The canonical string lists each node's incoming edges as ``op~j``::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|

The network (the benchmark's "TinyNetwork"): a 3x3 conv stem with ``C`` channels, ``N`` cells, a residual block
that halves the resolution and doubles the width, ``N`` cells, another residual block, ``N`` cells, then
BN-ReLU, global average pooling and a linear classifier (``C = 16``, ``N = 5`` in the benchmark).

Example:
    >>> space = NASBench201Space()
    >>> best = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    >>> arch = space.parse(best)
    >>> str(arch) == space.to_string(arch)
    True
    >>> model = space.build(arch, num_classes=10)     # nn.Module: [B, 3, 32, 32] -> [B, 10]
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from meta_learning._checks import check_positive_int
from meta_learning.nas.ops import NB201_OPS, ReLUConvBN, check_operations, make_op
from meta_learning.search.space import Categorical, SearchSpace

NUM_NODES = 4
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(1, NUM_NODES) for j in range(i))  # (to, from)


def edge_name(to: int, src: int) -> str:
    return f"edge_{to}_{src}"


@dataclass(frozen=True)
class NB201Architecture:
    """One NAS-Bench-201 cell: ``ops[k]`` is the op on edge ``EDGES[k]`` (order of the canonical string)."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        if len(self.ops) != len(EDGES):
            raise ValueError(f"a NAS-Bench-201 cell has {len(EDGES)} edges, got {len(self.ops)} ops: {self.ops}")
        bad = [o for o in self.ops if o not in NB201_OPS]
        if bad:
            raise ValueError(f"unknown NAS-Bench-201 ops {bad}; allowed: {', '.join(NB201_OPS)}")

    def __str__(self) -> str:
        nodes = []
        for i in range(1, NUM_NODES):
            nodes.append("|" + "|".join(f"{self.ops[k]}~{j}" for k, (to, j) in enumerate(EDGES) if to == i) + "|")
        return "+".join(nodes)

    @classmethod
    def from_string(cls, text: str) -> NB201Architecture:
        """Parse the canonical ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` string (strict: every edge, in order)."""
        if not isinstance(text, str):
            raise TypeError(f"a NAS-Bench-201 architecture string must be a str, got {type(text).__name__}")
        nodes = text.split("+")
        if len(nodes) != NUM_NODES - 1:
            raise ValueError(f"{text!r} has {len(nodes)} node groups; expected {NUM_NODES - 1} joined by '+'")
        ops: list[str] = []
        for i, node in enumerate(nodes, start=1):
            if len(node) < 2 or node[0] != "|" or node[-1] != "|":
                raise ValueError(f"node {i} of {text!r} is {node!r}; expected '|op~j|...|'")
            edges = node[1:-1].split("|")
            if len(edges) != i:
                raise ValueError(f"node {i} of {text!r} has {len(edges)} inputs; node {i} takes exactly {i}")
            for j, edge in enumerate(edges):
                op, sep, src = edge.rpartition("~")
                if not sep or src != str(j):
                    raise ValueError(f"edge {edge!r} of node {i} in {text!r} must read 'op~{j}'")
                ops.append(op)
        return cls(tuple(ops))

    def to_json(self) -> dict[str, Any]:
        return {"space": "nas-bench-201", "arch": str(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NB201Architecture:
        if not isinstance(data, Mapping) or data.get("space") != "nas-bench-201" or "arch" not in data:
            raise ValueError(f"{data!r} is not the JSON of a NAS-Bench-201 architecture")
        return cls.from_string(data["arch"])

    def count(self, op: str) -> int:
        return sum(o == op for o in self.ops)


class NB201Cell(nn.Module):
    """The fixed cell of a genotype: ``node_i = sum_{j<i} op_{i,j}(node_j)``, output ``node_3``.

    Shapes: ``x [B, C, H, W] -> [B, C, H, W]``.
    """

    def __init__(self, arch: NB201Architecture, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleDict({edge_name(i, j): make_op(op, channels, channels, 1)
                                    for op, (i, j) in zip(arch.ops, EDGES, strict=True)})  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        for i in range(1, NUM_NODES):
            node = self.edges[edge_name(i, 0)](x)
            for j in range(1, i):
                node = node + self.edges[edge_name(i, j)](nodes[j])
            nodes.append(node)
        return nodes[-1]


class ResNetBasicBlock(nn.Module):
    """The benchmark's reduction block: two ReLU-Conv-BN 3x3 (the first with stride 2) plus a shortcut
    ``AvgPool 2x2 -> Conv 1x1``. Shapes: ``[B, C_in, H, W] -> [B, C_out, ceil(H/2), ceil(W/2)]``."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1, affine=affine)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, affine=affine)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2, ceil_mode=True), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class NB201Macro(nn.Module):
    """Stem, three stages of ``N`` cells separated by residual blocks, and the classifier head.

    ``make_cell(channels)`` builds one cell; a cell's ``forward`` receives ``(x, *cell_args)`` from
    :meth:`forward`, so that the same skeleton serves fixed cells and supernet cells (which take mixing weights).

    Shapes: ``x [B, in_channels, H, W] -> logits [B, num_classes]``.
    """

    def __init__(
        self,
        make_cell: Callable[[int], nn.Module],
        channels: int = 16,
        cells_per_stage: int = 5,
        num_classes: int = 10,
        in_channels: int = 3,
        affine: bool = True,
    ) -> None:
        super().__init__()
        for name, v in (("channels", channels), ("cells_per_stage", cells_per_stage),
                        ("num_classes", num_classes), ("in_channels", in_channels)):  # fmt: skip
            check_positive_int(name, v)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        layers: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage:
                layers.append(ResNetBasicBlock(c, 2 * c, affine=affine))
                c *= 2
            layers.extend(make_cell(c) for _ in range(cells_per_stage))
        self.layers = nn.ModuleList(layers)
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: Tensor, *cell_args: Any) -> Tensor:
        h = self.stem(x)
        for layer in self.layers:
            h = layer(h) if isinstance(layer, ResNetBasicBlock) else layer(h, *cell_args)
        h = self.head(h).mean(dim=(2, 3))
        return self.classifier(h)


class NB201Network(NB201Macro):
    """The network of a fixed NAS-Bench-201 cell (see :class:`NB201Macro` for the arguments and shapes)."""

    def __init__(
        self,
        arch: NB201Architecture,
        channels: int = 16,
        cells_per_stage: int = 5,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__(lambda c: NB201Cell(arch, c), channels, cells_per_stage, num_classes, in_channels)
        self.arch = arch


class NASBench201Space:
    """The NAS-Bench-201 search space: 6 categorical edge parameters ``edge_{i}_{j}`` over ``operations``.

    Args:
        operations: the candidate ops (default the benchmark's five; a subset narrows the space).
        channels, cells_per_stage, num_classes, in_channels: defaults of :meth:`build` (the benchmark uses 16, 5,
            10 for CIFAR-10, 3).
    """

    def __init__(
        self,
        operations: Sequence[str] = NB201_OPS,
        channels: int = 16,
        cells_per_stage: int = 5,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        self.operations = check_operations("operations", list(operations), NB201_OPS)
        self.defaults = {"channels": check_positive_int("channels", channels),
                         "cells_per_stage": check_positive_int("cells_per_stage", cells_per_stage),
                         "num_classes": check_positive_int("num_classes", num_classes),
                         "in_channels": check_positive_int("in_channels", in_channels)}  # fmt: skip
        self._space = SearchSpace({edge_name(i, j): Categorical(self.operations) for i, j in EDGES})

    @property
    def search_space(self) -> SearchSpace:
        return self._space

    def __len__(self) -> int:
        return len(self.operations) ** len(EDGES)

    def __iter__(self) -> Iterator[NB201Architecture]:
        """Every cell of the space (``len(operations)^6``), in lexicographic order of the edge ops."""
        for ops in itertools.product(self.operations, repeat=len(EDGES)):
            yield NB201Architecture(ops)

    def from_params(self, params: Mapping[str, Any]) -> NB201Architecture:
        self._space.validate_params(params)
        return NB201Architecture(tuple(params[edge_name(i, j)] for i, j in EDGES))

    def to_params(self, arch: NB201Architecture) -> dict[str, Any]:
        self._check(arch)
        return {edge_name(i, j): op for op, (i, j) in zip(arch.ops, EDGES, strict=True)}

    def to_string(self, arch: NB201Architecture) -> str:
        return str(self._check(arch))

    def parse(self, text: str) -> NB201Architecture:
        return self._check(NB201Architecture.from_string(text))

    def build(self, arch: NB201Architecture, **kwargs: Any) -> NB201Network:
        """The network of ``arch``; keyword arguments override the space's defaults (``channels``, ...)."""
        unknown = set(kwargs) - set(self.defaults)
        if unknown:
            raise TypeError(f"unknown build arguments {sorted(unknown)}; allowed: {sorted(self.defaults)}")
        return NB201Network(self._check(arch), **{**self.defaults, **kwargs})

    def _check(self, arch: Any) -> NB201Architecture:
        if not isinstance(arch, NB201Architecture):
            raise TypeError(f"expected an NB201Architecture, got {type(arch).__name__}")
        bad = [o for o in arch.ops if o not in self.operations]
        if bad:
            raise ValueError(f"{arch} uses ops {bad} outside this space's operations {list(self.operations)}")
        return arch

    def __repr__(self) -> str:
        return f"NASBench201Space(operations={list(self.operations)})"
