"""The shared episodic training loop and resumable checkpoints."""

from meta_learning.training.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from meta_learning.training.loop import EpisodicModel, History, StepOutput, autocast_dtype, fit
from meta_learning.training.memory import retain_cpu_memory

__all__ = [
    "EpisodicModel",
    "History",
    "StepOutput",
    "autocast_dtype",
    "fit",
    "load_checkpoint",
    "load_model_weights",
    "retain_cpu_memory",
    "save_checkpoint",
]
