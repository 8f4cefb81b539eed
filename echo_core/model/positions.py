"""Position rows for a token layout under a rope mode.

Rules (upstream TMRoPE, extended):
- Text tokens take consecutive positions on every row; a token marked `shares_prev`
  (the second of Qwen's paired `<|vision_bos|><|audio_bos|>` markers) repeats the
  previous position.
- A maximal run of audio/video tokens (or of a spoken question's audio, which is placed
  the same way) is an AV block with origin o = the next free
  position. A token with time id τ gets T = o + τ; video tokens get H = o + h and
  W = o + w, audio tokens H = W = T. Kept tokens keep these original values whatever
  was dropped around them (tmrope, sync).
- `compact` replaces τ by the rank of τ among the block's distinct kept time ids,
  squeezing out the gaps (the baseline that loses real timing).
- After a block the next free position is the *whole* block's max(T, H, W) + 1 (each AV
  token carries its block's extent in `TokenLayout.block_end`), so text after a sieved
  block keeps the position it has in the full sequence, whatever was dropped (the
  EchoingPixels reference rule; tmrope, sync). `compact` continues from the largest
  compacted kept position + 1.
- Sync-RoPE's fourth row repeats T.
"""

from __future__ import annotations

from itertools import pairwise

import torch

from .rope import RopeMode
from .tokens import Modality, TokenLayout


def _runs(mask: torch.Tensor) -> list[tuple[int, int, bool]]:
    """Maximal runs of equal values of a [L] bool mask as (start, end, value)."""
    n = int(mask.shape[0])
    if n == 0:
        return []
    change = torch.nonzero(mask[1:] != mask[:-1]).flatten() + 1
    bounds = [0, *change.tolist(), n]
    return [(a, b, bool(mask[a])) for a, b in pairwise(bounds)]


def dense_rank(values: torch.Tensor) -> torch.Tensor:
    """Rank of each value among the distinct values: [N] long → [N] long."""
    _, inverse = torch.unique(values, sorted=True, return_inverse=True)
    return inverse


def av_rows(
    origin: int, tau: torch.Tensor, modality: torch.Tensor, grid_h: torch.Tensor, grid_w: torch.Tensor
) -> torch.Tensor:
    """(T, H, W) rows of AV tokens in a block with origin `origin`: [N] tensors → [3, N] long.

    T = origin + τ; video H/W = origin + grid row/column, audio H = W = T. A token's rows
    depend on nothing but its own metadata, so a streaming cache can position tokens one
    chunk at a time and get what a whole-sequence `build_positions` would give.
    """
    t = origin + tau
    video = modality == Modality.VIDEO
    return torch.stack([t, torch.where(video, origin + grid_h, t), torch.where(video, origin + grid_w, t)])


def build_positions(layout: TokenLayout, mode: RopeMode, start: int = 0) -> torch.Tensor:
    """Position rows for every token of `layout`.

    Args:
        layout: token metadata, [L] tensors.
        mode: rope mode; sync gives 4 rows, the others 3.
        start: position of the first token.
    Returns:
        [R, L] long, R = 4 for sync else 3.
    """
    n = len(layout)
    rows = torch.empty(3, n, dtype=torch.long)
    cursor = start
    is_av = layout.timed_mask
    for a, b, av in _runs(is_av):
        if not av:
            share = layout.shares_prev[a:b].clone()
            if a == 0:
                share[0] = False
            steps = (~share).long()
            pos = cursor + torch.cumsum(steps, 0) - 1
            rows[:, a:b] = pos
            cursor = int(pos[-1]) + 1
            continue
        tau = layout.time_ids[a:b]
        if mode is RopeMode.COMPACT:
            tau = dense_rank(tau)
        rows[:, a:b] = av_rows(cursor, tau, layout.modality[a:b], layout.grid_h[a:b], layout.grid_w[a:b])
        kept_end = int(rows[:, a:b].max()) + 1
        if mode is RopeMode.COMPACT:
            cursor = kept_end
        else:
            cursor = max(kept_end, cursor + int(layout.extents[a:b].max()) + 1)
    return mode_rows(rows, mode)


def mode_rows(rows: torch.Tensor, mode: RopeMode) -> torch.Tensor:
    """(T, H, W) rows [3, L] → the mode's rows: Sync-RoPE appends a fourth row repeating T."""
    return torch.cat([rows, rows[:1]], dim=0) if mode is RopeMode.SYNC else rows


def next_position(positions: torch.Tensor) -> int:
    """The first free position after a block of rows [R, L] (text continues here)."""
    return int(positions.max()) + 1 if positions.numel() else 0
