"""Prefix tuning (Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation").

Notation: ``L`` adapted attention layers (in model order), ``P`` = ``prefix_length``, ``E`` = ``hidden_size`` (the
attention's embedding size, all heads), ``H'`` = ``projection_hidden_size``. Each layer ``l`` attends, besides the
sequence, to ``P`` learned key and value vectors ``(K_l, V_l)``, both ``[P, E]``, prepended *after* the key/value
projections (every query may attend to them; padding masks do not apply to them):

    attention_l(Q, K, V) = softmax(Q [K_l; K]^T / sqrt(d) + [0; M]) [V_l; V]     (per head)

Reparameterisation (Li & Liang, section 4.3; PEFT's ``prefix_projection=True``): the prefixes are not trained
directly but produced by an MLP from a smaller matrix, ``[K_1, V_1, ..., K_L, V_L] = W_2 tanh(W_1 P' + b_1) + b_2``
with ``P': [P, E]``, ``W_1: [H', E]``, ``W_2: [2 L E, H']``; the MLP is shared by all layers (one tensor set per
adapter). ``projection=False`` trains ``[P, 2 L E]`` prefixes directly. Prefixes cannot be merged into weights.

Supported attention modules: ``torch.nn.MultiheadAttention`` (so every block built on it, e.g.
``nn.TransformerEncoderLayer``) and Hugging Face BERT-style self-attention (BERT, RoBERTa, MiniLM, ...: modules with
``query``/``key``/``value`` linear layers, ``num_attention_heads`` and ``attention_head_size``). Default targets: all
such modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meta_learning._checks import check_positive_int
from meta_learning.adapters import targets
from meta_learning.adapters.attention import bert_self_attention, check_mha, is_bert_self_attention, mha_forward
from meta_learning.adapters.base import Adapter
from meta_learning.adapters.config import AdapterConfig, normalise_names
from meta_learning.adapters.layer import AdapterLayer, factory_kwargs, linear_parameters
from meta_learning.adapters.registry import register_adapter


@dataclass(frozen=True)
class PrefixTuningConfig(AdapterConfig):
    """Prefix-tuning options.

    Args:
        prefix_length: ``P``, the number of virtual key/value positions per layer.
        hidden_size: ``E``; inferred from the attention modules when ``None`` (checked against them otherwise).
        projection: use Li & Liang's reparameterisation MLP.
        projection_hidden_size: ``H'``, the MLP's hidden width.
    """

    prefix_length: int = 5
    hidden_size: int | None = None
    projection: bool = True
    projection_hidden_size: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("prefix_length", self.prefix_length)
        if self.hidden_size is not None:
            check_positive_int("hidden_size", self.hidden_size)
        check_positive_int("projection_hidden_size", self.projection_hidden_size)


def embed_size(module: Any) -> int:
    """``E`` of a supported attention module."""
    if isinstance(module, nn.MultiheadAttention):
        return int(module.embed_dim)
    return int(module.num_attention_heads * module.attention_head_size)


class PrefixEncoder(nn.Module):
    """All layers' prefixes of one adapter: ``layer_prefix(l) -> (K_l, V_l)``, each ``[P, E]``.

    Every adapted layer holds its own ``PrefixEncoder`` (:meth:`tied`) whose parameters are the *same*
    ``nn.Parameter`` objects: one tensor set per adapter, tied like shared embeddings, so
    ``torch.func.functional_call`` (and so MAML) swaps them consistently in every layer.
    """

    def __init__(
        self, num_layers: int, config: PrefixTuningConfig, hidden: int, gen: torch.Generator, **kw: Any
    ) -> None:
        super().__init__()
        self.hidden, self.projection = hidden, config.projection
        p, mid = config.prefix_length, config.projection_hidden_size
        with torch.no_grad():
            if config.projection:
                self.embedding = nn.Parameter(nn.init.normal_(torch.empty(p, hidden, **kw), generator=gen))
                self.mlp_in_weight, self.mlp_in_bias = linear_parameters(hidden, mid, gen, **kw)
                self.mlp_out_weight, self.mlp_out_bias = linear_parameters(mid, num_layers * 2 * hidden, gen, **kw)
            else:
                self.prefix = nn.Parameter(
                    nn.init.normal_(torch.empty(p, num_layers * 2 * hidden, **kw), generator=gen)
                )

    def tied(self) -> PrefixEncoder:
        """Another encoder module holding the same parameter objects."""
        twin = PrefixEncoder.__new__(PrefixEncoder)
        nn.Module.__init__(twin)
        twin.hidden, twin.projection = self.hidden, self.projection
        for name, param in self.named_parameters(recurse=False):
            twin.register_parameter(name, param)
        return twin

    def layer_prefix(self, layer: int) -> tuple[Tensor, Tensor]:
        e = self.hidden
        rows = slice(layer * 2 * e, (layer + 1) * 2 * e)
        if self.projection:
            # only layer l's rows of W_2: the same numbers as slicing the full MLP output, L times cheaper
            mid = torch.tanh(F.linear(self.embedding, self.mlp_in_weight, self.mlp_in_bias))
            out = F.linear(mid, self.mlp_out_weight[rows], self.mlp_out_bias[rows])
        else:
            out = self.prefix[:, rows]
        return out[:, :e], out[:, e:]


class _PrefixLayer(AdapterLayer):
    adapter_attrs = ("prefix_encoder",)
    aux_attrs = ("layer_index",)

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.prefix_encoder = nn.ModuleDict()
        self.layer_index: dict[str, int] = {}

    def install(self, name: str, encoder: PrefixEncoder, index: int) -> None:
        self.prefix_encoder[name] = encoder
        self.layer_index[name] = index

    def add(self, name: str, config: Any, generator: torch.Generator) -> None:
        raise TypeError("prefix layers share one encoder per adapter; add them with PrefixTuningAdapter.add_prefix()")

    def prefix(self, name: str) -> tuple[Tensor, Tensor]:
        encoder = cast(PrefixEncoder, self.prefix_encoder[name])
        return encoder.layer_prefix(self.layer_index[name])


class PrefixMultiheadAttention(_PrefixLayer):
    """Prefix tuning inside ``nn.MultiheadAttention`` (same call signature and outputs)."""

    def __init__(self, base_layer: nn.Module) -> None:
        check_mha(base_layer)
        super().__init__(base_layer)

    def adapted_forward(self, name: str, query: Tensor, key: Tensor, value: Tensor, *args: Any, **kwargs: Any) -> Any:
        return mha_forward(self.base_layer, query, key, value, *args, prefix=self.prefix(name), **kwargs)


class PrefixBertSelfAttention(_PrefixLayer):
    """Prefix tuning of a Hugging Face BERT-style self-attention module (returns ``(output, None)``)."""

    def adapted_forward(
        self, name: str, hidden_states: Tensor, attention_mask: Tensor | None = None, **kwargs: Any
    ) -> Any:
        return bert_self_attention(self.base_layer, hidden_states, attention_mask, prefix=self.prefix(name), **kwargs)


class PrefixTuningAdapter(Adapter):
    """Prefix tuning of every attention layer of a model (``nn.MultiheadAttention`` or BERT-style self-attention).

    Args:
        model: the base model.
        prefix_length: ``P`` virtual tokens per layer.
        hidden_size: the attention embedding size ``E`` (checked against the model; inferred when ``None``).
        projection: Li & Liang's reparameterisation MLP (``projection_hidden_size`` wide).
        target_modules: attention modules to adapt (default: all).
        modules_to_save: modules trained in full and saved with the adapter (e.g. a new head).
        seed: seeds the initialisation.

    Example:
        >>> prefix_tuning = PrefixTuningAdapter(model=your_language_model, prefix_length=5, hidden_size=384)
        >>> prefix_tuning.add_prefix()
    """

    config_class = PrefixTuningConfig
    layer_classes = ((nn.MultiheadAttention, PrefixMultiheadAttention),)

    def __init__(
        self,
        model: nn.Module,
        prefix_length: int = 5,
        hidden_size: int | None = None,
        projection: bool = True,
        projection_hidden_size: int = 512,
        target_modules: str | Sequence[str] | None = None,
        *,
        modules_to_save: Sequence[str] = (),
        seed: int = 0,
    ) -> None:
        config = PrefixTuningConfig(
            target_modules=normalise_names("target_modules", target_modules),
            modules_to_save=tuple(modules_to_save),
            seed=seed,
            prefix_length=prefix_length,
            hidden_size=hidden_size,
            projection=bool(projection),
            projection_hidden_size=projection_hidden_size,
        )
        super().__init__(model, config)

    @classmethod
    def layer_class_for(cls, module: nn.Module) -> type[AdapterLayer] | None:
        if is_bert_self_attention(module):
            return PrefixBertSelfAttention
        return super().layer_class_for(module)

    @classmethod
    def accepted(cls) -> str:
        return "MultiheadAttention and BERT-style self-attention (query/key/value, num_attention_heads)"

    @classmethod
    def default_targets(cls, model: nn.Module, config: AdapterConfig) -> list[str]:
        found = [n for n, m in targets.candidates(model) if cls.layer_class_for(m) is not None]
        if not found:
            raise ValueError(
                "the model has no nn.MultiheadAttention or BERT-style self-attention module; give target_modules"
            )
        return found

    def add_prefix(self, name: str = "default", config: PrefixTuningConfig | None = None) -> PrefixTuningAdapter:
        """Add prefix adapter ``name`` (the seed's name for :meth:`add_adapter`)."""
        self.add_adapter(name, config)
        return self

    def collapse(self, name: str | None = None) -> None:
        """Replace adapter ``name``'s reparameterisation MLP by the prefixes it produces now (Li & Liang keep only
        these after training): the same outputs from ``P x 2 L E`` stored parameters."""
        name = self._existing(name)
        config = self.adapter_config(name)
        if not isinstance(config, PrefixTuningConfig) or not config.projection:
            return
        layers = [layer for _, layer in self.layers() if isinstance(layer, _PrefixLayer) and name in layer.names()]
        layers.sort(key=lambda layer: layer.layer_index[name])
        with torch.no_grad():
            prefix = torch.cat([torch.cat(layer.prefix(name), dim=1) for layer in layers], dim=1)  # [P, 2 L E]
        direct = config.replace(projection=False)
        hidden = prefix.shape[1] // (2 * len(layers))
        gen = torch.Generator().manual_seed(direct.seed)
        encoder = PrefixEncoder(len(layers), direct, hidden, gen, device=prefix.device, dtype=prefix.dtype)
        with torch.no_grad():
            encoder.prefix.copy_(prefix)
        for index, layer in enumerate(layers):
            layer.install(name, encoder if index == 0 else encoder.tied(), index)
        self._configs[name] = direct
        self._sync()

    def attach(
        self, name: str, config: AdapterConfig, layers: list[tuple[str, AdapterLayer]], gen: torch.Generator
    ) -> None:
        assert isinstance(config, PrefixTuningConfig)
        sizes = {path: embed_size(layer.base_layer) for path, layer in layers}
        distinct = sorted(set(sizes.values()))
        if len(distinct) > 1:
            raise ValueError(f"the adapted attention modules have different sizes {sizes}; adapt one size at a time")
        if config.hidden_size is not None and config.hidden_size != distinct[0]:
            raise ValueError(
                f"hidden_size={config.hidden_size} but the attention modules have size {distinct[0]}; "
                f"use hidden_size={distinct[0]} or None"
            )
        encoder = PrefixEncoder(len(layers), config, distinct[0], gen, **factory_kwargs(self.model))
        for index, (_, layer) in enumerate(layers):
            assert isinstance(layer, _PrefixLayer)
            layer.install(name, encoder if index == 0 else encoder.tied(), index)


register_adapter("prefix", PrefixTuningConfig, PrefixTuningAdapter)
