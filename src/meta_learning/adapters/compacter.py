"""Compacter: bottleneck adapters with parameterised-hypercomplex-multiplication (PHM) projections
(Karimi Mahabadi, Henderson & Ruder 2021, "Compacter: Efficient Low-Rank Hypercomplex Adapter Layers").

Notation: ``n`` the PHM dimension, ``k`` the rank of the fast weights (1 in the paper). A PHM projection
``[d_in] -> [d_out]`` has the weight

    W = sum_{i=1..n} A_i (x) B_i,     A_i: [n, n] (shared slow weights),     B_i = s_i t_i: [d_out/n, d_in/n]

with ``(x)`` the Kronecker product, ``s_i: [d_out/n, k]`` and ``t_i: [k, d_in/n]`` (rank-k fast weights, one pair
per projection), plus a bias. The slow weights ``A`` (``[n, n, n]``) are one tensor per adapter, shared by every
down- and up-projection of every layer. The bottleneck, placement, non-linearity and residual are those of
:mod:`meta_learning.adapters.bottleneck`; ``n`` must divide ``d`` and ``m``. Compacter++ (adapters after the
feed-forward block only) is ``target_modules`` naming the FFN down-projections.

Initialisation: ``A ~ N(0, 1/n)``, ``s ~ N(0, 1)``, ``t ~ N(0, init_std^2 / k)`` for the down-projection (so its
weights have standard deviation ``init_std``, like the bottleneck adapter's) and ``t = 0`` for the up-projection:
the adapted model starts as the base model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meta_learning._checks import check_positive_int
from meta_learning.adapters.base import Adapter
from meta_learning.adapters.bottleneck import BOTTLENECK_TYPES, BottleneckConfig, BottleneckLayer, houlsby_targets
from meta_learning.adapters.config import AdapterConfig, normalise_names
from meta_learning.adapters.layer import AdapterLayer, factory_kwargs
from meta_learning.adapters.registry import register_adapter


@dataclass(frozen=True)
class CompacterConfig(BottleneckConfig):
    """Compacter options: those of :class:`BottleneckConfig` plus ``phm_dim`` (``n``) and ``phm_rank`` (``k``)."""

    non_linearity: str = "gelu"
    phm_dim: int = 4
    phm_rank: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("phm_dim", self.phm_dim)
        check_positive_int("phm_rank", self.phm_rank)


def phm_rule(n: int, generator: torch.Generator, **kw: Any) -> nn.Parameter:
    """The shared slow weights ``A``: ``[n, n, n]``, ``N(0, 1/n)``."""
    rule = torch.empty(n, n, n, **kw)
    nn.init.normal_(rule, std=1.0 / math.sqrt(n), generator=generator)
    return nn.Parameter(rule)


class PHMLinear(nn.Module):
    """``y = x W^T + b`` with ``W = sum_i A_i (x) (s_i t_i)``.

    ``rule`` (``A``) is one ``nn.Parameter`` registered in every PHM layer of an adapter: tied like shared embeddings,
    so ``torch.func.functional_call`` (and so MAML) swaps it consistently everywhere.
    """

    def __init__(self, in_features: int, out_features: int, rule: nn.Parameter, rank: int, **kw: Any) -> None:
        super().__init__()
        n = rule.shape[0]
        for what, size in (("input", in_features), ("output", out_features)):
            if size % n:
                raise ValueError(f"phm_dim={n} must divide the {what} size {size}; choose phm_dim among its divisors")
        self.rule = rule
        self.in_features, self.out_features = in_features, out_features
        self.s = nn.Parameter(torch.empty(n, out_features // n, rank, **kw))
        self.t = nn.Parameter(torch.empty(n, rank, in_features // n, **kw))
        self.bias = nn.Parameter(torch.zeros(out_features, **kw))

    def weight(self) -> Tensor:
        """``W: [d_out, d_in]``."""
        b = self.s @ self.t  # [n, d_out/n, d_in/n]
        n, p, q = b.shape
        return torch.einsum("iab,ipq->apbq", self.rule, b).reshape(n * p, n * q)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight(), self.bias)


class CompacterAdapter(Adapter):
    """Compacter adapters on any model: Houlsby placement with PHM down/up projections and shared slow weights.

    Args:
        model: the base model.
        reduction_factor, non_linearity, residual, target_modules, init_std: as for :class:`LinearAdapter`.
        phm_dim: ``n``, the number of Kronecker summands (must divide the feature and bottleneck sizes).
        phm_rank: ``k``, the rank of each fast weight ``B_i``.
        modules_to_save: modules trained in full and saved with the adapter (e.g. a new head).
        seed: seeds the initialisation.

    Example:
        >>> compacter = CompacterAdapter(model, reduction_factor=16, phm_dim=4).add_adapter()
    """

    config_class = CompacterConfig
    layer_classes = tuple((kind, BottleneckLayer) for kind in BOTTLENECK_TYPES)

    def __init__(
        self,
        model: nn.Module,
        reduction_factor: float = 16,
        phm_dim: int = 4,
        phm_rank: int = 1,
        non_linearity: str = "gelu",
        residual: bool = True,
        target_modules: str | Sequence[str] | None = None,
        *,
        init_std: float = 1e-2,
        modules_to_save: Sequence[str] = (),
        seed: int = 0,
    ) -> None:
        config = CompacterConfig(
            target_modules=normalise_names("target_modules", target_modules),
            modules_to_save=tuple(modules_to_save),
            seed=seed,
            reduction_factor=reduction_factor,
            non_linearity=non_linearity,
            residual=bool(residual),
            init_std=init_std,
            phm_dim=phm_dim,
            phm_rank=phm_rank,
        )
        super().__init__(model, config)

    @classmethod
    def default_targets(cls, model: nn.Module, config: AdapterConfig) -> list[str]:
        return houlsby_targets(model)

    def attach(
        self, name: str, config: AdapterConfig, layers: list[tuple[str, AdapterLayer]], gen: torch.Generator
    ) -> None:
        assert isinstance(config, CompacterConfig)
        kw = factory_kwargs(self.model)
        rule = phm_rule(config.phm_dim, gen, **kw)
        k = config.phm_rank
        for path, layer in layers:
            assert isinstance(layer, BottleneckLayer)
            d = layer.features
            m = config.bottleneck(d, path)
            down = PHMLinear(d, m, rule, k, **kw)
            up = PHMLinear(m, d, rule, k, **kw)
            with torch.no_grad():
                for proj in (down, up):
                    nn.init.normal_(proj.s, generator=gen)
                nn.init.normal_(down.t, std=config.init_std / math.sqrt(k), generator=gen)
                up.t.zero_()
            layer.install(name, down, up, config)


register_adapter("compacter", CompacterConfig, CompacterAdapter)
