"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017).

Notation: ``f`` the encoder, ``S_k`` the support examples of class ``k``, ``c_k = (1/|S_k|) sum_{x in S_k} f(x)``
the prototype of class ``k``. Euclidean: ``logit_k(q) = -||f(q) - c_k||^2`` (squared distance, as in the paper).
Cosine: ``logit_k(q) = tau * cos(f(q), c_k)`` with a learned temperature ``tau`` (metric scaling, Oreshkin et al.
2018), since unscaled cosines in [-1, 1] give a softmax too flat to train.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from meta_learning._checks import check_choice, check_positive_float
from meta_learning.fewshot.base import EpisodicLearner, check_support_query, embed_pair

DISTANCES = ("euclidean", "cosine")


def class_prototypes(embeddings: Tensor, labels: Tensor, n_way: int) -> Tensor:
    """Mean embedding per class.

    Args:
        embeddings: ``[S, D]`` support embeddings.
        labels: ``[S]`` int64 labels in ``0..n_way-1``, any order.
        n_way: number of classes ``N``.

    Returns:
        ``[N, D]`` prototypes; row ``k`` averages the rows of ``embeddings`` whose label is ``k``.
    """
    one_hot = nn.functional.one_hot(labels, n_way).to(embeddings.dtype)  # (S, N)
    counts = one_hot.sum(dim=0)  # (N,)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"support labels have no example of class(es) {missing}; every class needs one")
    return (one_hot.t() @ embeddings) / counts.unsqueeze(1)


def squared_euclidean(queries: Tensor, prototypes: Tensor) -> Tensor:
    """``[M, D] x [N, D] -> [M, N]`` squared Euclidean distances (exact difference form, no cancellation)."""
    return (queries.unsqueeze(1) - prototypes.unsqueeze(0)).pow(2).sum(dim=-1)


def cosine_similarity(queries: Tensor, prototypes: Tensor, eps: float = 1e-8) -> Tensor:
    """``[M, D] x [N, D] -> [M, N]`` cosine similarities."""
    q = queries / queries.norm(dim=-1, keepdim=True).clamp_min(eps)
    p = prototypes / prototypes.norm(dim=-1, keepdim=True).clamp_min(eps)
    return q @ p.t()


class PrototypicalNetwork(EpisodicLearner):
    """Classify queries by their distance to class prototypes in the encoder's embedding space.

    Args:
        encoder: module mapping ``[B, ...]`` inputs to ``[B, D]`` embeddings (e.g.
            :class:`~meta_learning.models.Conv4`).
        distance_metric: ``"euclidean"`` (squared, the paper's choice) or ``"cosine"`` (with learned temperature).
        temperature: initial cosine temperature ``tau`` (ignored for Euclidean).

    Example:
        >>> proto_net = PrototypicalNetwork(encoder=Conv4(), distance_metric="euclidean")
        >>> proto_net.train_episodes(EpisodeSampler(Omniglot(split="train"), 60, 1, 5), num_episodes=2000)
        >>> predictions = proto_net.classify(query_samples=qx, support_samples=sx, support_labels=sy)
    """

    def __init__(self, encoder: nn.Module, distance_metric: str = "euclidean", temperature: float = 10.0) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be a torch.nn.Module, got {type(encoder).__name__}")
        self.encoder = encoder
        self.distance_metric = check_choice("distance_metric", distance_metric, DISTANCES)
        self.temperature: nn.Parameter | None = None
        if self.distance_metric == "cosine":
            self.temperature = nn.Parameter(torch.tensor(check_positive_float("temperature", temperature)))

    def extra_repr(self) -> str:
        return f"distance_metric={self.distance_metric!r}"

    def embed(self, x: Tensor) -> Tensor:
        """Encoder output flattened to ``[B, D]``."""
        return self.encoder(x).flatten(1)

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """Query logits ``[M, N]`` (negative squared distances, or scaled cosines).

        Support and query are embedded in one forward pass, so BatchNorm in training mode sees one batch.
        """
        support_y = check_support_query(support_x, support_y, query_x)
        n_way = int(support_y.max().item()) + 1
        z = embed_pair(self.embed, support_x, query_x).float()
        z_support, z_query = z[: support_x.shape[0]], z[support_x.shape[0] :]
        # under mixed precision (fit(autocast=torch.bfloat16)) only the encoder runs in low precision:
        # prototypes and distances stay in float32
        with torch.autocast(z.device.type, enabled=False):
            prototypes = class_prototypes(z_support, support_y, n_way)
            if self.temperature is None:
                return -squared_euclidean(z_query, prototypes)
            return self.temperature * cosine_similarity(z_query, prototypes)
