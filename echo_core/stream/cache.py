"""The joint token cache: at most B audio + video tokens of one session, preallocated.

Each slot holds a kept token's input embedding, its absolute stream time id (25 per
second), modality, merged-grid (h, w), placeholder id and ingest score. Slots are kept
in ingest order (chunk by chunk; inside a chunk, TMRoPE's interleave: video then audio),
so eviction compacts the arrays instead of leaving holes and every window is a mask.
Positions are derived from the metadata when needed, never stored (see session.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..errors import BudgetError
from ..model.tokens import Modality, TokenLayout


@dataclass(frozen=True)
class CachedTokens:
    """A batch of AV tokens entering or leaving the cache; every tensor is [K] except embeds."""

    embeds: torch.Tensor  # [K, D]
    input_ids: torch.Tensor  # [K] long placeholder ids
    time_ids: torch.Tensor  # [K] long absolute stream time ids
    modality: torch.Tensor  # [K] long Modality values
    grid_h: torch.Tensor  # [K] long
    grid_w: torch.Tensor  # [K] long
    scores: torch.Tensor  # [K] float32 ingest score, z-scored within its chunk

    def __len__(self) -> int:
        return int(self.time_ids.shape[0])

    def select(self, index: torch.Tensor) -> CachedTokens:
        """Tokens `index` ([M] long) in that order."""
        return CachedTokens(
            self.embeds[index.to(self.embeds.device)],
            *(
                getattr(self, f)[index]
                for f in ("input_ids", "time_ids", "modality", "grid_h", "grid_w", "scores")
            ),
        )

    @staticmethod
    def concat(parts: list[CachedTokens]) -> CachedTokens:
        """`parts` one after the other; when one of them has no embeddings (`metadata`), the
        result has none."""
        if any(p.embeds.shape[1] == 0 for p in parts):
            parts = [p.metadata() for p in parts]
        return CachedTokens(
            *(torch.cat([getattr(p, f) for p in parts]) for f in CachedTokens.__dataclass_fields__)
        )

    def layout(self, base_tid: int, end_tid: int | None = None) -> TokenLayout:
        """Token layout with time ids relative to `base_tid` (the AV block's time origin).

        `end_tid` (exclusive): where the stream the tokens were kept from ends; text placed
        after them then sits after that end (the reference rule), not after the last kept token.
        """
        extent = None
        if end_tid is not None:
            reach = int(torch.maximum(self.grid_h, self.grid_w).max()) if len(self) else 0
            extent = torch.full((len(self),), max(end_tid - 1 - base_tid, reach), dtype=torch.long)
        return TokenLayout(
            self.input_ids,
            self.modality,
            self.time_ids - base_tid,
            self.grid_h,
            self.grid_w,
            torch.zeros(len(self), dtype=torch.bool),
            extent,
        )

    def count(self, modality: Modality) -> int:
        return int((self.modality == modality).sum())

    def metadata(self) -> CachedTokens:
        """The same tokens without their embeddings (embeds [K, 0]): enough for positions,
        times and counts, and free to concatenate."""
        return replace(self, embeds=self.embeds[:, :0])


class JointTokenCache:
    """Preallocated slots for at most `capacity` AV tokens, in ingest order."""

    def __init__(self, capacity: int, hidden: int, *, dtype: torch.dtype, device: torch.device) -> None:
        if capacity < 1:
            raise BudgetError(f"cache capacity must be ≥ 1, got {capacity}")
        self.capacity = capacity
        self.embeds = torch.zeros(capacity, hidden, dtype=dtype, device=device)  # [B, D]
        self.input_ids = torch.zeros(capacity, dtype=torch.long)  # [B]
        self.time_ids = torch.zeros(capacity, dtype=torch.long)  # [B]
        self.modality = torch.zeros(capacity, dtype=torch.long)  # [B]
        self.grid_h = torch.zeros(capacity, dtype=torch.long)  # [B]
        self.grid_w = torch.zeros(capacity, dtype=torch.long)  # [B]
        self.scores = torch.zeros(capacity, dtype=torch.float32)  # [B]
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def _fields(self) -> tuple[torch.Tensor, ...]:
        return (
            self.embeds,
            self.input_ids,
            self.time_ids,
            self.modality,
            self.grid_h,
            self.grid_w,
            self.scores,
        )

    def tokens(self, slots: torch.Tensor | None = None, *, embeds: bool = True) -> CachedTokens:
        """The cached tokens at `slots` ([M] long, default every used slot), as copies.

        `embeds=False` leaves the embeddings out (`CachedTokens.metadata`): an answer that reads
        the slots' KV needs only their positions, and copying [M, D] would cost it O(M · D).
        """
        if slots is None:
            slots = torch.arange(self.size)
        elif slots.numel() and (int(slots.min()) < 0 or int(slots.max()) >= self.size):
            raise BudgetError(f"slots outside the {self.size} used ones")
        meta = (f[slots] for f in self._fields()[1:])
        if not embeds:
            return CachedTokens(self.embeds.new_empty((int(slots.shape[0]), 0)), *meta)
        return CachedTokens(self.embeds[slots.to(self.embeds.device)], *meta)

    def append(self, tokens: CachedTokens) -> range:
        """Write `tokens` after the used slots; returns the slots written."""
        n = len(tokens)
        if self.size + n > self.capacity:
            raise BudgetError(f"cache holds {self.size} + {n} tokens > capacity {self.capacity}; evict first")
        start = self.size
        for dst, f in zip(self._fields(), CachedTokens.__dataclass_fields__, strict=True):
            src = getattr(tokens, f)
            dst[start : start + n] = src.to(dst.device, dst.dtype)
        self.size += n
        return range(start, start + n)

    def keep(self, slots: torch.Tensor) -> None:
        """Keep only `slots` ([M] long, increasing), compacted to the front in the same order."""
        m = int(slots.shape[0])
        if m and bool((slots[1:] <= slots[:-1]).any()):
            raise BudgetError("slots to keep must be strictly increasing (the cache keeps ingest order)")
        for f in self._fields():
            f[:m] = f[slots.to(f.device)].clone()
        self.size = m

    def window_slots(self, start_tid: int) -> torch.Tensor:
        """Used slots whose time id is ≥ start_tid: [M] long, increasing."""
        return torch.nonzero(self.time_ids[: self.size] >= start_tid).flatten()

    def count(self, modality: Modality) -> int:
        return int((self.modality[: self.size] == modality).sum())

    @property
    def nbytes(self) -> int:
        """Bytes allocated for the slots (embeddings and metadata; the KV store is separate)."""
        return sum(f.element_size() * f.numel() for f in self._fields())

    def used_bytes(self) -> int:
        """Bytes of the used slots only."""
        return sum(f.element_size() * f[: self.size].numel() for f in self._fields())
