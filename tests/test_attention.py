"""Grouped-query attention folded onto the KV heads equals transformers' SDPA with repeated KV."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from echo_core.model.attention import fold_mask, grouped_sdpa_forward
from echo_core.model.lm import additive_mask

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("q_len", "past", "causal"), [(1, 9, True), (5, 12, True), (6, 0, False)])
def test_folded_heads_equal_repeated_kv(q_len: int, past: int, causal: bool) -> None:
    torch.manual_seed(0)
    heads, kv_heads, d = 6, 2, 8
    module = nn.Module()
    module.num_key_value_groups = heads // kv_heads  # type: ignore[assignment]
    module.is_causal = True  # type: ignore[assignment]
    query = torch.randn(2, heads, q_len, d)
    key, value = torch.randn(2, 2, kv_heads, past + q_len, d).unbind(0)
    mask = (
        None
        if q_len == 1
        else additive_mask(q_len, past, causal=causal, dtype=query.dtype, device=query.device)
    )
    if mask is not None:
        mask = mask.clone()
        mask[..., 0] = torch.finfo(query.dtype).min  # a hidden cache column, as an ask sieve makes
    expected, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=d**-0.5)
    got, _ = grouped_sdpa_forward(module, query, key, value, mask, scaling=d**-0.5)
    assert got.shape == expected.shape == (2, q_len, heads, d)
    assert float((got - expected).abs().max()) < 1e-5
    if mask is not None:  # a mask folded once by the caller (as `run_layers` does) reads the same
        folded = fold_mask(mask, heads // kv_heads)
        assert folded.shape == (1, 1, heads // kv_heads * q_len, past + q_len)
        again, _ = grouped_sdpa_forward(module, query, key, value, folded, scaling=d**-0.5)
        assert torch.equal(again, got)
