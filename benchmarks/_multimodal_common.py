"""Shared pieces of the multimodal benchmarks: data (FSDD + MNIST + clues), MiniLM clue embeddings, encoders."""

from __future__ import annotations

from torch import Tensor, nn

from meta_learning.models.minilm import MINILM_DIM, MiniLMEncoder
from meta_learning.models.mlp import MLP
from meta_learning.multimodal import AudioCNN, ImageCNN, ModalityLayout, MultiModalAdapter
from meta_learning.multimodal.digits import DigitTriples, embed_texts

N_MELS, FRAMES = 40, 101
LAYOUT = ModalityLayout({"text": (MINILM_DIM,), "image": (1, 28, 28), "audio": (N_MELS, FRAMES)})
WIDTH = 64


def encoders(modalities: tuple[str, ...]) -> dict[str, nn.Module]:
    """The demo encoders: MLP over frozen MiniLM clue embeddings, a Conv4-style CNN, a log-mel 1-D CNN."""
    make = {
        "text": lambda: MLP(MINILM_DIM, [128], WIDTH),
        "image": lambda: ImageCNN(in_channels=1, out_features=WIDTH, hidden_channels=32),
        "audio": lambda: AudioCNN(N_MELS, out_features=WIDTH, channels=64),
    }
    return {f"{m}_model": make[m]() for m in modalities}


def make_adapter(modalities: tuple[str, ...], fusion: str, embed_dim: int = 128) -> MultiModalAdapter:
    return MultiModalAdapter(
        **encoders(modalities),
        fusion_method=fusion,
        embed_dim=embed_dim,
        dims=dict.fromkeys(modalities, WIDTH),
        layout=LAYOUT,
        num_heads=4,
    )


def pack(
    triples: DigitTriples, text_embedding: Tensor, modalities: tuple[str, ...] = ("text", "image", "audio")
) -> Tensor:
    data = {"text": text_embedding, "image": triples.image, "audio": triples.audio}
    return LAYOUT.pack({m: data[m] for m in modalities})


def clue_embeddings(*sets: DigitTriples) -> list[Tensor]:
    encoder = MiniLMEncoder()
    return [embed_texts(list(s.text), encoder) for s in sets]
