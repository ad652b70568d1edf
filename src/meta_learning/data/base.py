"""The labelled-dataset protocol that episode samplers and continual streams read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset


@runtime_checkable
class LabelledDataset(Protocol):
    """A map-style dataset of ``(x, y)`` pairs that also exposes all its labels at once.

    ``labels`` is a 1-D integer array (``numpy`` or ``torch``) with one entry per example, so that samplers can
    group examples by class without touching the inputs.
    """

    labels: Any

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Any, Any]: ...


class TensorLabelledDataset(Dataset[tuple[Tensor, int]]):
    """In-memory base class: subclasses hold their examples and implement :meth:`gather` as one indexing op.

    The generic sampler path stacks ``dataset[i][0]`` one example at a time; subclasses of this class are
    gathered in a single call instead, which is what makes episode sampling cheap.
    """

    labels: np.ndarray

    def gather(self, indices: Tensor) -> Tensor:
        """Return the inputs of ``indices`` (``[n]`` int64) as one ``[n, ...]`` float tensor."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} examples")
        index = index % len(self)
        return self.gather(torch.tensor([index]))[0], int(self.labels[index])


def labels_of(dataset: Any) -> np.ndarray:
    """Return ``dataset.labels`` as a 1-D int64 numpy array, raising ``TypeError`` if the dataset has none."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise TypeError(
            f"{type(dataset).__name__} has no `labels` attribute; few-shot samplers need one integer label per "
            "example (a list, numpy array or tensor)"
        )
    arr = labels.cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != len(dataset):
        raise ValueError(
            f"{type(dataset).__name__}.labels has shape {arr.shape} but the dataset has {len(dataset)} examples"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{type(dataset).__name__}.labels must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def gather(dataset: Any, indices: Tensor) -> Tensor:
    """Inputs of ``indices`` stacked into one tensor, in one call for :class:`TensorLabelledDataset`."""
    if isinstance(dataset, TensorLabelledDataset):
        return dataset.gather(indices)
    items: Sequence[Any] = [dataset[int(i)][0] for i in indices.tolist()]
    return torch.stack([x if isinstance(x, Tensor) else torch.as_tensor(x) for x in items])
