"""Grouped-query attention that never expands the cache: the query heads are folded onto the KV heads.

transformers' SDPA path repeats every key/value head `groups` times (`repeat_kv`) whenever a
mask is passed with more than one query, so a question over a long cached window first copies
the whole cache `groups` times per layer. Here the G = H / Hkv query heads that share a KV head
are stacked along the query axis instead: queries [B, H, L, d] → [B, Hkv, G·L, d] against keys
[B, Hkv, S, d], the mask tiled G times along the query axis ([B, 1, G·L, S], the size of the
queries' scores, not of the cache). The result is the same attention, reading each cached key
and value once. Keys and values stored in another dtype than the model's (a bfloat16 KV store
under a float32 model, `StreamConfig.kv_dtype`) are attended in their own dtype: the queries
and the mask are cast to it, the output back. Registered with transformers' `AttentionInterface`
(its public extension point) and selected per model with `set_attn_implementation`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

#: The name under which the function is registered.
GROUPED_SDPA = "echo_grouped_sdpa"


def fold_mask(mask: torch.Tensor, groups: int) -> torch.Tensor:
    """An additive mask [B|1, 1, L, S] tiled for `groups` folded query heads: [B|1, 1, G·L, S]
    (the mask itself for one group).

    A caller that runs several layers with one mask folds it once and passes the result.
    """
    return mask if groups == 1 else mask.repeat(1, 1, groups, 1)


def grouped_sdpa_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of query [B, H, L, d] over key/value [B, Hkv, S, d]; returns ([B, L, H, d], None).

    `attention_mask` is additive, [B|1, 1|H, L, S], or [B|1, 1, G·L, S] folded by `fold_mask`.

    A causal call without a mask, or one without grouped heads, goes to transformers' SDPA
    function unchanged.
    """
    out_dtype = query.dtype
    if key.dtype != out_dtype:  # keys/values stored in their own dtype: attend in it
        query = query.to(key.dtype)
        if attention_mask is not None and attention_mask.is_floating_point():
            attention_mask = attention_mask.to(key.dtype)
    b, h, q_len, d = query.shape
    kv_heads = key.shape[1]
    groups = h // kv_heads
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if (
        groups == 1
        or (attention_mask is None and causal and q_len > 1)
        or kwargs.get("position_bias") is not None
    ):
        out, _ = sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
        return out.to(out_dtype), None
    folded = query.reshape(b, kv_heads, groups * q_len, d)  # [B, Hkv, G·L, d]
    mask = None
    if attention_mask is not None:
        mask = attention_mask[..., -key.shape[2] :]  # [B|1, 1|H, L or G·L, S]
        if mask.shape[-2] == q_len:  # not folded by the caller (`fold_mask`) yet
            if mask.shape[1] == 1:
                mask = fold_mask(mask, groups)  # [B|1, 1, G·L, S]
            else:  # per-head masks: fold the heads like the queries
                mask = mask.expand(b, h, q_len, -1).reshape(b, kv_heads, groups * q_len, -1)
    out = F.scaled_dot_product_attention(
        folded, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling, is_causal=False
    )  # [B, Hkv, G·L, d]
    out = out.reshape(b, h, q_len, d).transpose(1, 2)  # [B, L, H, d]
    return out.to(out_dtype, memory_format=torch.contiguous_format), None


AttentionInterface.register(GROUPED_SDPA, grouped_sdpa_forward)
