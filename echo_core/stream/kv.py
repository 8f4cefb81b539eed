"""Preallocated LLM keys/values for a session: the chat prefix, then one entry per cache slot.

Slot i of the joint token cache owns KV column prefix_len + i on every layer, so
evictions compact both in the same way and answering needs no recomputation: the
selected columns become a private cache the question is prefilled against.
"""

from __future__ import annotations

import torch
from transformers import Cache
from transformers.cache_utils import CacheLayerMixin, DummyLayer, DynamicLayer, LinearAttentionCacheLayerMixin

from ..lm import LanguageModel


class BufferedLayer(DynamicLayer):
    """A cache layer whose keys/values are the front of a buffer with room to grow.

    `DynamicLayer.update` concatenates, copying the whole cache on every call; here the
    new states are written in place after the used columns (the buffer doubles when full),
    so a question or a decode step costs no copy of the cached window.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, used: int) -> None:
        super().__init__()
        self._keys_buf, self._values_buf = keys, values  # [1, Hkv, capacity, hd]
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._used = used
        self._expose()

    def _expose(self) -> None:
        self.keys = self._keys_buf[:, :, : self._used]
        self.values = self._values_buf[:, :, : self._used]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = key_states.shape[-2]
        capacity = self._keys_buf.shape[-2]
        if self._used + n > capacity:
            grow = max(2 * capacity, self._used + n)
            shape = (*self._keys_buf.shape[:2], grow, self._keys_buf.shape[-1])
            k, v = self._keys_buf.new_empty(shape), self._values_buf.new_empty(shape)
            k[:, :, : self._used] = self._keys_buf[:, :, : self._used]
            v[:, :, : self._used] = self._values_buf[:, :, : self._used]
            self._keys_buf, self._values_buf = k, v
        self._keys_buf[:, :, self._used : self._used + n] = key_states
        self._values_buf[:, :, self._used : self._used + n] = value_states
        self._used += n
        self._expose()
        return self._keys_buf[:, :, : self._used], self._values_buf[:, :, : self._used]


class KVStore:
    """Keys and values [layers, kv_heads, prefix_len + capacity, head_dim], filled from forward caches."""

    def __init__(self, lm: LanguageModel, prefix_len: int, capacity: int) -> None:
        cfg = lm.config
        n_kv = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
        shape = (len(lm.layers), n_kv, prefix_len + capacity, lm.head_dim)
        self.keys = torch.zeros(shape, dtype=lm.dtype, device=lm.device)  # [Ly, Hkv, P + B, hd]
        self.values = torch.zeros(shape, dtype=lm.dtype, device=lm.device)  # [Ly, Hkv, P + B, hd]
        self.prefix_len = prefix_len
        self.lm = lm

    def write(self, cache: Cache, column: int, count: int) -> None:
        """Copy the last `count` positions of every layer of `cache` into columns [column, column + count)."""
        for i, layer in enumerate(cache.layers):
            keys, values = layer.keys, layer.values  # type: ignore[union-attr]
            assert keys is not None and values is not None
            self.keys[i, :, column : column + count] = keys[0, :, -count:]
            self.values[i, :, column : column + count] = values[0, :, -count:]

    def write_prefix(self, cache: Cache) -> None:
        self.write(cache, 0, self.prefix_len)

    def write_slots(self, cache: Cache, first_slot: int, count: int) -> None:
        if count:
            self.write(cache, self.prefix_len + first_slot, count)

    def keep(self, slots: torch.Tensor) -> None:
        """Compact slot columns to `slots` ([M] long, increasing), as JointTokenCache.keep does."""
        cols = (self.prefix_len + slots).to(self.keys.device)
        m = int(slots.shape[0])
        p = self.prefix_len
        self.keys[:, :, p : p + m] = self.keys[:, :, cols].clone()
        self.values[:, :, p : p + m] = self.values[:, :, cols].clone()

    def dynamic_cache(self, slots: torch.Tensor | None, used: int, spare: int = 64) -> Cache:
        """A private cache over the prefix and `slots` ([M] long; None = the first `used` slots).

        The selected columns are copied once into buffers with `spare` free columns, which
        the next forward (a chunk, a question, decode steps) fills in place.
        """
        p = self.prefix_len
        n = p + (used if slots is None else int(slots.shape[0]))
        layers: list[CacheLayerMixin | LinearAttentionCacheLayerMixin | DummyLayer] = []
        for i in range(self.keys.shape[0]):
            shape = (1, self.keys.shape[1], n + spare, self.keys.shape[3])
            k, v = self.keys.new_empty(shape), self.values.new_empty(shape)
            if slots is None:
                k[0, :, :n] = self.keys[i, :, :n]
                v[0, :, :n] = self.values[i, :, :n]
            else:
                cols = (p + slots).to(self.keys.device)
                k[0, :, :p], v[0, :, :p] = self.keys[i, :, :p], self.values[i, :, :p]
                k[0, :, p:n] = self.keys[i, :, cols]
                v[0, :, p:n] = self.values[i, :, cols]
            layers.append(BufferedLayer(k, v, n))
        return Cache(layers=layers)

    @property
    def nbytes(self) -> int:
        return self.keys.element_size() * (self.keys.numel() + self.values.numel())

    def bytes_per_slot(self) -> int:
        return self.nbytes // self.keys.shape[2]
