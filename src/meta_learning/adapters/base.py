"""The adapter protocol shared by every type: named adapters on one model, enable/disable, merge, save/load.

An :class:`Adapter` is an ``nn.Module`` that owns the base model (``adapter.model``) and changes it in place: each
targeted module is replaced by an :class:`~meta_learning.adapters.layer.AdapterLayer` wrapping it. ``adapter(x)``
is ``adapter.model(x)``, so the adapter object can be trained, passed to :class:`meta_learning.maml.MAML` or used
wherever the model was.

Invariants (tested for every type):

- identity-initialised types (LoRA, IA3, BitFit, bottleneck, Compacter) leave the outputs unchanged after
  :meth:`Adapter.add_adapter`;
- :meth:`Adapter.disable` gives the base model's outputs bit for bit;
- :meth:`Adapter.merge` (mergeable types) gives the unmerged outputs up to rounding, :meth:`Adapter.unmerge` restores
  the base tensors bit for bit;
- after :meth:`Adapter.remove` the model's modules, state dict and ``requires_grad`` flags are the original ones;
- only the active adapter's tensors (and its copies of ``modules_to_save``) require grad.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from meta_learning._io import atomic_open, atomic_write_json
from meta_learning.adapters import targets
from meta_learning.adapters.config import AdapterConfig, ParameterEfficiency
from meta_learning.adapters.layer import AdapterLayer, ModulesToSave

FORMAT = "meta_learning.adapters"
FORMAT_VERSION = 1
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")

A = TypeVar("A", bound="Adapter")


def write_safetensors(path: str | os.PathLike[str], state: Mapping[str, Tensor], metadata: dict[str, str]) -> None:
    """Write ``state`` (contiguous CPU copies, no shared storage) as safetensors, atomically."""
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    with atomic_open(path, "wb") as f:
        f.write(safetensors_bytes(plain, metadata=metadata))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; a clear error naming the file when it is missing or not an object."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; expected an adapter folder with {CONFIG_FILE} and {WEIGHTS_FILE}")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def assign(expected: dict[str, nn.Parameter], state: dict[str, Tensor], source: str) -> None:
    """Copy ``state`` into ``expected`` (same keys, same shapes), in place."""
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source} does not fit this model: missing keys {missing[:5]} ({len(missing)}), "
            f"unexpected keys {unexpected[:5]} ({len(unexpected)})"
        )
    with torch.no_grad():
        for key, param in expected.items():
            value = state[key]
            if value.shape != param.shape:
                raise ValueError(
                    f"{source}: {key} has shape {tuple(value.shape)}, the model expects {tuple(param.shape)}"
                )
            param.copy_(value.to(dtype=param.dtype, device=param.device))


class Adapter(nn.Module):
    """Base class of every adapter type (the protocol of DESIGN.md).

    Subclasses set ``config_class``, ``layer_classes`` (which module types they wrap, with which wrapper) and
    ``mergeable``, and implement :meth:`default_targets`; types whose layers share tensors override :meth:`attach`.
    They are registered with :func:`meta_learning.adapters.registry.register_adapter`, which sets ``method``.

    Args:
        model: the base model, changed in place by :meth:`add_adapter`.
        config: the configuration :meth:`add_adapter` uses when it is given none.
    """

    method: ClassVar[str] = ""
    config_class: ClassVar[type[AdapterConfig]] = AdapterConfig
    layer_classes: ClassVar[tuple[tuple[type[nn.Module], type[AdapterLayer]], ...]] = ()
    mergeable: ClassVar[bool] = False

    def __init__(self, model: nn.Module, config: AdapterConfig) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(config, self.config_class):
            raise TypeError(f"config must be a {self.config_class.__name__}, got {type(config).__name__}")
        self.model = model
        self.config = config
        self.train(model.training)
        self._configs: dict[str, AdapterConfig] = {}
        self._targets: dict[str, list[str]] = {}
        self._saved: dict[str, list[str]] = {}
        self._active: str | None = None
        self._enabled = True
        self._merged: str | None = None
        self._requires_grad: list[tuple[nn.Parameter, bool]] | None = None

    @classmethod
    def from_config(cls: type[A], model: nn.Module, config: AdapterConfig) -> A:
        """An adapter of this type built from a config object instead of keyword arguments."""
        obj = cls.__new__(cls)
        Adapter.__init__(obj, model, config)
        return obj

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    # -- what subclasses provide ------------------------------------------------------------------------------

    @classmethod
    def default_targets(cls, model: nn.Module, config: AdapterConfig) -> list[str]:
        """The modules adapted when ``target_modules`` is ``None`` (documented per type)."""
        raise NotImplementedError

    def attach(
        self, name: str, config: AdapterConfig, layers: list[tuple[str, AdapterLayer]], gen: torch.Generator
    ) -> None:
        """Create adapter ``name`` on the wrapped ``layers``; override when layers share tensors."""
        for _, layer in layers:
            layer.add(name, config, gen)

    # -- inspection -------------------------------------------------------------------------------------------

    @property
    def adapter_names(self) -> list[str]:
        """Names of the adapters on the model, in the order they were added."""
        return list(self._configs)

    @property
    def active_adapter(self) -> str | None:
        """The adapter used in the forward pass (``None`` when there is none)."""
        return self._active

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def merged(self) -> bool:
        return self._merged is not None

    def adapter_config(self, name: str | None = None) -> AdapterConfig:
        """The config adapter ``name`` (default: the active one) was created with."""
        return self._configs[self._existing(name)]

    def target_names(self, name: str | None = None) -> list[str]:
        """The module names adapter ``name`` (default: the active one) adapts."""
        return list(self._targets[self._existing(name)])

    def layers(self) -> list[tuple[str, AdapterLayer]]:
        """``(name in model, wrapper)`` for every wrapped module."""
        return [(n, m) for n, m in self.model.named_modules() if isinstance(m, AdapterLayer)]

    def adapter_state(self, name: str | None = None, include_modules_to_save: bool = True) -> dict[str, nn.Parameter]:
        """Adapter ``name``'s tensors keyed like PEFT's files (adapter name removed); shared tensors appear once."""
        name = self._existing(name)
        out: dict[str, nn.Parameter] = {}
        seen: set[int] = set()
        for path, layer in self.layers():
            if isinstance(layer, ModulesToSave) and not include_modules_to_save:
                continue
            for key, p in layer.adapter_tensors(name).items():
                if id(p) not in seen:
                    seen.add(id(p))
                    out[f"{path}.{key}" if path else key] = p
        return out

    def trainable_parameters(self, include_modules_to_save: bool = True) -> dict[str, nn.Parameter]:
        """The active adapter's tensors, named as in ``self.named_parameters()`` (ready for ``MAML(inner_params=)``).

        ``include_modules_to_save=False`` leaves out the copies of ``modules_to_save`` (e.g. adapt the adapter but not
        the head in an inner loop).
        """
        if self._active is None:
            return {}
        wanted = {id(p) for p in self.adapter_state(self._active, include_modules_to_save).values()}
        return {n: p for n, p in self.named_parameters() if id(p) in wanted}

    def efficiency(self) -> ParameterEfficiency:
        """Trainable, total and base parameter counts (``str()`` prints PEFT's one-line summary)."""
        total = sum(p.numel() for p in self.model.parameters())
        adapters = {id(p): p.numel() for n in self._configs for p in self.adapter_state(n).values()}
        trainable = sum(p.numel() for p in self.trainable_parameters().values())
        return ParameterEfficiency(trainable=trainable, total=total, base_total=total - sum(adapters.values()))

    # -- adding and removing ----------------------------------------------------------------------------------

    def add_adapter(self, name: str = "default", config: AdapterConfig | None = None) -> Adapter:
        """Add adapter ``name`` (with ``config``, default the constructor's) to the model; it becomes active if none is.

        The base model's parameters are frozen; only the active adapter's tensors train.

        Raises:
            ValueError: a bad or duplicate name, targets that match nothing or have an unsupported type, or a model
                that already carries adapters of another adapter object.
        """
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"name={name!r} must be a non-empty identifier (letters, digits, '_' or '-'), no dots")
        if name in self._configs:
            raise ValueError(f"an adapter named {name!r} exists already; remove it or choose another name")
        config = self.config if config is None else config
        if not isinstance(config, self.config_class):
            raise TypeError(f"config must be a {self.config_class.__name__}, got {type(config).__name__}")
        self._check_model_is_ours()
        self.unmerge()
        paths, saved = self._resolve_all(config)
        if self._requires_grad is None:
            self._requires_grad = [(p, p.requires_grad) for p in self.model.parameters()]
        self._configs[name], self._targets[name], self._saved[name] = config, paths, saved
        try:
            gen = torch.Generator().manual_seed(config.seed)
            layers = [(p, self._wrap(p, self._layer_class(p))) for p in paths]
            self.attach(name, config, layers, gen)
            for p in saved:
                self._wrap(p, ModulesToSave).add(name, config, gen)
            for _, layer in layers:
                layer.train(layer.training)  # new adapter modules (dropout) follow the wrapped module's mode
        except (ValueError, TypeError, RuntimeError):
            self.remove(name)
            raise
        if self._active is None:
            self._active = name
        self._sync()
        return self

    def resolve_targets(self, config: AdapterConfig) -> list[str]:
        """The module names ``config`` selects on this model (validated; see :mod:`~meta_learning.adapters.targets`)."""
        return targets.select(
            self.model,
            config.target_modules,
            accepts=lambda m: self.layer_class_for(m) is not None,
            accepted=self.accepted(),
            default=lambda m: self.default_targets(m, config),
            what=type(self).__name__,
        )

    def _resolve_all(self, config: AdapterConfig) -> tuple[list[str], list[str]]:
        """Targets and ``modules_to_save``; as in PEFT, modules inside a module to save are trained whole."""
        found = self.resolve_targets(config)
        if not config.modules_to_save:
            return found, []
        saved = targets.select(
            self.model, config.modules_to_save, accepts=lambda m: True, accepted="any module",
            default=lambda m: [], what="modules_to_save",
        )  # fmt: skip
        paths = [p for p in found if not any(_inside(p, s) for s in saved)]
        if not paths:
            raise ValueError(f"every target {found[:4]} is inside modules_to_save {saved}; nothing is left to adapt")
        nested = [s for s in saved if any(_inside(s, p) for p in paths)]
        if nested:
            raise ValueError(f"modules_to_save {nested} lie inside adapted modules; save their parent or adapt them")
        return paths, saved

    @classmethod
    def layer_class_for(cls, module: nn.Module) -> type[AdapterLayer] | None:
        """The wrapper this type uses for ``module`` (``None`` if it cannot adapt it); override for duck typing."""
        for kind, layer_cls in cls.layer_classes:
            if isinstance(module, kind):
                return layer_cls
        return None

    @classmethod
    def accepted(cls) -> str:
        """The modules this type can adapt, in words."""
        return ", ".join(kind.__name__ for kind, _ in cls.layer_classes)

    def _layer_class(self, path: str) -> type[AdapterLayer]:
        module = self.model.get_submodule(path)
        base = module.base_layer if isinstance(module, AdapterLayer) else module
        layer_cls = self.layer_class_for(base)
        if layer_cls is None:
            raise TypeError(f"{type(self).__name__} cannot wrap {path!r} ({type(base).__name__})")
        return layer_cls

    def _wrap(self, path: str, layer_cls: type[AdapterLayer]) -> AdapterLayer:
        module = self.model.get_submodule(path)
        if isinstance(module, AdapterLayer):
            if type(module) is not layer_cls:
                raise ValueError(
                    f"module {path!r} is already wrapped by {type(module).__name__}, not {layer_cls.__name__}"
                )
            return module
        layer = layer_cls(module)
        if path:
            self.model.set_submodule(path, layer)
        else:
            self.model = layer
        return layer

    def _check_model_is_ours(self) -> None:
        # with adapters of our own on the model, any other adapter object would have been refused; without, any
        # wrapper found belongs to another object
        for path, layer in self.layers():
            if not self._configs:
                raise ValueError(
                    f"the model already carries adapter layers ({path!r} is a {type(layer).__name__}) added by another "
                    "adapter object; add named adapters to that object, or remove() its adapters first"
                )

    def remove(self, name: str | None = None) -> nn.Module:
        """Remove adapter ``name`` (default: all of them) and return the model.

        When the last adapter goes, every wrapper is replaced by the original module and the parameters'
        ``requires_grad`` flags are restored: the model is the original one, bit for bit.
        """
        names = list(self._configs) if name is None else [self._existing(name)]
        if self._merged in names:
            self.unmerge()
        for n in names:
            for _, layer in self.layers():
                layer.remove_adapter(n)
            del self._configs[n], self._targets[n], self._saved[n]
        for path, layer in self.layers():
            if not layer.names():
                if path:
                    self.model.set_submodule(path, layer.base_layer)
                else:
                    self.model = layer.base_layer
        if self._active in names:
            self._active = next(iter(self._configs), None)
        if not self._configs:
            self._restore_requires_grad()
        else:
            self._sync()
        return self.model

    def _restore_requires_grad(self) -> None:
        for p, flag in self._requires_grad or []:
            p.requires_grad_(flag)
        self._requires_grad = None

    # -- switching --------------------------------------------------------------------------------------------

    def set_active(self, name: str) -> None:
        """Use (and train) adapter ``name``; the others stay on the model, frozen and unused."""
        name = self._existing(name)
        self.unmerge()
        self._active = name
        self._sync()

    def enable(self) -> None:
        """Use the active adapter in the forward pass (the default)."""
        self._enabled = True
        self._sync()

    def disable(self) -> None:
        """Run the base model alone (bit for bit) until :meth:`enable`; a merged adapter is unmerged first."""
        self.unmerge()
        self._enabled = False
        self._sync()

    def _sync(self) -> None:
        for _, layer in self.layers():
            layer.active = self._active if self._active in layer.names() else None
            layer.disabled = not self._enabled
        wanted = {id(p) for p in self.adapter_state(self._active).values()} if self._active else set()
        for p in self.model.parameters():
            p.requires_grad_(id(p) in wanted)

    # -- merging ----------------------------------------------------------------------------------------------

    def merge(self) -> None:
        """Fold the active adapter into the base weights (no extra inference cost); :meth:`unmerge` undoes it exactly.

        Raises:
            TypeError: the adapter type is not linear in the base weights (bottleneck, prefix, Compacter).
        """
        if not self.mergeable:
            raise TypeError(
                f"{type(self).__name__} cannot be merged: its output is not a re-weighting of the base model"
            )
        active = self._existing(None)
        if self._merged is not None:
            return
        if not self._enabled:
            raise ValueError("adapters are disabled; enable() before merge()")
        for _, layer in self.layers():
            if active in layer.names():
                layer.merge(active)
        self._merged = active

    def unmerge(self) -> None:
        """Restore the base weights saved by :meth:`merge`, bit for bit (no-op when nothing is merged)."""
        if self._merged is None:
            return
        for _, layer in self.layers():
            layer.unmerge()
        self._merged = None

    def merge_and_unload(self) -> nn.Module:
        """Merge the active adapter, drop every wrapper and return the plain model with the merged weights.

        ``modules_to_save`` are replaced by the active adapter's trained copies. The adapter object is empty afterwards.
        """
        self.merge()
        active = self._active
        for path, layer in self.layers():
            if isinstance(layer, ModulesToSave) and active in layer.names():
                replacement = layer.modules_to_save[str(active)]
                for p, q in zip(layer.base_layer.parameters(), replacement.parameters(), strict=True):
                    q.requires_grad_(p.requires_grad)
            else:
                layer.drop_backups()
                replacement = layer.base_layer
            if path:
                self.model.set_submodule(path, replacement)
            else:
                self.model = replacement
        self._configs.clear()
        self._targets.clear()
        self._saved.clear()
        self._active, self._merged = None, None
        self._restore_requires_grad()
        return self.model

    # -- files ------------------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], name: str | None = None) -> Path:
        """Write adapter ``name`` (default: the active one) to folder ``path``: weights + config only.

        ``adapter_model.safetensors`` holds the adapter's tensors and its ``modules_to_save`` copies;
        ``adapter_config.json`` holds the type, config, adapted module names and a format version.
        """
        name = self._existing(name)
        folder = Path(path)
        write_safetensors(
            folder / WEIGHTS_FILE, dict(self.adapter_state(name)), {"format": "pt", "method": self.method}
        )
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "name": name,
            "config": self._configs[name].to_dict(),
            "targets": self._targets[name],
            "modules_to_save": self._saved[name],
        }
        atomic_write_json(folder / CONFIG_FILE, meta)
        return folder

    def load(self, path: str | os.PathLike[str], name: str | None = None) -> Adapter:
        """Add the adapter saved in folder ``path`` (as ``name``, default its saved name) and load its weights.

        If an adapter of that name exists with the same config, only its weights are replaced.
        """
        folder = Path(path)
        meta = read_meta(folder)
        if meta["method"] != self.method:
            raise ValueError(f"{folder} holds a {meta['method']!r} adapter; this is a {self.method!r} adapter")
        config = self.config_class.from_dict(meta["config"])
        name = meta["name"] if name is None else name
        if name in self._configs:
            if self._configs[name] != config:
                raise ValueError(f"adapter {name!r} exists with another config; remove it or load under another name")
        else:
            self.add_adapter(name, config)
        if self._targets[name] != list(meta["targets"]):
            self.remove(name)
            raise ValueError(
                f"{folder} adapts modules {meta['targets'][:4]}..., this model gives {self._targets[name][:4]}...; "
                "it was saved from a model with another structure"
            )
        assign(self.adapter_state(name), load_safetensors(folder / WEIGHTS_FILE), str(folder))
        return self

    # -- helpers ----------------------------------------------------------------------------------------------

    def _existing(self, name: str | None) -> str:
        if name is None:
            if self._active is None:
                raise ValueError("there is no adapter yet; call add_adapter() first")
            return self._active
        if name not in self._configs:
            raise ValueError(f"no adapter named {name!r}; the adapters are {self.adapter_names}")
        return name


def _inside(name: str, outer: str) -> bool:
    return name == outer or outer == "" or name.startswith(outer + ".")


def read_meta(folder: Path) -> dict[str, Any]:
    """The validated ``adapter_config.json`` of a folder written by :meth:`Adapter.save`."""
    meta = read_json(folder / CONFIG_FILE)
    if meta.get("format") != FORMAT:
        hint = " (a PEFT folder? use LoRAAdapter.from_pretrained)" if "peft_type" in meta else ""
        raise ValueError(f"{folder / CONFIG_FILE} is not a {FORMAT} file{hint}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{folder} has format_version={meta.get('format_version')!r}; this version reads {FORMAT_VERSION}"
        )
    for key in ("method", "name", "config", "targets"):
        if key not in meta:
            raise ValueError(f"{folder / CONFIG_FILE} lacks the {key!r} entry")
    return meta
