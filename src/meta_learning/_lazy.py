"""PEP 562 lazy exports shared by the package ``__init__`` modules."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, exports: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` importing ``exports[name]`` on first use and caching it in ``namespace``.

    ``exports`` maps a public name to its module: absolute (``meta_learning.x.y``) or relative to ``package``.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = module if module.startswith("meta_learning.") else f"{package}.{module}"
        value = getattr(importlib.import_module(target), name)
        namespace[name] = value  # later lookups skip __getattr__
        return value

    return __getattr__
