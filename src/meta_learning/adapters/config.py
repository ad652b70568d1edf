"""The configuration every adapter type extends, and the parameter-efficiency report.

Configs are frozen dataclasses that round-trip through JSON (``to_dict``/``from_dict``); each type adds its own
fields and validates them in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from meta_learning._checks import check_non_negative_int

C = TypeVar("C", bound="AdapterConfig")


def normalise_names(name: str, value: Any) -> str | tuple[str, ...] | None:
    """``None``, one string (a regex or ``"all-linear"``) or a sequence of names -> ``None | str | tuple``."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else list(value)
        if not all(isinstance(v, str) and v for v in items):
            raise TypeError(f"{name} must hold non-empty strings, got {items!r}")
        return tuple(items)
    raise TypeError(f"{name} must be None, a string or a list of strings, got {type(value).__name__} ({value!r})")


@dataclass(frozen=True)
class AdapterConfig:
    """Fields shared by every adapter type.

    Args:
        target_modules: which modules to adapt (see :mod:`meta_learning.adapters.targets`); ``None`` = the type's
            documented default.
        modules_to_save: names of extra modules trained in full and saved with the adapter, e.g. a new
            classification head (suffix-matched like ``target_modules``).
        seed: seeds the ``torch.Generator`` that initialises the adapter's tensors.
    """

    target_modules: str | tuple[str, ...] | None = None
    modules_to_save: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", normalise_names("target_modules", self.target_modules))
        saved = normalise_names("modules_to_save", self.modules_to_save)
        if isinstance(saved, str):
            saved = (saved,)
        object.__setattr__(self, "modules_to_save", saved or ())
        check_non_negative_int("seed", self.seed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples become lists)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Rebuild a config from :meth:`to_dict` output; unknown keys are an error."""
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; allowed fields are {sorted(allowed)}")
        return cls(**dict(data))

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ParameterEfficiency:
    """Trainable vs total parameters of an adapted model (PEFT's ``print_trainable_parameters`` convention).

    ``total`` counts every parameter of the model as it stands, adapters and copies of ``modules_to_save``
    included; ``base_total`` is the model without any adapter.
    """

    trainable: int
    total: int
    base_total: int

    @property
    def percent(self) -> float:
        """``100 * trainable / total``."""
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"trainable params: {self.trainable:,} || all params: {self.total:,} || trainable%: {self.percent:.4f}"
