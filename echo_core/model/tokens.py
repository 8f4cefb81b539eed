"""Typed token containers: encoder outputs and the joint text + audio + video sequence.

A `TokenSequence` is what every sieve sees and what the language model consumes: the
input embeddings plus, per token, its modality, its time id (25 per second of stream
time, relative to the sequence's AV origin), its merged-grid (h, w) for video, and
whether it shares the previous token's position (Qwen's paired bos/eos markers).
Positions are *derived* from this metadata (see positions.py), never stored, so that
any subset of tokens can be re-positioned under any rope mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch

from .rope import POSITIONS_PER_SECOND

#: Audio and video are interleaved in chunks of this many seconds (TMRoPE).
SECONDS_PER_CHUNK = 2
TIME_IDS_PER_CHUNK = POSITIONS_PER_SECOND * SECONDS_PER_CHUNK


class Modality(IntEnum):
    """Token modality, stored as a small integer in layout tensors."""

    TEXT = 0
    AUDIO = 1
    VIDEO = 2
    SPEECH = 3  # a spoken question's audio: positioned like audio, never sieved, never in the scene cache


def seconds_to_time_ids(seconds: torch.Tensor) -> torch.Tensor:
    """Stream seconds → integer time ids at 25 per second (truncation, as upstream)."""
    return (seconds.double() * POSITIONS_PER_SECOND + 1e-6).floor().long()


@dataclass(frozen=True)
class VideoTokens:
    """Vision-encoder output for one clip or chunk, after the 2×2 merge."""

    embeds: torch.Tensor  # [Nv, D]
    time_ids: torch.Tensor  # [Nv] long, 25 per second from the stream origin
    grid_h: torch.Tensor  # [Nv] long, merged-grid row
    grid_w: torch.Tensor  # [Nv] long, merged-grid column
    grid_thw: tuple[int, int, int]  # (t, h, w) in merged tokens

    def __len__(self) -> int:
        return int(self.embeds.shape[0])


@dataclass(frozen=True)
class AudioTokens:
    """Audio-encoder output: one token per 40 ms."""

    embeds: torch.Tensor  # [Na, D]
    time_ids: torch.Tensor  # [Na] long

    def __len__(self) -> int:
        return int(self.embeds.shape[0])


def block_extents(
    modality: torch.Tensor, time_ids: torch.Tensor, grid_h: torch.Tensor, grid_w: torch.Tensor
) -> torch.Tensor:
    """Per token, the extent max(τ, h, w) of the maximal timed run (AV or spoken question) it
    belongs to; -1 for text.

    All tensors [L] long → [L] long.
    """
    n = int(modality.shape[0])
    out = torch.full((n,), -1, dtype=torch.long)
    av = modality != Modality.TEXT
    if n == 0 or not bool(av.any()):
        return out
    reach = torch.maximum(time_ids, torch.maximum(grid_h, grid_w))
    # Run ids: a new run starts at every AV token whose predecessor is text.
    starts = av & ~torch.cat([torch.tensor([False]), av[:-1]])
    run = torch.cumsum(starts.long(), 0) - 1
    ids = run[av]
    extent = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long).scatter_reduce(
        0, ids, reach[av], reduce="amax"
    )
    out[av] = extent[ids]
    return out


@dataclass(frozen=True)
class TokenLayout:
    """Per-token metadata of a sequence; every tensor is [L] and lives on the CPU."""

    input_ids: torch.Tensor  # [L] long (placeholder ids for audio/video tokens)
    modality: torch.Tensor  # [L] long, Modality values
    time_ids: torch.Tensor  # [L] long, -1 for text
    grid_h: torch.Tensor  # [L] long, 0 unless video
    grid_w: torch.Tensor  # [L] long, 0 unless video
    shares_prev: torch.Tensor  # [L] bool: same position as the previous token
    # [L] long: for an AV token, the extent of the whole AV block it was built in, as the largest
    # of (time id, grid row, grid column) over that block; -1 for text. Computed when the layout
    # is built and carried through `select`, so text after a sieved block keeps the position it
    # has in the full sequence (the reference rule) whatever the sieve dropped.
    block_end: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.block_end is None:
            extents = block_extents(self.modality, self.time_ids, self.grid_h, self.grid_w)
            object.__setattr__(self, "block_end", extents)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def extents(self) -> torch.Tensor:
        """`block_end`, never None: [L] long."""
        assert self.block_end is not None
        return self.block_end

    @property
    def av_mask(self) -> torch.Tensor:
        """[L] bool: a scene audio or video token (what sieves choose from)."""
        return (self.modality == Modality.AUDIO) | (self.modality == Modality.VIDEO)

    @property
    def timed_mask(self) -> torch.Tensor:
        """[L] bool: a token with a time id (scene audio/video or a spoken question's audio),
        positioned as part of an AV block."""
        return self.modality != Modality.TEXT

    def count(self, modality: Modality) -> int:
        return int((self.modality == modality).sum())

    def select(self, index: torch.Tensor) -> TokenLayout:
        """The layout of tokens `index` ([K] long, increasing), in that order."""
        return TokenLayout(
            self.input_ids[index],
            self.modality[index],
            self.time_ids[index],
            self.grid_h[index],
            self.grid_w[index],
            self.shares_prev[index],
            self.extents[index],
        )

    @staticmethod
    def concat(parts: list[TokenLayout]) -> TokenLayout:
        return TokenLayout(
            *(torch.cat([getattr(p, f) for p in parts]) for f in TokenLayout.__dataclass_fields__)
        )

    @staticmethod
    def text(ids: list[int] | torch.Tensor, shares_prev: list[bool] | None = None) -> TokenLayout:
        """Layout of plain text tokens."""
        t = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        n = t.shape[0]
        share = torch.zeros(n, dtype=torch.bool) if shares_prev is None else torch.tensor(shares_prev)
        zeros = torch.zeros(n, dtype=torch.long)
        return TokenLayout(t, zeros.clone(), torch.full((n,), -1), zeros.clone(), zeros.clone(), share)


@dataclass(frozen=True)
class TokenSequence:
    """Input embeddings with their layout: the unit sieves select from."""

    embeds: torch.Tensor  # [L, D]
    layout: TokenLayout

    def __post_init__(self) -> None:
        if self.embeds.shape[0] != len(self.layout):
            raise ValueError(f"embeddings {self.embeds.shape[0]} ≠ layout tokens {len(self.layout)}")

    def __len__(self) -> int:
        return len(self.layout)

    def select(self, index: torch.Tensor) -> TokenSequence:
        """Tokens `index` ([K] long, increasing) with their metadata."""
        return TokenSequence(self.embeds[index.to(self.embeds.device)], self.layout.select(index.cpu()))

    @staticmethod
    def concat(parts: list[TokenSequence]) -> TokenSequence:
        return TokenSequence(
            torch.cat([p.embeds for p in parts]), TokenLayout.concat([p.layout for p in parts])
        )


def interleave_order(
    video: VideoTokens | None, audio: AudioTokens | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Order AV tokens as TMRoPE does: per 2-s chunk, that chunk's video then its audio.

    Returns (modality [N], source_index [N]): for each slot of the interleaved block,
    which modality it comes from and its index within that modality's tokens.
    """
    mods, idx, keys = [], [], []
    for tokens, modality in ((video, Modality.VIDEO), (audio, Modality.AUDIO)):
        if tokens is None or len(tokens) == 0:
            continue
        n = len(tokens)
        mods.append(torch.full((n,), int(modality)))
        idx.append(torch.arange(n))
        rank = 0 if modality is Modality.VIDEO else 1
        keys.append((tokens.time_ids // TIME_IDS_PER_CHUNK) * 2 + rank)
    if not mods:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    key = torch.cat(keys)
    order = torch.sort(key, stable=True).indices
    return torch.cat(mods)[order], torch.cat(idx)[order]
