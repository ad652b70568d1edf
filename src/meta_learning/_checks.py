"""Argument checks shared by every public boundary.

Each helper raises a ``ValueError``/``TypeError`` whose message names the argument, the value given and what
is allowed, so that callers never need a bare ``assert`` for user input.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an ``int`` > 0, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value <= 0:
        raise ValueError(f"{name}={value} but it must be a positive integer")
    return value


def check_non_negative_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an ``int`` >= 0, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < 0:
        raise ValueError(f"{name}={value} but it must be >= 0")
    return value


def check_positive_float(name: str, value: Any, *, finite: bool = False) -> float:
    """Return ``float(value)`` if it is a real number > 0 (and finite when ``finite``), else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    if finite and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value} but it must be a finite number > 0")
    if not value > 0:
        raise ValueError(f"{name}={value} but it must be > 0")
    return float(value)


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise listing the valid choices."""
    options = tuple(allowed)
    if value not in options:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, options))}")
    return str(value)


def check_finite_non_negative(name: str, value: Any) -> float:
    """Return ``float(value)`` if it is a finite real number >= 0, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}={value} but it must be a finite number >= 0")
    return float(value)


def check_path_component(name: str, value: Any) -> str:
    """Return ``value`` if it can name one file or folder inside another (no separator, ``..``, drive or NUL).

    For strings that become part of a write path, so that a value from a config cannot escape its base folder.
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} ({value!r})")
    bad = not value.strip() or value in (".", "..") or any(c in value for c in "/\\\0") or value[1:2] == ":"
    if bad:
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in value).strip("-.") or "experiment"
        raise ValueError(
            f"{name}={value!r} names a folder inside the run root, so it must be one path component without "
            f"'/', '\\', '..', a drive or NUL; use e.g. {safe!r}"
        )
    return value


def check_seed(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if ``torch.Generator.manual_seed`` takes it (``-2**63 <= seed < 2**64``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if not -(2**63) <= int(value) < 2**64:
        raise ValueError(f"{name}={value} is out of range; a seed must satisfy -2**63 <= {name} < 2**64")
    return int(value)


def check_tensors(**named: Any) -> None:
    """Raise a ``TypeError`` naming the first argument that is not a ``torch.Tensor`` and a ``ValueError`` naming the
    first floating-point one that holds NaN or infinite values."""
    from torch import Tensor, isfinite

    for name, value in named.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    for name, value in named.items():
        if value.is_floating_point() and not bool(isfinite(value).all()):
            raise ValueError(f"{name} holds NaN or infinite values; clean the inputs")
