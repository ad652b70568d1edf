"""Attention forwards with adapter hooks, for modules whose projections cannot be wrapped one by one.

- :func:`mha_forward` computes ``torch.nn.MultiheadAttention`` from its own tensors (same arguments, masks and
  outputs as ``mha(query, key, value, ...)``) with optional key/value prefixes (prefix tuning), key/value scalings
  (IA3) and replacement biases (BitFit).
- :func:`bert_self_attention` does the same for Hugging Face BERT-style self-attention modules (``query``/``key``/
  ``value`` linear layers, ``num_attention_heads``, ``attention_head_size``, ``dropout``), with the attention mask
  Hugging Face passes to them (boolean ``True`` = attend, or additive float; ``[B, 1, T or 1, T]``).

Notation: ``N`` batch, ``L`` target length, ``S`` source length, ``P`` prefix length, ``E`` embedding size, ``H``
heads, ``d = E / H``. Attention: ``softmax(Q K^T / sqrt(d) + M) V`` per head, ``M`` the additive mask (0 on prefix
columns: every query attends to the prefix).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def check_mha(mha: nn.Module) -> None:
    """Refuse ``nn.MultiheadAttention`` options :func:`mha_forward` does not reproduce."""
    if getattr(mha, "bias_k", None) is not None or getattr(mha, "add_zero_attn", False):
        raise ValueError("MultiheadAttention with add_bias_kv or add_zero_attn is not supported by this adapter")


def _additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean mask (``True`` = blocked, MultiheadAttention's convention) or a float mask as an additive mask."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def _mha_mask(
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    n: int,
    h: int,
    L: int,
    s: int,
    p: int,
    dtype: torch.dtype,
) -> Tensor | None:
    """``attn_mask`` (``[L, S]`` or ``[N*H, L, S]``) + ``key_padding_mask`` (``[N, S]``) as one additive
    ``[N or 1, H or 1, L, P + S]`` mask with zeros in the ``P`` prefix columns."""
    mask = None
    if attn_mask is not None:
        a = _additive(attn_mask, dtype)
        mask = a.view(1, 1, L, s) if a.dim() == 2 else a.view(n, h, L, s)
    if key_padding_mask is not None:
        kp = _additive(key_padding_mask, dtype).view(n, 1, 1, s)
        mask = kp if mask is None else mask + kp
    if mask is not None and p:
        mask = F.pad(mask, (p, 0))
    return mask


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float, scale: float, weights: bool):
    """``[N, H, L, d]`` queries against ``[N, H, S, d]`` keys/values; also the (dropped-out) weights if asked."""
    if not weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale), None
    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores + mask
    probs = F.dropout(torch.softmax(scores, dim=-1), p=dropout_p)
    return probs @ v, probs


def mha_forward(
    mha: nn.MultiheadAttention,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    key_padding_mask: Tensor | None = None,
    need_weights: bool = True,
    attn_mask: Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
    *,
    prefix: tuple[Tensor, Tensor] | None = None,
    key_scale: Tensor | None = None,
    value_scale: Tensor | None = None,
    in_proj_bias: Tensor | None = None,
    out_proj_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """``mha(query, key, value, ...)`` with adapter hooks; the first nine arguments are MultiheadAttention's.

    Args:
        prefix: keys and values ``([P, E], [P, E])`` prepended after the projections (prefix tuning).
        key_scale, value_scale: ``[E]`` factors on the projected keys/values (IA3).
        in_proj_bias, out_proj_bias: replacements for ``mha.in_proj_bias`` (``[3E]``) and ``mha.out_proj.bias``
            (BitFit).

    Returns:
        ``(output, weights)`` shaped as MultiheadAttention's; ``weights`` is ``[N, L, P + S]`` (or per head) or None.
    """
    if is_causal and attn_mask is None:
        raise ValueError("is_causal=True needs attn_mask (as for nn.MultiheadAttention)")
    batched = query.dim() == 3
    if not batched:  # [L, E] -> [1, L, E]
        query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
        key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
    elif not mha.batch_first:  # [L, N, E] -> [N, L, E]
        query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
    n, L, e = query.shape
    s, h = key.shape[1], mha.num_heads
    d = e // h
    if mha._qkv_same_embed_dim:
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    else:
        w_q, w_k, w_v = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    bias = mha.in_proj_bias if in_proj_bias is None else in_proj_bias
    b_q, b_k, b_v = bias.chunk(3) if bias is not None else (None, None, None)
    q, k, v = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
    if key_scale is not None:
        k = k * key_scale
    if value_scale is not None:
        v = v * value_scale
    p = 0
    if prefix is not None:
        p = prefix[0].shape[0]
        k = torch.cat([prefix[0].unsqueeze(0).expand(n, -1, -1), k], dim=1)
        v = torch.cat([prefix[1].unsqueeze(0).expand(n, -1, -1), v], dim=1)
    mask = _mha_mask(attn_mask, key_padding_mask, n, h, L, s, p, q.dtype)

    def heads(t: Tensor) -> Tensor:
        return t.view(n, t.shape[1], h, d).transpose(1, 2)

    dropout_p = mha.dropout if mha.training else 0.0
    out, probs = _attend(heads(q), heads(k), heads(v), mask, dropout_p, d**-0.5, need_weights)
    out = out.transpose(1, 2).reshape(n, L, e)
    out = F.linear(out, mha.out_proj.weight, mha.out_proj.bias if out_proj_bias is None else out_proj_bias)
    if probs is not None and average_attn_weights:
        probs = probs.mean(dim=1)
    if not batched:
        return out[0], None if probs is None else probs[0]
    if not mha.batch_first:
        out = out.transpose(0, 1)
    return out, probs


def is_bert_self_attention(module: nn.Module) -> bool:
    """Whether ``module`` looks like Hugging Face BERT-style self-attention (duck-typed; no transformers import)."""
    return (
        all(isinstance(getattr(module, n, None), nn.Linear) for n in ("query", "key", "value"))
        and isinstance(getattr(module, "num_attention_heads", None), int)
        and isinstance(getattr(module, "attention_head_size", None), int)
        and not isinstance(module, nn.MultiheadAttention)
    )


def _hf_mask(attention_mask: Tensor | None, p: int, dtype: torch.dtype) -> Tensor | None:
    """Hugging Face's mask (boolean ``True`` = attend, or additive) as an additive mask with ``p`` open columns."""
    if attention_mask is None:
        return None
    if attention_mask.dtype == torch.bool:
        mask = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
        mask = mask.masked_fill(~attention_mask, torch.finfo(dtype).min)
    else:
        mask = attention_mask.to(dtype)
    return F.pad(mask, (p, 0)) if p else mask


def bert_self_attention(
    module: Any,
    hidden_states: Tensor,
    attention_mask: Tensor | None = None,
    *,
    prefix: tuple[Tensor, Tensor] | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """A BERT-style self-attention forward (``[N, T, E]`` -> ``[N, T, E]``) with key/value ``prefix`` (``[P, E]`` each).

    Cross-attention and key/value caches are refused: prefix tuning here adapts encoder self-attention.
    Returns ``(output, None)`` like Hugging Face's modules (attention weights are not materialised).
    """
    for name in ("encoder_hidden_states", "cache", "past_key_values", "past_key_value"):
        if kwargs.get(name) is not None:
            raise ValueError(f"{name} is not supported with prefix tuning of BERT-style self-attention")
    n, t, _ = hidden_states.shape
    h, d = module.num_attention_heads, module.attention_head_size
    q, k, v = module.query(hidden_states), module.key(hidden_states), module.value(hidden_states)
    p = 0
    if prefix is not None:
        p = prefix[0].shape[0]
        k = torch.cat([prefix[0].unsqueeze(0).expand(n, -1, -1), k], dim=1)
        v = torch.cat([prefix[1].unsqueeze(0).expand(n, -1, -1), v], dim=1)

    def heads(x: Tensor) -> Tensor:
        return x.view(n, x.shape[1], h, d).transpose(1, 2)

    dropout_p = module.dropout.p if module.training else 0.0
    scale = float(getattr(module, "scaling", d**-0.5))
    mask = _hf_mask(attention_mask, p, q.dtype)
    out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=mask, dropout_p=dropout_p, scale=scale)
    return out.transpose(1, 2).reshape(n, t, h * d), None
