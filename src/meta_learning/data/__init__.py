"""Episodic data: episodes, samplers and few-shot datasets."""

from meta_learning.data.base import LabelledDataset, TensorLabelledDataset
from meta_learning.data.download import download_url, extract_archive
from meta_learning.data.episode import Episode, EpisodeBatch
from meta_learning.data.image_folder import ImageFolderFewShot, MiniImageNet
from meta_learning.data.omniglot import Omniglot
from meta_learning.data.sampler import EpisodeSampler
from meta_learning.data.sinusoid import Sinusoid, SinusoidParams
from meta_learning.data.source import EpisodeSource

__all__ = [
    "Episode",
    "EpisodeBatch",
    "EpisodeSampler",
    "EpisodeSource",
    "ImageFolderFewShot",
    "LabelledDataset",
    "MiniImageNet",
    "Omniglot",
    "Sinusoid",
    "SinusoidParams",
    "TensorLabelledDataset",
    "download_url",
    "extract_archive",
]
