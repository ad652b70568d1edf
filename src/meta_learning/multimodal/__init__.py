"""Multi-modal fusion: text, image and audio encoders fused into one embedding.

:class:`MultiModalAdapter` fuses any encoders by concatenation, cross-modal attention, a gated sum or FiLM, with
per-sample masks for missing modalities; its embeddings feed a classifier head or a few-shot learner such as
:class:`~meta_learning.fewshot.PrototypicalNetwork` (through a :class:`ModalityLayout` that packs the modalities of
an example into one row). :mod:`~meta_learning.multimodal.audio` has log-mel/MFCC features and a 1-D CNN, and
:mod:`~meta_learning.multimodal.digits` a real spoken + written + text digit task.
"""

from meta_learning.multimodal.adapter import (
    MODALITIES,
    ModalityLayout,
    MultiModalAdapter,
    drop_modalities,
    modality_dropout,
)
from meta_learning.multimodal.audio import MFCC, AudioCNN, LogMelSpectrogram, dct_matrix, mel_filterbank
from meta_learning.multimodal.encoders import ImageCNN
from meta_learning.multimodal.fusion import FUSION_METHODS

__all__ = [
    "FUSION_METHODS",
    "MFCC",
    "MODALITIES",
    "AudioCNN",
    "ImageCNN",
    "LogMelSpectrogram",
    "ModalityLayout",
    "MultiModalAdapter",
    "dct_matrix",
    "drop_modalities",
    "mel_filterbank",
    "modality_dropout",
]
