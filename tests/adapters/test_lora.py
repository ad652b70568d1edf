"""LoRA against its closed form (Hu et al. 2021): h = W x + (alpha/r) B A x, merged W' = W + (alpha/r) B A."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _adapter_models import randomise, toy_inputs, toy_net
from meta_learning.adapters import LoRAAdapter, LoRAConfig

F64 = torch.float64


def lora(net, **kw):
    kw.setdefault("target_modules", ["emb", "conv", "fc1", "fc2"])
    kw.setdefault("lora_dropout", 0.0)
    return LoRAAdapter(net, r=kw.pop("r", 3), lora_alpha=kw.pop("lora_alpha", 6), **kw).add_adapter()


def test_init_b_zero_a_kaiming_and_identity_output():
    net = toy_net()
    x = toy_inputs()
    ref = net(*x)
    ad = lora(net)
    fc1 = net.fc1
    assert torch.count_nonzero(fc1.lora_B["default"].weight) == 0
    a = fc1.lora_A["default"].weight
    bound = 1 / math.sqrt(a.shape[1])  # kaiming_uniform(a=sqrt(5)) on [r, d_in] -> U(-1/sqrt(d_in), 1/sqrt(d_in))
    assert a.abs().max() <= bound and a.abs().max() > 0.5 * bound
    assert torch.count_nonzero(net.emb.lora_embedding_B["default"]) == 0
    assert torch.equal(ad(*x), ref)


def test_seed_fixes_the_initialisation():
    a1 = lora(toy_net(), seed=5).model.fc1.lora_A["default"].weight
    a2 = lora(toy_net(), seed=5).model.fc1.lora_A["default"].weight
    a3 = lora(toy_net(), seed=6).model.fc1.lora_A["default"].weight
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)


def test_linear_forward_and_merged_weight_closed_form():
    net = toy_net(dtype=F64)
    ad = lora(net)
    randomise(ad.trainable_parameters())
    fc1 = net.fc1
    W, b = fc1.base_layer.weight.detach().clone(), fc1.base_layer.bias
    A, B = fc1.lora_A["default"].weight, fc1.lora_B["default"].weight
    s = 6 / 3
    x = torch.randn(4, 12, dtype=F64)
    expected = x @ W.T + b + s * (x @ A.T) @ B.T
    torch.testing.assert_close(fc1(x), expected, rtol=0, atol=1e-12)
    ad.merge()
    torch.testing.assert_close(fc1.base_layer.weight, W + s * B @ A, rtol=0, atol=1e-12)
    ad.unmerge()
    assert torch.equal(fc1.base_layer.weight, W)


def test_linear_forward_any_leading_shape_and_autocast():
    """The fused addmm path keeps the closed form (values and gradients) for 1-D and 3-D inputs, and runs under
    autocast."""
    net = toy_net(dtype=F64)
    ad = lora(net)
    randomise(ad.trainable_parameters())
    fc1 = net.fc1
    W, b = fc1.base_layer.weight, fc1.base_layer.bias
    A, B = fc1.lora_A["default"].weight, fc1.lora_B["default"].weight
    for shape in ((12,), (2, 5, 12)):
        x = torch.randn(*shape, dtype=F64, requires_grad=True)
        out = fc1(x)
        expected = x @ W.T + b + 2.0 * (x @ A.T) @ B.T
        assert out.shape == expected.shape
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
        g = torch.randn_like(out)
        got = torch.autograd.grad(out, (x, A, B), g)
        want = torch.autograd.grad(expected, (x, A, B), g)
        for u, v in zip(got, want, strict=True):
            torch.testing.assert_close(u, v, rtol=0, atol=1e-12)
    net32 = toy_net()
    randomise(lora(net32).trainable_parameters())
    x = torch.randn(2, 5, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts addmm's operands like linear's
        out = net32.fc1(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), net32.fc1(x), rtol=0.05, atol=0.05)


def test_conv_merged_weight_closed_form():
    net = toy_net(dtype=F64)
    ad = lora(net)
    randomise(ad.trainable_parameters())
    conv = net.conv
    W = conv.base_layer.weight.detach().clone()
    A, B = conv.lora_A["default"].weight, conv.lora_B["default"].weight  # [r, C_in, 3, 3], [C_out, r, 1, 1]
    expected = W.clone()
    for o in range(W.shape[0]):
        for r in range(A.shape[0]):
            expected[o] += 2.0 * B[o, r, 0, 0] * A[r]
    img = torch.randn(2, 2, 6, 6, dtype=F64)
    unmerged = conv(img)
    ad.merge()
    torch.testing.assert_close(conv.base_layer.weight, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(conv(img), unmerged, rtol=0, atol=1e-12)


def test_dilated_conv_keeps_the_base_geometry():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=2, dilation=2, stride=2), nn.Flatten(), nn.Linear(3 * 16, 2)
    ).double()
    ad = LoRAAdapter(net, r=2, target_modules=["0"], lora_dropout=0.0).add_adapter()
    randomise(ad.trainable_parameters())
    x = torch.randn(2, 2, 8, 8, dtype=F64)
    before = ad(x)
    ad.merge()
    torch.testing.assert_close(ad(x), before, rtol=0, atol=1e-12)


def test_embedding_closed_form_and_padding_row_gets_no_gradient():
    net = toy_net(dtype=F64)
    ad = lora(net)
    randomise(ad.trainable_parameters())
    emb = net.emb
    A, B = emb.lora_embedding_A["default"], emb.lora_embedding_B["default"]  # [r, V], [d, r]
    ids = torch.tensor([[0, 3, 5], [7, 0, 1]])
    expected = emb.base_layer.weight[ids] + 2.0 * (A.T[ids] @ B.T)
    torch.testing.assert_close(emb(ids), expected, rtol=0, atol=1e-12)
    emb(ids).sum().backward()
    assert torch.count_nonzero(A.grad[:, 0]) == 0 and torch.count_nonzero(A.grad[:, 3]) > 0
    W = emb.base_layer.weight.detach().clone()
    ad.merge()
    torch.testing.assert_close(emb.base_layer.weight, W + 2.0 * (B @ A).T, rtol=0, atol=1e-12)


def test_rslora_scaling():
    assert LoRAConfig(r=4, lora_alpha=8).scaling == 2.0
    assert LoRAConfig(r=4, lora_alpha=8, use_rslora=True).scaling == 4.0


def test_dropout_acts_on_the_low_rank_branch_only():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 8))
    ad = LoRAAdapter(net, r=2, lora_dropout=0.5, target_modules=["0"]).add_adapter().train()
    x = torch.randn(3, 64)
    base = net[0].base_layer(x)
    torch.testing.assert_close(ad(x), base)  # B = 0: dropout cannot show
    randomise(ad.trainable_parameters())
    layer = net[0]
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    torch.manual_seed(3)
    out = ad(x)
    torch.manual_seed(3)
    kept = F.dropout(x, 0.5, training=True)
    torch.testing.assert_close(out, base + layer.scaling["default"] * kept @ A.T @ B.T)
    ad.eval()
    torch.testing.assert_close(ad(x), base + layer.scaling["default"] * x @ A.T @ B.T)


def test_default_targets_are_query_and_value_else_all_linear_but_the_head():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(8, 8) for _ in range(4))
            self.head = nn.Linear(8, 2)

    assert LoRAAdapter(Attn()).add_adapter().target_names() == ["q_proj", "v_proj"]
    assert LoRAAdapter(toy_net()).add_adapter().target_names() == ["conv", "fc1", "fc2"]


def test_multihead_attention_children_are_never_wrapped():
    block = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    names = LoRAAdapter(block).add_adapter().target_names()
    assert names == ["linear1", "linear2"]  # not self_attn.out_proj: MultiheadAttention reads its weight directly
    with pytest.raises(ValueError, match="matches no module"):
        LoRAAdapter(nn.TransformerEncoderLayer(8, 2, 16), target_modules=["out_proj"]).add_adapter()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"r": 0}, ValueError, "r=0"),
        ({"r": 2.0}, TypeError, "r must be an int"),
        ({"lora_alpha": -1}, ValueError, "lora_alpha=-1"),
        ({"lora_dropout": 1.0}, ValueError, r"lora_dropout=1.0 .* \[0, 1\)"),
        ({"target_modules": ["fc9"]}, ValueError, "'fc9' matches no module"),
        ({"target_modules": ["ln"]}, ValueError, "'ln' is a LayerNorm; LoRAAdapter supports Linear, Conv2d, Embedding"),
        ({"target_modules": "fc[9"}, ValueError, "not a valid regular expression"),
        ({"target_modules": 3}, TypeError, "target_modules must be None, a string or a list"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        LoRAAdapter(toy_net(), **kwargs).add_adapter()


def test_grouped_conv_is_refused_with_a_hint():
    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="groups=2"):
        LoRAAdapter(net, target_modules=["0"]).add_adapter()
    assert isinstance(net[0], nn.Conv2d)  # the failed add left the model as it was
