"""Continual-learning streams: ordered experiences for the task-, domain- and class-incremental scenarios.

Notation (van de Ven & Tolias 2019, "Three scenarios for continual learning"): a stream is ``T`` experiences;
experience ``t`` has a training set, a test set, the task id ``t`` and the original class ids ``C_t`` it holds.
What the learner sees as labels depends on the scenario:

- ``"task"``: labels local to the experience, ``0..|C_t|-1``; the task id is given at training and test time, so
  a model has one output head per task (multi-head).
- ``"domain"``: labels local ``0..|C_t|-1``; no task id at test time, one shared head of ``max_t |C_t|`` outputs.
- ``"class"``: labels global ``0..sum_t |C_t| - 1`` in stream order; one head over every class of the stream.

Scenario helpers build streams from any labelled tensors: :func:`split_classes` (disjoint class groups, e.g.
Split MNIST) and :func:`permuted` (one fixed pixel permutation per experience, e.g. Permuted MNIST).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import torch
from torch import Tensor

from meta_learning._checks import check_choice, check_positive_int
from meta_learning.data.base import TensorLabelledDataset

SCENARIOS = ("task", "domain", "class")


class TensorClassificationDataset(TensorLabelledDataset):
    """Examples held as one tensor: ``x [N, ...]`` (``uint8`` read as ``x / 255``, or floating) and ``labels [N]``.

    Args:
        x: inputs; ``uint8`` storage keeps images at one byte per pixel until they are gathered.
        labels: ``[N]`` integer labels.
        permutation: optional ``[D]`` permutation of the ``D`` input values of one example, applied on gather (the
            inputs of Permuted MNIST share one storage and differ only by this).

    Example:
        >>> ds = TensorClassificationDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
        >>> ds.tensors()[0].shape
        torch.Size([4, 1, 2, 2])
    """

    def __init__(self, x: Tensor, labels: Tensor | np.ndarray, *, permutation: Tensor | None = None) -> None:
        if not isinstance(x, Tensor) or x.dim() < 2:
            raise TypeError(f"x must be a tensor [N, ...] with at least 2 dims, got {type(x).__name__}")
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise TypeError(f"x must be uint8 or floating point, got dtype {x.dtype}")
        y = torch.as_tensor(labels)
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"labels has shape {tuple(y.shape)} but x has {x.shape[0]} examples; need [N] labels")
        if y.is_floating_point() or y.dtype == torch.bool:
            raise TypeError(f"labels must be integers, got dtype {y.dtype}")
        d = int(np.prod(x.shape[1:]))
        if permutation is not None:
            permutation = torch.as_tensor(permutation, dtype=torch.long)
            if permutation.shape != (d,) or not torch.equal(permutation.sort().values, torch.arange(d)):
                raise ValueError(f"permutation must be a permutation of range({d}) (one entry per input value)")
        self.x = x
        self.labels = y.to(torch.int64).numpy()
        self.permutation = permutation

    def gather(self, indices: Tensor) -> Tensor:
        """Inputs of ``indices`` as float32 ``[n, ...]`` (uint8 scaled to [0, 1], permutation applied)."""
        x = self.x[indices]
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if self.permutation is not None:
            x = x.flatten(1)[:, self.permutation].reshape(x.shape)
        return x

    def tensors(self) -> tuple[Tensor, Tensor]:
        """All examples as ``(x float32 [N, ...], y int64 [N])``."""
        return self.gather(torch.arange(len(self))), torch.from_numpy(self.labels)

    def subset(
        self, indices: Tensor | np.ndarray, labels: Tensor | np.ndarray | None = None
    ) -> TensorClassificationDataset:
        """A new dataset of the examples at ``indices``, relabelled with ``labels`` if given."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        new_labels = torch.from_numpy(self.labels)[idx] if labels is None else torch.as_tensor(labels)
        return TensorClassificationDataset(self.x[idx], new_labels, permutation=self.permutation)

    def with_permutation(self, permutation: Tensor | None) -> TensorClassificationDataset:
        """The same examples (shared storage) under another input permutation."""
        return TensorClassificationDataset(self.x, self.labels, permutation=permutation)

    def __repr__(self) -> str:
        perm = ", permuted" if self.permutation is not None else ""
        return (
            f"TensorClassificationDataset(n={len(self)}, shape={tuple(self.x.shape[1:])}, dtype={self.x.dtype}{perm})"
        )


@dataclass(frozen=True)
class Experience:
    """One step of a stream: its training and test sets, its task id and the original class ids it holds."""

    train: TensorClassificationDataset
    test: TensorClassificationDataset
    task_id: int
    classes: tuple[int, ...]


@dataclass(frozen=True)
class Stream(Sequence[Experience]):
    """An ordered sequence of experiences in one scenario.

    Attributes:
        experiences: the experiences, in training order.
        scenario: ``"task"``, ``"domain"`` or ``"class"``.
        num_classes: output units a model needs: per head for ``"task"``, of the single head otherwise.
        name: a short description, e.g. ``"SplitMNIST(class)"``.
    """

    experiences: tuple[Experience, ...]
    scenario: str
    num_classes: int
    name: str = "stream"

    def __post_init__(self) -> None:
        check_choice("scenario", self.scenario, SCENARIOS)
        if not self.experiences:
            raise ValueError("a stream needs at least one experience")

    @property
    def multi_head(self) -> bool:
        """Whether the task id is given at test time (task-incremental), i.e. models need one head per task."""
        return self.scenario == "task"

    def __len__(self) -> int:
        return len(self.experiences)

    @overload
    def __getitem__(self, index: int) -> Experience: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Experience, ...]: ...

    def __getitem__(self, index: int | slice) -> Experience | tuple[Experience, ...]:
        return self.experiences[index]

    def __iter__(self) -> Iterator[Experience]:
        return iter(self.experiences)

    def __repr__(self) -> str:
        return f"Stream({self.name!r}, scenario={self.scenario!r}, experiences={len(self)}, classes={self.num_classes})"


def _check_groups(class_groups: Sequence[Sequence[int]], available: set[int]) -> tuple[tuple[int, ...], ...]:
    if isinstance(class_groups, (str, bytes)) or not isinstance(class_groups, Sequence) or not class_groups:
        raise TypeError(f"class_groups must be a non-empty sequence of class-id sequences, got {class_groups!r}")
    groups = []
    for t, g in enumerate(class_groups):
        if isinstance(g, (str, bytes)) or not isinstance(g, Sequence) or not g:
            raise TypeError(f"class_groups[{t}] must be a non-empty sequence of class ids, got {g!r}")
        groups.append(tuple(int(c) for c in g))
    flat = [c for g in groups for c in g]
    if len(set(flat)) != len(flat):
        raise ValueError(f"class_groups={class_groups!r} repeats a class; each class may appear in one experience")
    missing = sorted(set(flat) - available)
    if missing:
        raise ValueError(
            f"class_groups names classes {missing} that are not in the data (present: {sorted(available)})"
        )
    return tuple(groups)


def split_classes(
    train: TensorClassificationDataset,
    test: TensorClassificationDataset,
    class_groups: Sequence[Sequence[int]],
    scenario: str = "class",
    name: str = "split",
) -> Stream:
    """Experiences of disjoint class groups (Split MNIST, Split CIFAR-100, Split Omniglot).

    Args:
        train, test: datasets with the original class ids as labels.
        class_groups: the classes of each experience, in order, e.g. ``[(0, 1), (2, 3), ...]``.
        scenario: ``"task"``, ``"domain"`` (local labels: position of the class in its group) or ``"class"``
            (global labels: position of the class in the flattened ``class_groups``).
        name: the stream's name.

    Example:
        >>> stream = split_classes(train, test, [(0, 1), (2, 3)], scenario="class")  # doctest: +SKIP
        >>> stream[1].classes, stream.num_classes                                    # doctest: +SKIP
        ((2, 3), 4)
    """
    check_choice("scenario", scenario, SCENARIOS)
    groups = _check_groups(class_groups, {int(c) for c in np.unique(train.labels)})
    top = max(max(g) for g in groups)
    lookup_local = np.full(max(top, int(train.labels.max()), int(test.labels.max())) + 1, -1, dtype=np.int64)
    lookup_global = lookup_local.copy()
    position = 0
    for g in groups:
        for j, c in enumerate(g):
            lookup_local[c] = j
            lookup_global[c] = position
            position += 1
    lookup = lookup_global if scenario == "class" else lookup_local
    experiences = []
    for t, g in enumerate(groups):
        parts = []
        for ds in (train, test):
            idx = np.flatnonzero(np.isin(ds.labels, g))
            parts.append(ds.subset(idx, lookup[ds.labels[idx]]))
        experiences.append(Experience(train=parts[0], test=parts[1], task_id=t, classes=g))
    num_classes = position if scenario == "class" else max(len(g) for g in groups)
    return Stream(tuple(experiences), scenario, num_classes, name=f"{name}({scenario})")


def permuted(
    train: TensorClassificationDataset,
    test: TensorClassificationDataset,
    n_experiences: int,
    scenario: str = "domain",
    *,
    seed: int = 0,
    first_unpermuted: bool = False,
    name: str = "permuted",
) -> Stream:
    """Experiences that show the same classes under a fixed random permutation of the input values each.

    Args:
        train, test: datasets with labels ``0..K-1``.
        n_experiences: number of permutations ``T``.
        scenario: ``"domain"`` (labels ``0..K-1``, one head; the usual Permuted MNIST), ``"task"`` (labels
            ``0..K-1``, one head per experience) or ``"class"`` (experience ``t`` has labels ``t*K .. t*K+K-1``).
        seed: seed of the permutations (``torch.Generator``).
        first_unpermuted: keep the first experience's inputs as they are (as van de Ven & Tolias do for seed 0).
        name: the stream's name.
    """
    check_positive_int("n_experiences", n_experiences)
    check_choice("scenario", scenario, SCENARIOS)
    k = int(max(train.labels.max(), test.labels.max())) + 1
    d = int(np.prod(train.x.shape[1:]))
    gen = torch.Generator().manual_seed(int(seed))
    experiences = []
    for t in range(n_experiences):
        perm = torch.randperm(d, generator=gen)
        perm_t = None if (first_unpermuted and t == 0) else perm
        offset = t * k if scenario == "class" else 0
        tr = TensorClassificationDataset(train.x, train.labels + offset, permutation=perm_t)
        te = TensorClassificationDataset(test.x, test.labels + offset, permutation=perm_t)
        experiences.append(Experience(tr, te, task_id=t, classes=tuple(range(offset, offset + k))))
    num_classes = k * n_experiences if scenario == "class" else k
    return Stream(tuple(experiences), scenario, num_classes, name=f"{name}({scenario})")


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` that put ``round(test_fraction * n_c)`` examples of each class ``c`` in the test part.

    Deterministic for a seed (``torch.Generator``); both index arrays are sorted.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} but it must be strictly between 0 and 1")
    gen = torch.Generator().manual_seed(int(seed))
    train_idx, test_idx = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        order = members[torch.randperm(len(members), generator=gen).numpy()]
        n_test = round(test_fraction * len(members))
        test_idx.append(order[:n_test])
        train_idx.append(order[n_test:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))
