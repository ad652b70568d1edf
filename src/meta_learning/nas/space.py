"""What an architecture search space is: a parameterisation for the search strategies plus a genotype type.

An :class:`ArchitectureSpace` exposes a :class:`~meta_learning.search.SearchSpace` (categorical/int parameters
that the ask/tell strategies of :mod:`meta_learning.search` explore and that an Optuna storage can hold) and maps
its configurations to architectures (genotypes: plain frozen data with a canonical ``str`` and a JSON form) and
back. ``build(arch)`` makes the ``nn.Module``.

:class:`ParamSpace` turns any ``SearchSpace`` or plain dict into an architecture space whose architectures are
the configuration dicts themselves, built by a user function (or scored by a user evaluator without building).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from meta_learning.search.space import SearchSpace


@runtime_checkable
class ArchitectureSpace(Protocol):
    """The seam between the NAS search loop and a concrete space."""

    @property
    def search_space(self) -> SearchSpace: ...

    def from_params(self, params: Mapping[str, Any]) -> Any:
        """The architecture of a configuration of :attr:`search_space`."""
        ...

    def to_params(self, arch: Any) -> dict[str, Any]:
        """The configuration of an architecture (inverse of :meth:`from_params`)."""
        ...

    def to_string(self, arch: Any) -> str:
        """The canonical string of an architecture."""
        ...

    def parse(self, text: str) -> Any:
        """The architecture whose canonical string is ``text``."""
        ...

    def build(self, arch: Any, **kwargs: Any) -> nn.Module: ...


def sample_architecture(space: ArchitectureSpace, generator: torch.Generator) -> Any:
    """A uniformly random architecture of ``space`` (uniform over its search-space parameters)."""
    return space.from_params(space.search_space.sample(generator))


def canonical_json(params: Mapping[str, Any]) -> str:
    """``params`` as compact JSON with sorted keys (a stable string key)."""
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"))


class ParamSpace:
    """A plain search space whose architectures are configuration dicts.

    Args:
        space: a :class:`SearchSpace` or a dict accepted by :meth:`SearchSpace.from_dict`.
        builder: ``params -> nn.Module`` for :meth:`build` (optional; an evaluator may score dicts directly).

    :meth:`to_string` is :func:`canonical_json`; :meth:`parse` reads it back.
    """

    def __init__(
        self, space: SearchSpace | Mapping[str, Any], builder: Callable[[dict[str, Any]], nn.Module] | None = None
    ) -> None:
        self._space = SearchSpace.from_dict(space)
        if builder is not None and not callable(builder):
            raise TypeError(f"builder must be a callable params -> nn.Module or None, got {builder!r}")
        self.builder = builder

    @property
    def search_space(self) -> SearchSpace:
        return self._space

    def from_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        self._space.validate_params(params)
        return dict(params)

    def to_params(self, arch: Any) -> dict[str, Any]:
        if not isinstance(arch, Mapping):
            raise TypeError(f"an architecture of this space is a parameter dict, got {type(arch).__name__}")
        return self.from_params(arch)

    def to_string(self, arch: Any) -> str:
        return canonical_json(self.to_params(arch))

    def parse(self, text: str) -> dict[str, Any]:
        try:
            params = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{text!r} is not the JSON of a configuration: {err}") from err
        if not isinstance(params, dict):
            raise ValueError(f"{text!r} is not the JSON of a configuration dict")
        return self.from_params(params)

    def build(self, arch: Any, **kwargs: Any) -> nn.Module:
        if self.builder is None:
            raise TypeError("this ParamSpace has no builder; pass builder=params -> nn.Module to build models")
        return self.builder(self.to_params(arch), **kwargs)

    def __repr__(self) -> str:
        return f"ParamSpace({list(self._space.params)})"
