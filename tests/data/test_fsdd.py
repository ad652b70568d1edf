"""FSDD loader on fake WAVs in the real layout, and on the real archive."""

from __future__ import annotations

import io
import wave
import zipfile

import numpy as np
import pytest
import torch

from meta_learning.data.fsdd import FreeSpokenDigits, decode_wav, fit_length


def wav_bytes(samples: np.ndarray, rate: int = 8000, channels: int = 1, width: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2" if width == 2 else "u1").tobytes())
    return buf.getvalue()


def write_fake(root, rate=8000):
    folder = root / "fsdd" / "recordings"
    folder.mkdir(parents=True)
    for digit in (3, 7):
        for speaker in ("theo", "lucas"):
            for index in (0, 4, 5, 49):
                n = 100 + 10 * index
                samples = np.full(n, 1000 * digit, dtype=np.int16)
                (folder / f"{digit}_{speaker}_{index}.wav").write_bytes(wav_bytes(samples, rate))
    (folder / "README.txt").write_text("not a recording")


def test_decode_wav_is_exact_and_rejects_other_formats():
    samples = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    out, rate = decode_wav(wav_bytes(samples))
    assert rate == 8000 and out.tolist() == [0.0, 0.5, -1.0, 32767 / 32768]
    with pytest.raises(ValueError, match="expected mono 16-bit PCM, got 2 channel"):
        decode_wav(wav_bytes(np.zeros(8, dtype=np.int16), channels=2))


def test_fit_length_pads_at_the_end_and_crops_the_centre():
    x = torch.arange(10.0)
    assert fit_length(x, 12).tolist() == [*range(10), 0, 0]
    assert fit_length(x, 4).tolist() == [3.0, 4.0, 5.0, 6.0]


def test_official_split_by_recording_index(tmp_path):
    write_fake(tmp_path)
    train = FreeSpokenDigits(tmp_path, "train", length=600)
    test = FreeSpokenDigits(tmp_path, "test", length=600)
    assert len(train) == len(test) == 8 and len(FreeSpokenDigits(tmp_path, "all", length=600)) == 16
    assert set(test.recording_index.tolist()) == {0, 4} and set(train.recording_index.tolist()) == {5, 49}
    assert sorted(set(train.labels.tolist())) == [3, 7] and set(train.speakers) == {"theo", "lucas"}
    x, y = test[0]
    assert x.shape == (600,) and float(x[0]) == pytest.approx(1000 * y / 32768)
    assert float(x[-1]) == 0.0  # zero-padded past the recording's 100 samples
    only_theo = FreeSpokenDigits(tmp_path, "train", length=600, speakers=("theo",))
    assert set(only_theo.speakers) == {"theo"} and len(only_theo) == 4


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="FSDD not found"):
        FreeSpokenDigits(tmp_path)
    with pytest.raises(ValueError, match="split='dev' is not supported"):
        FreeSpokenDigits(tmp_path, "dev")
    bad = tmp_path / "bad" / "fsdd"
    bad.mkdir(parents=True)
    with zipfile.ZipFile(bad / "recordings.zip", "w") as z:
        z.writestr("recordings/1_theo_0.wav", wav_bytes(np.zeros(8, dtype=np.int16)))
    with pytest.raises(ValueError, match="has sha256"):
        FreeSpokenDigits(tmp_path / "bad")
    write_fake(tmp_path / "rate", rate=16000)
    with pytest.raises(ValueError, match="sample rate 16000 Hz"):
        FreeSpokenDigits(tmp_path / "rate")


def test_real_fsdd(data_root):
    if not (data_root / "fsdd").is_dir():
        pytest.skip("fsdd not in the shared data")
    train, test = FreeSpokenDigits(data_root, "train"), FreeSpokenDigits(data_root, "test")
    assert (len(train), len(test)) == (2700, 300)
    assert np.bincount(test.labels).tolist() == [30] * 10 and len(set(train.speakers)) == 6
    assert train.waveforms.shape == (2700, 8000) and float(train.waveforms.abs().max()) <= 1.0
    assert (train.lengths > 8000).sum() <= 20  # the README's duration range: only a few exceed 1 s
