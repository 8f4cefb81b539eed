"""Preallocated LLM keys/values for a session: the chat prefix, then one entry per cache slot.

Slot i of the joint token cache owns KV column prefix_len + i on every layer, so
evictions compact both in the same way and answering needs no recomputation: the
selected columns become a `DynamicCache` the question is prefilled against.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from ..lm import LanguageModel


class KVStore:
    """Keys and values [layers, kv_heads, prefix_len + capacity, head_dim], filled from DynamicCaches."""

    def __init__(self, lm: LanguageModel, prefix_len: int, capacity: int) -> None:
        cfg = lm.config
        n_kv = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
        shape = (len(lm.layers), n_kv, prefix_len + capacity, lm.head_dim)
        self.keys = torch.zeros(shape, dtype=lm.dtype, device=lm.device)  # [Ly, Hkv, P + B, hd]
        self.values = torch.zeros(shape, dtype=lm.dtype, device=lm.device)  # [Ly, Hkv, P + B, hd]
        self.prefix_len = prefix_len
        self.lm = lm

    def write(self, cache: DynamicCache, column: int, count: int) -> None:
        """Copy the last `count` positions of every layer of `cache` into columns [column, column + count)."""
        for i, layer in enumerate(cache.layers):
            keys, values = layer.keys, layer.values  # type: ignore[union-attr]
            assert keys is not None and values is not None
            self.keys[i, :, column : column + count] = keys[0, :, -count:]
            self.values[i, :, column : column + count] = values[0, :, -count:]

    def write_prefix(self, cache: DynamicCache) -> None:
        self.write(cache, 0, self.prefix_len)

    def write_slots(self, cache: DynamicCache, first_slot: int, count: int) -> None:
        if count:
            self.write(cache, self.prefix_len + first_slot, count)

    def keep(self, slots: torch.Tensor) -> None:
        """Compact slot columns to `slots` ([M] long, increasing), as JointTokenCache.keep does."""
        cols = (self.prefix_len + slots).to(self.keys.device)
        m = int(slots.shape[0])
        p = self.prefix_len
        self.keys[:, :, p : p + m] = self.keys[:, :, cols].clone()
        self.values[:, :, p : p + m] = self.values[:, :, cols].clone()

    def dynamic_cache(self, slots: torch.Tensor | None, used: int) -> DynamicCache:
        """A DynamicCache over the prefix and `slots` ([M] long; None = the first `used` slots)."""
        p = self.prefix_len
        if slots is None:
            cols = torch.arange(p + used, device=self.keys.device)
        else:
            cols = torch.cat([torch.arange(p), p + slots]).to(self.keys.device)
        cache = self.lm.new_cache()
        for i in range(self.keys.shape[0]):
            cache.update(self.keys[i, :, cols][None], self.values[i, :, cols][None], i)
        return cache

    @property
    def nbytes(self) -> int:
        return self.keys.element_size() * (self.keys.numel() + self.values.numel())

    def bytes_per_slot(self) -> int:
        return self.nbytes // self.keys.shape[2]
