"""Position rows for a token layout under a rope mode.

Rules (upstream TMRoPE, extended):
- Text tokens take consecutive positions on every row; a token marked `shares_prev`
  (the second of Qwen's paired `<|vision_bos|><|audio_bos|>` markers) repeats the
  previous position.
- A maximal run of audio/video tokens is an AV block with origin o = the next free
  position. A token with time id τ gets T = o + τ; video tokens get H = o + h and
  W = o + w, audio tokens H = W = T. Kept tokens keep these original values whatever
  was dropped around them (tmrope, sync).
- `compact` replaces τ by the rank of τ among the block's distinct kept time ids,
  squeezing out the gaps (the baseline that loses real timing).
- After a block the next free position is max(T, H, W) + 1, so text after sparse AV
  continues from the largest kept position + 1.
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
    is_av = layout.av_mask
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
        t = cursor + tau
        video = layout.modality[a:b] == Modality.VIDEO
        rows[0, a:b] = t
        rows[1, a:b] = torch.where(video, cursor + layout.grid_h[a:b], t)
        rows[2, a:b] = torch.where(video, cursor + layout.grid_w[a:b], t)
        cursor = int(rows[:, a:b].max()) + 1
    if mode is RopeMode.SYNC:
        return torch.cat([rows, rows[:1]], dim=0)
    return rows


def next_position(positions: torch.Tensor) -> int:
    """The first free position after a block of rows [R, L] (text continues here)."""
    return int(positions.max()) + 1 if positions.numel() else 0
