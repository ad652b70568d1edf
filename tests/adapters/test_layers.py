"""Closed forms of the non-LoRA layers: IA3 scalings, the bottleneck adapter, Compacter's PHM weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _adapter_models import randomise, toy_inputs, toy_net
from meta_learning.adapters import CompacterAdapter, IA3Adapter, LinearAdapter

F64 = torch.float64


def test_ia3_output_and_input_scaling():
    net = toy_net(dtype=F64)
    ad = IA3Adapter(net, target_modules=["fc1", "fc2"], feedforward_modules=["fc2"]).add_adapter()
    randomise(ad.trainable_parameters())
    x = torch.randn(3, 12, dtype=F64)
    h = torch.randn(3, 16, dtype=F64)
    l1, l2 = net.fc1.ia3_l["default"], net.fc2.ia3_l["default"]
    assert l1.shape == (16, 1) and l2.shape == (1, 16)  # PEFT's shapes: output scaling [out, 1], input [1, in]
    w1, b1 = net.fc1.base_layer.weight, net.fc1.base_layer.bias
    w2, b2 = net.fc2.base_layer.weight, net.fc2.base_layer.bias
    torch.testing.assert_close(net.fc1(x), l1.flatten() * (x @ w1.T + b1), rtol=0, atol=1e-12)
    torch.testing.assert_close(net.fc2(h), (l2.flatten() * h) @ w2.T + b2, rtol=0, atol=1e-12)


def test_ia3_feedforward_must_be_a_subset_of_targets():
    with pytest.raises(ValueError, match="must name a subset of target_modules"):
        IA3Adapter(toy_net(), target_modules=["fc1"], feedforward_modules=["fc2"]).add_adapter()


def test_bottleneck_closed_form_linear_and_conv():
    net = toy_net(dtype=F64)
    ad = LinearAdapter(net, reduction_factor=2, non_linearity="tanh", target_modules=["conv", "fc1"]).add_adapter()
    randomise(ad.trainable_parameters())
    down, up = net.fc1.adapter_down["default"], net.fc1.adapter_up["default"]
    x = torch.randn(3, 12, dtype=F64)
    h = net.fc1.base_layer(x)
    expected = h + torch.tanh(h @ down.weight.T + down.bias) @ up.weight.T + up.bias
    torch.testing.assert_close(net.fc1(x), expected, rtol=0, atol=1e-12)
    img = toy_inputs(dtype=F64)[1]
    c = net.conv.base_layer(img)  # [N, C, H, W]: the adapter acts on channels at every position
    down, up = net.conv.adapter_down["default"], net.conv.adapter_up["default"]
    r = torch.einsum("mc,nchw->nmhw", down.weight, c) + down.bias[:, None, None]
    r = torch.einsum("cm,nmhw->nchw", up.weight, torch.tanh(r)) + up.bias[:, None, None]
    torch.testing.assert_close(net.conv(img), c + r, rtol=0, atol=1e-12)


def test_bottleneck_without_residual_replaces_the_output():
    net = toy_net(dtype=F64)
    LinearAdapter(net, reduction_factor=4, residual=False, non_linearity="relu", target_modules=["fc1"]).add_adapter()
    x = torch.randn(3, 12, dtype=F64)
    assert torch.count_nonzero(net.fc1(x)) == 0  # zero up-projection: f(h) = 0 replaces h
    with pytest.raises(ValueError, match="reduction_factor=32 leaves no bottleneck unit"):
        LinearAdapter(toy_net(), reduction_factor=32, target_modules=["fc1"]).add_adapter()
    with pytest.raises(ValueError, match="non_linearity='softsign' is not supported"):
        LinearAdapter(toy_net(), non_linearity="softsign")


def test_compacter_weight_is_a_sum_of_kronecker_products_with_shared_slow_weights():
    net = toy_net(dtype=F64)
    ad = CompacterAdapter(net, reduction_factor=2, phm_dim=4, phm_rank=2, target_modules=["fc1", "fc2"]).add_adapter()
    randomise(ad.trainable_parameters())
    down = net.fc1.adapter_down["default"]
    rule = down.rule
    assert rule is net.fc2.adapter_up["default"].rule  # one A for every projection of every layer
    expected = sum(torch.kron(rule[i], down.s[i] @ down.t[i]) for i in range(4))
    assert expected.shape == (8, 16)
    torch.testing.assert_close(down.weight(), expected, rtol=0, atol=1e-12)
    x = torch.randn(3, 12, dtype=F64)
    h = net.fc1.base_layer(x)
    up = net.fc1.adapter_up["default"]
    torch.testing.assert_close(net.fc1(x), h + up(F.gelu(F.linear(h, expected, down.bias))), rtol=0, atol=1e-12)
    names = [n for n in ad.trainable_parameters() if n.endswith("rule")]
    assert names == ["model.fc1.adapter_down.default.rule"]  # counted and saved once
    net(*toy_inputs(dtype=F64)).sum().backward()
    assert rule.grad is not None and torch.count_nonzero(rule.grad) > 0


def test_compacter_initial_down_weights_have_the_requested_scale():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 2))
    CompacterAdapter(net, reduction_factor=2, phm_dim=4, init_std=0.05, target_modules=["0"]).add_adapter()
    w = net[0].adapter_down["default"].weight()
    assert 0.04 < w.std().item() < 0.06
    assert torch.count_nonzero(net[0].adapter_up["default"].weight()) == 0
    with pytest.raises(ValueError, match="phm_dim=3 must divide"):
        CompacterAdapter(toy_net(), reduction_factor=2, phm_dim=3, target_modules=["fc1"]).add_adapter()
