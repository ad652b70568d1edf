"""MultiModalAdapter: encoders for text, image and audio, projected to one width and fused into one embedding.

Notation: ``B`` samples, ``E = embed_dim``; for modality ``m`` its encoder maps the ``n_m`` samples that have it
to ``[n_m, D_m]`` (a vector) or ``[n_m, T_m, D_m]`` (a sequence; optionally with a padding mask, see
:meth:`MultiModalAdapter.forward`); a linear projection + LayerNorm takes ``D_m`` to ``E``; a fusion
(:mod:`meta_learning.multimodal.fusion`) maps the projected tokens and presence masks to ``[B, E]``.

Encoders run only on the samples that have their modality: a missing modality is never replaced by zeros that the
encoder would read as data.

Episodes hold one tensor per example, so for few-shot learners the modalities are packed into one row by a
:class:`ModalityLayout`: ``[present_1 .. present_M, flat(x_1), ..., flat(x_M)]``; the adapter unpacks it when
called with a tensor, which makes ``PrototypicalNetwork(encoder=adapter)`` work on multi-modal episodes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from meta_learning._checks import check_choice, check_positive_int
from meta_learning.multimodal.fusion import FUSION_METHODS, build_fusion

MODALITIES = ("text", "image", "audio")


@dataclass(frozen=True)
class ModalityLayout:
    """How the modalities of one example are packed into a flat float row.

    Attributes:
        shapes: per-modality example shape, e.g. ``{"text": (384,), "image": (1, 28, 28), "audio": (40, 101)}``
            (modalities in :data:`MODALITIES` order; omit those the data does not have).

    Example:
        >>> layout = ModalityLayout({"image": (1, 28, 28), "audio": (40, 101)})
        >>> row = layout.pack({"image": img, "audio": mel}, present={"audio": torch.tensor([True, False])})
        >>> inputs, present = layout.unpack(row)
    """

    shapes: Mapping[str, tuple[int, ...]]

    def __post_init__(self) -> None:
        unknown = set(self.shapes) - set(MODALITIES)
        if unknown or not self.shapes:
            raise ValueError(f"ModalityLayout.shapes has keys {sorted(self.shapes)}; use some of {MODALITIES}")
        ordered = {m: tuple(int(d) for d in self.shapes[m]) for m in MODALITIES if m in self.shapes}
        object.__setattr__(self, "shapes", ordered)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.shapes)

    @property
    def width(self) -> int:
        """Length of a packed row."""
        return len(self.shapes) + sum(math.prod(s) for s in self.shapes.values())

    def pack(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None) -> Tensor:
        """``[B, width]`` rows from per-modality tensors ``[B, *shape]``; absent rows are stored as zeros.

        A modality missing from ``inputs`` is absent for every sample; ``present[m]`` (``[B]`` bool) marks the
        samples that have modality ``m`` (default: all of those given).
        """
        given = [m for m in self.modalities if m in inputs]
        extra = set(inputs) - set(self.modalities)
        if extra or not given:
            raise ValueError(f"inputs has modalities {sorted(inputs)} but the layout has {self.modalities}")
        batch = inputs[given[0]].shape[0]
        flags, blocks = [], []
        for m in self.modalities:
            x = inputs.get(m)
            if x is None:
                flags.append(torch.zeros(batch))
                blocks.append(torch.zeros(batch, math.prod(self.shapes[m])))
                continue
            if tuple(x.shape) != (batch, *self.shapes[m]):
                raise ValueError(
                    f"inputs[{m!r}] has shape {tuple(x.shape)} but the layout needs [{batch}, "
                    f"{', '.join(map(str, self.shapes[m]))}]"
                )
            mask = torch.ones(batch, dtype=torch.bool) if present is None or m not in present else present[m]
            mask = torch.as_tensor(mask, dtype=torch.bool).reshape(batch)
            flags.append(mask.float())
            blocks.append(x.reshape(batch, -1).float() * mask.unsqueeze(1))
        return torch.cat([torch.stack(flags, dim=1), *blocks], dim=1)

    def unpack(self, packed: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Inverse of :meth:`pack`: per-modality tensors ``[B, *shape]`` and presence masks ``[B]``."""
        if packed.dim() != 2 or packed.shape[1] != self.width:
            raise ValueError(
                f"packed input has shape {tuple(packed.shape)} but the layout packs rows of width "
                f"{self.width} ([B, {self.width}])"
            )
        n = len(self.modalities)
        present = {m: packed[:, i] > 0.5 for i, m in enumerate(self.modalities)}
        inputs, start = {}, n
        for m, shape in self.shapes.items():
            size = math.prod(shape)
            inputs[m] = packed[:, start : start + size].reshape(-1, *shape)
            start += size
        return inputs, present


def _output_width(encoder: nn.Module) -> int | None:
    for attr in ("out_features", "output_dim", "embed_dim", "hidden_size"):
        value = getattr(encoder, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    config = getattr(encoder, "config", None)
    value = getattr(config, "hidden_size", None)
    return value if isinstance(value, int) and value > 0 else None


class MultiModalAdapter(nn.Module):
    """Fuse text, image and audio encoders into one embedding (module notations).

    Args:
        text_model, image_model, audio_model: any ``nn.Module`` encoders (at least one); each returns ``[n, D]``,
            ``[n, T, D]``, or ``([n, T, D], padding_mask [n, T])`` with True at padding.
        fusion_method: ``"attention"`` (default), ``"concat"``, ``"gated"`` or ``"film"``.
        embed_dim: the shared width ``E`` and the output width.
        dims: encoder output widths ``D_m`` by modality; when absent they are read from the encoder's
            ``out_features``/``output_dim``/``embed_dim``/``hidden_size`` (or ``config.hidden_size``), else the
            projection is an ``nn.LazyLinear`` that learns its width on the first forward (run one batch before
            building the optimizer in that case).
        num_heads, num_layers: of the attention fusion.
        dropout: in the fusion MLPs / attention.
        film_base: the modality FiLM modulates (default: the first of image, audio, text that has an encoder).
        layout: a :class:`ModalityLayout` to accept packed ``[B, width]`` tensors (for episodic learners). The
            layout may pack more modalities than the adapter has encoders for; those are not read (so that
            single-modality baselines can use the same packed data), and a sample must have at least one of the
            adapter's modalities.

    Example:
        >>> multimodal_adapter = MultiModalAdapter(
        ...     text_model=text_encoder, image_model=vision_encoder, audio_model=audio_encoder,
        ...     fusion_method="attention")
        >>> z = multimodal_adapter(text=t, image=img, audio=mel)            # [B, E]
        >>> z = multimodal_adapter(image=img, audio=mel,                      # audio missing for some samples
        ...                        masks={"audio": torch.tensor([True, False, True])})
    """

    def __init__(
        self,
        text_model: nn.Module | None = None,
        image_model: nn.Module | None = None,
        audio_model: nn.Module | None = None,
        fusion_method: str = "attention",
        embed_dim: int = 128,
        *,
        dims: Mapping[str, int] | None = None,
        num_heads: int = 4,
        num_layers: int = 1,
        dropout: float = 0.0,
        film_base: str | None = None,
        layout: ModalityLayout | None = None,
    ) -> None:
        super().__init__()
        self.fusion_method = check_choice("fusion_method", fusion_method, FUSION_METHODS)
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        given = {"text": text_model, "image": image_model, "audio": audio_model}
        for name, enc in given.items():
            if enc is not None and not isinstance(enc, nn.Module):
                raise TypeError(f"{name}_model must be a torch.nn.Module, got {type(enc).__name__}")
        self.modalities = tuple(m for m in MODALITIES if given[m] is not None)
        if not self.modalities:
            raise ValueError("MultiModalAdapter needs at least one of text_model, image_model, audio_model")
        dims = dict(dims or {})
        unknown = set(dims) - set(self.modalities)
        if unknown:
            raise ValueError(f"dims has {sorted(unknown)} but those modalities have no encoder ({self.modalities})")
        present = {m: enc for m, enc in given.items() if enc is not None}
        self.encoders = nn.ModuleDict(present)
        projections = {}
        for m, enc in present.items():
            width = dims.get(m) or _output_width(enc)
            linear = nn.Linear(width, embed_dim) if width else nn.LazyLinear(embed_dim)
            projections[m] = nn.Sequential(linear, nn.LayerNorm(embed_dim))
        self.projections = nn.ModuleDict(projections)
        base = film_base or next(m for m in ("image", "audio", "text") if m in self.modalities)
        self.fusion = build_fusion(
            self.fusion_method,
            self.modalities,
            embed_dim,
            num_heads=num_heads,
            num_layers=num_layers,
            dropout=dropout,
            film_base=base,
        )
        if layout is not None and not isinstance(layout, ModalityLayout):
            raise TypeError(f"layout must be a ModalityLayout, got {type(layout).__name__}")
        if layout is not None and not set(layout.modalities) & set(self.modalities):
            raise ValueError(f"layout packs {layout.modalities} but the adapter has encoders for {self.modalities}")
        self.layout = layout
        self.out_features = embed_dim

    def extra_repr(self) -> str:
        return f"fusion_method={self.fusion_method!r}, embed_dim={self.embed_dim}, modalities={self.modalities}"

    def forward(
        self,
        inputs: Tensor | Mapping[str, Any] | None = None,
        *,
        text: Any = None,
        image: Any = None,
        audio: Any = None,
        masks: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Fused embeddings ``[B, E]``.

        Args:
            inputs: a packed ``[B, width]`` tensor (needs ``layout``) or a mapping modality -> batch; or use the
                keyword arguments instead.
            text, image, audio: per-modality batches (tensors ``[B, ...]``, or lists of length ``B`` such as
                strings for a text encoder that takes them); ``None`` = absent for every sample.
            masks: modality -> ``[B]`` bool, True where the sample has the modality (default: all given).
        """
        batch_inputs, present = self._collect(inputs, {"text": text, "image": image, "audio": audio}, masks)
        batch = next(iter(present.values())).shape[0]
        device = next(iter(present.values())).device
        any_present = torch.zeros(batch, dtype=torch.bool, device=device)
        for m in present:
            any_present |= present[m]
        if not bool(any_present.all()):
            bad = torch.nonzero(~any_present).flatten().tolist()
            raise ValueError(f"samples {bad[:10]} have no modality present; each sample needs at least one")
        tokens, valid = {}, {}
        for m in self.modalities:
            tokens[m], valid[m] = self._encode(m, batch_inputs.get(m), present[m], batch)
        return self.fusion(tokens, valid)

    def _collect(
        self, inputs: Any, keywords: dict[str, Any], masks: Mapping[str, Tensor] | None
    ) -> tuple[dict[str, Any], dict[str, Tensor]]:
        if isinstance(inputs, Tensor):
            if self.layout is None:
                raise ValueError("a packed tensor input needs layout=ModalityLayout(...) in the constructor")
            if any(v is not None for v in keywords.values()) or masks is not None:
                raise ValueError("give either a packed tensor or keyword modalities/masks, not both")
            data, present = self.layout.unpack(inputs)
            data = {m: v for m, v in data.items() if m in self.modalities}
            present = {m: v for m, v in present.items() if m in self.modalities}
        else:
            if inputs is not None:
                if not isinstance(inputs, Mapping):
                    raise TypeError(f"inputs must be a packed Tensor or a mapping, got {type(inputs).__name__}")
                if any(v is not None for v in keywords.values()):
                    raise ValueError("give modalities either in inputs or as keywords, not both")
                keywords = dict(inputs)
            unknown = {m for m, v in keywords.items() if v is not None} - set(self.modalities)
            if unknown:
                raise ValueError(
                    f"got inputs for {sorted(unknown)} but the adapter has encoders for {self.modalities} only"
                )
            data = {m: v for m, v in keywords.items() if v is not None}
            if not data:
                raise ValueError(f"no inputs given; pass at least one of {self.modalities}")
            sizes = {m: len(v) for m, v in data.items()}
            if len(set(sizes.values())) != 1:
                raise ValueError(f"modalities disagree on the batch size: {sizes}")
            batch = next(iter(sizes.values()))
            device = next((v.device for v in data.values() if isinstance(v, Tensor)), torch.device("cpu"))
            present = {}
            for m in data:
                mask = (masks or {}).get(m)
                mask = torch.ones(batch, dtype=torch.bool) if mask is None else torch.as_tensor(mask)
                if mask.dtype != torch.bool or tuple(mask.shape) != (batch,):
                    raise ValueError(
                        f"masks[{m!r}] must be a bool tensor of shape [{batch}], got {mask.dtype} {tuple(mask.shape)}"
                    )
                present[m] = mask.to(device)
            extra = set(masks or {}) - set(data)
            if extra:
                raise ValueError(f"masks given for {sorted(extra)} but no inputs for them")
        any_mask = next(iter(present.values()))
        for m in self.modalities:
            present.setdefault(m, torch.zeros_like(any_mask))
        return data, present

    def _encode(self, m: str, x: Any, present: Tensor, batch: int) -> tuple[Tensor, Tensor]:
        """Tokens ``[B, T, E]`` and validity ``[B, T]`` of modality ``m``, encoding only the present samples."""
        rows = torch.nonzero(present).flatten()
        if x is None or rows.numel() == 0:
            ref = next(self.parameters())
            return (
                torch.zeros(batch, 1, self.embed_dim, device=present.device, dtype=ref.dtype),
                torch.zeros(batch, 1, dtype=torch.bool, device=present.device),
            )
        subset = x[rows] if isinstance(x, Tensor) else [x[i] for i in rows.tolist()]
        out = self.encoders[m](subset)
        pad = None
        if isinstance(out, tuple):
            out, pad = out
        if not isinstance(out, Tensor) or out.dim() not in (2, 3) or out.shape[0] != rows.numel():
            raise ValueError(
                f"{m}_model must return [n, D] or [n, T, D] for n={rows.numel()} inputs, got "
                f"{getattr(out, 'shape', type(out).__name__)}"
            )
        seq = out.unsqueeze(1) if out.dim() == 2 else out  # (n, T, D)
        proj = self.projections[m](seq)  # (n, T, E)
        ok = torch.ones(proj.shape[:2], dtype=torch.bool, device=proj.device) if pad is None else ~pad.bool()
        tokens = proj.new_zeros(batch, proj.shape[1], self.embed_dim)
        valid = torch.zeros(batch, proj.shape[1], dtype=torch.bool, device=proj.device)
        tokens = tokens.index_copy(0, rows.to(proj.device), proj)
        valid = valid.index_copy(0, rows.to(proj.device), ok)
        return tokens, valid


def modality_dropout(present: Mapping[str, Tensor], p: float, generator: torch.Generator) -> dict[str, Tensor]:
    """Drop each present modality of each sample with probability ``p``, never all of a sample's modalities.

    Training with it teaches the fusion to cope with missing modalities at test time.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p={p} but it must be in [0, 1)")
    names = list(present)
    stacked = torch.stack([present[m] for m in names], dim=1)  # (B, M)
    keep = stacked & (torch.rand(stacked.shape, generator=generator) >= p)
    empty = ~keep.any(dim=1) & stacked.any(dim=1)
    if bool(empty.any()):  # restore one random present modality for samples that lost them all
        scores = torch.rand(stacked.shape, generator=generator).masked_fill(~stacked, -1.0)
        pick = torch.nn.functional.one_hot(scores.argmax(dim=1), len(names)).bool()
        keep = torch.where(empty.unsqueeze(1), pick, keep)
    return {m: keep[:, i] for i, m in enumerate(names)}


def drop_modalities(layout: ModalityLayout, packed: Tensor, drop: Sequence[str]) -> Tensor:
    """Packed rows with the modalities ``drop`` marked absent (and their data zeroed), for robustness tests."""
    inputs, present = layout.unpack(packed)
    for m in drop:
        check_choice("drop", m, layout.modalities)
        present[m] = torch.zeros_like(present[m])
    return layout.pack(inputs, present)
