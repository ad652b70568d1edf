"""Episodic data: episodes, samplers and few-shot datasets.

Exports are lazy (PEP 562): learners import ``meta_learning.data.episode``, which runs this file, and must not pay
for PIL and the dataset modules they do not use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meta_learning._lazy import lazy_getattr

_EXPORTS: dict[str, str] = {
    "AugmentedSource": "augment",
    "RandomShift": "augment",
    "LabelledDataset": "base",
    "TensorLabelledDataset": "base",
    "download_url": "download",
    "extract_archive": "download",
    "Episode": "episode",
    "EpisodeBatch": "episode",
    "ImageFolderFewShot": "image_folder",
    "MiniImageNet": "image_folder",
    "Omniglot": "omniglot",
    "EpisodeSampler": "sampler",
    "EpisodeSource": "source",
    "Sinusoid": "sinusoid",
    "SinusoidParams": "sinusoid",
}

__all__ = [
    "AugmentedSource",
    "Episode",
    "EpisodeBatch",
    "EpisodeSampler",
    "EpisodeSource",
    "ImageFolderFewShot",
    "LabelledDataset",
    "MiniImageNet",
    "Omniglot",
    "RandomShift",
    "Sinusoid",
    "SinusoidParams",
    "TensorLabelledDataset",
    "download_url",
    "extract_archive",
]

if TYPE_CHECKING:
    from meta_learning.data.augment import AugmentedSource, RandomShift
    from meta_learning.data.base import LabelledDataset, TensorLabelledDataset
    from meta_learning.data.download import download_url, extract_archive
    from meta_learning.data.episode import Episode, EpisodeBatch
    from meta_learning.data.image_folder import ImageFolderFewShot, MiniImageNet
    from meta_learning.data.omniglot import Omniglot
    from meta_learning.data.sampler import EpisodeSampler
    from meta_learning.data.sinusoid import Sinusoid, SinusoidParams
    from meta_learning.data.source import EpisodeSource


__getattr__ = lazy_getattr("meta_learning.data", _EXPORTS, globals())
