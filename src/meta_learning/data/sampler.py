"""N-way K-shot episode sampling from any labelled dataset."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from meta_learning._checks import check_positive_int
from meta_learning.data.base import gather, labels_of
from meta_learning.data.episode import Episode
from meta_learning.data.source import EpisodeSource


class EpisodeSampler(EpisodeSource):
    """Draws N-way K-shot episodes from a labelled dataset, deterministically for a seed.

    Each episode picks ``n_way`` distinct classes, then ``k_shot + n_query`` distinct examples of each, and
    relabels the classes ``0..N-1`` in a random order (so a learner cannot rely on class ids). Support and
    query sets are class-major: ``support_y = [0]*K + [1]*K + ...``.

    Args:
        dataset: map-style dataset of ``(x, y)`` with a 1-D integer ``labels`` attribute.
        n_way: classes per episode ``N``.
        k_shot: support examples per class ``K``.
        n_query: query examples per class ``Q`` >= 1 (every episode is trained and scored on its queries).
        seed: seed of the sampler's own ``torch.Generator``; the global RNG is never touched.

    Example:
        >>> sampler = EpisodeSampler(dataset, n_way=5, k_shot=1, n_query=15, seed=0)
        >>> episode = sampler.sample()
        >>> fixed = sampler.evaluation_episodes(1000, seed=1)   # same 1000 episodes in every run
    """

    def __init__(self, dataset: Any, n_way: int, k_shot: int, n_query: int, seed: int = 0) -> None:
        super().__init__(seed)
        self.dataset = dataset
        self.n_way = check_positive_int("n_way", n_way)
        self.k_shot = check_positive_int("k_shot", k_shot)
        self.n_query = check_positive_int("n_query", n_query)
        labels = labels_of(dataset)
        classes, counts = np.unique(labels, return_counts=True)
        if n_way > len(classes):
            raise ValueError(
                f"n_way={n_way} but the dataset has {len(classes)} classes; lower n_way or use a larger split"
            )
        need = k_shot + n_query
        if counts.min() < need:
            worst = int(classes[counts.argmin()])
            raise ValueError(
                f"k_shot + n_query = {k_shot} + {n_query} = {need} but class {worst} has only "
                f"{int(counts.min())} examples; lower k_shot/n_query or drop classes with few examples"
            )
        order = np.argsort(labels, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)])
        self.classes = torch.as_tensor(classes, dtype=torch.long)
        self._class_indices = [torch.as_tensor(order[starts[i] : starts[i + 1]]) for i in range(len(classes))]

    def __repr__(self) -> str:
        return (
            f"EpisodeSampler({type(self.dataset).__name__}, n_way={self.n_way}, k_shot={self.k_shot}, "
            f"n_query={self.n_query}, classes={len(self.classes)})"
        )

    def sample(self, generator: torch.Generator | None = None) -> Episode:
        """Draw one episode with ``generator`` (default: the sampler's own, advancing its state)."""
        g = self.generator if generator is None else generator
        picked = torch.randperm(len(self.classes), generator=g)[: self.n_way]
        per_class = self.k_shot + self.n_query
        index_rows = []
        for c in picked.tolist():
            pool = self._class_indices[c]
            index_rows.append(pool[torch.randperm(len(pool), generator=g)[:per_class]])
        idx = torch.stack(index_rows)  # (N, K+Q)
        support_idx = idx[:, : self.k_shot].reshape(-1)
        query_idx = idx[:, self.k_shot :].reshape(-1)
        x = gather(self.dataset, torch.cat([support_idx, query_idx]))
        n_support = support_idx.numel()
        labels = torch.arange(self.n_way)
        return Episode(
            support_x=x[:n_support],
            support_y=labels.repeat_interleave(self.k_shot),
            query_x=x[n_support:],
            query_y=labels.repeat_interleave(self.n_query),
            classes=tuple(int(c) for c in self.classes[picked].tolist()),
        )
