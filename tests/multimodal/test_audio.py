"""Audio features against closed forms: the HTK mel formula, numpy's FFT on hand-cut frames, scipy's DCT-II."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch

from meta_learning.multimodal.audio import (
    MFCC,
    AudioCNN,
    LogMelSpectrogram,
    dct_matrix,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
)


def test_mel_scale_is_htk():
    assert float(hz_to_mel(700.0)) == pytest.approx(2595 * math.log10(2))
    assert float(hz_to_mel(1000.0)) == pytest.approx(999.98, abs=0.01)
    f = torch.tensor([0.0, 123.0, 4000.0], dtype=torch.float64)
    torch.testing.assert_close(mel_to_hz(hz_to_mel(f)), f)


def test_filterbank_triangles_peak_at_their_centres():
    sr, n_fft, n_mels = 8000, 512, 10
    fb = mel_filterbank(n_fft // 2 + 1, n_mels, sr, f_min=0.0, f_max=4000.0).double()
    corners = mel_to_hz(torch.linspace(0.0, float(hz_to_mel(4000.0)), n_mels + 2, dtype=torch.float64))
    freqs = torch.linspace(0, sr / 2, n_fft // 2 + 1, dtype=torch.float64)
    for m in range(n_mels):
        left, centre, right = corners[m], corners[m + 1], corners[m + 2]
        expected = torch.clamp(torch.minimum((freqs - left) / (centre - left), (right - freqs) / (right - centre)), 0)
        torch.testing.assert_close(fb[:, m], expected, rtol=1e-6, atol=1e-6)
        # peak ~1 at the bin nearest the centre; zero outside [left, right]
        assert float(fb[:, m].max()) > 0.8 and float(fb[(freqs < left) | (freqs > right), m].abs().max()) == 0
    slaney = mel_filterbank(n_fft // 2 + 1, n_mels, sr, norm="slaney").double()
    torch.testing.assert_close(slaney, fb * (2 / (corners[2:] - corners[:-2])), rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="f_min < f_max"):
        mel_filterbank(129, 10, 8000, f_min=100, f_max=5000)


def test_power_spectrogram_equals_numpy_fft_of_hann_frames():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1000, generator=g)
    lm = LogMelSpectrogram(8000, n_fft=128, hop_length=40, n_mels=8)
    power = lm.power_spectrogram(x)[0].double().numpy()  # (F, T)
    padded = np.pad(x[0].double().numpy(), 64, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(128) / 128)  # periodic Hann
    frames = np.stack([padded[t * 40 : t * 40 + 128] * window for t in range(1 + 1000 // 40)], axis=1)
    expected = np.abs(np.fft.rfft(frames, axis=0)) ** 2
    np.testing.assert_allclose(power, expected, rtol=1e-4, atol=1e-3)
    mel = lm(x)[0].double()
    fb = lm.filterbank.double()
    torch.testing.assert_close(mel, torch.log(fb.t() @ torch.from_numpy(expected) + 1e-6), rtol=1e-4, atol=1e-4)


def test_a_pure_tone_lights_the_band_that_contains_it():
    t = torch.arange(8000) / 8000
    lm = LogMelSpectrogram(8000, n_fft=256, hop_length=80, n_mels=40)
    corners = mel_to_hz(torch.linspace(0.0, float(hz_to_mel(4000.0)), 42, dtype=torch.float64))
    for f in (300.0, 1000.0, 2500.0):
        band = int(lm(torch.sin(2 * math.pi * f * t)[None])[0, :, 50].argmax())
        assert abs(float(corners[band + 1]) - f) < float(corners[band + 2] - corners[band]) / 2


def test_mfcc_is_the_orthonormal_dct_ii_of_the_log_mel():
    torch.testing.assert_close(
        dct_matrix(20, 20).double(), torch.from_numpy(scipy.fft.dct(np.eye(20), type=2, norm="ortho", axis=0)).t()
    )
    x = torch.randn(2, 4000, generator=torch.Generator().manual_seed(1))
    mfcc = MFCC(8000, n_mfcc=13, n_fft=256, hop_length=80, n_mels=40)
    log_mel = mfcc.log_mel(x).double().numpy()
    expected = scipy.fft.dct(log_mel, type=2, norm="ortho", axis=1)[:, :13]
    np.testing.assert_allclose(mfcc(x).double().numpy(), expected, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="n_mfcc=50"):
        dct_matrix(40, 50)


def test_audio_cnn_shapes_frontend_and_errors():
    net = AudioCNN(40, out_features=16, channels=8)
    assert net(torch.randn(3, 40, 101)).shape == (3, 16)
    raw = AudioCNN(40, out_features=16, channels=8, frontend=LogMelSpectrogram(8000, n_mels=40))
    assert raw(torch.randn(3, 8000)).shape == (3, 16)
    with pytest.raises(ValueError, match=r"expects \[B, M, T\]"):
        net(torch.randn(3, 40))
