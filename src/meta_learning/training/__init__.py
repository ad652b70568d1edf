"""The shared episodic training loop and resumable checkpoints."""

from meta_learning.training.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from meta_learning.training.loop import EpisodicModel, History, StepOutput, autocast_dtype, fit

__all__ = [
    "EpisodicModel",
    "History",
    "StepOutput",
    "autocast_dtype",
    "fit",
    "load_checkpoint",
    "load_model_weights",
    "save_checkpoint",
]
