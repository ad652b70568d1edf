"""DARTS supernets: every edge a softmax-weighted mixture of all candidate ops (Liu et al. 2019, eq. 2).

Notation: ``O`` the candidate ops of an edge ``(i, j)``, ``α^{(i,j)} [|O|]`` its architecture logits,
``ō^{(i,j)}(x) = Σ_o softmax(α^{(i,j)})_o o(x)`` the mixed op. ``β`` the weight of the auxiliary skip connection of
DARTS- (Chu et al. 2021): ``ō(x) + β skip(x)``, outside the softmax, decayed to 0 during the search so that the
final supernet is the plain one; it takes over the residual path that otherwise lets ``skip_connect`` win the
softmax unfairly (the collapse of DARTS).

Two supernets, with the architecture logits as parameters named ``alphas*`` (:func:`split_parameters` splits
``named_parameters`` into weights ``w`` and ``α``); each has ``aux_skip_weight`` (``β``), ``genotype()`` and
``skip_count()``:

- :class:`NB201SearchNetwork`: the NAS-Bench-201 skeleton with mixed cells; ``alphas [6, |O|]`` shared by all
  cells; the genotype is the argmax op of each edge (``none`` included, as in NAS-Bench-201's DARTS baseline).
- :class:`DARTSSearchNetwork`: the DARTS skeleton; ``alphas_normal``, ``alphas_reduce [k, |O|]`` with
  ``k = Σ_{i<steps} (i + 2)`` edges (14 for 4 steps); the genotype keeps, for each node, the two incoming edges
  with the strongest non-``none`` op and that op (DARTS' ``genotype()``).

BatchNorm in the candidate ops has no affine parameters during the search (DARTS), and DARTS-space pooling ops
are followed by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meta_learning.nas.darts_space import DARTSGenotype, DARTSMacro
from meta_learning.nas.nb201 import EDGES, NB201Architecture, NB201Macro, edge_name
from meta_learning.nas.ops import DARTS_OPS, NB201_OPS, FactorizedReduce, ReLUConvBN, check_operations, make_op


class MixedOp(nn.Module):
    """``Σ_o w_o o(x) (+ β skip(x))``. Shapes: ``x [B, C, H, W]``, ``weights [|O|] -> [B, C, H/stride, W/stride]``."""

    def __init__(
        self, channels: int, stride: int, operations: Sequence[str], pool_bn: bool = False, aux_skip: bool = False
    ) -> None:
        super().__init__()
        ops = []
        for name in operations:
            op = make_op(name, channels, channels, stride, affine=False)
            if pool_bn and "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(channels, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)
        self.aux = (nn.Identity() if stride == 1 else FactorizedReduce(channels, channels, stride, affine=False)
                    ) if aux_skip else None  # fmt: skip

    def forward(self, x: Tensor, weights: Tensor, beta: float = 0.0) -> Tensor:
        out = weights[0] * self.ops[0](x)
        for w, op in zip(weights[1:], self.ops[1:], strict=True):
            out = out + w * op(x)
        if self.aux is not None and beta:
            out = out + beta * self.aux(x)
        return out


def split_parameters(model: nn.Module) -> tuple[dict[str, nn.Parameter], dict[str, nn.Parameter]]:
    """``(weights w, architecture logits α)`` of a supernet, told apart by the ``alphas`` name prefix."""
    weights: dict[str, nn.Parameter] = {}
    alphas: dict[str, nn.Parameter] = {}
    for n, p in model.named_parameters():
        (alphas if n.split(".")[-1].startswith("alphas") else weights)[n] = p
    return weights, alphas


def _init_alphas(edges: int, ops: int, generator: torch.Generator | None) -> nn.Parameter:
    return nn.Parameter(1e-3 * torch.randn(edges, ops, generator=generator))


class NB201SearchCell(nn.Module):
    """A NAS-Bench-201 cell with a :class:`MixedOp` on each of its 6 edges; ``weights [6, |O|]``."""

    def __init__(self, channels: int, operations: Sequence[str], aux_skip: bool = False) -> None:
        super().__init__()
        self.edges = nn.ModuleDict({edge_name(i, j): MixedOp(channels, 1, operations, aux_skip=aux_skip)
                                    for i, j in EDGES})  # fmt: skip

    def forward(self, x: Tensor, weights: Tensor, beta: float = 0.0) -> Tensor:
        nodes = [x]
        k = 0
        for i in range(1, 4):
            node = None
            for j in range(i):
                h = self.edges[edge_name(i, j)](nodes[j], weights[k], beta)
                node = h if node is None else node + h
                k += 1
            nodes.append(node)  # type: ignore[arg-type]
        return nodes[-1]


class NB201SearchNetwork(NB201Macro):
    """The NAS-Bench-201 supernet. Shapes: ``x [B, in_channels, H, W] -> logits [B, num_classes]``.

    Args:
        channels, cells_per_stage, num_classes, in_channels: the skeleton (NAS-Bench-201's DARTS: 16, 5).
        operations: candidate ops (default the five NB201 ops).
        aux_skip: add DARTS-' auxiliary skip on every edge (weighted by :attr:`aux_skip_weight`).
        generator: seeds the ``α`` initialisation (``1e-3 N(0, 1)``).
    """

    def __init__(
        self,
        channels: int = 16,
        cells_per_stage: int = 5,
        num_classes: int = 10,
        in_channels: int = 3,
        operations: Sequence[str] = NB201_OPS,
        aux_skip: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        ops = check_operations("operations", list(operations), NB201_OPS)
        super().__init__(lambda c: NB201SearchCell(c, ops, aux_skip), channels, cells_per_stage, num_classes,
                         in_channels, affine=False)  # fmt: skip
        self.operations = ops
        self.aux_skip_weight = 0.0
        self.alphas = _init_alphas(len(EDGES), len(ops), generator)

    def forward(self, x: Tensor, *unused: Any) -> Tensor:
        return super().forward(x, F.softmax(self.alphas, dim=-1), self.aux_skip_weight)

    def genotype(self) -> NB201Architecture:
        best = self.alphas.detach().argmax(dim=-1).tolist()
        return NB201Architecture(tuple(self.operations[k] for k in best))

    def skip_count(self) -> int:
        """``skip_connect`` edges of the derived cell (the collapse diagnostic)."""
        return self.genotype().count("skip_connect")


class DARTSSearchCell(nn.Module):
    """A DARTS cell with a :class:`MixedOp` on every edge from each earlier node; picks its weights by type."""

    def __init__(
        self, steps: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool,
        operations: Sequence[str], aux_skip: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.reduction, self.steps = reduction, steps
        self.pre0: nn.Module = (
            FactorizedReduce(c_pp, c, affine=False) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine=False)
        )
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(
            MixedOp(c, 2 if reduction and j < 2 else 1, operations, pool_bn=True, aux_skip=aux_skip)
            for i in range(steps) for j in range(i + 2)
        )  # fmt: skip

    def forward(self, s0: Tensor, s1: Tensor, w_normal: Tensor, w_reduce: Tensor, beta: float = 0.0) -> Tensor:
        weights = w_reduce if self.reduction else w_normal
        states = [self.pre0(s0), self.pre1(s1)]
        k = 0
        for _ in range(self.steps):
            node = None
            for j, h_in in enumerate(states):
                h = self.edges[k + j](h_in, weights[k + j], beta)
                node = h if node is None else node + h
            k += len(states)
            states.append(node)
        return torch.cat(states[2:], dim=1)


class DARTSSearchNetwork(DARTSMacro):
    """The DARTS supernet. Shapes: ``x [B, in_channels, H, W] -> logits [B, num_classes]``.

    Args:
        channels, layers, steps, num_classes, in_channels: the skeleton (DARTS search: 16, 8, 4, 10, 3).
        operations: candidate ops (default the eight DARTS ops).
        aux_skip: add DARTS-' auxiliary skip on every edge.
        generator: seeds the ``α`` initialisation.
    """

    def __init__(
        self,
        channels: int = 16,
        layers: int = 8,
        steps: int = 4,
        num_classes: int = 10,
        in_channels: int = 3,
        operations: Sequence[str] = DARTS_OPS,
        aux_skip: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        ops = check_operations("operations", list(operations), DARTS_OPS)

        def make_cell(c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool) -> DARTSSearchCell:
            return DARTSSearchCell(steps, c_pp, c_p, c, reduction, reduction_prev, ops, aux_skip)

        super().__init__(make_cell, steps, channels, layers, num_classes, in_channels)
        self.operations, self.steps = ops, steps
        self.aux_skip_weight = 0.0
        edges = sum(i + 2 for i in range(steps))
        self.alphas_normal = _init_alphas(edges, len(ops), generator)
        self.alphas_reduce = _init_alphas(edges, len(ops), generator)

    def forward(self, x: Tensor, *unused: Any) -> Tensor:
        return super().forward(x, F.softmax(self.alphas_normal, dim=-1), F.softmax(self.alphas_reduce, dim=-1),
                               self.aux_skip_weight)  # fmt: skip

    def _parse(self, weights: Tensor) -> tuple[tuple[str, int], ...]:
        none = self.operations.index("none") if "none" in self.operations else None
        w = weights.clone()
        if none is not None:
            w[:, none] = -float("inf")
        edges: list[tuple[str, int]] = []
        k = 0
        for i in range(self.steps):
            block = w[k : k + i + 2]
            strength = block.max(dim=-1).values
            top = sorted(range(i + 2), key=lambda j: -float(strength[j]))[:2]
            edges += [(self.operations[int(block[j].argmax())], j) for j in top]
            k += i + 2
        return tuple(edges)

    def genotype(self) -> DARTSGenotype:
        concat = tuple(range(2, self.steps + 2))
        normal = self._parse(F.softmax(self.alphas_normal.detach(), dim=-1))
        reduce = self._parse(F.softmax(self.alphas_reduce.detach(), dim=-1))
        return DARTSGenotype(normal, concat, reduce, concat)

    def skip_count(self) -> int:
        """``skip_connect`` edges of the derived normal cell (the collapse diagnostic)."""
        return self.genotype().count("skip_connect", "normal")
