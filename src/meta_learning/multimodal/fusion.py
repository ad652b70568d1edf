"""Fusion of per-modality tokens into one embedding, with per-sample presence masks.

Notation: ``B`` samples, ``E`` the shared width, ``M`` modalities (in the fixed order of ``modalities``), for
modality ``m``: tokens ``h_m [B, T_m, E]`` and ``valid_m [B, T_m]`` (False at padding and for every token of a
sample that lacks the modality). ``present_m [B] = any_t valid_m``; ``p_m [B, E]`` is the mean of the valid
tokens (used by the fusions that work on one vector per modality). An absent modality never contributes its
(meaningless) inputs: concat uses a learned "missing" vector instead, attention masks its tokens, the gated sum
renormalises its gates over the present modalities, FiLM skips its modulation.

- ``concat``: ``MLP([q_1; ...; q_M])``, ``q_m = p_m`` if present else the learned ``u_m``.
- ``attention``: a Transformer encoder (pre-norm) over ``[CLS] + tokens + modality-type embeddings``, absent and
  padding tokens masked as keys; the output is the final ``CLS`` state (cross-modal attention).
- ``gated``: ``sum_m a_m * tanh(p_m)`` with ``a_m = softmax_m(W_m p_m)`` per feature over present modalities
  (a gated multimodal unit, Arevalo et al. 2017, with softmax gates so that weights renormalise when one drops).
- ``film``: ``h = p_base`` (or a learned ``u_base`` when absent), then for each other present modality
  ``h <- (1 + gamma_m(p_m)) * h + beta_m(p_m)`` (FiLM, Perez et al. 2018), then an MLP.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

FUSION_METHODS = ("attention", "concat", "gated", "film")


def pooled(tokens: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``tokens [B, T, E]`` over valid positions ``valid [B, T]`` -> ``[B, E]`` (0 where none is valid)."""
    w = valid.unsqueeze(-1).to(tokens.dtype)
    return (tokens * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


def _mlp(inp: int, out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, out), nn.GELU(), nn.Dropout(dropout), nn.Linear(out, out))


class Fusion(nn.Module):
    """Base: ``forward(tokens, valid)`` with dicts keyed by modality (module notations) -> ``[B, E]``."""

    def __init__(self, modalities: Sequence[str], dim: int) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.dim = dim

    def forward(self, tokens: dict[str, Tensor], valid: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def _vectors(self, tokens: dict[str, Tensor], valid: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``p [B, M, E]`` and ``present [B, M]``."""
        p = torch.stack([pooled(tokens[m], valid[m]) for m in self.modalities], dim=1)
        present = torch.stack([valid[m].any(dim=1) for m in self.modalities], dim=1)
        return p, present


class ConcatFusion(Fusion):
    def __init__(self, modalities: Sequence[str], dim: int, dropout: float = 0.0) -> None:
        super().__init__(modalities, dim)
        self.missing = nn.Parameter(torch.zeros(len(self.modalities), dim))
        self.mlp = _mlp(len(self.modalities) * dim, dim, dropout)

    def forward(self, tokens: dict[str, Tensor], valid: dict[str, Tensor]) -> Tensor:
        p, present = self._vectors(tokens, valid)
        q = torch.where(present.unsqueeze(-1), p, self.missing.unsqueeze(0).to(p.dtype))
        return self.mlp(q.flatten(1))


class AttentionFusion(Fusion):
    def __init__(
        self, modalities: Sequence[str], dim: int, num_heads: int = 4, num_layers: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__(modalities, dim)
        if dim % num_heads:
            raise ValueError(f"embed_dim={dim} must be divisible by num_heads={num_heads}")
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.type_embedding = nn.Parameter(0.02 * torch.randn(len(self.modalities), dim))
        layer = nn.TransformerEncoderLayer(
            dim, num_heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: dict[str, Tensor], valid: dict[str, Tensor]) -> Tensor:
        seqs = [tokens[m] + self.type_embedding[i] for i, m in enumerate(self.modalities)]
        batch = seqs[0].shape[0]
        x = torch.cat([self.cls.expand(batch, -1, -1).to(seqs[0].dtype), *seqs], dim=1)  # (B, 1 + sum T_m, E)
        keep = torch.cat(
            [torch.ones(batch, 1, dtype=torch.bool, device=x.device), *[valid[m] for m in self.modalities]], dim=1
        )
        out = self.encoder(x, src_key_padding_mask=~keep)
        return self.norm(out[:, 0])


class GatedFusion(Fusion):
    def __init__(self, modalities: Sequence[str], dim: int, dropout: float = 0.0) -> None:
        super().__init__(modalities, dim)
        self.gates = nn.ModuleList(nn.Linear(dim, dim) for _ in self.modalities)
        self.out = _mlp(dim, dim, dropout)

    def forward(self, tokens: dict[str, Tensor], valid: dict[str, Tensor]) -> Tensor:
        p, present = self._vectors(tokens, valid)  # (B, M, E), (B, M)
        logits = torch.stack([gate(p[:, i]) for i, gate in enumerate(self.gates)], dim=1)  # (B, M, E)
        logits = logits.masked_fill(~present.unsqueeze(-1), float("-inf"))
        weights = torch.softmax(logits, dim=1)
        return self.out((weights * torch.tanh(p)).sum(dim=1))


class FiLMFusion(Fusion):
    def __init__(self, modalities: Sequence[str], dim: int, base: str, dropout: float = 0.0) -> None:
        super().__init__(modalities, dim)
        if base not in self.modalities:
            raise ValueError(f"film_base={base!r} has no encoder; choose one of {self.modalities}")
        self.base = base
        self.missing = nn.Parameter(torch.zeros(dim))
        layers = {m: nn.Linear(dim, 2 * dim) for m in self.modalities if m != base}
        for layer in layers.values():  # start at the identity modulation
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.film = nn.ModuleDict(layers)
        self.out = _mlp(dim, dim, dropout)

    def forward(self, tokens: dict[str, Tensor], valid: dict[str, Tensor]) -> Tensor:
        p, present = self._vectors(tokens, valid)
        i = self.modalities.index(self.base)
        h = torch.where(present[:, i : i + 1], p[:, i], self.missing.to(p.dtype))
        for j, m in enumerate(self.modalities):
            if m == self.base:
                continue
            gamma, beta = self.film[m](p[:, j]).chunk(2, dim=-1)
            h = torch.where(present[:, j : j + 1], (1 + gamma) * h + beta, h)
        return self.out(h)


def build_fusion(
    method: str,
    modalities: Sequence[str],
    dim: int,
    *,
    num_heads: int,
    num_layers: int,
    dropout: float,
    film_base: str,
) -> Fusion:
    if method == "concat":
        return ConcatFusion(modalities, dim, dropout)
    if method == "attention":
        return AttentionFusion(modalities, dim, num_heads, num_layers, dropout)
    if method == "gated":
        return GatedFusion(modalities, dim, dropout)
    if method == "film":
        return FiLMFusion(modalities, dim, film_base, dropout)
    raise ValueError(f"fusion_method={method!r} is not supported; choose one of {', '.join(map(repr, FUSION_METHODS))}")
