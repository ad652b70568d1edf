"""Random augmentation of training episodes.

A *batch transform* is a callable ``transform(x, generator) -> x'`` on a batch of images ``x`` of shape
``(B, C, H, W)`` that draws every random number from ``generator``. :class:`AugmentedSource` applies one to the
support and query images of each episode another source draws, from a generator of its own, so an augmented
training stream is as deterministic and as resumable (``state_dict``) as the source under it, and evaluation
episodes stay un-augmented.

Notation: ``B`` images, ``C`` channels, ``H x W`` pixels, ``s`` the largest shift in pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from meta_learning._checks import check_non_negative_int
from meta_learning.data.episode import Episode
from meta_learning.data.source import EpisodeSource

BatchTransform = Callable[[Tensor, torch.Generator], Tensor]


class RandomShift:
    """Translate each image by its own random whole-pixel offset ``(dy, dx)``, each uniform in ``[-s, s]``.

    Pixels shifted in from outside the image take ``fill`` (0: the background of Omniglot as this library loads
    it, ink 1 on 0). With ``s = 0`` images pass through unchanged. The output is a new contiguous tensor of the
    input's dtype; the input is not modified.

    Args:
        max_shift: ``s``, the largest shift in pixels along each axis (0 <= s < min(H, W) of the images).
        fill: value of the uncovered pixels.

    Example:
        >>> shift = RandomShift(2)
        >>> x2 = shift(x, torch.Generator().manual_seed(0))   # x: (B, C, H, W)
    """

    def __init__(self, max_shift: int, fill: float = 0.0) -> None:
        self.max_shift = check_non_negative_int("max_shift", max_shift)
        if not isinstance(fill, (int, float)) or isinstance(fill, bool):
            raise TypeError(f"fill must be a number, got {type(fill).__name__} ({fill!r})")
        self.fill = float(fill)

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift}, fill={self.fill:g})"

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"RandomShift expects images of shape (B, C, H, W), got {shape}")
        b, _, h, w = x.shape
        s = self.max_shift
        if s >= min(h, w):
            raise ValueError(f"max_shift={s} must be smaller than the images' height and width ({h} x {w})")
        if s == 0 or b == 0:
            return x.clone()
        offsets = torch.randint(0, 2 * s + 1, (2, b), generator=generator)  # top-left corner in the padded image
        return self.shift(x, offsets[0] - s, offsets[1] - s)

    def shift(self, x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
        """``x`` with image ``i`` moved down by ``dy[i]`` and right by ``dx[i]`` pixels (negative: up / left);
        ``|dy|, |dx| <= max_shift``."""
        b, _, h, w = x.shape
        s = self.max_shift
        padded = torch.nn.functional.pad(x, (s, s, s, s), value=self.fill)
        dev = x.device
        rows = (s - dy.to(dev))[:, None] + torch.arange(h, device=dev)  # output row r reads padded row r + s - dy
        cols = (s - dx.to(dev))[:, None] + torch.arange(w, device=dev)
        batch = torch.arange(b, device=dev)[:, None, None]
        picked = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        return picked.permute(0, 3, 1, 2).contiguous()


class AugmentedSource(EpisodeSource):
    """Episodes of ``source`` with ``transform`` applied to their support and query images.

    The episode itself (classes, examples, labels) is the one ``source`` would draw; the augmentation's random
    numbers come from this object's own generator (seeded with ``seed``), so the episode stream of the source is
    unchanged by augmenting it. :meth:`state_dict` holds both generators: a resumed run draws the same augmented
    episodes as an uninterrupted one. :meth:`evaluation_episodes` returns the source's fixed episodes,
    un-augmented (augmentation is for training).

    Args:
        source: any :class:`EpisodeSource` of image episodes (e.g. an :class:`EpisodeSampler`).
        transform: a batch transform ``(x, generator) -> x`` such as :class:`RandomShift`.
        seed: seed of the augmentation's generator.

    Example:
        >>> train = AugmentedSource(EpisodeSampler(data, 60, 1, 5, seed=0), RandomShift(2), seed=0)
    """

    def __init__(self, source: EpisodeSource, transform: BatchTransform, seed: int = 0) -> None:
        super().__init__(seed)
        if not callable(getattr(source, "sample", None)):
            raise TypeError(f"source must have a sample() method, got {type(source).__name__}")
        if not callable(transform):
            raise TypeError(f"transform must be callable as transform(x, generator), got {type(transform).__name__}")
        self.source = source
        self.transform = transform

    def __repr__(self) -> str:
        return f"AugmentedSource({self.source!r}, {self.transform!r})"

    def sample(self, generator: torch.Generator | None = None) -> Episode:
        """The source's next episode (drawn with ``generator`` if given), its images transformed with
        ``generator`` or this object's own generator."""
        episode = self.source.sample(generator)
        g = self.generator if generator is None else generator
        return replace(
            episode, support_x=self.transform(episode.support_x, g), query_x=self.transform(episode.query_x, g)
        )

    def evaluation_episodes(self, n: int, seed: int = 0) -> list[Episode]:
        """The source's fixed evaluation episodes, not augmented."""
        return self.source.evaluation_episodes(n, seed=seed)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"generator": self.generator.get_state()}
        if callable(getattr(self.source, "state_dict", None)):
            state["source"] = self.source.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        if "source" in state:
            self.source.load_state_dict(state["source"])
