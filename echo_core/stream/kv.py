"""Preallocated LLM keys/values for a session: the chat prefix, then one entry per cache slot.

Slot i of the joint token cache owns KV column prefix_len + i on every layer, so
evictions compact both in the same way and answering needs no recomputation.

Answers read the store in place (copy-on-write). An answer over every cached slot is *lent*
the store itself: its tail, question and decode steps write into the reserve columns after
the used ones, and attention reads the cached columns where they lie, with no copy. Before
the store changes (a chunk is appended, slots are evicted), every lent answer is first given
a private copy of what it reads (`reclaim`), so ingest goes on and answers stay exact. The
caller serialises the two (the session's lock is held by ingest and by each answer step).
An answer over a subset of slots (a window, an ask sieve) gets a private copy of those
columns only.
"""

from __future__ import annotations

import weakref

import torch
from transformers import Cache
from transformers.cache_utils import CacheLayerMixin, DummyLayer, DynamicLayer, LinearAttentionCacheLayerMixin

from ..model.lm import LanguageModel


class BufferedLayer(DynamicLayer):
    """A cache layer whose keys/values are the front of a buffer with room to grow.

    `DynamicLayer.update` concatenates, copying the whole cache on every call; here the
    new states are written in place after the used columns (the buffer doubles when full),
    so a question or a decode step costs no copy of the cached window.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, used: int, *, shared: bool = False) -> None:
        super().__init__()
        self._keys_buf, self._values_buf = keys, values  # [1, Hkv, capacity, hd]
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._used = used
        self.shared = shared  # the buffers are a KVStore's own (lent, see `KVStore.lend`)
        self._expose()

    def detach(self, spare: int = 64) -> None:
        """Move onto private buffers (the used columns plus `spare` free ones), if still shared."""
        if not self.shared:
            return
        shape = (*self._keys_buf.shape[:2], self._used + spare, self._keys_buf.shape[-1])
        k, v = self._keys_buf.new_empty(shape), self._values_buf.new_empty(shape)
        k[:, :, : self._used] = self._keys_buf[:, :, : self._used]
        v[:, :, : self._used] = self._values_buf[:, :, : self._used]
        self._keys_buf, self._values_buf, self.shared = k, v, False
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
            self._keys_buf, self._values_buf, self.shared = k, v, False
        self._keys_buf[:, :, self._used : self._used + n] = key_states
        self._values_buf[:, :, self._used : self._used + n] = value_states
        self._used += n
        self._expose()
        return self._keys_buf[:, :, : self._used], self._values_buf[:, :, : self._used]


class KVStore:
    """Keys and values [layers, kv_heads, prefix_len + capacity + reserve, head_dim].

    `reserve` columns after the slots hold a lent answer's own tokens (tail, question, decode).
    `dtype` (default: the model's) is what the keys and values are stored as: new states are
    rounded to it as they are written, and attention reads them as they are stored
    (attention.py).
    """

    def __init__(
        self,
        lm: LanguageModel,
        prefix_len: int,
        capacity: int,
        reserve: int = 0,
        *,
        dtype: torch.dtype | None = None,
    ) -> None:
        cfg = lm.config
        n_kv = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
        shape = (len(lm.layers), n_kv, prefix_len + capacity + reserve, lm.head_dim)
        dtype = dtype or lm.dtype
        self.keys = torch.zeros(shape, dtype=dtype, device=lm.device)  # [Ly, Hkv, P + B + R, hd]
        self.values = torch.zeros(shape, dtype=dtype, device=lm.device)  # [Ly, Hkv, P + B + R, hd]
        self.prefix_len = prefix_len
        self.capacity = capacity
        self.lm = lm
        self._lent: weakref.WeakSet[BufferedLayer] = weakref.WeakSet()

    def reclaim(self) -> None:
        """Give every lent answer a private copy, so the store may change."""
        for layer in list(self._lent):
            layer.detach()
        self._lent.clear()

    def lend(self, used: int, spare: int) -> Cache:
        """A cache over the prefix and the first `used` slots that reads this store in place.

        Its next `spare` tokens are written into the columns after `used` (free slots and the
        reserve); beyond the store's columns it moves to private buffers by itself.
        """
        self.reclaim()  # one borrower at a time: an earlier answer writes the same free columns
        n = self.prefix_len + used
        layers: list[CacheLayerMixin | LinearAttentionCacheLayerMixin | DummyLayer] = []
        for i in range(self.keys.shape[0]):
            layer = BufferedLayer(
                self.keys[i][None], self.values[i][None], n, shared=True
            )  # [1, Hkv, cols, hd]
            self._lent.add(layer)
            layers.append(layer)
        return Cache(layers=layers)

    def write(self, cache: Cache, column: int, count: int) -> None:
        """Copy the last `count` positions of every layer of `cache` into columns [column, column + count)."""
        self.reclaim()
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
        self.reclaim()
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

    def append_in_place(self, first_slot: int, count: int) -> Cache:
        """A cache over the prefix and slots [0, first_slot) whose next `count` tokens are written
        straight into slot columns [first_slot, first_slot + count): ingest without a copy."""
        cache = self.lend(first_slot, count)
        for layer in cache.layers:
            self._lent.discard(layer)  # type: ignore[arg-type]
        return cache
