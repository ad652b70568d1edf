"""Episodes: the one data type every few-shot and meta-learner consumes.

Notation: ``N`` classes (ways), ``K`` support examples per class (shots), ``Q`` query examples per class,
``B`` episodes in a batch, ``...`` the example shape (``C x H x W`` for images, ``D`` for vectors).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor


def _is_classification(y: Tensor) -> bool:
    return not torch.is_floating_point(y)


@dataclass(frozen=True)
class Episode:
    """One few-shot task.

    Attributes:
        support_x: ``[N*K, ...]`` support inputs.
        support_y: ``[N*K]`` labels in ``0..N-1`` (int64) for classification, or float targets ``[N*K, ...]``
            for regression.
        query_x: ``[N*Q, ...]`` query inputs with the same example shape as ``support_x``.
        query_y: ``[N*Q]`` labels (or targets) of the query set.
        classes: the original class ids, ``classes[i]`` being the dataset class behind label ``i``; empty for
            regression tasks.

    Example:
        >>> ep = Episode(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]),
        ...              classes=(7, 2))
        >>> ep.n_way
        2
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    classes: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        for name in ("support_x", "support_y", "query_x", "query_y"):
            value = getattr(self, name)
            if not isinstance(value, Tensor):
                raise TypeError(f"Episode.{name} must be a torch.Tensor, got {type(value).__name__}")
        if not isinstance(self.classes, tuple):
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))
        _validate_split("support", self.support_x, self.support_y, batch_dims=0)
        _validate_split("query", self.query_x, self.query_y, batch_dims=0)
        _validate_pair(self.support_x, self.support_y, self.query_x, self.query_y, batch_dims=0)
        if _is_classification(self.support_y) and self.classes and self.support_y.numel():
            n_labels = int(self.support_y.max()) + 1
            if len(self.classes) != n_labels:
                raise ValueError(
                    f"Episode.classes has {len(self.classes)} entries but the labels span n_way={n_labels}; "
                    "give one original class id per label"
                )

    @property
    def is_classification(self) -> bool:
        """True when labels are integer class indices (False for regression targets)."""
        return _is_classification(self.support_y)

    @property
    def n_way(self) -> int:
        """Number of classes ``N`` (0 for regression)."""
        if not self.is_classification:
            return 0
        return len(self.classes) if self.classes else int(self.support_y.max().item()) + 1

    def to(self, device: torch.device | str) -> Episode:
        """Return the episode with every tensor moved to ``device``."""
        return Episode(
            self.support_x.to(device),
            self.support_y.to(device),
            self.query_x.to(device),
            self.query_y.to(device),
            self.classes,
        )


@dataclass(frozen=True)
class EpisodeBatch:
    """``B`` episodes of equal shape stacked on a leading dimension.

    Attributes:
        support_x: ``[B, N*K, ...]``; support_y: ``[B, N*K]``; query_x: ``[B, N*Q, ...]``; query_y: ``[B, N*Q]``.
        classes: ``[B, N]`` int64 original class ids (``[B, 0]`` for regression).
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    classes: Tensor

    def __post_init__(self) -> None:
        for name in ("support_x", "support_y", "query_x", "query_y", "classes"):
            value = getattr(self, name)
            if not isinstance(value, Tensor):
                raise TypeError(f"EpisodeBatch.{name} must be a torch.Tensor, got {type(value).__name__}")
        c = self.classes
        if c.dim() != 2 or c.is_floating_point() or c.is_complex() or c.dtype == torch.bool:
            raise ValueError(
                f"EpisodeBatch.classes has shape {tuple(c.shape)} and dtype {c.dtype}; expected integer class ids "
                "[B, N] ([B, 0] for regression or without ids)"
            )
        _validate_split("support", self.support_x, self.support_y, batch_dims=1)
        _validate_split("query", self.query_x, self.query_y, batch_dims=1)
        sizes = {t.shape[0] for t in (self.support_x, self.support_y, self.query_x, self.query_y, c)}
        if len(sizes) != 1:
            raise ValueError(f"EpisodeBatch tensors disagree on the batch size B: got sizes {sorted(sizes)}")
        n_way = _validate_pair(self.support_x, self.support_y, self.query_x, self.query_y, batch_dims=1)
        if n_way is not None and c.shape[1] and bool((n_way != c.shape[1]).any()):
            i = int((n_way != c.shape[1]).nonzero()[0, 0])
            raise ValueError(
                f"EpisodeBatch.classes has {c.shape[1]} ids per episode but episode {i}'s labels span "
                f"n_way={int(n_way[i])}; give one original class id per label"
            )

    @classmethod
    def from_episodes(cls, episodes: Sequence[Episode]) -> EpisodeBatch:
        """Stack episodes of equal shape; raises ``ValueError`` naming the first mismatching episode."""
        if len(episodes) == 0:
            raise ValueError("episodes is empty; EpisodeBatch needs at least one episode")
        first = episodes[0]
        for i, ep in enumerate(episodes):
            if not isinstance(ep, Episode):
                raise TypeError(f"episodes[{i}] is a {type(ep).__name__}, expected Episode")
            if ep.support_x.shape != first.support_x.shape or ep.query_x.shape != first.query_x.shape:
                raise ValueError(
                    f"episodes[{i}] has support {tuple(ep.support_x.shape)} / query {tuple(ep.query_x.shape)} "
                    f"but episodes[0] has {tuple(first.support_x.shape)} / {tuple(first.query_x.shape)}; "
                    "only episodes of equal shape can be batched"
                )
        classes = torch.tensor([ep.classes for ep in episodes], dtype=torch.long).reshape(len(episodes), -1)
        return cls(
            torch.stack([ep.support_x for ep in episodes]),
            torch.stack([ep.support_y for ep in episodes]),
            torch.stack([ep.query_x for ep in episodes]),
            torch.stack([ep.query_y for ep in episodes]),
            classes,
        )

    def __len__(self) -> int:
        return int(self.support_x.shape[0])

    def __getitem__(self, index: int) -> Episode:
        return Episode(
            self.support_x[index],
            self.support_y[index],
            self.query_x[index],
            self.query_y[index],
            tuple(int(c) for c in self.classes[index].tolist()),
        )

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self[i]

    def to(self, device: torch.device | str) -> EpisodeBatch:
        """Return the batch with every tensor moved to ``device``."""
        return EpisodeBatch(
            self.support_x.to(device),
            self.support_y.to(device),
            self.query_x.to(device),
            self.query_y.to(device),
            self.classes.to(device),
        )


def _validate_split(which: str, x: Tensor, y: Tensor, batch_dims: int) -> None:
    if x.dim() < batch_dims + 1:
        raise ValueError(f"{which}_x has shape {tuple(x.shape)}; expected at least {batch_dims + 1} dimensions")
    if y.shape[: batch_dims + 1] != x.shape[: batch_dims + 1]:
        raise ValueError(
            f"{which}_y has shape {tuple(y.shape)} but {which}_x has shape {tuple(x.shape)}; "
            "they must agree on the leading (example) dimension"
        )
    if _is_classification(y):
        if y.dim() != batch_dims + 1:
            raise ValueError(f"{which}_y holds class labels and must be 1-D per episode, got {tuple(y.shape)}")
        if y.numel() and int(y.min()) < 0:
            raise ValueError(f"{which}_y has a negative label {int(y.min())}; labels must be in 0..N-1")


def _validate_pair(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor, batch_dims: int) -> Tensor | None:
    """Check a support/query pair, episode by episode when ``batch_dims == 1``; return each episode's ``n_way``
    (``[B]``, ``[1]`` for one episode) for classification with non-empty support and query sets, else ``None``."""
    if sx.shape[batch_dims + 1 :] != qx.shape[batch_dims + 1 :]:
        raise ValueError(
            f"support_x examples have shape {tuple(sx.shape[batch_dims + 1 :])} but query_x examples have "
            f"{tuple(qx.shape[batch_dims + 1 :])}; they must match"
        )
    if _is_classification(sy) != _is_classification(qy):
        raise ValueError(
            f"support_y is {sy.dtype} but query_y is {qy.dtype}; both must be integer labels or both float targets"
        )
    if not (_is_classification(sy) and sy.numel() and qy.numel()):
        return None
    support, query = sy.reshape(-1, sy.shape[-1]).long(), qy.reshape(-1, qy.shape[-1]).long()  # [B, S], [B, M]
    n_way = support.max(dim=1).values + 1
    distinct = torch.zeros(support.shape[0], int(n_way.max()), dtype=torch.bool, device=sy.device)
    distinct = distinct.scatter_(1, support, True).sum(dim=1)
    query_max = query.max(dim=1).values
    bad_query, missing = query_max >= n_way, distinct != n_way
    if bool(bad_query.any()):
        i = int(bad_query.nonzero()[0, 0])
        raise ValueError(
            f"{_which(i, batch_dims)}query_y has label {int(query_max[i])} but the support set only has labels "
            f"0..{int(n_way[i]) - 1}"
        )
    if bool(missing.any()):
        i = int(missing.nonzero()[0, 0])
        raise ValueError(
            f"{_which(i, batch_dims)}support_y must use every label 0..{int(n_way[i]) - 1} at least once; found "
            f"{torch.unique(support[i]).tolist()}"
        )
    return n_way


def _which(index: int, batch_dims: int) -> str:
    """``"episode i: "`` to prefix a message about one episode of a batch (nothing for a single episode)."""
    return f"episode {index}: " if batch_dims else ""
