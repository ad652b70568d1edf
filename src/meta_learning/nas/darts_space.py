"""The DARTS cell space (Liu et al. 2019): genotypes of a normal and a reduction cell, and their network.

A cell has two inputs (``0``: the output of the cell before the previous one, ``1``: the previous cell's) and
``steps`` intermediate nodes (4 in DARTS); node ``i`` (index ``i + 2``) sums two ops applied to two distinct earlier
nodes, and the cell's output concatenates the intermediate nodes. A genotype lists ``(op, input)`` pairs, two per
node, for the normal cell and for the reduction cell (whose ops on the two cell inputs use stride 2). The string
form is the reference code's ``Genotype(normal=[('sep_conv_3x3', 1), ...], normal_concat=[2, 3, 4, 5], ...)``.

Candidate ops are those of :data:`~meta_learning.nas.ops.DARTS_OPS` except ``none``, which the search uses but
a derived genotype never contains.

The network follows DARTS' ``NetworkCIFAR`` without the auxiliary head or drop-path: a 3x3 conv stem with
``3 C`` channels, ``layers`` cells with reduction cells at ``layers // 3`` and ``2 layers // 3`` (each doubling the
width), global average pooling and a linear classifier.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from meta_learning._checks import check_positive_int
from meta_learning.nas.ops import DARTS_OPS, FactorizedReduce, ReLUConvBN, check_operations, make_op
from meta_learning.search.space import Categorical, SearchSpace

CELL_TYPES = ("normal", "reduce")
Edge = tuple[str, int]


def _check_cell(name: str, edges: Any, concat: Any) -> tuple[tuple[Edge, ...], tuple[int, ...]]:
    edges = tuple((str(op), int(src)) for op, src in edges)
    if not edges or len(edges) % 2:
        raise ValueError(f"{name} must hold two (op, input) pairs per intermediate node, got {len(edges)} pairs")
    steps = len(edges) // 2
    for k, (op, src) in enumerate(edges):
        if op not in DARTS_OPS or op == "none":
            raise ValueError(f"{name}[{k}] op {op!r} is not a DARTS genotype op ({', '.join(DARTS_OPS[1:])})")
        if not 0 <= src < k // 2 + 2:
            raise ValueError(f"{name}[{k}] reads node {src}, but node {k // 2 + 2} can only read nodes 0..{k // 2 + 1}")
    concat = tuple(int(c) for c in concat)
    if not concat or any(not 2 <= c < steps + 2 for c in concat) or len(set(concat)) != len(concat):
        raise ValueError(f"{name}_concat={list(concat)} must be distinct intermediate nodes in 2..{steps + 1}")
    return edges, concat


@dataclass(frozen=True)
class DARTSGenotype:
    """A DARTS architecture: ``(op, input)`` pairs of the normal and reduction cells and the concatenated nodes."""

    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self) -> None:
        normal, normal_concat = _check_cell("normal", self.normal, self.normal_concat)
        reduce, reduce_concat = _check_cell("reduce", self.reduce, self.reduce_concat)
        if len(normal) != len(reduce):
            raise ValueError(f"normal has {len(normal) // 2} nodes but reduce has {len(reduce) // 2}")
        for name, value in (("normal", normal), ("normal_concat", normal_concat), ("reduce", reduce),
                            ("reduce_concat", reduce_concat)):  # fmt: skip
            object.__setattr__(self, name, value)

    @property
    def steps(self) -> int:
        return len(self.normal) // 2

    def __str__(self) -> str:
        def edges(cell: tuple[Edge, ...]) -> str:
            return "[" + ", ".join(f"({op!r}, {src})" for op, src in cell) + "]"

        return (f"Genotype(normal={edges(self.normal)}, normal_concat={list(self.normal_concat)}, "
                f"reduce={edges(self.reduce)}, reduce_concat={list(self.reduce_concat)})")  # fmt: skip

    @classmethod
    def from_string(cls, text: str) -> DARTSGenotype:
        """Parse the reference ``Genotype(normal=[...], normal_concat=[...], reduce=[...], reduce_concat=[...])``
        form (``range(2, 6)`` is accepted for the concat lists, as DARTS' own code prints it)."""
        if not isinstance(text, str):
            raise TypeError(f"a DARTS genotype string must be a str, got {type(text).__name__}")
        m = re.fullmatch(r"\s*Genotype\((.*)\)\s*", text, flags=re.S)
        if m is None:
            raise ValueError(f"{text!r} is not a 'Genotype(normal=..., reduce=...)' string")
        body = re.sub(r"range\((\d+),\s*(\d+)\)", lambda r: str(list(range(int(r[1]), int(r[2])))), m[1])
        try:
            call = ast.parse(f"f({body})", mode="eval").body
            if not isinstance(call, ast.Call) or call.args:
                raise ValueError("positional fields")
            fields = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
        except (SyntaxError, ValueError) as err:
            raise ValueError(f"cannot parse genotype {text!r}: {err}") from err
        expected = {"normal", "normal_concat", "reduce", "reduce_concat"}
        if set(fields) != expected:
            raise ValueError(f"genotype {text!r} has fields {sorted(map(str, fields))}; expected {sorted(expected)}")
        return cls(**fields)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        return {"space": "darts", "normal": [list(e) for e in self.normal], "normal_concat": list(self.normal_concat),
                "reduce": [list(e) for e in self.reduce], "reduce_concat": list(self.reduce_concat)}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DARTSGenotype:
        if not isinstance(data, Mapping) or data.get("space") != "darts":
            raise ValueError(f"{data!r} is not the JSON of a DARTS genotype")
        return cls(tuple(map(tuple, data["normal"])), tuple(data["normal_concat"]),
                   tuple(map(tuple, data["reduce"])), tuple(data["reduce_concat"]))  # fmt: skip

    def count(self, op: str, cell: str = "normal") -> int:
        return sum(o == op for o, _ in getattr(self, cell))


class DARTSCell(nn.Module):
    """A fixed cell. Shapes: ``s0 [B, C_pp, H0, W0]``, ``s1 [B, C_p, H, W] -> [B, len(concat) C, H', W']``
    (``H' = H / 2`` for a reduction cell; ``s0`` is at twice ``s1``'s resolution when ``reduction_prev``)."""

    def __init__(
        self, edges: Sequence[Edge], concat: Sequence[int], c_pp: int, c_p: int, c: int, reduction: bool,
        reduction_prev: bool,
    ) -> None:  # fmt: skip
        super().__init__()
        self.pre0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self.inputs = [src for _, src in edges]
        self.concat = list(concat)
        self.ops = nn.ModuleList(make_op(op, c, c, 2 if reduction and src < 2 else 1) for op, src in edges)

    def forward(self, s0: Tensor, s1: Tensor, *unused: Any) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for i in range(len(self.ops) // 2):
            a, b = 2 * i, 2 * i + 1
            states.append(self.ops[a](states[self.inputs[a]]) + self.ops[b](states[self.inputs[b]]))
        return torch.cat([states[k] for k in self.concat], dim=1)


CellFactory = Callable[[int, int, int, bool, bool], nn.Module]  # (c_pp, c_p, c, reduction, reduction_prev)


class DARTSMacro(nn.Module):
    """Stem, ``layers`` cells (reductions at ``layers // 3`` and ``2 layers // 3``), pooling and classifier.

    Cells are called as ``cell(s0, s1, *cell_args)`` with the arguments given to :meth:`forward`, so that fixed
    cells and supernet cells share this skeleton. ``multiplier`` is the number of nodes a cell concatenates.

    Shapes: ``x [B, in_channels, H, W] -> logits [B, num_classes]``.
    """

    def __init__(
        self,
        make_cell: CellFactory,
        multiplier: int,
        channels: int = 16,
        layers: int = 8,
        num_classes: int = 10,
        in_channels: int = 3,
        stem_multiplier: int = 3,
    ) -> None:
        super().__init__()
        for name, v in (("channels", channels), ("layers", layers), ("num_classes", num_classes),
                        ("in_channels", in_channels), ("stem_multiplier", stem_multiplier)):  # fmt: skip
            check_positive_int(name, v)
        c_stem = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        c_pp, c_p, c = c_stem, c_stem, channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        reductions = {layers // 3, 2 * layers // 3}
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c *= 2
            self.cells.append(make_cell(c_pp, c_p, c, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, multiplier * c
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: Tensor, *cell_args: Any) -> Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, *cell_args)
        return self.classifier(s1.mean(dim=(2, 3)))


class DARTSNetwork(DARTSMacro):
    """The network of a fixed genotype (arguments as :class:`DARTSMacro`)."""

    def __init__(
        self,
        genotype: DARTSGenotype,
        channels: int = 16,
        layers: int = 8,
        num_classes: int = 10,
        in_channels: int = 3,
        stem_multiplier: int = 3,
    ) -> None:
        if len(genotype.normal_concat) != len(genotype.reduce_concat):
            raise ValueError("normal_concat and reduce_concat must have the same length (cells' output widths)")

        def make_cell(c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool) -> DARTSCell:
            edges, concat = (
                (genotype.reduce, genotype.reduce_concat) if reduction else (genotype.normal, genotype.normal_concat)
            )
            return DARTSCell(edges, concat, c_pp, c_p, c, reduction, reduction_prev)

        super().__init__(make_cell, len(genotype.normal_concat), channels, layers, num_classes, in_channels,
                         stem_multiplier)  # fmt: skip
        self.genotype = genotype


def _pairs(node: int) -> tuple[str, ...]:
    return tuple(f"{a},{b}" for a, b in itertools.combinations(range(node + 2), 2))


class DARTSSpace:
    """The DARTS search space as strategy parameters: per cell type and node ``i``, ``{cell}_{i}_inputs`` (a pair
    ``"a,b"`` of distinct earlier nodes) and ``{cell}_{i}_op_a``/``_op_b`` (the ops on those two inputs).

    Args:
        operations: genotype ops (default the seven non-``none`` DARTS ops).
        steps: intermediate nodes per cell (4 in DARTS).
        channels, layers, num_classes, in_channels: defaults of :meth:`build`.
    """

    def __init__(
        self,
        operations: Sequence[str] = DARTS_OPS[1:],
        steps: int = 4,
        channels: int = 16,
        layers: int = 8,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        self.operations = check_operations("operations", list(operations), DARTS_OPS[1:])
        self.steps = check_positive_int("steps", steps)
        self.defaults = {"channels": check_positive_int("channels", channels),
                         "layers": check_positive_int("layers", layers),
                         "num_classes": check_positive_int("num_classes", num_classes),
                         "in_channels": check_positive_int("in_channels", in_channels)}  # fmt: skip
        params: dict[str, Categorical] = {}
        for cell in CELL_TYPES:
            for i in range(self.steps):
                params[f"{cell}_{i}_inputs"] = Categorical(_pairs(i))
                params[f"{cell}_{i}_op_a"] = Categorical(self.operations)
                params[f"{cell}_{i}_op_b"] = Categorical(self.operations)
        self._space = SearchSpace(params)

    @property
    def search_space(self) -> SearchSpace:
        return self._space

    def from_params(self, params: Mapping[str, Any]) -> DARTSGenotype:
        self._space.validate_params(params)
        cells = {}
        for cell in CELL_TYPES:
            edges: list[Edge] = []
            for i in range(self.steps):
                a, b = (int(v) for v in params[f"{cell}_{i}_inputs"].split(","))
                edges += [(params[f"{cell}_{i}_op_a"], a), (params[f"{cell}_{i}_op_b"], b)]
            cells[cell] = tuple(edges)
        concat = tuple(range(2, self.steps + 2))
        return DARTSGenotype(cells["normal"], concat, cells["reduce"], concat)

    def to_params(self, arch: DARTSGenotype) -> dict[str, Any]:
        """The configuration of ``arch`` (each node's two edges ordered by input node)."""
        arch = self._check(arch)
        params: dict[str, Any] = {}
        for cell in CELL_TYPES:
            edges = getattr(arch, cell)
            for i in range(self.steps):
                (op_a, a), (op_b, b) = sorted(edges[2 * i : 2 * i + 2], key=lambda e: e[1])
                if a == b:
                    raise ValueError(f"node {i + 2} of the {cell} cell of {arch} reads node {a} twice; this space "
                                     "needs two distinct inputs per node")  # fmt: skip
                params.update({f"{cell}_{i}_inputs": f"{a},{b}", f"{cell}_{i}_op_a": op_a, f"{cell}_{i}_op_b": op_b})
        return params

    def to_string(self, arch: DARTSGenotype) -> str:
        return str(self._check(arch))

    def parse(self, text: str) -> DARTSGenotype:
        return self._check(DARTSGenotype.from_string(text))

    def build(self, arch: DARTSGenotype, **kwargs: Any) -> DARTSNetwork:
        """The network of ``arch``; keyword arguments override the defaults (``channels``, ``layers``, ...)."""
        allowed = {*self.defaults, "stem_multiplier"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise TypeError(f"unknown build arguments {sorted(unknown)}; allowed: {sorted(allowed)}")
        return DARTSNetwork(self._check(arch), **{**self.defaults, **kwargs})

    def _check(self, arch: Any) -> DARTSGenotype:
        if not isinstance(arch, DARTSGenotype):
            raise TypeError(f"expected a DARTSGenotype, got {type(arch).__name__}")
        if arch.steps != self.steps:
            raise ValueError(f"genotype has {arch.steps} nodes per cell but this space has steps={self.steps}")
        bad = sorted({op for op, _ in (*arch.normal, *arch.reduce)} - set(self.operations))
        if bad:
            raise ValueError(f"genotype uses ops {bad} outside this space's operations {list(self.operations)}")
        return arch

    def __repr__(self) -> str:
        return f"DARTSSpace(operations={list(self.operations)}, steps={self.steps})"
