"""The Free Spoken Digit Dataset (FSDD; Jackson et al., github.com/Jakobovski/free-spoken-digit-dataset).

3,000 recordings of the digits 0-9 spoken in English by 6 speakers, 50 repetitions each: mono 16-bit PCM WAV at
8 kHz, named ``recordings/{digit}_{speaker}_{index}.wav``. Official split (the dataset's README): recordings with
index 0-4 are the test set (300 files), 5-49 the training set (2,700).

Read in place from ``recordings.zip`` (or an extracted ``recordings/`` folder) under ``root/fsdd``; the zip's
sha256 is checked when it matches the release this project uses.
"""

from __future__ import annotations

import io
import os
import re
import wave
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from meta_learning._checks import check_choice, check_positive_int
from meta_learning._io import data_root, sha256_file
from meta_learning.data.base import TensorLabelledDataset

SPLITS = ("train", "test", "all")
SAMPLE_RATE = 8000
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
ZIP_SHA256 = "3e005d7cc94bca864b1176c4e49038fccc5e3ded4ae1de12e07aca7c7937dbfa"
_NAME = re.compile(r"(?:^|/)([0-9])_([a-z]+)_([0-9]+)\.wav$")


def decode_wav(data: bytes, name: str = "<bytes>") -> tuple[np.ndarray, int]:
    """Mono 16-bit PCM WAV bytes -> (float32 samples in [-1, 1), sample rate)."""
    with wave.open(io.BytesIO(data)) as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(
                f"{name}: expected mono 16-bit PCM, got {w.getnchannels()} channel(s) of {8 * w.getsampwidth()} bits"
            )
        frames = w.readframes(w.getnframes())
        rate = w.getframerate()
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0, rate


def fit_length(waveform: Tensor, length: int) -> Tensor:
    """Zero-pad ``waveform [S]`` at the end, or keep its centre ``length`` samples, to exactly ``length`` samples."""
    n = waveform.shape[-1]
    if n >= length:
        start = (n - length) // 2
        return waveform[..., start : start + length]
    return torch.nn.functional.pad(waveform, (0, length - n))


class FreeSpokenDigits(TensorLabelledDataset):
    """FSDD as a labelled dataset of fixed-length waveforms.

    Args:
        root: data root (``None``: ``$META_LEARNING_DATA``); files are looked for in ``root/fsdd``.
        split: ``"train"`` (index 5-49), ``"test"`` (index 0-4) or ``"all"``.
        length: samples per example; shorter recordings are zero-padded at the end, longer ones centre-cropped
            (8,000 = 1 s keeps 99.3% of the recordings whole).
        speakers: keep only these speakers (default all six).

    Attributes:
        labels: ``[N]`` digits; ``speakers``: speaker name per example; ``lengths``: ``[N]`` original lengths;
        ``waveforms``: ``[N, length]`` float32.

    Example:
        >>> test = FreeSpokenDigits(split="test")
        >>> x, digit = test[0]          # x: [8000] float32 waveform at 8 kHz
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        length: int = SAMPLE_RATE,
        speakers: tuple[str, ...] | None = None,
    ) -> None:
        self.split = check_choice("split", split, SPLITS)
        self.length = check_positive_int("length", length)
        keep = SPEAKERS if speakers is None else tuple(speakers)
        for s in keep:
            check_choice("speakers", s, SPEAKERS)
        folder = data_root(root) / "fsdd"
        records = sorted(_read_recordings(folder), key=lambda r: (r[1], r[0], r[2]))
        rows = [r for r in records if r[1] in keep and _in_split(r[2], self.split)]
        if not rows:
            raise ValueError(f"no FSDD recordings match split={split!r} and speakers={keep}")
        self.labels = np.array([r[0] for r in rows], dtype=np.int64)
        self.speakers = [r[1] for r in rows]
        self.recording_index = np.array([r[2] for r in rows], dtype=np.int64)
        self.lengths = np.array([r[3].shape[0] for r in rows], dtype=np.int64)
        self.waveforms = torch.stack([fit_length(torch.from_numpy(r[3]), self.length) for r in rows])
        self.sample_rate = SAMPLE_RATE

    def gather(self, indices: Tensor) -> Tensor:
        return self.waveforms[indices]

    def __repr__(self) -> str:
        return f"FreeSpokenDigits(split={self.split!r}, n={len(self)}, length={self.length})"


def _in_split(index: int, split: str) -> bool:
    return split == "all" or (index < 5) == (split == "test")


def _read_recordings(folder: Path) -> list[tuple[int, str, int, np.ndarray]]:
    archive, extracted = folder / "recordings.zip", folder / "recordings"
    files: list[tuple[str, bytes]] = []
    if archive.is_file():
        digest = sha256_file(archive)
        if digest != ZIP_SHA256:
            raise ValueError(
                f"{archive} has sha256 {digest} but the FSDD release this loader knows has {ZIP_SHA256}; the file is "
                "corrupt or a different version (re-fetch it, or extract it to recordings/ to skip the check)"
            )
        with zipfile.ZipFile(archive) as z:
            files = [(n, z.read(n)) for n in z.namelist() if n.endswith(".wav")]
    elif extracted.is_dir():
        files = [(str(p), p.read_bytes()) for p in sorted(extracted.glob("*.wav"))]
    else:
        raise FileNotFoundError(
            f"FSDD not found: expected {archive} or {extracted}/; set META_LEARNING_DATA (or root=) to the folder "
            "that holds fsdd/"
        )
    out = []
    for name, data in files:
        m = _NAME.search(name)
        if m is None:
            continue
        samples, rate = decode_wav(data, name)
        if rate != SAMPLE_RATE:
            raise ValueError(f"{name} has sample rate {rate} Hz but FSDD recordings are {SAMPLE_RATE} Hz")
        out.append((int(m.group(1)), m.group(2), int(m.group(3)), samples))
    if not out:
        raise ValueError(f"no recordings named {{digit}}_{{speaker}}_{{index}}.wav found in {folder}")
    return out
