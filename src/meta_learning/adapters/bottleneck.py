"""Bottleneck adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP").

Notation: ``h in R^d`` the output of an adapted module (the feature dimension: last for Linear/attention, channels for
Conv2d), ``m = d // reduction_factor`` the bottleneck size. The adapter is
``h' = h + W_up f(W_down h + b_down) + b_up`` with ``W_down: [m, d]``, ``W_up: [d, m]``, ``f`` the non-linearity;
``residual=False`` drops the ``h +`` (the adapter output replaces ``h``). ``W_down ~ N(0, init_std^2)``, ``W_up``
and the biases are zero, so with ``residual=True`` the adapted model starts as the base model. The adapter is not
linear in ``h``, so it cannot be merged into the base weights.

Default targets (``target_modules=None``): Houlsby's two places per transformer layer, after the attention output
projection (``attention.output.dense``, ``o_proj``, ``out_lin``; the whole ``nn.MultiheadAttention`` module) and
after the feed-forward down-projection (BERT's ``<layer>.output.dense``, ``fc2``, ``down_proj``, ``lin2``,
``linear2``). A model without such names gets an adapter after every ``nn.Linear``/``nn.Conv2d`` except the output
layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from meta_learning._checks import check_choice, check_positive_float
from meta_learning.adapters import targets
from meta_learning.adapters.base import Adapter
from meta_learning.adapters.config import AdapterConfig, normalise_names
from meta_learning.adapters.layer import ACTIVATIONS, AdapterLayer, factory_kwargs
from meta_learning.adapters.registry import register_adapter


@dataclass(frozen=True)
class BottleneckConfig(AdapterConfig):
    """Bottleneck adapter options.

    Args:
        reduction_factor: ``d / m``; the bottleneck has ``d // reduction_factor`` units.
        non_linearity: one of ``relu``, ``gelu``, ``tanh``, ``swish``/``silu``, ``identity``.
        residual: add the adapter's output to ``h`` (Houlsby) rather than replace ``h`` with it.
        init_std: standard deviation of the down-projection's initial weights.
    """

    reduction_factor: float = 16
    non_linearity: str = "swish"
    residual: bool = True
    init_std: float = 1e-2

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_float("reduction_factor", self.reduction_factor)
        check_choice("non_linearity", self.non_linearity, ACTIVATIONS)
        check_positive_float("init_std", self.init_std)

    def bottleneck(self, d: int, where: str) -> int:
        """``m`` for a module with ``d`` features (at least 1)."""
        m = int(d // self.reduction_factor)
        if m < 1:
            raise ValueError(
                f"reduction_factor={self.reduction_factor} leaves no bottleneck unit for {where!r} ({d} features); "
                f"use reduction_factor <= {d}"
            )
        return m


def features(module: nn.Module) -> int:
    """The size ``d`` of the feature dimension of ``module``'s output."""
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    if isinstance(module, nn.MultiheadAttention):
        return module.embed_dim
    raise TypeError(f"cannot tell the output size of a {type(module).__name__}")


class BottleneckLayer(AdapterLayer):
    """A module followed by a bottleneck adapter; the down/up projections are any ``[.., d] -> [.., m]`` modules."""

    adapter_attrs = ("adapter_down", "adapter_up")
    aux_attrs = ("adapter_act", "residual")

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.adapter_down = nn.ModuleDict()
        self.adapter_up = nn.ModuleDict()
        self.adapter_act = nn.ModuleDict()
        self.residual: dict[str, bool] = {}
        self.features = features(base_layer)

    def install(self, name: str, down: nn.Module, up: nn.Module, config: BottleneckConfig) -> None:
        """Put adapter ``name`` (its projections built by the adapter type) on this module."""
        self.adapter_down[name], self.adapter_up[name] = down, up
        self.adapter_act[name] = ACTIVATIONS[config.non_linearity]()
        self.residual[name] = config.residual

    def add(self, name: str, config: Any, generator: torch.Generator) -> None:
        kw = factory_kwargs(self.base_layer)
        m = config.bottleneck(self.features, type(self.base_layer).__name__)
        down, up = nn.Linear(self.features, m, **kw), nn.Linear(m, self.features, **kw)
        with torch.no_grad():
            nn.init.normal_(down.weight, std=config.init_std, generator=generator)
            for t in (down.bias, up.weight, up.bias):
                t.zero_()
        self.install(name, down, up, config)

    def adapted_forward(self, name: str, *args: Any, **kwargs: Any) -> Any:
        out = self.base_layer(*args, **kwargs)
        if isinstance(out, tuple):  # attention modules return (output, weights)
            return (self._adapt(name, out[0]), *out[1:])
        return self._adapt(name, out)

    def _adapt(self, name: str, h: Tensor) -> Tensor:
        conv = isinstance(self.base_layer, nn.Conv2d)
        z = h.movedim(1, -1) if conv else h
        r = self.adapter_up[name](self.adapter_act[name](self.adapter_down[name](z)))
        r = r.movedim(-1, 1) if conv else r
        return h + r if self.residual[name] else r


BOTTLENECK_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d, nn.MultiheadAttention)


def houlsby_targets(model: nn.Module) -> list[str]:
    """Houlsby's placement: after the attention output and after the feed-forward block (see the module docstring)."""
    found = targets.by_families(model, ("attention_output", "ffn_down"), (nn.Linear,))
    found += targets.of_type(model, (nn.MultiheadAttention,))
    order = [n for n, _ in targets.candidates(model)]
    found.sort(key=order.index)
    return found or targets.all_except_output(model, (nn.Linear, nn.Conv2d))


class LinearAdapter(Adapter):
    """Houlsby-style bottleneck adapters after chosen modules of any model (attention and FFN outputs by default).

    Args:
        model: the base model.
        reduction_factor: ``d / m`` (bottleneck size ``m = d // reduction_factor``).
        non_linearity: ``relu``, ``gelu``, ``tanh``, ``swish``/``silu`` or ``identity``.
        residual: keep Houlsby's skip connection around the adapter.
        target_modules: modules after which an adapter is inserted (``nn.Linear``, ``nn.Conv2d``,
            ``nn.MultiheadAttention``).
        init_std: std of the down-projection's initial weights (the up-projection starts at zero).
        modules_to_save: modules trained in full and saved with the adapter (e.g. a new head).
        seed: seeds the initialisation.

    Example:
        >>> adapter = LinearAdapter(model, reduction_factor=16, modules_to_save=["classifier"]).add_adapter()
    """

    config_class = BottleneckConfig
    layer_classes = tuple((kind, BottleneckLayer) for kind in BOTTLENECK_TYPES)

    def __init__(
        self,
        model: nn.Module,
        reduction_factor: float = 16,
        non_linearity: str = "swish",
        residual: bool = True,
        target_modules: str | Sequence[str] | None = None,
        *,
        init_std: float = 1e-2,
        modules_to_save: Sequence[str] = (),
        seed: int = 0,
    ) -> None:
        config = BottleneckConfig(
            target_modules=normalise_names("target_modules", target_modules),
            modules_to_save=tuple(modules_to_save),
            seed=seed,
            reduction_factor=reduction_factor,
            non_linearity=non_linearity,
            residual=bool(residual),
            init_std=init_std,
        )
        super().__init__(model, config)

    @classmethod
    def default_targets(cls, model: nn.Module, config: AdapterConfig) -> list[str]:
        return houlsby_targets(model)


register_adapter("bottleneck", BottleneckConfig, LinearAdapter)
