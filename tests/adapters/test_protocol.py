"""The protocol every adapter type shares (DESIGN.md), checked for each type on small models in float64.

References: the un-adapted model (identity init, disable, remove), the unmerged model (merge), a fresh model loaded
from disk (save/load), and closed-form parameter counts.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from _adapter_models import attn_inputs, attn_net, randomise, toy_inputs, toy_net
from meta_learning.adapters import (
    BitFitAdapter,
    CompacterAdapter,
    IA3Adapter,
    LinearAdapter,
    LoRAAdapter,
    PrefixTuningAdapter,
    load_adapter,
)

F64 = torch.float64


def _lora_count():  # r * (d_in + d_out) per Linear; r * C_in*k*k + C_out * r for the conv; r * (V + d) for the table
    r = 2
    return r * (20 + 8) + (r * 2 * 9 + 4 * r) + r * (12 + 16) + r * (16 + 16)


def _bottleneck(d, m):
    return 2 * d * m + d + m


def _compacter(d, m, k=1):
    return 2 * k * (d + m) + d + m


CASES = {
    # name: (model, inputs, build, identity at init is exact, trainable count)
    "lora": (
        toy_net, toy_inputs,
        lambda net: LoRAAdapter(net, r=2, lora_dropout=0.0, target_modules=["emb", "conv", "fc1", "fc2"]),
        True, _lora_count(),
    ),
    "ia3": (
        toy_net, toy_inputs,
        lambda net: IA3Adapter(net, target_modules=["conv", "fc1", "fc2"], feedforward_modules=["fc2"]),
        True, 4 + 16 + 16,
    ),
    "bitfit": (toy_net, toy_inputs, lambda net: BitFitAdapter(net), True, 4 + 16 + 16 + 16 + 3),
    "bottleneck": (
        toy_net, toy_inputs,
        lambda net: LinearAdapter(net, reduction_factor=2, target_modules=["conv", "fc1", "fc2"]),
        True, _bottleneck(4, 2) + 2 * _bottleneck(16, 8),
    ),
    "compacter": (
        toy_net, toy_inputs,
        lambda net: CompacterAdapter(net, reduction_factor=2, phm_dim=2, target_modules=["conv", "fc1", "fc2"]),
        True, _compacter(4, 2) + 2 * _compacter(16, 8) + 2**3,
    ),
    "ia3-mha": (attn_net, attn_inputs, lambda net: IA3Adapter(net), False, 16 + 16 + 32),
    "bitfit-mha": (attn_net, attn_inputs, lambda net: BitFitAdapter(net), False, 48 + 16 + 32 + 16 + 16 + 16 + 3),
    "bottleneck-mha": (
        attn_net, attn_inputs, lambda net: LinearAdapter(net, reduction_factor=4), True, 2 * _bottleneck(16, 4)
    ),
    "prefix": (
        attn_net, attn_inputs,
        lambda net: PrefixTuningAdapter(net, prefix_length=3, hidden_size=16, projection_hidden_size=8),
        None, 3 * 16 + (16 * 8 + 8) + (8 * 2 * 16 + 2 * 16),
    ),
    "prefix-direct": (
        attn_net, attn_inputs, lambda net: PrefixTuningAdapter(net, prefix_length=3, projection=False), None, 3 * 32
    ),
}  # fmt: skip


def build(case, seed=0):
    model_fn, inputs_fn, make, _, _ = CASES[case]
    net = model_fn(seed=seed, dtype=F64) if model_fn is toy_net else model_fn(seed=seed).double()
    x = inputs_fn()
    if model_fn is toy_net:
        x = (x[0], x[1].double())
    return net, x, make


def snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("case", list(CASES))
def test_identity_init_disable_and_remove(case):
    net, x, make = build(case)
    net.fc1.bias.requires_grad_(False) if hasattr(net, "fc1") else net.emb.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    types = {n: type(m) for n, m in net.named_modules()}
    state = snapshot(net)
    ref = net(*x)
    ad = make(net).add_adapter()
    exact = CASES[case][3]
    if exact:
        assert torch.equal(ad(*x), ref)
    elif exact is False:  # same function through our attention kernel
        torch.testing.assert_close(ad(*x), ref, rtol=0, atol=1e-12)
    randomise(ad.trainable_parameters())
    assert not torch.allclose(ad(*x), ref)
    ad.disable()
    assert torch.equal(ad(*x), ref)
    ad.enable()
    assert ad.remove() is net
    assert torch.equal(net(*x), ref)
    assert {n: type(m) for n, m in net.named_modules()} == types
    after = net.state_dict()
    assert list(after) == list(state) and all(torch.equal(after[k], v) for k, v in state.items())
    assert {n: p.requires_grad for n, p in net.named_parameters()} == flags


@pytest.mark.parametrize("case", list(CASES))
def test_only_adapter_tensors_train_and_count_matches_closed_form(case):
    net, x, make = build(case)
    base_total = sum(p.numel() for p in net.parameters())
    ad = make(net).add_adapter()
    trainable = ad.trainable_parameters()
    assert {n for n, p in ad.named_parameters() if p.requires_grad} == set(trainable)
    report = ad.efficiency()
    assert report.trainable == CASES[case][4]
    assert report.base_total == base_total and report.total == base_total + report.trainable
    assert report.percent == pytest.approx(100 * report.trainable / report.total)
    randomise(trainable)
    ad(*x).square().sum().backward()
    assert all(p.grad is None for n, p in ad.named_parameters() if n not in trainable)
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in trainable.values())


MERGEABLE = ["lora", "ia3", "bitfit", "ia3-mha", "bitfit-mha"]


@pytest.mark.parametrize("case", MERGEABLE)
def test_merge_equals_unmerged_and_unmerge_restores_bits(case):
    net, x, make = build(case)
    ad = make(net).add_adapter()
    randomise(ad.trainable_parameters())
    out = ad(*x)
    before = snapshot(net)
    ad.merge()
    torch.testing.assert_close(ad(*x), out, rtol=0, atol=1e-12)
    assert ad.merged and any(not torch.equal(v, before[k]) for k, v in net.state_dict().items())
    ad.unmerge()
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert torch.equal(ad(*x), out)
    ad.merge()
    plain = ad.merge_and_unload()
    assert not any("lora" in n or "ia3" in n or "delta" in n for n, _ in plain.named_parameters())
    torch.testing.assert_close(plain(*x), out, rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", ["bottleneck", "compacter", "prefix"])
def test_non_linear_adapters_refuse_to_merge(case):
    net, _, make = build(case)
    ad = make(net).add_adapter()
    with pytest.raises(TypeError, match="cannot be merged"):
        ad.merge()


@pytest.mark.parametrize("case", list(CASES))
def test_save_load_round_trip(case, tmp_path):
    net, x, make = build(case)
    ad = make(net).add_adapter("task")
    randomise(ad.trainable_parameters())
    out = ad(*x)
    ad.save(tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert meta["name"] == "task" and meta["targets"] == ad.target_names()
    fresh, _, _ = build(case)
    loaded = load_adapter(fresh, tmp_path / "a")
    assert type(loaded) is type(ad) and loaded.active_adapter == "task"
    assert torch.equal(loaded(*x), out)
    same = {k: v for k, v in loaded.adapter_state().items()}
    assert all(torch.equal(same[k], v) for k, v in ad.adapter_state().items())


def test_named_adapters_switch_and_only_the_active_one_trains():
    net, x, _ = build("lora")
    ad = LoRAAdapter(net, r=2, lora_dropout=0.0, target_modules=["fc1", "fc2"])
    ad.add_adapter("a").add_adapter("b", ad.config.replace(r=4, seed=1))
    assert ad.adapter_names == ["a", "b"] and ad.active_adapter == "a"
    randomise(ad.adapter_state("a"), seed=1)
    randomise(ad.adapter_state("b"), seed=2)
    out_a = ad(*x)
    assert {n for n, p in ad.named_parameters() if p.requires_grad} == set(ad.trainable_parameters())
    assert all(".a." in n for n in ad.trainable_parameters())
    ad.set_active("b")
    out_b = ad(*x)
    assert all(".b." in n for n in ad.trainable_parameters())
    # each adapter alone on a fresh model gives the same outputs
    for name, expected in (("a", out_a), ("b", out_b)):
        fresh, _, _ = build("lora")
        solo = LoRAAdapter(fresh, lora_dropout=0.0, target_modules=["fc1", "fc2"], r=ad.adapter_config(name).r)
        solo.add_adapter(name, ad.adapter_config(name))
        for key, p in solo.adapter_state().items():
            p.data.copy_(ad.adapter_state(name)[key])
        torch.testing.assert_close(solo(*x), expected, rtol=0, atol=0)
    ad.remove("b")
    assert ad.active_adapter == "a" and torch.equal(ad(*x), out_a)
    with pytest.raises(ValueError, match=r"no adapter named 'b'; the adapters are \['a'\]"):
        ad.set_active("b")


def test_modules_to_save_train_a_copy_that_is_saved(tmp_path):
    net, x, _ = build("lora")
    head = net.head.weight.detach().clone()
    ref = net(*x)
    ad = LoRAAdapter(net, r=2, target_modules=["fc2"], modules_to_save=["head"]).add_adapter()
    assert "model.head.modules_to_save.default.weight" in ad.trainable_parameters()
    assert "head.weight" in ad.adapter_state() and "head.bias" in ad.adapter_state()
    randomise(ad.trainable_parameters())
    assert torch.equal(net.head.base_layer.weight, head)  # the original head is untouched
    out = ad(*x)
    ad.disable()
    assert torch.equal(ad(*x), ref)
    ad.enable()
    ad.save(tmp_path)
    fresh, _, _ = build("lora")
    assert torch.equal(load_adapter(fresh, tmp_path)(*x), out)
    plain = ad.merge_and_unload()
    torch.testing.assert_close(plain(*x), out, rtol=0, atol=1e-12)
    assert isinstance(plain.head, nn.Linear) and not torch.equal(plain.head.weight, head)


def test_a_second_adapter_object_on_the_same_model_is_refused():
    net, _, _ = build("lora")
    LoRAAdapter(net, target_modules=["fc1"]).add_adapter()
    with pytest.raises(ValueError, match="already carries adapter layers"):
        IA3Adapter(net, target_modules=["fc2"]).add_adapter()


def test_load_checks_type_structure_and_name(tmp_path):
    net, _, _ = build("lora")
    LoRAAdapter(net, r=2, target_modules=["fc1"]).add_adapter().save(tmp_path)
    with pytest.raises(ValueError, match="holds a 'lora' adapter; this is a 'ia3' adapter"):
        IA3Adapter(build("lora")[0]).load(tmp_path)
    other = nn.Sequential()
    other.add_module("fc1", nn.Linear(5, 16))
    other.add_module("head", nn.Linear(16, 2))
    with pytest.raises(ValueError, match="has shape"):
        load_adapter(other.double(), tmp_path)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(net, tmp_path / "nowhere")


def test_add_adapter_validates_names_and_configs():
    net, _, _ = build("lora")
    ad = LoRAAdapter(net, target_modules=["fc1"]).add_adapter()
    with pytest.raises(ValueError, match="exists already"):
        ad.add_adapter()
    with pytest.raises(ValueError, match="no dots"):
        ad.add_adapter("a.b")
    with pytest.raises(TypeError, match="config must be a LoRAConfig"):
        ad.add_adapter("x", IA3Adapter(net).config)
    with pytest.raises(ValueError, match=r"unknown LoRAConfig fields \['rank'\]"):
        type(ad.config).from_dict({"rank": 3})
    with pytest.raises(ValueError, match="is inside modules_to_save"):
        LoRAAdapter(build("lora")[0], target_modules=["fc1"], modules_to_save=["fc1"]).add_adapter()
    # as in PEFT, a target inside a module to save is trained whole rather than adapted
    both = LoRAAdapter(build("lora")[0], target_modules=["fc1", "fc2"], modules_to_save=["fc2"]).add_adapter()
    assert both.target_names() == ["fc1"]
