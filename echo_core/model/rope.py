"""Multi-row rotary position embeddings: TMRoPE, Sync-RoPE and the compact baseline.

Qwen2.5-Omni's TMRoPE gives every token three position rows (time, height, width)
and assigns each of the head's rotary frequency pairs to one row by a fixed split,
time on the highest frequencies ([16, 24, 24] of 64 pairs for a 128-dim head).
Sync-RoPE adds a fourth row that repeats time on the lowest frequencies
([18, 18, 18, 10]), so that sparse kept tokens, whose time gaps are large, still have
channels slow enough to encode temporal order without aliasing.

`SectionedRotary` turns position rows into the (cos, sin) pair that the thinker's
decoder layers take as `position_embeddings`; we never replace the library's own
rotary module, we compute the embeddings and pass them in.
"""

from __future__ import annotations

import math
from enum import StrEnum

import torch
from torch import nn

from ..errors import ConfigError

#: Upstream TMRoPE split of a 128-dim head's 64 frequency pairs over rows [T, H, W].
TMROPE_SPLIT: tuple[int, ...] = (16, 24, 24)
#: Sync-RoPE split over rows [T, H, W, T] (EchoingPixels).
SYNC_SPLIT: tuple[int, ...] = (18, 18, 18, 10)
#: Which axis each row carries, per split length.
ROW_AXES: dict[int, tuple[str, ...]] = {3: ("t", "h", "w"), 4: ("t", "h", "w", "t")}
#: Position ids per second of stream time (40 ms resolution).
POSITIONS_PER_SECOND = 25
REFERENCE_PAIRS = 64


class RopeMode(StrEnum):
    """How kept audio-visual tokens are placed on the rotary axes."""

    TMROPE = "tmrope"  # upstream 3 rows, original timestamps
    SYNC = "sync"  # 4 rows [T, H, W, T], original timestamps
    COMPACT = "compact"  # 3 rows, kept time ids re-indexed to consecutive integers

    @classmethod
    def parse(cls, value: str | RopeMode) -> RopeMode:
        """Parse a mode name, raising ConfigError with the valid names."""
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ConfigError(f"unknown rope mode {value!r}; expected one of: {names}") from None


def scale_split(split: tuple[int, ...], n_pairs: int) -> tuple[int, ...]:
    """Scale a split defined for 64 frequency pairs to `n_pairs` pairs.

    Largest-remainder rounding keeps the sum exact; ties go to the earlier section.
    A section that is non-zero in the reference stays at least 1 when n_pairs allows.
    """
    if n_pairs < 1:
        raise ConfigError(f"rotary head needs at least 1 frequency pair, got {n_pairs}")
    total = sum(split)
    exact = [s * n_pairs / total for s in split]
    sizes = [math.floor(x) for x in exact]
    order = sorted(range(len(split)), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in order[: n_pairs - sum(sizes)]:
        sizes[i] += 1
    for i, ref in enumerate(split):
        if ref > 0 and sizes[i] == 0:
            donor = max(range(len(sizes)), key=lambda j: sizes[j])
            if sizes[donor] > 1:
                sizes[donor] -= 1
                sizes[i] = 1
    return tuple(sizes)


def mode_split(mode: RopeMode, n_pairs: int) -> tuple[int, ...]:
    """The section split a rope mode uses for a head with `n_pairs` frequency pairs."""
    base = SYNC_SPLIT if mode is RopeMode.SYNC else TMROPE_SPLIT
    if n_pairs == REFERENCE_PAIRS:
        return base
    return scale_split(base, n_pairs)


def pair_rows(split: tuple[int, ...]) -> torch.Tensor:
    """Row index used by each frequency pair: [n_pairs] long."""
    return torch.repeat_interleave(torch.arange(len(split)), torch.tensor(split, dtype=torch.long))


def temporal_pairs(split: tuple[int, ...]) -> list[int]:
    """Indices of the frequency pairs that carry time under `split`."""
    axes = ROW_AXES[len(split)]
    rows = pair_rows(split).tolist()
    return [j for j, r in enumerate(rows) if axes[r] == "t"]


def inverse_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    """θ_j = theta^(-2j/head_dim) for each pair j: [head_dim // 2] float32 (as upstream)."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))


class SectionedRotary(nn.Module):
    """(cos, sin) for the decoder layers from position rows and a section split.

    Pair j rotates by positions[row(j)] · θ_j. With the split (16, 24, 24) this is
    exactly upstream TMRoPE; with (18, 18, 18, 10) and four rows it is Sync-RoPE.
    """

    def __init__(self, head_dim: int, theta: float, split: tuple[int, ...]) -> None:
        super().__init__()
        if head_dim % 2:
            raise ConfigError(f"rotary head_dim must be even, got {head_dim}")
        if sum(split) != head_dim // 2:
            raise ConfigError(f"rope split {split} sums to {sum(split)} ≠ head_dim/2 = {head_dim // 2}")
        if len(split) not in ROW_AXES:
            raise ConfigError(f"rope split needs 3 or 4 sections, got {len(split)}")
        self.split = tuple(split)
        self.n_rows = len(split)
        self.inv_freq: torch.Tensor
        self.rows_of_pairs: torch.Tensor
        self.register_buffer("inv_freq", inverse_frequencies(head_dim, theta), persistent=False)
        self.register_buffer("rows_of_pairs", pair_rows(self.split), persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [R, L] or [R, B, L] long → (cos, sin), each [B, L, head_dim] in `dtype`."""
        if positions.dim() == 2:
            positions = positions[:, None, :]
        if positions.shape[0] != self.n_rows:
            raise ConfigError(f"position rows {positions.shape[0]} ≠ rope split rows {self.n_rows}")
        per_pair = positions.to(self.inv_freq.device)[self.rows_of_pairs]  # [P, B, L]
        freqs = per_pair.float().permute(1, 2, 0) * self.inv_freq  # [B, L, P]
        emb = torch.cat((freqs, freqs), dim=-1)  # [B, L, head_dim]
        return emb.cos().to(dtype), emb.sin().to(dtype)
