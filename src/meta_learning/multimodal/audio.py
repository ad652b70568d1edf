"""Audio features and encoder in plain torch: STFT power -> mel filterbank -> log (-> DCT for MFCCs), and a 1-D CNN.

Notation: ``S`` samples, ``sr`` the sample rate, ``F = n_fft // 2 + 1`` frequency bins, ``T = 1 + S // hop`` frames
(``center=True``), ``M`` mel bands, ``C`` cepstral coefficients.

- Mel scale (HTK; O'Shaughnessy 1987): ``mel(f) = 2595 log10(1 + f / 700)``.
- Filterbank: ``M`` triangles whose corners are ``M + 2`` points equally spaced on the mel scale between ``f_min``
  and ``f_max``; triangle ``m`` rises from corner ``m`` to 1 at corner ``m + 1`` and falls to 0 at corner ``m + 2``
  (on the linear frequency axis). ``norm="slaney"`` divides each triangle by half its width in Hz (equal area).
- Log-mel: ``log(fb^T |STFT(x)|^2 + eps)`` with a periodic Hann window.
- MFCC: the orthonormal DCT-II of the log-mel over the band axis, first ``C`` coefficients:
  ``c_k = s_k sum_m log_mel_m cos(pi k (m + 1/2) / M)``, ``s_0 = sqrt(1/M)``, ``s_k = sqrt(2/M)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from meta_learning._checks import check_choice, check_positive_float, check_positive_int


def hz_to_mel(f: Tensor | float) -> Tensor:
    """HTK mel of frequencies ``f`` in Hz."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: Tensor | float) -> Tensor:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_freqs: int,
    n_mels: int,
    sample_rate: float,
    f_min: float = 0.0,
    f_max: float | None = None,
    norm: str | None = None,
) -> Tensor:
    """Triangular mel filters ``[n_freqs, n_mels]`` for an rfft of ``n_freqs`` bins (module notations)."""
    check_positive_int("n_freqs", n_freqs)
    check_positive_int("n_mels", n_mels)
    check_positive_float("sample_rate", sample_rate)
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}")
    if norm is not None:
        check_choice("norm", norm, ("slaney",))
    freqs = torch.linspace(0.0, sample_rate / 2, n_freqs, dtype=torch.float64)  # (F,)
    corners = mel_to_hz(
        torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64)
    )  # (M + 2,)
    widths = corners[1:] - corners[:-1]  # (M + 1,)
    offsets = corners.unsqueeze(0) - freqs.unsqueeze(1)  # (F, M + 2): corner - f
    rising = -offsets[:, :-2] / widths[:-1]  # (f - left) / (centre - left)
    falling = offsets[:, 2:] / widths[1:]  # (right - f) / (right - centre)
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (corners[2:] - corners[:-2])).unsqueeze(0)
    return fb.to(torch.float32)


def dct_matrix(n_mels: int, n_mfcc: int) -> Tensor:
    """Orthonormal DCT-II as a ``[n_mels, n_mfcc]`` matrix: ``log_mel [.., M] @ D`` gives the first ``C`` MFCCs."""
    check_positive_int("n_mels", n_mels)
    if not 0 < n_mfcc <= n_mels:
        raise ValueError(f"n_mfcc={n_mfcc} but it must be in 1..n_mels={n_mels}")
    m = torch.arange(n_mels, dtype=torch.float64).unsqueeze(1)
    k = torch.arange(n_mfcc, dtype=torch.float64).unsqueeze(0)
    d = torch.cos(math.pi / n_mels * (m + 0.5) * k) * math.sqrt(2.0 / n_mels)
    d[:, 0] = 1.0 / math.sqrt(n_mels)
    return d.to(torch.float32)


class LogMelSpectrogram(nn.Module):
    """Waveforms ``[B, S]`` -> log-mel spectrograms ``[B, M, T]`` (module notations).

    Args:
        sample_rate: Hz (8,000 for FSDD).
        n_fft: FFT size (window length); hop_length: frame step in samples.
        n_mels: mel bands; f_min, f_max: band range in Hz (``f_max`` defaults to ``sample_rate / 2``).
        norm: ``None`` (peak 1) or ``"slaney"`` (equal-area triangles).
        eps: added before the log.

    Example:
        >>> LogMelSpectrogram(8000, n_fft=256, hop_length=80, n_mels=40)(torch.zeros(2, 8000)).shape
        torch.Size([2, 40, 101])
    """

    window: Tensor
    filterbank: Tensor

    def __init__(
        self,
        sample_rate: float,
        n_fft: int = 256,
        hop_length: int = 80,
        n_mels: int = 40,
        f_min: float = 0.0,
        f_max: float | None = None,
        norm: str | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.n_fft = check_positive_int("n_fft", n_fft)
        self.hop_length = check_positive_int("hop_length", hop_length)
        self.eps = check_positive_float("eps", eps)
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)
        self.register_buffer(
            "filterbank", mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max, norm), persistent=False
        )
        self.n_mels = n_mels

    def power_spectrogram(self, waveform: Tensor) -> Tensor:
        """``|STFT|^2`` ``[B, F, T]`` (centred frames, reflect padding)."""
        if waveform.dim() != 2:
            raise ValueError(f"waveform must be [B, S], got shape {tuple(waveform.shape)}")
        spec = torch.stft(
            waveform,
            self.n_fft,
            self.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        return spec.abs().pow(2)

    def forward(self, waveform: Tensor) -> Tensor:
        power = self.power_spectrogram(waveform)  # (B, F, T)
        mel = torch.einsum("bft,fm->bmt", power, self.filterbank)  # (B, M, T)
        return torch.log(mel + self.eps)


class MFCC(nn.Module):
    """Waveforms ``[B, S]`` -> MFCCs ``[B, C, T]``: the DCT-II (orthonormal) of a :class:`LogMelSpectrogram`."""

    dct: Tensor

    def __init__(self, sample_rate: float, n_mfcc: int = 13, **log_mel_kwargs: float | int | str | None) -> None:
        super().__init__()
        self.log_mel = LogMelSpectrogram(sample_rate, **log_mel_kwargs)  # type: ignore[arg-type]
        self.register_buffer("dct", dct_matrix(self.log_mel.n_mels, n_mfcc), persistent=False)

    def forward(self, waveform: Tensor) -> Tensor:
        return torch.einsum("bmt,mc->bct", self.log_mel(waveform), self.dct)


class AudioCNN(nn.Module):
    """A 1-D CNN over time on spectrogram-like features ``[B, M, T]`` (or waveforms with a ``frontend``).

    Input BatchNorm over the ``M`` bands, then ``blocks`` x (Conv1d k=5 -> BatchNorm -> ReLU -> MaxPool 2), then the
    mean and max over time, concatenated, and a linear map to ``out_features``.

    Args:
        in_channels: ``M`` (bands or coefficients).
        out_features: embedding width.
        channels: filters per block.
        blocks: number of conv blocks.
        frontend: optional module applied first (e.g. :class:`LogMelSpectrogram` to take raw waveforms).

    Example:
        >>> AudioCNN(40, out_features=64)(torch.zeros(8, 40, 101)).shape
        torch.Size([8, 64])
    """

    def __init__(
        self,
        in_channels: int,
        out_features: int = 64,
        channels: int = 64,
        blocks: int = 3,
        frontend: nn.Module | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        self.out_features = check_positive_int("out_features", out_features)
        check_positive_int("channels", channels)
        check_positive_int("blocks", blocks)
        self.frontend = frontend
        layers: list[nn.Module] = [nn.BatchNorm1d(in_channels)]
        width = in_channels
        for _ in range(blocks):
            layers += [nn.Conv1d(width, channels, 5, padding=2), nn.BatchNorm1d(channels), nn.ReLU(), nn.MaxPool1d(2)]
            width = channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * channels, out_features)

    def forward(self, x: Tensor) -> Tensor:
        if self.frontend is not None:
            x = self.frontend(x)
        if x.dim() != 3:
            raise ValueError(f"AudioCNN expects [B, M, T] features, got shape {tuple(x.shape)}")
        h = self.features(x)  # (B, C, T')
        return self.head(torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=1))
