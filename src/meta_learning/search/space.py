"""Search spaces: typed parameters, conditions, and an encoding to the unit cube.

Every configuration maps to a row of ``D = space.dim`` numbers in ``[0, 1]``: a float or int parameter takes one
column (linear, or logarithmic with ``log=True``; an int ``v`` in ``[low, high]`` sits at the centre of its
``1 / (high - low + 1)`` bin so that rounding recovers it), a categorical parameter with ``c`` choices takes ``c``
one-hot columns. A conditional parameter that is inactive for a configuration (its parent does not hold one of
the required values) is encoded at the column midpoint, or as an all-zero one-hot block, so that every inactive
configuration looks the same to a kernel. Search strategies work in this cube; :meth:`SearchSpace.decode` maps
rows back (argmax for one-hot blocks, rounding for ints, clipping to the bounds).

Example:
    >>> space = SearchSpace.from_dict({"lr": (1e-4, 1e-1, "log"), "layers": (1, 4), "act": ["relu", "gelu"]})
    >>> x = space.encode([{"lr": 1e-3, "layers": 2, "act": "gelu"}])   # [1, 4]
    >>> space.decode(x)[0]["act"]
    'gelu'
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

Choice = None | bool | int | float | str  # what an Optuna storage can hold
_PRIMITIVES = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class Condition:
    """The parameter is active only when ``parent`` takes one of ``values``."""

    parent: str
    values: tuple[Choice, ...]

    def holds(self, params: Mapping[str, Any]) -> bool:
        return self.parent in params and params[self.parent] in self.values


def _as_condition(name: str, condition: Any) -> Condition | None:
    if condition is None or isinstance(condition, Condition):
        return condition
    if isinstance(condition, tuple) and len(condition) == 2 and isinstance(condition[0], str):
        parent, values = condition
        vals = tuple(values) if isinstance(values, (list, tuple, set, frozenset)) else (values,)
        if not vals:
            raise ValueError(f"condition of {name!r} lists no values for parent {parent!r}; give at least one")
        return Condition(parent, vals)
    raise TypeError(
        f"condition of {name!r} must be a Condition or a (parent_name, value_or_values) tuple, got {condition!r}"
    )


@dataclass(frozen=True)
class Float:
    """A real parameter in ``[low, high]``; ``log=True`` samples and models it on a log scale."""

    low: float
    high: float
    log: bool = False
    condition: Condition | None = None

    width = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "condition", _as_condition("Float", self.condition))

    def validate(self, name: str) -> None:
        _check_range(name, self.low, self.high, self.log)

    def encode(self, value: Any) -> list[float]:
        lo, hi = (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)
        v = math.log(value) if self.log else float(value)
        return [min(max((v - lo) / (hi - lo), 0.0), 1.0)]

    def decode(self, row: Sequence[float]) -> float:
        u = min(max(float(row[0]), 0.0), 1.0)
        if self.log:
            return float(min(max(math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))),
                                 self.low), self.high))  # fmt: skip
        return self.low + u * (self.high - self.low)

    def contains(self, value: Any) -> bool:
        return _is_number(value) and self.low <= value <= self.high


@dataclass(frozen=True)
class Int:
    """An integer parameter in ``[low, high]`` (both included); ``log=True`` for a log scale (``low >= 1``)."""

    low: int
    high: int
    log: bool = False
    condition: Condition | None = None

    width = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "condition", _as_condition("Int", self.condition))

    def validate(self, name: str) -> None:
        for which, v in (("low", self.low), ("high", self.high)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name}: {which}={v!r} must be an int for an Int parameter")
        _check_range(name, self.low, self.high, self.log)

    def _bounds(self) -> tuple[float, float]:
        # bin edges, so that each integer owns an equal share of [0, 1] on the chosen scale
        lo, hi = self.low - 0.5, self.high + 0.5
        return (math.log(lo), math.log(hi)) if self.log else (lo, hi)

    def encode(self, value: Any) -> list[float]:
        lo, hi = self._bounds()
        v = math.log(value) if self.log else float(value)
        return [min(max((v - lo) / (hi - lo), 0.0), 1.0)]

    def decode(self, row: Sequence[float]) -> int:
        lo, hi = self._bounds()
        v = lo + min(max(float(row[0]), 0.0), 1.0) * (hi - lo)
        return int(min(max(round(math.exp(v) if self.log else v), self.low), self.high))

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def snap(self, u: Tensor, shift: int = 0) -> Tensor:
        """Encoded column ``u [n]`` -> the encoding of its integer (moved by ``shift`` steps, clipped)."""
        lo, hi = self._bounds()
        v = lo + u.clamp(0.0, 1.0) * (hi - lo)
        k = (v.exp() if self.log else v).round() + shift
        k = k.clamp(self.low, self.high)
        return ((k.log() if self.log else k) - lo) / (hi - lo)


@dataclass(frozen=True)
class Categorical:
    """One of ``choices`` (None, bool, int, float or str, so that any Optuna storage can hold them)."""

    choices: tuple[Choice, ...]
    condition: Condition | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices))
        object.__setattr__(self, "condition", _as_condition("Categorical", self.condition))

    @property
    def width(self) -> int:
        return len(self.choices)

    def validate(self, name: str) -> None:
        if not self.choices:
            raise ValueError(f"{name}: choices is empty; a categorical parameter needs at least one choice")
        for c in self.choices:
            if not isinstance(c, _PRIMITIVES):
                raise TypeError(
                    f"{name}: choice {c!r} of type {type(c).__name__} is not storable; use None, bool, int, float "
                    "or str (map richer objects by name in the objective)"
                )
        if len({(type(c), c) for c in self.choices}) != len(self.choices):
            raise ValueError(f"{name}: choices {list(self.choices)!r} contain duplicates")

    def index(self, value: Any) -> int:
        for i, c in enumerate(self.choices):
            if type(c) is type(value) and c == value:
                return i
        raise ValueError(f"value {value!r} is not one of the choices {list(self.choices)!r}")

    def encode(self, value: Any) -> list[float]:
        out = [0.0] * len(self.choices)
        out[self.index(value)] = 1.0
        return out

    def decode(self, row: Sequence[float]) -> Choice:
        best = max(range(len(self.choices)), key=lambda i: float(row[i]))
        return self.choices[best]

    def contains(self, value: Any) -> bool:
        return any(type(c) is type(value) and c == value for c in self.choices)


Param = Float | Int | Categorical


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_range(name: str, low: Any, high: Any, log: bool) -> None:
    if not (_is_number(low) and _is_number(high)):
        raise TypeError(f"{name}: low={low!r} and high={high!r} must be finite numbers")
    if not low < high:
        raise ValueError(f"{name}: low={low} must be < high={high}")
    if log and low <= 0:
        raise ValueError(f"{name}: low={low} but a log-scaled parameter needs low > 0")


@dataclass(frozen=True)
class SearchSpace:
    """An ordered mapping ``name -> Float | Int | Categorical``; a parameter's condition names an earlier one.

    Args:
        params: the parameters, in the order they are decided (a parent before the parameters it conditions).

    Example:
        >>> space = SearchSpace({
        ...     "optimizer": Categorical(("adam", "sgd")),
        ...     "lr": Float(1e-5, 1e-1, log=True),
        ...     "momentum": Float(0.0, 0.99, condition=Condition("optimizer", ("sgd",))),
        ... })
    """

    params: Mapping[str, Param]
    _columns: dict[str, slice] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.params, Mapping) or not self.params:
            raise ValueError(f"params must be a non-empty mapping name -> parameter, got {self.params!r}")
        seen: list[str] = []
        columns: dict[str, slice] = {}
        start = 0
        for name, p in self.params.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"parameter names must be non-empty strings, got {name!r}")
            if not isinstance(p, (Float, Int, Categorical)):
                raise TypeError(f"parameter {name!r} must be Float, Int or Categorical, got {type(p).__name__}")
            p.validate(name)
            if p.condition is not None:
                if p.condition.parent not in seen:
                    raise ValueError(
                        f"parameter {name!r} is conditioned on {p.condition.parent!r}, which is not defined before "
                        f"it; define parents first (defined so far: {seen})"
                    )
                parent = self.params[p.condition.parent]
                bad = [v for v in p.condition.values if not parent.contains(v)]
                if bad:
                    raise ValueError(f"condition of {name!r}: values {bad!r} are not in the range of parent "
                                     f"{p.condition.parent!r} ({parent})")  # fmt: skip
            columns[name] = slice(start, start + p.width)
            start += p.width
            seen.append(name)
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "_columns", columns)

    @classmethod
    def from_dict(cls, spec: SearchSpace | Mapping[str, Any]) -> SearchSpace:
        """Build from plain values: ``(low, high)`` a float range (an int range if both are ints),
        ``(low, high, 'log')`` a log range, a list a categorical, or a parameter object as is."""
        if isinstance(spec, SearchSpace):
            return spec
        if not isinstance(spec, Mapping):
            raise TypeError(f"search_space must be a SearchSpace or a dict, got {type(spec).__name__}")
        params: dict[str, Param] = {}
        for name, v in spec.items():
            params[name] = _param_from_value(name, v)
        return cls(params)

    # ----------------------------------------------------------------------------------------------- structure
    def __iter__(self) -> Iterator[str]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    @property
    def dim(self) -> int:
        """Number of encoded columns ``D``."""
        return sum(p.width for p in self.params.values())

    def columns(self, name: str) -> slice:
        return self._columns[name]

    @property
    def continuous_columns(self) -> list[int]:
        """Columns of float and int parameters (optimised by gradient, ints rounded on decoding)."""
        return [self._columns[n].start for n, p in self.params.items() if not isinstance(p, Categorical)]

    @property
    def float_columns(self) -> list[int]:
        """Columns of float parameters (optimised by gradient)."""
        return [self._columns[n].start for n, p in self.params.items() if isinstance(p, Float)]

    @property
    def int_columns(self) -> list[tuple[int, Int]]:
        """``(column, parameter)`` of each int parameter (searched over neighbouring integers)."""
        return [(self._columns[n].start, p) for n, p in self.params.items() if isinstance(p, Int)]

    @property
    def categorical_groups(self) -> list[list[int]]:
        """Column indices of each categorical parameter's one-hot block."""
        cols = self._columns
        return [list(range(cols[n].start, cols[n].stop)) for n, p in self.params.items() if isinstance(p, Categorical)]

    @property
    def has_conditions(self) -> bool:
        return any(p.condition is not None for p in self.params.values())

    def active(self, name: str, params: Mapping[str, Any]) -> bool:
        cond = self.params[name].condition
        return cond is None or (self.active(cond.parent, params) and cond.holds(params))

    # ------------------------------------------------------------------------------------------------ encoding
    def validate_params(self, params: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` unless ``params`` holds exactly the active parameters, each within range."""
        for name, p in self.params.items():
            if self.active(name, params):
                if name not in params:
                    raise ValueError(f"configuration lacks active parameter {name!r}: {dict(params)!r}")
                if not p.contains(params[name]):
                    raise ValueError(f"parameter {name!r}={params[name]!r} is outside {p}")
            elif name in params:
                raise ValueError(f"parameter {name!r} is inactive for {dict(params)!r} (condition {p.condition})")
        extra = set(params) - set(self.params)
        if extra:
            raise ValueError(f"unknown parameters {sorted(extra)}; the space has {list(self.params)}")

    def encode(self, configs: Sequence[Mapping[str, Any]]) -> Tensor:
        """Encode configurations: ``[n] dicts -> [n, D]`` float64 in ``[0, 1]``.

        Missing or inactive parameters take the inactive encoding (midpoint / all-zero one-hot).
        """
        rows = []
        for cfg in configs:
            row: list[float] = []
            for name, p in self.params.items():
                if self.active(name, cfg) and name in cfg:
                    row.extend(p.encode(cfg[name]))
                else:
                    row.extend([0.0] * p.width if isinstance(p, Categorical) else [0.5])
            rows.append(row)
        return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), self.dim)

    def decode(self, x: Tensor) -> list[dict[str, Any]]:
        """Decode ``[n, D]`` rows to configurations holding only the active parameters."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x has shape {tuple(x.shape)} but this space encodes to [n, {self.dim}]")
        out = []
        for row in x.detach().to(torch.float64).tolist():
            cfg: dict[str, Any] = {}
            for name, p in self.params.items():
                if self.active(name, cfg):
                    cfg[name] = p.decode(row[self._columns[name]])
            out.append(cfg)
        return out

    def canonical(self, x: Tensor) -> Tensor:
        """``encode(decode(x))``: rounds ints and categoricals and resets inactive columns."""
        return self.encode(self.decode(x)).to(x)

    def snap(self, x: Tensor) -> Tensor:
        """Move ``[n, D]`` rows onto valid configurations: :meth:`canonical` when there are conditions, else the
        same result vectorised (ints rounded; one-hot blocks are assumed to be one-hot already)."""
        if self.has_conditions:
            return self.canonical(x)
        out = x.clone()
        for col, p in self.int_columns:
            out[:, col] = p.snap(x[:, col])
        return out

    @property
    def num_configurations(self) -> int | None:
        """How many configurations the space holds (an upper bound when there are conditions); None when it has a
        float parameter."""
        if self.float_columns:
            return None
        return math.prod(p.width if isinstance(p, Categorical) else p.high - p.low + 1
                         for p in self.params.values() if isinstance(p, (Categorical, Int)))  # fmt: skip

    def enumerate_encoded(self) -> Tensor:
        """Every configuration of a space without float parameters, encoded ``[N, D]`` (each once, inactive columns
        reset). Check :attr:`num_configurations` first: the result holds that many rows (fewer with conditions)."""
        if self.num_configurations is None:
            raise ValueError("enumerate_encoded needs a space without float parameters; this one has "
                             f"{[n for n, p in self.params.items() if isinstance(p, Float)]}")  # fmt: skip
        options = []  # per parameter: its values' encodings [k, width]
        for p in self.params.values():
            if isinstance(p, Categorical):
                options.append(torch.eye(p.width, dtype=torch.float64))
            elif isinstance(p, Int):
                options.append(torch.tensor([p.encode(v) for v in range(p.low, p.high + 1)], dtype=torch.float64))
        index = torch.cartesian_prod(*[torch.arange(o.shape[0]) for o in options]).reshape(-1, len(options))
        x = torch.cat([o[index[:, i]] for i, o in enumerate(options)], dim=1)
        return torch.unique(self.canonical(x), dim=0) if self.has_conditions else x

    def sample_encoded(self, n: int, generator: torch.Generator) -> Tensor:
        """``[n, D]`` uniform draws: floats and ints uniform on their scale, each categorical's choice uniform.

        Inactive columns are not reset; call :meth:`canonical` for that.
        """
        x = torch.rand(n, self.dim, generator=generator, dtype=torch.float64)
        for group in self.categorical_groups:
            pick = torch.randint(len(group), (n,), generator=generator)
            block = torch.zeros(n, len(group), dtype=torch.float64)
            block[torch.arange(n), pick] = 1.0
            x[:, group] = block
        return x

    def sample(self, generator: torch.Generator) -> dict[str, Any]:
        """One uniformly random configuration."""
        return self.decode(self.sample_encoded(1, generator))[0]


def _param_from_value(name: str, v: Any) -> Param:
    if isinstance(v, (Float, Int, Categorical)):
        return v
    if isinstance(v, list):
        return Categorical(tuple(v))
    if isinstance(v, tuple) and len(v) in (2, 3):
        low, high = v[0], v[1]
        if not all(isinstance(b, numbers.Real) and not isinstance(b, bool) for b in (low, high)):
            raise TypeError(
                f"search_space[{name!r}]={v!r}: a tuple is a range (low, high) or (low, high, 'log') and needs numbers "
                f"for low and high; for a categorical parameter give a list, e.g. {list(v)!r}"
            )
        log = False
        if len(v) == 3:
            if v[2] != "log":
                raise ValueError(f"search_space[{name!r}]={v!r}: the third element must be 'log', got {v[2]!r}")
            log = True
        if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool) and not isinstance(high, bool):
            return Int(low, high, log=log)
        return Float(float(low), float(high), log=log)
    raise TypeError(
        f"search_space[{name!r}]={v!r} is not understood; use (low, high) for a range, (low, high, 'log') for a log "
        "range, a list for a categorical, or a Float/Int/Categorical"
    )
