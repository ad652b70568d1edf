"""LoRA: low-rank adaptation (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

Notation (per adapted module, shapes in torch's ``[out, in]`` convention):

- ``W``: the frozen base weight, ``[d_out, d_in]`` (``nn.Linear``), ``[d_out, d_in, k_h, k_w]`` (``nn.Conv2d``) or
  ``[n_emb, d_emb]`` (``nn.Embedding``).
- ``A``: ``[r, d_in]`` (Linear), an ``r``-channel convolution with ``W``'s kernel, stride, padding and dilation
  (Conv2d), ``[r, n_emb]`` (Embedding); initialised as ``nn.Linear``'s weight (Kaiming-uniform; N(0, 1) for the
  embedding).
- ``B``: ``[d_out, r]`` (a 1x1 convolution for Conv2d, ``[d_emb, r]`` for Embedding); **zero-initialised**, so the
  adapted model starts as the base model.
- ``s = lora_alpha / r`` (``lora_alpha / sqrt(r)`` with ``use_rslora``, Kalajdzievski 2023).

Forward: ``h = W x + s * B A dropout(x)`` (no dropout on embeddings, as in PEFT); merged weight
``W' = W + s * B A`` (for Conv2d ``W'[o, i] = W[o, i] + s * sum_r B[o, r] A[r, i]``; for Embedding
``W' = W + s * (B A)^T``). Tensor names (``lora_A.<name>.weight``, ``lora_B.<name>.weight``,
``lora_embedding_A.<name>``, ``lora_embedding_B.<name>``) and shapes are PEFT's, so PEFT's LoRA files load as they are
(:mod:`meta_learning.adapters.peft_io`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meta_learning._checks import check_positive_float, check_positive_int
from meta_learning.adapters import peft_io, targets
from meta_learning.adapters.base import Adapter
from meta_learning.adapters.config import AdapterConfig, normalise_names
from meta_learning.adapters.layer import AdapterLayer, factory_kwargs
from meta_learning.adapters.registry import register_adapter


@dataclass(frozen=True)
class LoRAConfig(AdapterConfig):
    """LoRA hyper-parameters (PEFT's names).

    Args:
        r: the rank.
        lora_alpha: the scale numerator: the update is multiplied by ``lora_alpha / r``.
        lora_dropout: dropout on the input of the low-rank branch (Linear and Conv2d).
        use_rslora: scale by ``lora_alpha / sqrt(r)`` (rank-stabilised LoRA).
    """

    r: int = 16
    lora_alpha: float = 16
    lora_dropout: float = 0.1
    use_rslora: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("r", self.r)
        check_positive_float("lora_alpha", self.lora_alpha)
        if isinstance(self.lora_dropout, bool) or not isinstance(self.lora_dropout, (int, float)):
            raise TypeError(f"lora_dropout must be a number, got {type(self.lora_dropout).__name__}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout={self.lora_dropout} but it must be in [0, 1)")

    @property
    def scaling(self) -> float:
        """``s``: ``lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with ``use_rslora``."""
        return self.lora_alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


def _weight(module: nn.Module) -> Tensor:
    return module.get_parameter("weight")


class _LoRALayer(AdapterLayer):
    aux_attrs = ("lora_dropout", "scaling")

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.lora_dropout = nn.ModuleDict()
        self.scaling: dict[str, float] = {}

    def delta_weight(self, name: str) -> Tensor:
        """``s * B A`` shaped like the base weight."""
        raise NotImplementedError

    def merge_tensors(self, name: str) -> dict[str, Tensor]:
        weight = self.base_layer.get_parameter("weight")
        return {"weight": weight + self.delta_weight(name).to(weight.dtype)}

    def _common(self, name: str, config: LoRAConfig) -> None:
        self.lora_dropout[name] = nn.Dropout(config.lora_dropout) if config.lora_dropout > 0 else nn.Identity()
        self.scaling[name] = config.scaling


class LoRALinear(_LoRALayer):
    """LoRA on an ``nn.Linear``."""

    adapter_attrs = ("lora_A", "lora_B")

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()

    def add(self, name: str, config: Any, generator: torch.Generator) -> None:
        base = self.base_layer
        kw = factory_kwargs(base)
        a = nn.Linear(base.in_features, config.r, bias=False, **kw)
        b = nn.Linear(config.r, base.out_features, bias=False, **kw)
        nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5), generator=generator)
        nn.init.zeros_(b.weight)
        self.lora_A[name], self.lora_B[name] = a, b
        self._common(name, config)

    def adapted_forward(self, name: str, x: Tensor) -> Tensor:
        out = self.base_layer(x)
        # the scale goes on the r-wide activation, and B's product is added to W x inside one GEMM (addmm): two
        # passes over the d_out-wide output fewer than (B h) * s + W x, ~10% of the layer's forward + backward
        h = self.lora_A[name](self.lora_dropout[name](x)) * self.scaling[name]
        b = cast(Tensor, self.lora_B[name].weight)  # not get_parameter: functional_call passes plain tensors
        return torch.addmm(out.reshape(-1, out.shape[-1]), h.reshape(-1, h.shape[-1]), b.t()).view(out.shape)

    def delta_weight(self, name: str) -> Tensor:
        return (_weight(self.lora_B[name]) @ _weight(self.lora_A[name])) * self.scaling[name]


class LoRAConv2d(_LoRALayer):
    """LoRA on an ``nn.Conv2d``: ``A`` is a convolution with the base kernel, ``B`` a 1x1 convolution."""

    adapter_attrs = ("lora_A", "lora_B")

    def __init__(self, base_layer: nn.Module) -> None:
        if getattr(base_layer, "groups", 1) != 1:
            raise ValueError(
                f"LoRA supports Conv2d with groups=1; this one has groups={base_layer.groups}. Exclude it from "
                "target_modules"
            )
        super().__init__(base_layer)
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()

    def add(self, name: str, config: Any, generator: torch.Generator) -> None:
        base = self.base_layer
        kw = factory_kwargs(base)
        a = nn.Conv2d(
            base.in_channels,
            config.r,
            base.kernel_size,
            stride=base.stride,
            padding=base.padding,
            dilation=base.dilation,
            padding_mode=base.padding_mode,
            bias=False,
            **kw,
        )
        b = nn.Conv2d(config.r, base.out_channels, 1, bias=False, **kw)
        nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5), generator=generator)
        nn.init.zeros_(b.weight)
        self.lora_A[name], self.lora_B[name] = a, b
        self._common(name, config)

    def adapted_forward(self, name: str, x: Tensor) -> Tensor:
        out = self.base_layer(x)
        return out + self.lora_B[name](self.lora_A[name](self.lora_dropout[name](x))) * self.scaling[name]

    def delta_weight(self, name: str) -> Tensor:
        b = _weight(self.lora_B[name])[:, :, 0, 0]
        return torch.einsum("or,rikl->oikl", b, _weight(self.lora_A[name])) * self.scaling[name]


class LoRAEmbedding(_LoRALayer):
    """LoRA on an ``nn.Embedding``: ``A`` is ``[r, n_emb]`` (looked up like the table), ``B`` is ``[d_emb, r]``."""

    adapter_attrs = ("lora_embedding_A", "lora_embedding_B")

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.lora_embedding_A = nn.ParameterDict()
        self.lora_embedding_B = nn.ParameterDict()

    def add(self, name: str, config: Any, generator: torch.Generator) -> None:
        base = self.base_layer
        kw = factory_kwargs(base)
        a = torch.empty(config.r, base.num_embeddings, **kw)
        nn.init.normal_(a, generator=generator)
        self.lora_embedding_A[name] = nn.Parameter(a)
        self.lora_embedding_B[name] = nn.Parameter(torch.zeros(base.embedding_dim, config.r, **kw))
        self._common(name, config)

    def adapted_forward(self, name: str, x: Tensor) -> Tensor:
        out = self.base_layer(x)
        # padding_idx keeps the padding row's gradient at zero, as for the base table
        after_a = F.embedding(x, self.lora_embedding_A[name].T, padding_idx=self.base_layer.padding_idx)
        return out + (after_a @ self.lora_embedding_B[name].T) * self.scaling[name]

    def delta_weight(self, name: str) -> Tensor:
        return (self.lora_embedding_B[name] @ self.lora_embedding_A[name]).T * self.scaling[name]


class LoRAAdapter(Adapter):
    """Low-rank adaptation of ``nn.Linear``, ``nn.Conv2d`` and ``nn.Embedding`` layers of any model.

    Default targets (``target_modules=None``): the attention query and value projections (Hu et al.'s choice;
    names ``attention.self.query``/``value`` of BERT-style models, ``q_proj``/``v_proj``, ``q_lin``/``v_lin``); for a
    model without such names, every ``nn.Linear`` and ``nn.Conv2d`` except the output layer.

    Args:
        model: the base model (changed in place by :meth:`add_adapter`).
        r: rank. lora_alpha: scale numerator (update scaled by ``lora_alpha / r``). lora_dropout: dropout on the
            low-rank branch's input.
        target_modules: see :mod:`meta_learning.adapters.targets`.
        use_rslora: scale by ``lora_alpha / sqrt(r)``.
        modules_to_save: modules trained in full and saved with the adapter (e.g. a new head).
        seed: seeds the initialisation of ``A``.

    Example:
        >>> lora_adapter = LoRAAdapter(model=your_model, r=16, lora_alpha=16, lora_dropout=0.1)
        >>> lora_adapter.add_adapter()
        >>> print(lora_adapter.efficiency())
        >>> lora_adapter.save_pretrained("out/peft-lora")    # PEFT's adapter_config.json + adapter_model.safetensors
    """

    config_class = LoRAConfig
    layer_classes = ((nn.Linear, LoRALinear), (nn.Conv2d, LoRAConv2d), (nn.Embedding, LoRAEmbedding))
    mergeable = True

    def __init__(
        self,
        model: nn.Module,
        r: int = 16,
        lora_alpha: float = 16,
        lora_dropout: float = 0.1,
        target_modules: str | Sequence[str] | None = None,
        *,
        use_rslora: bool = False,
        modules_to_save: Sequence[str] = (),
        seed: int = 0,
    ) -> None:
        config = LoRAConfig(
            target_modules=normalise_names("target_modules", target_modules),
            modules_to_save=tuple(modules_to_save),
            seed=seed,
            r=r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            use_rslora=use_rslora,
        )
        super().__init__(model, config)

    @classmethod
    def from_config(cls, model: nn.Module, config: Any, **kwargs: Any) -> LoRAAdapter:
        """From this adapter's :class:`LoRAConfig`, or from the ``lora`` section of an experiment config (a
        :class:`meta_learning.config.LoRAConfig` or the seed's dict ``{"r": 16, "alpha": 16, "dropout": 0.1}``,
        with ``kwargs`` for the other options such as ``target_modules``)."""
        if isinstance(config, AdapterConfig):
            if kwargs:
                raise TypeError(f"from_config with a {type(config).__name__} takes no extra options, got {kwargs}")
            return super().from_config(model, config)
        from meta_learning.config import LoRAConfig as LoRASection
        from meta_learning.config import as_section

        c = as_section(LoRASection, config, "lora")
        return cls(model, **{"r": c.r, "lora_alpha": c.alpha, "lora_dropout": c.dropout, **kwargs})

    @classmethod
    def default_targets(cls, model: nn.Module, config: AdapterConfig) -> list[str]:
        found = targets.by_families(model, ("query", "value"), (nn.Linear,))
        return found or targets.all_except_output(model, (nn.Linear, nn.Conv2d))

    def save_pretrained(self, path: str | os.PathLike[str], name: str | None = None, **config_fields: Any) -> Path:
        """Write adapter ``name`` in PEFT's format (``PeftModel.from_pretrained`` loads it); see :mod:`.peft_io`."""
        return peft_io.save_peft_lora(self, path, name, **config_fields)

    @classmethod
    def from_pretrained(cls, model: nn.Module, path: str | os.PathLike[str], name: str = "default") -> LoRAAdapter:
        """A LoRA adapter on ``model`` loaded from a PEFT LoRA folder (``save_pretrained`` of PEFT or of this class)."""
        config = peft_io.read_peft_lora_config(model, path)
        adapter = cls.from_config(model, config)
        peft_io.load_peft_lora(adapter, path, name)
        return adapter

    def load_pretrained(self, path: str | os.PathLike[str], name: str = "default") -> LoRAAdapter:
        """Add the PEFT LoRA adapter in folder ``path`` to this object under ``name``."""
        peft_io.load_peft_lora(self, path, name)
        return self


register_adapter("lora", LoRAConfig, LoRAAdapter)
