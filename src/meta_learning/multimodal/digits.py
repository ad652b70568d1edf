"""A real three-modality task: spoken digits (FSDD audio) + handwritten digits (MNIST images) + text clues.

Each example is one FSDD recording of digit ``d`` paired with an MNIST image of the same digit and a short text
clue that is true of ``d``. Clues are deliberately partial so that text alone does not solve the task: with
probability ``p_exact`` the clue names the digit ("the digit seven"), otherwise it states a property ("an odd
number", "a number less than six", "a prime number", "a multiple of three", ...), so fusion has to combine
evidence. Audio comes from FSDD's official split (index 0-4 test, 5-49 train); images from the stratified
8,000/2,000 split of the MNIST 10k test set (:func:`meta_learning.data.mnist.load_mnist` with
``source="test10k"``; the 60k training images are not on this machine), so train and test pairs never share a
recording or an image.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from meta_learning._checks import check_choice, check_non_negative_int, check_positive_int
from meta_learning.data.fsdd import SAMPLE_RATE, FreeSpokenDigits
from meta_learning.data.mnist import load_mnist
from meta_learning.multimodal.audio import LogMelSpectrogram

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PRIMES = frozenset({2, 3, 5, 7})


def _property_clues(d: int) -> list[tuple[str, frozenset[int]]]:
    """Every property clue true of digit ``d``, with the set of digits it allows."""

    def digits_where(same: Callable[[int], object]) -> frozenset[int]:
        return frozenset(x for x in range(10) if same(x) == same(d))

    clues = [
        ("an even number" if d % 2 == 0 else "an odd number", digits_where(lambda x: x % 2)),
        ("a prime number" if d in PRIMES else "not a prime number", digits_where(lambda x: x in PRIMES)),
        ("a multiple of three" if d % 3 == 0 else "not a multiple of three", digits_where(lambda x: x % 3 == 0)),
    ]
    clues += [(f"a number less than {DIGIT_WORDS[k]}", frozenset(range(k))) for k in range(d + 1, 10)]
    clues += [(f"a number greater than {DIGIT_WORDS[k]}", frozenset(range(k + 1, 10))) for k in range(d)]
    return clues


def digit_clue(digit: int, generator: torch.Generator, p_exact: float = 0.2) -> tuple[str, frozenset[int]]:
    """A text clue true of ``digit`` and the set of digits consistent with it.

    With probability ``p_exact`` the clue names the digit; otherwise it is a uniformly chosen property clue.
    """
    if not 0 <= digit <= 9:
        raise ValueError(f"digit={digit} but it must be in 0..9")
    if not 0.0 <= p_exact <= 1.0:
        raise ValueError(f"p_exact={p_exact} but it must be in [0, 1]")
    if float(torch.rand((), generator=generator)) < p_exact:
        return f"the digit {DIGIT_WORDS[digit]}", frozenset({digit})
    clues = _property_clues(digit)
    return clues[int(torch.randint(len(clues), (1,), generator=generator))]


@dataclass(frozen=True)
class DigitTriples:
    """Paired examples (module docstring); row ``i`` of every field belongs to example ``i``.

    Attributes:
        audio: ``[N, M, T]`` log-mel spectrograms of the recordings.
        image: ``[N, 1, 28, 28]`` float images in [0, 1].
        text: the ``N`` clues.
        labels: ``[N]`` digits.
        speakers: speaker of each recording.
        candidates: per example, the digits consistent with its clue.
        image_index: ``[N]`` index of each image in its MNIST part (for provenance checks).
    """

    audio: Tensor
    image: Tensor
    text: tuple[str, ...]
    labels: Tensor
    speakers: tuple[str, ...]
    candidates: tuple[frozenset[int], ...]
    image_index: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: Tensor) -> DigitTriples:
        idx = index.tolist()
        return DigitTriples(
            self.audio[index],
            self.image[index],
            tuple(self.text[i] for i in idx),
            self.labels[index],
            tuple(self.speakers[i] for i in idx),
            tuple(self.candidates[i] for i in idx),
            self.image_index[index],
        )


def build_digit_triples(
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    pairs_per_recording: int = 1,
    seed: int = 0,
    p_exact: float = 0.2,
    n_mels: int = 40,
    digits: Sequence[int] | None = None,
) -> DigitTriples:
    """Pair every FSDD recording of ``split`` with ``pairs_per_recording`` MNIST images of its digit and clues.

    Args:
        root: data root holding ``fsdd/`` and ``mnist/``.
        split: ``"train"`` or ``"test"`` (FSDD's official split; MNIST's 8,000/2,000 split of its test set).
        pairs_per_recording: how many (image, clue) pairs each recording gets.
        seed: seeds the pairing and the clues.
        p_exact: probability that a clue names the digit.
        n_mels: mel bands of the audio features (1 s at 8 kHz, 32 ms windows, 10 ms hop: 101 frames).
        digits: keep only these digits (e.g. ``range(5)`` for few-shot meta-training).
    """
    check_choice("split", split, ("train", "test"))
    check_positive_int("pairs_per_recording", pairs_per_recording)
    check_non_negative_int("seed", seed)
    keep = sorted(set(range(10) if digits is None else digits))
    if not keep or keep[0] < 0 or keep[-1] > 9:
        raise ValueError(f"digits={digits} but they must be a non-empty subset of 0..9")
    speech = FreeSpokenDigits(root, split=split)
    mnist_train, mnist_test = load_mnist(root, source="test10k")
    mnist = mnist_train if split == "train" else mnist_test
    images, image_labels = mnist.x, torch.as_tensor(mnist.labels)
    g = torch.Generator().manual_seed(seed)
    features = LogMelSpectrogram(SAMPLE_RATE, n_fft=256, hop_length=80, n_mels=n_mels, f_min=20.0)
    with torch.no_grad():
        mel = features(speech.waveforms)  # (R, M, T)
    rec_labels = torch.as_tensor(speech.labels)
    rows, picks, texts, cands = [], [], [], []
    by_digit = {d: torch.nonzero(image_labels == d).flatten() for d in keep}
    for r in range(len(speech)):
        d = int(rec_labels[r])
        if d not in by_digit:
            continue
        pool = by_digit[d]
        for _ in range(pairs_per_recording):
            rows.append(r)
            picks.append(int(pool[int(torch.randint(len(pool), (1,), generator=g))]))
            text, cand = digit_clue(d, g, p_exact)
            texts.append(text)
            cands.append(cand)
    rows_t, picks_t = torch.tensor(rows), torch.tensor(picks)
    return DigitTriples(
        audio=mel[rows_t],
        image=images[picks_t].float() / 255.0,
        text=tuple(texts),
        labels=rec_labels[rows_t],
        speakers=tuple(speech.speakers[r] for r in rows),
        candidates=tuple(cands),
        image_index=picks_t,
    )


def embed_texts(texts: Sequence[str], encoder: Callable[[Sequence[str]], Tensor], batch_size: int = 64) -> Tensor:
    """``[N, D]`` embeddings of ``texts``, each distinct text encoded once (clues repeat a lot)."""
    distinct = list(dict.fromkeys(texts))
    with torch.no_grad():
        table = torch.cat([encoder(distinct[i : i + batch_size]) for i in range(0, len(distinct), batch_size)])
    index = {t: i for i, t in enumerate(distinct)}
    return table[torch.tensor([index[t] for t in texts])]
