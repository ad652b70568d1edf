"""MNIST from its original IDX files, and the Split MNIST and Permuted MNIST continual-learning streams.

The four files are ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte`` (each optionally ``.gz``), looked for in ``root/mnist/`` then ``root/``.

``source="test10k"`` builds both training and test data from the 10,000-image official *test* set alone, for
machines that have only that file (this project's shared data): a stratified split, fixed by ``split_seed``, keeps
``test_fraction`` of each digit for testing (default 20%: 8,000 training and 2,000 test images). The split is
random rather than the first/last part because the first 5,000 test images are known to be easier (written by
Census Bureau employees) than the last 5,000 (students). Numbers obtained this way are not comparable one to one
with papers that train on the 60,000 official training images.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from meta_learning._checks import check_choice, check_non_negative_int, check_positive_int
from meta_learning._io import data_root
from meta_learning.data.streams import Stream, TensorClassificationDataset, permuted, split_classes, stratified_split

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SOURCES = ("official", "test10k")
SPLIT_MNIST_GROUPS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
_DTYPES: dict[int, Any] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
}
_HINT = "set META_LEARNING_DATA (or root=) to the folder that holds mnist/"


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw): magic ``0x0000``, a type byte, a rank byte, big-endian int32 dims, data."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise RuntimeError(f"cannot read IDX file {str(p)!r} ({err}); the file is corrupt or truncated") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise ValueError(f"{str(p)!r} is not an IDX file (bad magic {data[:4].hex()!r})")
    dtype = np.dtype(_DTYPES[data[2]])
    rank = data[3]
    header = 4 + 4 * rank
    if rank == 0 or len(data) < header:
        raise ValueError(f"{str(p)!r} has a truncated IDX header (rank {rank})")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{str(p)!r} declares shape {dims} ({expected} bytes of data) but holds {len(data) - header} bytes; "
            "the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(root: Path, stem: str) -> Path | None:
    for folder in (root / "mnist", root):
        for name in (stem, f"{stem}.gz"):
            if (folder / name).is_file():
                return folder / name
    return None


class MNIST(TensorClassificationDataset):
    """The official MNIST ``split`` (``"train"``: 60,000 images, ``"test"``: 10,000) as ``uint8 [N, 1, 28, 28]``.

    Args:
        root: data root (``None``: ``$META_LEARNING_DATA``); the files are looked for in ``root/mnist`` then ``root``.
        split: ``"train"`` or ``"test"``.

    ``gather`` returns float32 images in [0, 1] (no mean/std normalisation, as in van de Ven & Tolias 2019).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, split: str = "train") -> None:
        self.split = check_choice("split", split, FILES)
        self.root = data_root(root)
        paths = [_find(self.root, stem) for stem in FILES[split]]
        missing = [stem for stem, p in zip(FILES[split], paths, strict=True) if p is None]
        if missing:
            extra = ""
            if split == "train":
                extra = "; with only the test set at hand, use source='test10k' (a split of the 10k test images)"
            raise FileNotFoundError(
                f"MNIST {split!r} needs {missing} (optionally .gz) in {str(self.root / 'mnist')!r} or "
                f"{str(self.root)!r}; {_HINT}{extra}"
            )
        images, labels = (read_idx(p) for p in paths if p is not None)
        if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"MNIST {split!r} files have shapes {images.shape} and {labels.shape}; expected [N,28,28]/[N]"
            )
        if labels.min() < 0 or labels.max() > 9:
            raise ValueError(f"MNIST {split!r} labels span {labels.min()}..{labels.max()}; expected 0..9")
        self.files = [str(p) for p in paths]
        super().__init__(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def load_mnist(
    root: str | os.PathLike[str] | None = None,
    *,
    source: str = "official",
    test_fraction: float = 0.2,
    split_seed: int = 0,
    pad_to: int | None = None,
) -> tuple[TensorClassificationDataset, TensorClassificationDataset]:
    """MNIST ``(train, test)`` from the official files, or from the 10k test set alone (``source="test10k"``).

    Args:
        root: data root.
        source: ``"official"`` (60k/10k files) or ``"test10k"`` (a stratified ``1 - test_fraction`` /
            ``test_fraction`` split of the official test set, fixed by ``split_seed``; see the module docstring).
        test_fraction, split_seed: the ``"test10k"`` split; ignored for ``"official"``.
        pad_to: zero-pad the 28x28 images symmetrically to ``pad_to x pad_to`` (32 for Permuted MNIST).
    """
    check_choice("source", source, SOURCES)
    train: TensorClassificationDataset
    test: TensorClassificationDataset
    if source == "official":
        train, test = MNIST(root, "train"), MNIST(root, "test")
    else:
        full = MNIST(root, "test")
        train_idx, test_idx = stratified_split(full.labels, test_fraction, split_seed)
        train, test = full.subset(train_idx), full.subset(test_idx)
    if pad_to is not None:
        train, test = _pad(train, pad_to), _pad(test, pad_to)
    return train, test


def _pad(ds: TensorClassificationDataset, size: int) -> TensorClassificationDataset:
    check_positive_int("pad_to", size)
    h = ds.x.shape[-1]
    if size < h or (size - h) % 2:
        raise ValueError(f"pad_to={size} but it must be >= {h} and differ from {h} by an even number")
    p = (size - h) // 2
    return TensorClassificationDataset(F.pad(ds.x, (p, p, p, p)), ds.labels)


def SplitMNIST(
    root: str | os.PathLike[str] | None = None,
    scenario: str = "class",
    *,
    source: str = "official",
    class_groups: Sequence[Sequence[int]] = SPLIT_MNIST_GROUPS,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> Stream:
    """Split MNIST: five experiences of two digits each, ``(0,1), (2,3), (4,5), (6,7), (8,9)`` by default.

    Task-IL: each experience is its own binary task (labels 0/1, one head each). Domain-IL: one binary head, the
    learner never knows which pair it sees (first vs second digit). Class-IL: one 10-way head.

    Example:
        >>> stream = SplitMNIST(scenario="class", source="test10k")  # doctest: +SKIP
        >>> len(stream), stream.num_classes, len(stream[0].train)   # doctest: +SKIP
        (5, 10, 1692)
    """
    train, test = load_mnist(root, source=source, test_fraction=test_fraction, split_seed=split_seed)
    return split_classes(train, test, class_groups, scenario, name="SplitMNIST")


def PermutedMNIST(
    root: str | os.PathLike[str] | None = None,
    n_experiences: int = 10,
    scenario: str = "domain",
    *,
    seed: int = 0,
    source: str = "official",
    pad_to: int = 32,
    first_unpermuted: bool = False,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> Stream:
    """Permuted MNIST: ``n_experiences`` fixed pixel permutations of MNIST, zero-padded to ``pad_to`` (32 as in
    van de Ven & Tolias 2019), 10 classes each; domain-IL by default.

    ``seed`` fixes the permutations; ``source``/``test_fraction``/``split_seed`` as in :func:`load_mnist`.
    """
    check_non_negative_int("seed", seed)
    train, test = load_mnist(root, source=source, test_fraction=test_fraction, split_seed=split_seed, pad_to=pad_to)
    return permuted(
        train, test, n_experiences, scenario, seed=seed, first_unpermuted=first_unpermuted, name="PermutedMNIST"
    )
