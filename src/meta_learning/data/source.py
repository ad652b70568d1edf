"""The stream interface shared by every source of episodes (class samplers, task families such as Sinusoid)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from meta_learning._checks import check_positive_int, check_seed
from meta_learning.data.episode import Episode, EpisodeBatch


class EpisodeSource:
    """Base class: subclasses implement :meth:`sample`; seeding, fixed evaluation sets, batching and
    checkpointing of the stream are shared.

    Every draw uses ``self.generator`` (a private ``torch.Generator``) unless another generator is passed, so
    the global RNG is never touched and the stream can be saved and restored with :meth:`state_dict`.
    """

    generator: torch.Generator

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(check_seed("seed", seed))

    def sample(self, generator: torch.Generator | None = None) -> Episode:
        """Draw one episode with ``generator`` (default: the source's own, advancing its state)."""
        raise NotImplementedError

    def sample_batch(self, batch_size: int, generator: torch.Generator | None = None) -> EpisodeBatch:
        """Draw ``batch_size`` episodes stacked as an :class:`EpisodeBatch`."""
        check_positive_int("batch_size", batch_size)
        return EpisodeBatch.from_episodes([self.sample(generator) for _ in range(batch_size)])

    def __iter__(self) -> Iterator[Episode]:
        """Endless stream of episodes from the source's generator."""
        while True:
            yield self.sample()

    def episodes(self, n: int, seed: int | None = None) -> list[Episode]:
        """``n`` episodes; from a fresh generator seeded with ``seed`` if given, else the source's own."""
        check_positive_int("n", n)
        g = None if seed is None else torch.Generator().manual_seed(check_seed("seed", seed))
        return [self.sample(g) for _ in range(n)]

    def evaluation_episodes(self, n: int, seed: int = 0) -> list[Episode]:
        """A fixed set of ``n`` episodes, the same for the same source arguments, ``n`` and ``seed``.

        Uses its own generator, so calling it never changes the training stream.
        """
        return self.episodes(n, seed=seed)

    def state_dict(self) -> dict[str, Tensor]:
        """The generator state, so that a resumed run draws the episodes an uninterrupted one would."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])
