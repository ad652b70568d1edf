"""Parameter-efficient adapters for any PyTorch model: LoRA, bottleneck (Houlsby), prefix tuning, BitFit, IA3 and
Compacter, behind one protocol (:class:`Adapter`) and a validating registry.

    >>> lora = LoRAAdapter(model, r=8, lora_alpha=16, modules_to_save=["classifier"]).add_adapter()
    >>> print(lora.efficiency())                      # trainable params: ... || trainable%: ...
    >>> maml = MAML(lora, inner_params=list(lora.trainable_parameters()))   # meta-learn the adapter only
    >>> lora.save("out/lora"); lora.save_pretrained("out/peft-lora")       # ours / PEFT's file format
"""

from meta_learning.adapters.base import Adapter
from meta_learning.adapters.bitfit import BitFitAdapter, BitFitConfig
from meta_learning.adapters.bottleneck import BottleneckConfig, LinearAdapter
from meta_learning.adapters.compacter import CompacterAdapter, CompacterConfig
from meta_learning.adapters.config import AdapterConfig, ParameterEfficiency
from meta_learning.adapters.ia3 import IA3Adapter, IA3Config
from meta_learning.adapters.layer import AdapterLayer, ModulesToSave
from meta_learning.adapters.lora import LoRAAdapter, LoRAConfig
from meta_learning.adapters.prefix import PrefixTuningAdapter, PrefixTuningConfig
from meta_learning.adapters.registry import (
    adapter_class,
    available_adapters,
    build_adapter,
    load_adapter,
    register_adapter,
)

__all__ = [
    "Adapter",
    "AdapterConfig",
    "AdapterLayer",
    "BitFitAdapter",
    "BitFitConfig",
    "BottleneckConfig",
    "CompacterAdapter",
    "CompacterConfig",
    "IA3Adapter",
    "IA3Config",
    "LinearAdapter",
    "LoRAAdapter",
    "LoRAConfig",
    "ModulesToSave",
    "ParameterEfficiency",
    "PrefixTuningAdapter",
    "PrefixTuningConfig",
    "adapter_class",
    "available_adapters",
    "build_adapter",
    "load_adapter",
    "register_adapter",
]
