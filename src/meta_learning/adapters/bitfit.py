"""BitFit: fine-tune only the bias terms (Ben Zaken, Ravfogel & Goldberg 2022, "BitFit: Simple Parameter-efficient
Fine-tuning for Transformer-based Masked Language-models").

Each bias ``b`` of an adapted module is trained as ``b + delta`` with ``delta`` zero-initialised and the base ``b``
frozen. Under gradient descent this is the same optimisation as training ``b`` itself (same gradient, same
trajectory), and it keeps the protocol exact: disabling drops ``delta``, merging adds it to ``b``, removing leaves the
original ``b`` untouched.

Targets (``target_modules=None``): every module with a bias among ``nn.Linear``, ``nn.Conv1d/2d/3d``, ``nn.LayerNorm``,
batch/group/instance norms and ``nn.MultiheadAttention`` (its ``in_proj_bias`` and ``out_proj.bias``): all of BERT's
bias terms, as in the paper. ``subset=True`` takes the paper's reduced set (section 4.2): the query biases and the
feed-forward up-projection ("intermediate") biases, ``b_q`` and ``b_m2``, found by name (``attention.self.query``,
``q_proj``, ``q_lin``; ``intermediate.dense``, ``fc1``, ``up_proj``, ``lin1``, ``linear1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from meta_learning.adapters import targets
from meta_learning.adapters.attention import check_mha, mha_forward
from meta_learning.adapters.base import Adapter
from meta_learning.adapters.config import AdapterConfig, normalise_names
from meta_learning.adapters.layer import AdapterLayer, along, channel_dim
from meta_learning.adapters.registry import register_adapter

BIASED = (
    nn.Linear,
    nn.modules.conv._ConvNd,
    nn.LayerNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
)


@dataclass(frozen=True)
class BitFitConfig(AdapterConfig):
    """BitFit options.

    Args:
        subset: train only the query and feed-forward up-projection biases (the paper's reduced BitFit).
    """

    subset: bool = False


class BitFitLayer(AdapterLayer):
    """A learned bias offset on a module whose output is ``f(x) + b`` (b along the feature/channel dimension)."""

    adapter_attrs = ("bias_delta",)

    def __init__(self, base_layer: nn.Module) -> None:
        if getattr(base_layer, "bias", None) is None:
            raise ValueError(f"{type(base_layer).__name__} has no bias to fine-tune")
        super().__init__(base_layer)
        self.bias_delta = nn.ParameterDict()

    def add(self, name: str, config: Any, generator: torch.Generator) -> None:
        self.bias_delta[name] = nn.Parameter(torch.zeros_like(self.base_layer.bias))

    def adapted_forward(self, name: str, *args: Any, **kwargs: Any) -> Tensor:
        out = self.base_layer(*args, **kwargs)
        dim = channel_dim(self.base_layer)
        return out + along(out, self.bias_delta[name], dim)

    def merge_tensors(self, name: str) -> dict[str, Tensor]:
        return {"bias": self.base_layer.bias + self.bias_delta[name]}


class BitFitMultiheadAttention(AdapterLayer):
    """Learned offsets of ``nn.MultiheadAttention``'s ``in_proj_bias`` (``[3E]``) and ``out_proj.bias`` (``[E]``)."""

    adapter_attrs = ("in_proj_bias_delta", "out_proj_bias_delta")

    def __init__(self, base_layer: nn.Module) -> None:
        check_mha(base_layer)
        if base_layer.in_proj_bias is None:
            raise ValueError("MultiheadAttention(bias=False) has no bias to fine-tune")
        super().__init__(base_layer)
        self.in_proj_bias_delta = nn.ParameterDict()
        self.out_proj_bias_delta = nn.ParameterDict()

    def add(self, name: str, config: Any, generator: torch.Generator) -> None:
        self.in_proj_bias_delta[name] = nn.Parameter(torch.zeros_like(self.base_layer.in_proj_bias))
        self.out_proj_bias_delta[name] = nn.Parameter(torch.zeros_like(self.base_layer.out_proj.bias))

    def adapted_forward(self, name: str, query: Tensor, key: Tensor, value: Tensor, *args: Any, **kwargs: Any) -> Any:
        mha = self.base_layer
        return mha_forward(
            mha,
            query,
            key,
            value,
            *args,
            in_proj_bias=mha.in_proj_bias + self.in_proj_bias_delta[name],
            out_proj_bias=mha.out_proj.bias + self.out_proj_bias_delta[name],
            **kwargs,
        )

    def merge_tensors(self, name: str) -> dict[str, Tensor]:
        mha = self.base_layer
        return {
            "in_proj_bias": mha.in_proj_bias + self.in_proj_bias_delta[name],
            "out_proj.bias": mha.out_proj.bias + self.out_proj_bias_delta[name],
        }


class BitFitAdapter(Adapter):
    """Bias-only fine-tuning of any model (mergeable).

    Args:
        model: the base model.
        target_modules: modules whose bias is trained (default: every module with a bias; see the module docstring).
        subset: the paper's reduced set (query and intermediate biases) instead of all biases.
        modules_to_save: modules trained in full and saved with the adapter (e.g. a new head).
        seed: unused (zero initialisation); kept for a uniform config.

    Example:
        >>> bitfit = BitFitAdapter(model, modules_to_save=["classifier"]).add_adapter()
    """

    config_class = BitFitConfig
    layer_classes = ((nn.MultiheadAttention, BitFitMultiheadAttention), *((kind, BitFitLayer) for kind in BIASED))
    mergeable = True

    def __init__(
        self,
        model: nn.Module,
        target_modules: str | Sequence[str] | None = None,
        subset: bool = False,
        *,
        modules_to_save: Sequence[str] = (),
        seed: int = 0,
    ) -> None:
        config = BitFitConfig(
            target_modules=normalise_names("target_modules", target_modules),
            subset=bool(subset),
            modules_to_save=tuple(modules_to_save),
            seed=seed,
        )
        super().__init__(model, config)

    @classmethod
    def default_targets(cls, model: nn.Module, config: AdapterConfig) -> list[str]:
        assert isinstance(config, BitFitConfig)
        if config.subset:
            found = targets.by_families(model, ("query", "ffn_up"), (nn.Linear,))
            found = [n for n in found if model.get_submodule(n).bias is not None]
            if not found:
                raise ValueError(
                    "subset=True needs query and intermediate projections named like BERT's or LLaMA's; this model has "
                    "none, give target_modules instead"
                )
            return found
        names = []
        for name, module in targets.candidates(model):
            if isinstance(module, nn.MultiheadAttention):
                if module.in_proj_bias is not None:
                    names.append(name)
            elif isinstance(module, BIASED) and isinstance(getattr(module, "bias", None), Tensor):
                names.append(name)
        return names


register_adapter("bitfit", BitFitConfig, BitFitAdapter)
