"""Split Omniglot: one experience per alphabet (the characters of an alphabet are its classes).

Each character has 20 drawings; a stratified split fixed by ``split_seed`` keeps ``test_fraction`` of each
character's drawings for testing (default 25%: 15 training and 5 test drawings). Images come from
:class:`meta_learning.data.omniglot.Omniglot` (official background/evaluation sets, no rotations).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from meta_learning._checks import check_choice
from meta_learning.data.omniglot import OFFICIAL_SPLITS, Omniglot
from meta_learning.data.streams import Stream, TensorClassificationDataset, split_classes, stratified_split


def SplitOmniglot(
    root: str | os.PathLike[str] | None = None,
    scenario: str = "task",
    *,
    split: str = "background",
    alphabets: Sequence[str] | None = None,
    test_fraction: float = 0.25,
    split_seed: int = 0,
    image_size: int = 28,
    cache_dir: str | os.PathLike[str] | None = None,
    check_complete: bool = False,
) -> Stream:
    """Omniglot alphabets as a stream of experiences.

    Args:
        root, image_size, cache_dir, check_complete: as for :class:`~meta_learning.data.omniglot.Omniglot`.
        scenario: ``"task"`` (one head per alphabet, labels local to the alphabet; the usual setting),
            ``"domain"`` or ``"class"`` (one head over every character of the chosen alphabets).
        split: ``"background"`` (30 alphabets, 964 characters) or ``"evaluation"`` (20 alphabets, 659).
        alphabets: the alphabets in stream order (default: all of ``split``, sorted by name).
        test_fraction, split_seed: the per-character train/test split of the drawings.

    Example:
        >>> stream = SplitOmniglot(scenario="task", alphabets=["Latin", "Greek"])  # doctest: +SKIP
        >>> [e.classes[:2] for e in stream]                                         # doctest: +SKIP
    """
    check_choice("split", split, OFFICIAL_SPLITS)
    omni = Omniglot(
        root, split=split, image_size=image_size, rotations=(0,), cache_dir=cache_dir, check_complete=check_complete
    )
    by_alphabet: dict[str, list[int]] = {}
    for class_id, name in enumerate(omni.class_names):
        by_alphabet.setdefault(name.split("/", 1)[0], []).append(class_id)
    if alphabets is None:
        chosen = sorted(by_alphabet)
    else:
        if isinstance(alphabets, (str, bytes)) or not isinstance(alphabets, Sequence) or not alphabets:
            raise TypeError(f"alphabets must be a non-empty sequence of alphabet names, got {alphabets!r}")
        chosen = list(alphabets)
        unknown = [a for a in chosen if a not in by_alphabet]
        if unknown:
            raise ValueError(f"alphabets {unknown} are not in Omniglot {split!r}; available: {sorted(by_alphabet)}")
    x = omni.gather(torch.arange(len(omni))).mul_(255.0).round_().to(torch.uint8)
    full = TensorClassificationDataset(x, torch.from_numpy(omni.labels))
    keep = np.flatnonzero(np.isin(full.labels, [c for a in chosen for c in by_alphabet[a]]))
    train_idx, test_idx = stratified_split(full.labels[keep], test_fraction, split_seed)
    train, test = full.subset(keep[train_idx]), full.subset(keep[test_idx])
    return split_classes(train, test, [by_alphabet[a] for a in chosen], scenario, name="SplitOmniglot")
