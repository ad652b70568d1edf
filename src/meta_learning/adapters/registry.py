"""The adapter registry: pick an adapter type by name (from a config file), plug in new types without touching others.

>>> register_adapter("my_method", MyConfig, MyAdapter)      # refuses duplicates and malformed classes
>>> adapter = build_adapter("lora", model, r=8)             # an unknown name lists the valid ones
>>> adapter = load_adapter(model, "runs/sst2-lora")          # the type is read from adapter_config.json
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
from pathlib import Path
from typing import Any

from torch import nn

from meta_learning.adapters.base import Adapter, read_meta
from meta_learning.adapters.config import AdapterConfig

_REGISTRY: dict[str, type[Adapter]] = {}
_METHOD = re.compile(r"[a-z][a-z0-9_]*")


def register_adapter(method: str, config_class: type[AdapterConfig], adapter_class: type[Adapter]) -> type[Adapter]:
    """Register ``adapter_class`` (configured by ``config_class``) under ``method``; returns the class.

    Raises:
        ValueError: ``method`` is malformed or taken.
        TypeError: the classes do not follow the protocol (an ``Adapter`` subclass with a frozen ``AdapterConfig``
            dataclass as its ``config_class`` and at least one wrapped module type).
    """
    if not isinstance(method, str) or not _METHOD.fullmatch(method):
        raise ValueError(f"method={method!r} must be a lower-case identifier such as 'lora' or 'my_adapter'")
    if method in _REGISTRY:
        raise ValueError(f"method {method!r} is registered already (by {_REGISTRY[method].__qualname__})")
    if not (isinstance(adapter_class, type) and issubclass(adapter_class, Adapter)):
        raise TypeError(f"adapter_class must be a subclass of Adapter, got {adapter_class!r}")
    if not (isinstance(config_class, type) and issubclass(config_class, AdapterConfig)):
        raise TypeError(f"config_class must be a subclass of AdapterConfig, got {config_class!r}")
    params = getattr(config_class, "__dataclass_params__", None)
    if not dataclasses.is_dataclass(config_class) or params is None or not params.frozen:
        raise TypeError(f"config_class {config_class.__name__} must be a frozen dataclass")
    if adapter_class.config_class is not config_class:
        raise TypeError(
            f"{adapter_class.__name__}.config_class is {adapter_class.config_class.__name__}, "
            f"not {config_class.__name__}"
        )
    if not adapter_class.layer_classes:
        raise TypeError(f"{adapter_class.__name__}.layer_classes is empty; it must name the module types it wraps")
    adapter_class.method = method
    _REGISTRY[method] = adapter_class
    return adapter_class


def _load_builtins() -> None:
    importlib.import_module("meta_learning.adapters")  # its __init__ imports (and so registers) every built-in type


def available_adapters() -> list[str]:
    """The registered method names."""
    _load_builtins()
    return sorted(_REGISTRY)


def adapter_class(method: str) -> type[Adapter]:
    """The class registered under ``method``."""
    _load_builtins()
    if method not in _REGISTRY:
        raise ValueError(f"unknown adapter method {method!r}; choose one of {sorted(_REGISTRY)}")
    return _REGISTRY[method]


def build_adapter(method: str, model: nn.Module, **kwargs: Any) -> Adapter:
    """``adapter_class(method)(model, **kwargs)``: the adapter named in a config file."""
    return adapter_class(method)(model, **kwargs)


def load_adapter(model: nn.Module, path: str | os.PathLike[str], name: str | None = None) -> Adapter:
    """An adapter of the type saved in folder ``path``, added to ``model`` with its saved weights."""
    folder = Path(path)
    meta = read_meta(folder)
    cls = adapter_class(str(meta["method"]))
    adapter = cls.from_config(model, cls.config_class.from_dict(meta["config"]))
    return adapter.load(folder, name)
