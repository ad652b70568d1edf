"""Attention adapters: our MultiheadAttention forward against torch's, prefix tuning against attention over extra
key/value tokens, IA3/BitFit inside attention against their merged form, and the fused fast path of
nn.TransformerEncoderLayer (which must not bypass an adapter)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _adapter_models import attn_inputs, attn_net, randomise
from meta_learning.adapters import BitFitAdapter, IA3Adapter, LinearAdapter, PrefixTuningAdapter
from meta_learning.adapters.attention import mha_forward

F64 = torch.float64


def make_mha(batch_first=True, kdim=None, seed=0):
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first, kdim=kdim, vdim=kdim).double().eval()
    with torch.no_grad():  # non-zero biases so that every term is exercised
        for name, p in mha.named_parameters():
            if "bias" in name:
                p.normal_()
    return mha


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask and attn_mask")  # torch's, on purpose
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kdim", [None, 5])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float", "per-head"])
@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_forward_matches_torch(batch_first, kdim, mask_kind, need_weights):
    mha = make_mha(batch_first, kdim)
    g = torch.Generator().manual_seed(1)
    n, L, s = 3, 4, 6
    q = torch.randn(n, L, 8, generator=g, dtype=F64)
    kv = torch.randn(n, s, kdim or 8, generator=g, dtype=F64)
    if not batch_first:
        q, kv = q.transpose(0, 1), kv.transpose(0, 1)
    pad = torch.zeros(n, s, dtype=torch.bool)
    pad[1, -2:] = True
    masks = {
        "none": None,
        "bool": torch.triu(torch.ones(L, s, dtype=torch.bool), diagonal=3),
        "float": torch.randn(L, s, generator=g, dtype=F64),
        "per-head": torch.randn(n * 2, L, s, generator=g, dtype=F64),
    }
    kw = dict(key_padding_mask=pad, need_weights=need_weights, attn_mask=masks[mask_kind])
    ref_out, ref_w = mha(q, kv, kv, **kw)
    out, w = mha_forward(mha, q, kv, kv, **kw)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    if need_weights:
        torch.testing.assert_close(w, ref_w, rtol=0, atol=1e-12)
        _, ref_heads = mha(q, kv, kv, average_attn_weights=False, **kw)
        torch.testing.assert_close(mha_forward(mha, q, kv, kv, average_attn_weights=False, **kw)[1], ref_heads)
    else:
        assert w is None and ref_w is None


def test_mha_forward_unbatched():
    mha = make_mha()
    x = torch.randn(5, 8, dtype=F64)
    torch.testing.assert_close(mha_forward(mha, x, x, x)[0], mha(x, x, x)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("batch_first", [True, False])
def test_prefix_equals_attention_over_projected_extra_tokens(batch_first):
    """With K_l = W_k z + b_k and V_l = W_v z + b_v, prefix attention over x equals plain attention over [z; x]."""
    mha = make_mha(batch_first)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(3, 8, generator=g, dtype=F64)  # 3 extra tokens, shared by every example
    x = torch.randn(2, 5, 8, generator=g, dtype=F64)
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    _, w_k, w_v = mha.in_proj_weight.chunk(3)
    _, b_k, b_v = mha.in_proj_bias.chunk(3)
    prefix = (z @ w_k.T + b_k, z @ w_v.T + b_v)
    kv = torch.cat([z.expand(2, 3, 8), x], 1)
    pad_kv = torch.cat([torch.zeros(2, 3, dtype=torch.bool), pad], 1)
    if not batch_first:
        x, kv = x.transpose(0, 1), kv.transpose(0, 1)
    expected, expected_w = mha(x, kv, kv, key_padding_mask=pad_kv)
    out, w = mha_forward(mha, x, x, x, key_padding_mask=pad, prefix=prefix)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(w, expected_w, rtol=0, atol=1e-12)


def test_prefix_adapter_uses_the_mlp_slice_of_its_layer():
    net = attn_net().double()
    ad = PrefixTuningAdapter(net, prefix_length=4, projection_hidden_size=8).add_prefix()
    layer = net.block.self_attn
    enc = layer.prefix_encoder["default"]
    full = torch.tanh(enc.embedding @ enc.mlp_in_weight.T + enc.mlp_in_bias) @ enc.mlp_out_weight.T + enc.mlp_out_bias
    k, v = layer.prefix("default")
    # the layer may fuse the bias into addmm: same math, not always the same rounding (float64: 1e-12)
    torch.testing.assert_close(k, full[:, :16], rtol=0, atol=1e-12)
    torch.testing.assert_close(v, full[:, 16:], rtol=0, atol=1e-12)
    ids, pad = attn_inputs()
    x = net.emb(ids)
    out = layer(x, x, x, key_padding_mask=pad, need_weights=False)[0]
    ref = mha_forward(layer.base_layer, x, x, x, key_padding_mask=pad, need_weights=False, prefix=(k, v))[0]
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert ad.efficiency().trainable == 4 * 16 + (16 * 8 + 8) + (8 * 32 + 32)


def test_prefix_hidden_size_is_checked_against_the_model():
    with pytest.raises(ValueError, match="hidden_size=32 but the attention modules have size 16"):
        PrefixTuningAdapter(attn_net(), hidden_size=32).add_prefix()
    with pytest.raises(ValueError, match="no nn.MultiheadAttention or BERT-style self-attention"):
        PrefixTuningAdapter(nn.Sequential(nn.Linear(3, 3))).add_prefix()


@pytest.mark.parametrize(
    "make",
    [
        lambda net: IA3Adapter(net),
        lambda net: BitFitAdapter(net),
        lambda net: LinearAdapter(net, reduction_factor=4),
        lambda net: PrefixTuningAdapter(net, prefix_length=2),
    ],
    ids=["ia3", "bitfit", "bottleneck", "prefix"],
)
def test_transformer_fast_path_does_not_bypass_the_adapter(make):
    """In eval mode without grad, nn.TransformerEncoderLayer would run a fused kernel on the raw attention weights."""
    net = attn_net()
    ad = make(net).add_adapter()
    randomise(ad.trainable_parameters())
    ids, pad = attn_inputs()
    with torch.enable_grad():
        ad.train()  # training mode: never the fast path (dropout is 0, so the function is the same)
        reference = ad(ids, pad)
    ad.eval()
    with torch.no_grad():
        fast = ad(ids, pad)
        ad.disable()
        base = ad(ids, pad)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-5)
    assert (fast - base).abs().max() > 1e-3


def test_ia3_in_attention_equals_scaled_projection_weights():
    mha = make_mha()
    net = nn.Sequential()
    net.add_module("attn", mha)
    ad = IA3Adapter(net, target_modules=["attn"]).add_adapter()
    randomise(ad.trainable_parameters())
    lk, lv = mha_layer = net.attn.ia3_l_k["default"], net.attn.ia3_l_v["default"]
    del mha_layer
    x = torch.randn(2, 5, 8, dtype=F64)
    out = net.attn(x, x, x)[0]
    scaled = make_mha()
    with torch.no_grad():
        scaled.in_proj_weight[8:16] *= lk[:, None]
        scaled.in_proj_weight[16:] *= lv[:, None]
        scaled.in_proj_bias[8:16] *= lk
        scaled.in_proj_bias[16:] *= lv
    torch.testing.assert_close(out, scaled(x, x, x)[0], rtol=0, atol=1e-12)


def test_collapsing_the_reparameterisation_keeps_the_outputs(tmp_path):
    net = attn_net().double()
    ad = PrefixTuningAdapter(net, prefix_length=4, projection_hidden_size=8).add_prefix()
    ids, pad = attn_inputs()
    out = ad(ids, pad)
    ad.collapse()
    assert ad.adapter_config().projection is False
    assert ad.efficiency().trainable == 4 * 2 * 16  # P x 2 L E with L = 1
    torch.testing.assert_close(ad(ids, pad), out, rtol=0, atol=1e-12)
    ad.save(tmp_path)
    from meta_learning.adapters import load_adapter

    torch.testing.assert_close(load_adapter(attn_net().double(), tmp_path)(ids, pad), out, rtol=0, atol=1e-12)
