"""IA3: learned rescaling of inner activations (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better
and Cheaper than In-Context Learning").

Notation: ``l_k, l_v in R^{d_k}``, ``l_ff in R^{d_ff}``, all initialised to 1 (the adapted model starts as the base
model). Attention becomes ``softmax(Q (l_k * K)^T / sqrt(d)) (l_v * V)`` and the feed-forward block
``(l_ff * gamma(W_1 x)) W_2``. On a wrapped layer ``y = W x + b`` this is either an *output* scaling
``y' = l * (W x + b)`` (keys, values) or an *input* scaling ``y' = W (l * x) + b`` (the feed-forward down-projection,
PEFT's ``feedforward_modules``); both merge exactly: ``W' = diag(l) W, b' = l * b`` or ``W' = W diag(l)``.

Default targets (``target_modules=None``): key and value projections (``attention.self.key``/``value``, ``k_proj``/
``v_proj``, ``k_lin``/``v_lin``; inside ``nn.MultiheadAttention`` modules their key/value projections) with output
scaling, and the feed-forward down-projections (BERT's ``<layer>.output.dense``, ``fc2``, ``down_proj``, ``lin2``,
``linear2``) with input scaling. A model without such names gets output scaling on every ``nn.Linear``/``nn.Conv2d``
except the output layer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from meta_learning.adapters import targets
from meta_learning.adapters.attention import check_mha, mha_forward
from meta_learning.adapters.base import Adapter
from meta_learning.adapters.config import AdapterConfig, normalise_names
from meta_learning.adapters.layer import AdapterLayer, factory_kwargs
from meta_learning.adapters.registry import register_adapter


@dataclass(frozen=True)
class IA3Config(AdapterConfig):
    """IA3 options.

    Args:
        feedforward_modules: which of the targets get *input* scaling (PEFT's field; names or a regex); ``None``
            means the default rule when ``target_modules`` is ``None`` as well, and no input scaling otherwise.
    """

    feedforward_modules: str | tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(
            self, "feedforward_modules", normalise_names("feedforward_modules", self.feedforward_modules)
        )


class _IA3Layer(AdapterLayer):
    adapter_attrs = ("ia3_l",)
    aux_attrs = ("feedforward",)

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.ia3_l = nn.ParameterDict()
        self.feedforward: dict[str, bool] = {}

    def add(self, name: str, config: Any, generator: torch.Generator) -> None:
        self.feedforward.setdefault(name, False)
        self.ia3_l[name] = nn.Parameter(
            torch.ones(self._shape(self.feedforward[name]), **factory_kwargs(self.base_layer))
        )

    def _shape(self, feedforward: bool) -> tuple[int, ...]:
        raise NotImplementedError


class IA3Linear(_IA3Layer):
    """IA3 on an ``nn.Linear``: ``l`` is ``[d_out, 1]`` (output scaling) or ``[1, d_in]`` (input scaling), like PEFT."""

    def _shape(self, feedforward: bool) -> tuple[int, ...]:
        base = self.base_layer
        return (1, base.in_features) if feedforward else (base.out_features, 1)

    def adapted_forward(self, name: str, x: Tensor) -> Tensor:
        scale = self.ia3_l[name].flatten()
        if self.feedforward[name]:
            return self.base_layer(x * scale)
        return self.base_layer(x) * scale

    def merge_tensors(self, name: str) -> dict[str, Tensor]:
        base, scale = self.base_layer, self.ia3_l[name]
        out = {"weight": base.weight * scale}  # [out, 1] scales rows, [1, in] scales columns
        if not self.feedforward[name] and base.bias is not None:
            out["bias"] = base.bias * scale.flatten()
        return out


class IA3Conv2d(_IA3Layer):
    """IA3 on an ``nn.Conv2d``: ``l`` is ``[1, C_out, 1, 1]`` or ``[1, C_in, 1, 1]`` (input scaling)."""

    def _shape(self, feedforward: bool) -> tuple[int, ...]:
        base = self.base_layer
        return (1, base.in_channels if feedforward else base.out_channels, 1, 1)

    def adapted_forward(self, name: str, x: Tensor) -> Tensor:
        scale = self.ia3_l[name]
        if self.feedforward[name]:
            return self.base_layer(x * scale)
        return self.base_layer(x) * scale

    def merge_tensors(self, name: str) -> dict[str, Tensor]:
        base, scale = self.base_layer, self.ia3_l[name]
        if self.feedforward[name]:
            if base.groups != 1:
                raise TypeError("IA3 input scaling of a grouped convolution cannot be merged")
            return {"weight": base.weight * scale}
        out = {"weight": base.weight * scale.view(-1, 1, 1, 1)}
        if base.bias is not None:
            out["bias"] = base.bias * scale.flatten()
        return out


class IA3MultiheadAttention(AdapterLayer):
    """IA3 inside ``nn.MultiheadAttention``: ``l_k``, ``l_v`` (``[E]``) scale the projected keys and values."""

    adapter_attrs = ("ia3_l_k", "ia3_l_v")

    def __init__(self, base_layer: nn.Module) -> None:
        check_mha(base_layer)
        super().__init__(base_layer)
        self.ia3_l_k = nn.ParameterDict()
        self.ia3_l_v = nn.ParameterDict()

    def add(self, name: str, config: Any, generator: torch.Generator) -> None:
        kw = factory_kwargs(self.base_layer)
        self.ia3_l_k[name] = nn.Parameter(torch.ones(self.base_layer.embed_dim, **kw))
        self.ia3_l_v[name] = nn.Parameter(torch.ones(self.base_layer.embed_dim, **kw))

    def adapted_forward(self, name: str, query: Tensor, key: Tensor, value: Tensor, *args: Any, **kwargs: Any) -> Any:
        return mha_forward(
            self.base_layer,
            query,
            key,
            value,
            *args,
            key_scale=self.ia3_l_k[name],
            value_scale=self.ia3_l_v[name],
            **kwargs,
        )

    def merge_tensors(self, name: str) -> dict[str, Tensor]:
        mha, lk, lv = self.base_layer, self.ia3_l_k[name], self.ia3_l_v[name]
        if mha._qkv_same_embed_dim:
            w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
            out = {"in_proj_weight": torch.cat([w_q, w_k * lk[:, None], w_v * lv[:, None]])}
        else:
            out = {"k_proj_weight": mha.k_proj_weight * lk[:, None], "v_proj_weight": mha.v_proj_weight * lv[:, None]}
        if mha.in_proj_bias is not None:
            b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
            out["in_proj_bias"] = torch.cat([b_q, b_k * lk, b_v * lv])
        return out


def _matching(paths: Sequence[str], spec: str | tuple[str, ...]) -> set[str]:
    if isinstance(spec, str):
        pattern = re.compile(spec)
        return {p for p in paths if pattern.fullmatch(p)}
    return {p for p in paths if targets.matches(p, spec)}


class IA3Adapter(Adapter):
    """IA3 on any model: learned scalings of keys, values and feed-forward activations (mergeable).

    Args:
        model: the base model.
        target_modules: modules to scale (default in the module docstring).
        feedforward_modules: which targets get input scaling (PEFT's meaning).
        modules_to_save: modules trained in full and saved with the adapter (e.g. a new head).
        seed: unused by IA3's deterministic initialisation; kept for a uniform config.

    Example:
        >>> ia3 = IA3Adapter(model).add_adapter()
        >>> ia3.merge()   # no inference overhead
    """

    config_class = IA3Config
    layer_classes = (
        (nn.Linear, IA3Linear),
        (nn.Conv2d, IA3Conv2d),
        (nn.MultiheadAttention, IA3MultiheadAttention),
    )
    mergeable = True

    def __init__(
        self,
        model: nn.Module,
        target_modules: str | Sequence[str] | None = None,
        feedforward_modules: str | Sequence[str] | None = None,
        *,
        modules_to_save: Sequence[str] = (),
        seed: int = 0,
    ) -> None:
        config = IA3Config(
            target_modules=normalise_names("target_modules", target_modules),
            feedforward_modules=normalise_names("feedforward_modules", feedforward_modules),
            modules_to_save=tuple(modules_to_save),
            seed=seed,
        )
        super().__init__(model, config)

    @classmethod
    def default_targets(cls, model: nn.Module, config: AdapterConfig) -> list[str]:
        found = targets.by_families(model, ("key", "value", "ffn_down"), (nn.Linear,))
        found += targets.of_type(model, (nn.MultiheadAttention,))
        return found or targets.all_except_output(model, (nn.Linear, nn.Conv2d))

    def feedforward_names(self, config: IA3Config, paths: Sequence[str]) -> set[str]:
        """The targets that get input scaling under ``config``."""
        if config.feedforward_modules is None:
            if config.target_modules is None:
                return {p for p in paths if targets.is_family(p, "ffn_down")}
            return set()
        chosen = _matching(paths, config.feedforward_modules)
        if not chosen:
            raise ValueError(
                f"feedforward_modules={config.feedforward_modules!r} matches none of the targets {list(paths)[:6]}; "
                "it must name a subset of target_modules"
            )
        return chosen

    def attach(
        self, name: str, config: AdapterConfig, layers: list[tuple[str, AdapterLayer]], gen: torch.Generator
    ) -> None:
        assert isinstance(config, IA3Config)  # add_adapter checked the type
        feedforward = self.feedforward_names(config, [p for p, _ in layers])
        for path, layer in layers:
            if isinstance(layer, _IA3Layer):
                layer.feedforward[name] = path in feedforward
            elif path in feedforward:
                raise ValueError(f"feedforward_modules names {path!r}, a MultiheadAttention; scale its input elsewhere")
            layer.add(name, config, gen)


register_adapter("ia3", IA3Config, IA3Adapter)
