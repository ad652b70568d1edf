"""The registry: built-in types by name, validation, and a new adapter type plugged in without touching the others."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from _adapter_models import randomise, toy_inputs, toy_net
from meta_learning.adapters import (
    Adapter,
    AdapterConfig,
    AdapterLayer,
    LoRAAdapter,
    LoRAConfig,
    adapter_class,
    available_adapters,
    build_adapter,
    load_adapter,
    register_adapter,
    registry,
)


@dataclass(frozen=True)
class GainConfig(AdapterConfig):
    pass


class GainLayer(AdapterLayer):
    """y = g * f(x) with one learned scalar g per adapter (starts at 1)."""

    adapter_attrs = ("gain",)

    def __init__(self, base_layer):
        super().__init__(base_layer)
        self.gain = nn.ParameterDict()

    def add(self, name, config, generator):
        self.gain[name] = nn.Parameter(torch.ones((), dtype=self.base_layer.weight.dtype))

    def adapted_forward(self, name, x: Tensor) -> Tensor:
        return self.gain[name] * self.base_layer(x)


class GainAdapter(Adapter):
    config_class = GainConfig
    layer_classes = ((nn.Linear, GainLayer),)

    def __init__(self, model, target_modules=None):
        super().__init__(model, GainConfig(target_modules=target_modules))

    @classmethod
    def default_targets(cls, model, config):
        return ["fc1"]


@pytest.fixture
def gain_registered():
    register_adapter("gain", GainConfig, GainAdapter)
    yield
    registry._REGISTRY.pop("gain")


def test_builtins_are_registered():
    assert available_adapters() == ["bitfit", "bottleneck", "compacter", "ia3", "lora", "prefix"]
    assert adapter_class("lora") is LoRAAdapter and LoRAAdapter.method == "lora"
    ad = build_adapter("lora", toy_net(), r=4)
    assert isinstance(ad, LoRAAdapter) and ad.config.r == 4


def test_a_new_type_plugs_in(gain_registered, tmp_path):
    net = toy_net()
    x = toy_inputs()
    ref = net(*x)
    ad = build_adapter("gain", net).add_adapter()
    assert torch.equal(ad(*x), ref) and ad.efficiency().trainable == 1
    randomise(ad.trainable_parameters())
    out = ad(*x)
    ad.save(tmp_path)
    assert torch.equal(load_adapter(toy_net(), tmp_path)(*x), out)
    ad.remove()
    assert torch.equal(net(*x), ref)


def test_registration_is_validated(gain_registered):
    with pytest.raises(ValueError, match="'gain' is registered already"):
        register_adapter("gain", GainConfig, GainAdapter)
    with pytest.raises(ValueError, match="lower-case identifier"):
        register_adapter("Gain 2", GainConfig, GainAdapter)
    with pytest.raises(TypeError, match="subclass of Adapter"):
        register_adapter("g2", GainConfig, nn.Linear)
    with pytest.raises(TypeError, match="config_class is GainConfig, not LoRAConfig"):
        register_adapter("g3", LoRAConfig, GainAdapter)
    with pytest.raises(TypeError, match="config_class must be a subclass of AdapterConfig"):
        register_adapter("g4", dict, GainAdapter)
    with pytest.raises(ValueError, match=r"unknown adapter method 'nope'; choose one of \['bitfit'"):
        adapter_class("nope")
