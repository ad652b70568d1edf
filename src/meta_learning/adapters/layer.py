"""The wrapper that carries named adapters on one module of a base model, and the shared pieces every type uses.

An adapter type wraps each targeted module ``m`` in an :class:`AdapterLayer` subclass whose ``base_layer`` is ``m``
itself (the same object, so removing the wrapper gives back the original module and its tensors untouched). The
wrapper keeps one entry per adapter name in each container listed in ``adapter_attrs`` (``nn.ModuleDict`` or
``nn.ParameterDict``), so several named adapters live side by side and one of them is active.

Forward rule, shared by every type: when no adapter is active, adapters are disabled or the active adapter has been
merged into the base tensors, the wrapper calls ``base_layer`` with the same arguments, so the output is the base
module's output bit for bit; otherwise it calls :meth:`AdapterLayer.adapted_forward`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}


def linear_parameters(
    in_features: int, out_features: int, generator: torch.Generator, **kw: Any
) -> tuple[nn.Parameter, nn.Parameter]:
    """Weight ``[out, in]`` and bias ``[out]`` initialised like ``nn.Linear``'s (Kaiming-uniform, uniform bias),
    drawn from ``generator``."""
    weight = torch.empty(out_features, in_features, **kw)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    bound = 1.0 / math.sqrt(in_features)
    bias = nn.init.uniform_(torch.empty(out_features, **kw), -bound, bound, generator=generator)
    return nn.Parameter(weight), nn.Parameter(bias)


def factory_kwargs(module: nn.Module) -> dict[str, Any]:
    """``device``/``dtype`` of ``module``'s first floating parameter, so new adapter tensors follow the model."""
    for p in module.parameters():
        if p.is_floating_point():
            return {"device": p.device, "dtype": p.dtype}
    return {}


def channel_dim(module: nn.Module) -> int:
    """The feature dimension of ``module``'s output: 1 for convolutions and channel norms, -1 otherwise."""
    channel_first = (
        nn.modules.conv._ConvNd,
        nn.modules.batchnorm._BatchNorm,
        nn.GroupNorm,
        nn.modules.instancenorm._InstanceNorm,
    )
    return 1 if isinstance(module, channel_first) else -1


def along(t: Tensor, vector: Tensor, dim: int) -> Tensor:
    """``vector`` (shape ``[C]``) shaped to broadcast against ``t`` along dimension ``dim`` (1 or -1)."""
    if dim == -1 or t.dim() <= 2:
        return vector
    return vector.view(-1, *([1] * (t.dim() - 2)))


class AdapterLayer(nn.Module):
    """One wrapped module of the base model with its named adapters.

    Subclasses set ``adapter_attrs`` (the per-name containers holding trainable tensors), optionally
    ``aux_attrs`` (per-name containers or plain dicts without trainable tensors, e.g. dropout modules or
    scalings), and implement :meth:`add` and :meth:`adapted_forward`; mergeable types implement
    :meth:`merge_tensors`.

    Attributes that the wrapper lacks are looked up on ``base_layer``, so code reading e.g. ``layer.weight`` or an
    attention module's ``num_heads`` keeps working.
    """

    adapter_attrs: ClassVar[tuple[str, ...]] = ()
    aux_attrs: ClassVar[tuple[str, ...]] = ()
    base_layer: Any  # the wrapped module; typed loosely because each subclass wraps a different kind

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.active: str | None = None
        self.disabled = False
        self.merged: str | None = None
        self._backup_names: list[str] = []
        self.train(base_layer.training)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_layer":
                raise
            if name == "_qkv_same_embed_dim":
                # nn.TransformerEncoderLayer/Encoder take a fused fast path (eval, no grad) that reads the attention's
                # tensors directly and would skip the adapter; this flag is the one they check that makes them decline
                return False
            return getattr(self.base_layer, name)

    # -- per-name bookkeeping ---------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """The adapter names this module carries, in insertion order."""
        if not self.adapter_attrs:
            return []
        return list(getattr(self, self.adapter_attrs[0]).keys())

    def add(self, name: str, config: Any, generator: torch.Generator) -> None:
        """Create adapter ``name``'s tensors (initialised from ``generator``) on this module."""
        raise NotImplementedError

    def remove_adapter(self, name: str) -> None:
        """Delete adapter ``name``'s tensors from this module."""
        for attr in (*self.adapter_attrs, *self.aux_attrs):
            container = getattr(self, attr)
            if name in container:
                del container[name]
        if self.active == name:
            self.active = None

    def adapter_tensors(self, name: str) -> dict[str, nn.Parameter]:
        """Adapter ``name``'s trainable tensors, keyed as PEFT saves them: the adapter-name segment removed."""
        out: dict[str, nn.Parameter] = {}
        for attr in self.adapter_attrs:
            container = getattr(self, attr)
            if name not in container:
                continue
            entry = container[name]
            if isinstance(entry, nn.Parameter):
                out[attr] = entry
            else:
                for sub, p in entry.named_parameters():
                    out[f"{attr}.{sub}"] = p
        return out

    # -- forward ----------------------------------------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.active is None or self.disabled or self.merged is not None:
            return self.base_layer(*args, **kwargs)
        return self.adapted_forward(self.active, *args, **kwargs)

    def adapted_forward(self, name: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    # -- merging ----------------------------------------------------------------------------------------------

    def merge_tensors(self, name: str) -> dict[str, Tensor]:
        """``{base tensor attribute path: merged value}`` for adapter ``name``; raises for non-mergeable types."""
        raise TypeError(f"{type(self).__name__} cannot be merged into the base weights")

    def merge(self, name: str) -> None:
        """Fold adapter ``name`` into the base tensors; the originals are kept to restore them exactly."""
        if self.merged is not None:
            raise ValueError(f"adapter {self.merged!r} is already merged into {type(self.base_layer).__name__}")
        new_values = self.merge_tensors(name)
        with torch.no_grad():
            for path, value in new_values.items():
                target = self.base_layer.get_parameter(path)
                key = "merge_backup_" + path.replace(".", "_")
                self.register_buffer(key, target.detach().clone(), persistent=False)
                self._backup_names.append(key)
                target.copy_(value)
        self.merged = name

    def unmerge(self) -> None:
        """Restore the base tensors saved by :meth:`merge`, bit for bit."""
        if self.merged is None:
            return
        new_values = self.merge_tensors(self.merged)
        with torch.no_grad():
            for path in new_values:
                key = "merge_backup_" + path.replace(".", "_")
                self.base_layer.get_parameter(path).copy_(getattr(self, key))
                delattr(self, key)
        self._backup_names = []
        self.merged = None

    def drop_backups(self) -> None:
        """Forget the pre-merge copies (the merged values become the base tensors for good)."""
        for key in self._backup_names:
            delattr(self, key)
        self._backup_names = []
        self.merged = None


class ModulesToSave(AdapterLayer):
    """A module trained in full for each adapter (e.g. a new classification head): one copy per adapter name.

    The original module is kept untouched and used when adapters are disabled or removed (as in PEFT's
    ``modules_to_save``); the active adapter's copy is trained and saved with its weights.
    """

    adapter_attrs = ("modules_to_save",)

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.modules_to_save = nn.ModuleDict()

    def add(self, name: str, config: Any, generator: torch.Generator) -> None:
        self.modules_to_save[name] = copy.deepcopy(self.base_layer)

    def adapter_tensors(self, name: str) -> dict[str, nn.Parameter]:
        if name not in self.modules_to_save:
            return {}
        return dict(self.modules_to_save[name].named_parameters())  # PEFT drops "modules_to_save.<name>."

    def adapted_forward(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.modules_to_save[name](*args, **kwargs)

    def merge_tensors(self, name: str) -> dict[str, Tensor]:
        return {}

    def merge(self, name: str) -> None:
        """Nothing to fold: the copy is used in place of the original (see :meth:`forward`)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.active is None or self.disabled:
            return self.base_layer(*args, **kwargs)
        return self.modules_to_save[self.active](*args, **kwargs)
