"""A simple macro search space: depth, per-layer width, per-layer kernel size and activation of an MLP or a CNN.

Parameters: ``depth`` (int), ``width_{i}`` and, for a CNN, ``kernel_{i}`` for every layer ``i < max depth`` (each
active only when ``depth > i``), and ``activation``. The string form is ``mlp:64-128/relu`` or
``cnn:32k3-64k5/gelu``.

Networks: an MLP is ``Linear -> act`` per layer then a linear classifier on the flattened input; a CNN is
``Conv(k, same padding) -> BatchNorm -> act -> MaxPool 2x2`` per layer (pooling while the map is at least 2x2),
global average pooling and a linear classifier.

Example:
    >>> space = MacroSpace("cnn", input_shape=(1, 28, 28), num_classes=10)
    >>> arch = space.parse("cnn:32k3-64k5/relu")
    >>> space.build(arch)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from meta_learning._checks import check_choice, check_positive_int
from meta_learning.models.pooling import MaxPool2x2
from meta_learning.search.space import Categorical, Condition, Int, SearchSpace

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
KINDS = ("mlp", "cnn")


@dataclass(frozen=True)
class MacroArchitecture:
    """Layer widths (and kernel sizes for a CNN) and the activation."""

    kind: str
    widths: tuple[int, ...]
    kernels: tuple[int, ...]
    activation: str

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        check_choice("activation", self.activation, ACTIVATIONS)
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "kernels", tuple(self.kernels))
        if not self.widths:
            raise ValueError("widths is empty; an architecture needs at least one layer")
        for i, w in enumerate(self.widths):
            check_positive_int(f"widths[{i}]", w)
        expected = len(self.widths) if self.kind == "cnn" else 0
        if len(self.kernels) != expected:
            raise ValueError(f"a {self.kind} of depth {len(self.widths)} takes {expected} kernel sizes, "
                             f"got {list(self.kernels)}")  # fmt: skip
        for i, k in enumerate(self.kernels):
            if check_positive_int(f"kernels[{i}]", k) % 2 == 0:
                raise ValueError(f"kernels[{i}]={k} must be odd (same padding)")

    def __str__(self) -> str:
        if self.kind == "cnn":
            layers = "-".join(f"{w}k{k}" for w, k in zip(self.widths, self.kernels, strict=True))
        else:
            layers = "-".join(map(str, self.widths))
        return f"{self.kind}:{layers}/{self.activation}"

    @classmethod
    def from_string(cls, text: str) -> MacroArchitecture:
        m = re.fullmatch(r"(mlp|cnn):([0-9k\-]+)/(\w+)", text) if isinstance(text, str) else None
        if m is None:
            raise ValueError(f"{text!r} is not a macro architecture string such as 'mlp:64-128/relu' or "
                             "'cnn:32k3-64k5/gelu'")  # fmt: skip
        kind, layers, act = m[1], m[2].split("-"), m[3]
        pattern = r"(\d+)k(\d+)" if kind == "cnn" else r"(\d+)"
        parsed = [re.fullmatch(pattern, layer) for layer in layers]
        if any(p is None for p in parsed):
            raise ValueError(f"{text!r}: layers must read {'WkK' if kind == 'cnn' else 'W'} separated by '-'")
        widths = tuple(int(p[1]) for p in parsed if p is not None)
        kernels = tuple(int(p[2]) for p in parsed if p is not None) if kind == "cnn" else ()
        return cls(kind, widths, kernels, act)

    def to_json(self) -> dict[str, Any]:
        return {"space": "macro", "arch": str(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MacroArchitecture:
        if not isinstance(data, Mapping) or data.get("space") != "macro" or "arch" not in data:
            raise ValueError(f"{data!r} is not the JSON of a macro architecture")
        return cls.from_string(data["arch"])


class MacroNetwork(nn.Module):
    """The MLP or CNN of a :class:`MacroArchitecture`.

    Shapes: ``x [B, *input_shape] -> logits [B, num_classes]`` (``input_shape`` is ``(features,)`` for an MLP, which
    flattens any input, and ``(channels, H, W)`` for a CNN).
    """

    def __init__(self, arch: MacroArchitecture, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        act = ACTIVATIONS[arch.activation]
        layers: list[nn.Module] = []
        if arch.kind == "mlp":
            prev = 1
            for d in input_shape:
                prev *= d
            layers.append(nn.Flatten())
            for w in arch.widths:
                layers += [nn.Linear(prev, w), act()]
                prev = w
        else:
            prev, size = input_shape[0], min(input_shape[1:])
            for w, k in zip(arch.widths, arch.kernels, strict=True):
                layers += [nn.Conv2d(prev, w, k, padding=k // 2, bias=False), nn.BatchNorm2d(w), act()]
                if size >= 2:
                    layers.append(MaxPool2x2())  # nn.MaxPool2d(2), exactly, without its slow CPU kernel
                    size //= 2
                prev = w
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(prev, num_classes)
        self.arch = arch

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class MacroSpace:
    """Depth/width/kernel/activation choices for an MLP or a CNN.

    Args:
        kind: ``"mlp"`` or ``"cnn"``.
        input_shape: ``(features,)`` (MLP; any shape is flattened) or ``(channels, H, W)`` (CNN).
        num_classes: classifier outputs.
        depths: ``(min, max)`` number of layers.
        widths: allowed layer widths.
        kernels: allowed (odd) kernel sizes of a CNN.
        activations: allowed activations (``relu``, ``gelu``, ``silu``, ``tanh``).
    """

    def __init__(
        self,
        kind: str = "cnn",
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        depths: tuple[int, int] = (1, 4),
        widths: Sequence[int] = (16, 32, 64, 128),
        kernels: Sequence[int] = (3, 5, 7),
        activations: Sequence[str] = ("relu", "gelu", "silu"),
    ) -> None:
        self.kind = check_choice("kind", kind, KINDS)
        self.input_shape = tuple(check_positive_int(f"input_shape[{i}]", d) for i, d in enumerate(input_shape))
        if kind == "cnn" and len(self.input_shape) != 3:
            raise ValueError(f"input_shape={self.input_shape} but a CNN needs (channels, H, W)")
        self.num_classes = check_positive_int("num_classes", num_classes)
        if not (isinstance(depths, tuple) and len(depths) == 2 and 1 <= depths[0] <= depths[1]):
            raise ValueError(f"depths={depths!r} must be a (min, max) tuple with 1 <= min <= max")
        self.depths = (check_positive_int("depths[0]", depths[0]), check_positive_int("depths[1]", depths[1]))
        self.widths = tuple(check_positive_int(f"widths[{i}]", w) for i, w in enumerate(widths))
        self.kernels = tuple(check_positive_int(f"kernels[{i}]", k) for i, k in enumerate(kernels))
        if any(k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernels={list(self.kernels)} must all be odd (same padding)")
        self.activations = tuple(check_choice("activations entry", a, ACTIVATIONS) for a in activations)
        if not (self.widths and self.activations and (self.kernels or kind == "mlp")):
            raise ValueError("widths, activations (and kernels for a CNN) must be non-empty")
        lo, hi = self.depths
        params: dict[str, Any] = {"depth": Int(lo, hi) if hi > lo else Categorical((lo,))}
        for i in range(hi):
            cond = Condition("depth", tuple(range(max(i + 1, lo), hi + 1))) if i >= lo else None
            params[f"width_{i}"] = Categorical(self.widths, condition=cond)
            if kind == "cnn":
                params[f"kernel_{i}"] = Categorical(self.kernels, condition=cond)
        params["activation"] = Categorical(self.activations)
        self._space = SearchSpace(params)

    @property
    def search_space(self) -> SearchSpace:
        return self._space

    def from_params(self, params: Mapping[str, Any]) -> MacroArchitecture:
        self._space.validate_params(params)
        depth = params["depth"]
        widths = tuple(params[f"width_{i}"] for i in range(depth))
        kernels = tuple(params[f"kernel_{i}"] for i in range(depth)) if self.kind == "cnn" else ()
        return MacroArchitecture(self.kind, widths, kernels, params["activation"])

    def to_params(self, arch: MacroArchitecture) -> dict[str, Any]:
        arch = self._check(arch)
        params: dict[str, Any] = {"depth": len(arch.widths)}
        for i, w in enumerate(arch.widths):
            params[f"width_{i}"] = w
            if self.kind == "cnn":
                params[f"kernel_{i}"] = arch.kernels[i]
        params["activation"] = arch.activation
        self._space.validate_params(params)
        return params

    def to_string(self, arch: MacroArchitecture) -> str:
        return str(self._check(arch))

    def parse(self, text: str) -> MacroArchitecture:
        arch = MacroArchitecture.from_string(text)
        self.to_params(arch)  # validates against this space's choices
        return arch

    def build(self, arch: MacroArchitecture, **kwargs: Any) -> MacroNetwork:
        """The network of ``arch`` (``num_classes=`` may override the space's)."""
        unknown = set(kwargs) - {"num_classes"}
        if unknown:
            raise TypeError(f"unknown build arguments {sorted(unknown)}; allowed: ['num_classes']")
        return MacroNetwork(self._check(arch), self.input_shape, kwargs.get("num_classes", self.num_classes))

    def _check(self, arch: Any) -> MacroArchitecture:
        if not isinstance(arch, MacroArchitecture):
            raise TypeError(f"expected a MacroArchitecture, got {type(arch).__name__}")
        if arch.kind != self.kind:
            raise ValueError(f"{arch} is a {arch.kind} but this space searches {self.kind}s")
        return arch

    def __repr__(self) -> str:
        return f"MacroSpace(kind={self.kind!r}, depths={self.depths}, widths={list(self.widths)})"
