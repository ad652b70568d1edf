"""Small models for the adapter tests, in plain torch so the peer-library subprocess (PEFT) can build them too."""

from __future__ import annotations

import torch
from torch import nn


class ToyNet(nn.Module):
    """Embedding + Conv2d + Linear/LayerNorm stack + head: every layer type the adapters support, in miniature."""

    def __init__(self, vocab: int = 20, classes: int = 3) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 8, padding_idx=0)
        self.conv = nn.Conv2d(2, 4, 3, padding=1, dilation=1)
        self.fc1 = nn.Linear(12, 16)
        self.ln = nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, 16)
        self.head = nn.Linear(16, classes)

    def forward(self, ids: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        a = self.emb(ids).mean(1)
        b = self.conv(img).mean((2, 3))
        h = torch.relu(self.ln(self.fc1(torch.cat([a, b], 1))))
        return self.head(torch.relu(self.fc2(h)))


def toy_net(seed: int = 0, dtype: torch.dtype = torch.float32) -> ToyNet:
    torch.manual_seed(seed)
    return ToyNet().to(dtype).eval()


def toy_inputs(n: int = 5, seed: int = 1, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 20, (n, 7), generator=g)
    ids[:, -1] = 0  # a padding token in every row
    return ids, torch.randn(n, 2, 6, 6, generator=g, dtype=dtype)


def randomise(params, seed: int = 2, scale: float = 0.3) -> None:
    """Move every tensor in ``params`` (name -> parameter) away from its identity initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params.values():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def tiny_bert_config_kwargs() -> dict:
    return dict(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip


class AttnNet(nn.Module):
    """Token embedding + one ``nn.TransformerEncoderLayer`` (MultiheadAttention inside) + mean pool + head."""

    def __init__(self, vocab: int = 20, d: int = 16, classes: int = 3, batch_first: bool = True) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.block = nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=batch_first)
        self.head = nn.Linear(d, classes)
        self.batch_first = batch_first

    def forward(self, ids: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        h = self.emb(ids)
        if not self.batch_first:
            h = h.transpose(0, 1)
        h = self.block(h, src_key_padding_mask=pad)
        if not self.batch_first:
            h = h.transpose(0, 1)
        return self.head(h.mean(1))


def attn_net(seed: int = 0, dtype: torch.dtype = torch.float32) -> AttnNet:
    torch.manual_seed(seed)
    return AttnNet().to(dtype).eval()


def attn_inputs(n: int = 4, t: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pad = torch.zeros(n, t, dtype=torch.bool)
    pad[0, -2:] = True
    return torch.randint(0, 20, (n, t), generator=g), pad
