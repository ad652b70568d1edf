"""Episodic data: episodes, samplers and few-shot datasets."""

from meta_learning.data.base import LabelledDataset, TensorLabelledDataset
from meta_learning.data.episode import Episode, EpisodeBatch
from meta_learning.data.sampler import EpisodeSampler

__all__ = ["Episode", "EpisodeBatch", "EpisodeSampler", "LabelledDataset", "TensorLabelledDataset"]
