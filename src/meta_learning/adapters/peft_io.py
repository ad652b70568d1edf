"""Reading and writing PEFT's LoRA folders (``PeftModel.save_pretrained`` / ``PeftModel.from_pretrained``).

PEFT's layout (checked against peft 0.21): ``adapter_config.json`` with ``"peft_type": "LORA"``, ``r``,
``lora_alpha``, ``lora_dropout``, ``target_modules``, ``modules_to_save``, ``use_rslora``, ...; and
``adapter_model.safetensors`` whose keys are ``base_model.model.<module>.lora_A.weight``, ``...lora_B.weight``,
``...lora_embedding_A``, ``...lora_embedding_B`` and, for ``modules_to_save``, ``base_model.model.<module>.<param>``
(the adapter name is not stored). ``<module>`` is the module's name in the model PEFT wrapped, so a file loads
into a model of the same structure (the same class PEFT wrapped).

Supported: plain LoRA (optionally rank-stabilised) on Linear, Conv2d and Embedding, with modules to save. Refused
with a clear error: DoRA, ``fan_in_fan_out``, trained biases, per-module ``rank_pattern``/``alpha_pattern``,
layer replication, LoRA on raw parameters.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import safe_open
from safetensors.torch import load_file as load_safetensors
from torch import Tensor, nn

from meta_learning._io import atomic_write_json, safe_torch_load
from meta_learning.adapters.base import assign, read_json, write_safetensors

if TYPE_CHECKING:
    from meta_learning.adapters.lora import LoRAAdapter, LoRAConfig

PREFIX = "base_model.model."
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LEGACY_WEIGHTS_FILE = "adapter_model.bin"
_LORA_KEY = re.compile(r"(?P<module>.+)\.(?:lora_A\.weight|lora_B\.weight|lora_embedding_A|lora_embedding_B)")
# PEFT fields whose non-default values change the computation in ways this implementation does not reproduce
_REFUSED: dict[str, tuple[Any, ...]] = {
    "use_dora": (False, None),
    "fan_in_fan_out": (False, None),
    "bias": ("none", None),
    "lora_bias": (False, None),
    "rank_pattern": ({}, None),
    "alpha_pattern": ({}, None),
    "layer_replication": (None,),
    "target_parameters": (None, []),
    "use_qalora": (False, None),
    "trainable_token_indices": (None,),
}


def _weights_file(folder: Path) -> Path:
    for name in (WEIGHTS_FILE, LEGACY_WEIGHTS_FILE):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder} has neither {WEIGHTS_FILE} nor {LEGACY_WEIGHTS_FILE}")


def _read_weights(folder: Path) -> dict[str, Tensor]:
    file = _weights_file(folder)
    if file.suffix == ".safetensors":
        return load_safetensors(file)
    state = safe_torch_load(file)
    if not isinstance(state, dict):
        raise ValueError(f"{file} does not hold a state dict")
    return state


def _weight_keys(folder: Path) -> list[str]:
    file = _weights_file(folder)
    if file.suffix == ".safetensors":
        with safe_open(file, "pt") as f:
            return list(f.keys())
    return list(_read_weights(folder))


def read_peft_lora_config(model: nn.Module, path: str | os.PathLike[str]) -> LoRAConfig:
    """A :class:`LoRAConfig` equivalent to PEFT's ``adapter_config.json`` in ``path``, with targets read from the
    weights (exact module names, so PEFT's ``layers_to_transform``/``exclude_modules`` are honoured as saved).

    Raises:
        ValueError: not a LoRA folder, a PEFT feature this implementation does not support, or module names that
            ``model`` lacks (the file was saved from a model of another structure).
    """
    from meta_learning.adapters.lora import LoRAConfig

    folder = Path(path)
    cfg = read_json(folder / CONFIG_FILE)
    if cfg.get("peft_type") != "LORA":
        raise ValueError(f"{folder / CONFIG_FILE} has peft_type={cfg.get('peft_type')!r}; only 'LORA' is supported")
    for key, allowed in _REFUSED.items():
        if key in cfg and cfg[key] not in allowed:
            raise ValueError(f"{folder / CONFIG_FILE}: {key}={cfg[key]!r} is not supported; allowed: {allowed}")
    modules: list[str] = []
    for key in _weight_keys(folder):
        if not key.startswith(PREFIX):
            raise ValueError(f"{folder}: weight {key!r} does not start with {PREFIX!r}; not a PEFT LoRA file")
        match = _LORA_KEY.fullmatch(key[len(PREFIX) :])
        if match and match["module"] not in modules:
            modules.append(match["module"])
    if not modules:
        raise ValueError(f"{folder} holds no LoRA weights")
    names = {n for n, _ in model.named_modules()}
    absent = [m for m in modules if m not in names]
    if absent:
        raise ValueError(
            f"{folder} adapts modules {absent[:4]} that the model lacks; load it into the model class PEFT wrapped "
            f"(module names here look like {sorted(names)[1:5]})"
        )
    saved = cfg.get("modules_to_save") or ()
    return LoRAConfig(
        target_modules="|".join(re.escape(m) for m in modules),
        modules_to_save=tuple(saved),
        r=int(cfg["r"]),
        lora_alpha=cfg["lora_alpha"],
        lora_dropout=float(cfg.get("lora_dropout") or 0.0),
        use_rslora=bool(cfg.get("use_rslora", False)),
    )


def load_peft_lora(adapter: LoRAAdapter, path: str | os.PathLike[str], name: str = "default") -> None:
    """Add the PEFT LoRA adapter in folder ``path`` to ``adapter`` under ``name``, with its weights."""
    folder = Path(path)
    config = read_peft_lora_config(adapter.model, folder)
    adapter.add_adapter(name, config)
    state = {k[len(PREFIX) :]: v for k, v in _read_weights(folder).items()}
    try:
        assign(adapter.adapter_state(name), state, str(folder))
    except ValueError:
        adapter.remove(name)
        raise


def save_peft_lora(adapter: LoRAAdapter, path: str | os.PathLike[str], name: str | None = None, **fields: Any) -> Path:
    """Write adapter ``name`` of ``adapter`` as PEFT's ``save_pretrained`` does.

    ``fields`` set other ``adapter_config.json`` entries PEFT reads, e.g. ``base_model_name_or_path=...`` or
    ``task_type="SEQ_CLS"``.
    """
    from meta_learning.adapters.lora import LoRAConfig

    config = adapter.adapter_config(name)
    if not isinstance(config, LoRAConfig):
        raise TypeError(f"PEFT's LoRA format holds LoRA adapters; adapter {name!r} has a {type(config).__name__}")
    module_names = adapter.target_names(name)
    if "" in module_names:
        raise ValueError("the adapted module is the model itself; PEFT's format names modules inside a model")
    folder = Path(path)
    state = {PREFIX + k: v for k, v in adapter.adapter_state(name).items()}
    cfg: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": None,
        "revision": None,
        "inference_mode": True,
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "use_rslora": config.use_rslora,
        "target_modules": module_names,
        "modules_to_save": list(config.modules_to_save) or None,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "use_dora": False,
        "lora_bias": False,
        "rank_pattern": {},
        "alpha_pattern": {},
        "layers_to_transform": None,
        "layers_pattern": None,
        "exclude_modules": None,
    }
    unknown = sorted(set(fields) - set(cfg))
    if unknown:
        raise ValueError(f"unknown adapter_config.json fields {unknown}; known fields are {sorted(cfg)}")
    cfg.update(fields)
    write_safetensors(folder / WEIGHTS_FILE, state, {"format": "pt"})
    atomic_write_json(folder / CONFIG_FILE, cfg)
    return folder
