"""Metric-based few-shot learners: Prototypical Networks and Relation Networks."""

from meta_learning.fewshot.base import EpisodicLearner, episode_batch_statistics
from meta_learning.fewshot.protonet import PrototypicalNetwork, class_prototypes
from meta_learning.fewshot.relation import RelationModule, RelationNetwork

__all__ = [
    "EpisodicLearner",
    "PrototypicalNetwork",
    "RelationModule",
    "RelationNetwork",
    "class_prototypes",
    "episode_batch_statistics",
]
