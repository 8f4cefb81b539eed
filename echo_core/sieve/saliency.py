"""Training-free CS2 scoring from the refiner's attention (for public Qwen2.5-Omni weights).

Let A be the head-averaged attention of the last refiner layer (bidirectional), A[j, i]
how much token j attends to token i, and h the hidden states entering that layer.

* With a question (text tokens after the AV block): s_i = mean_{q ∈ question} A[q, i].
* Without one (live ingest of a chunk), three cues, each divided by its mean over the
  AV pool so that they share one scale and audio and video scores stay comparable:
    c_i = mean_{j ∈ AV} A[j, i]                   centrality: how much the AV pool uses i
    x_i = mean_{j ∈ O(i)} A[j, i]                 co-attention: O(i) = tokens of the other
                                                  modality in i's 2-s chunk (x_i = c_i if none)
    n_i = 1 − cos(h_i, h_prev(i))                 temporal novelty: prev = same (h, w) patch
                                                  at the previous time (video), the previous
                                                  audio token (audio); n_i = 1 with no prev
    s_i = c_i / c̄ + x_i / x̄ + n_i / n̄
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model.lm import attention_probs
from ..model.tokens import TIME_IDS_PER_CHUNK, Modality, TokenLayout

_EPS = 1e-12


def question_indices(layout: TokenLayout) -> torch.Tensor:
    """Text tokens after the AV block, past its closing markers: [Q] long (may be empty)."""
    av = torch.nonzero(layout.av_mask).flatten()
    if av.numel() == 0:
        return av
    mods = layout.modality[av]
    n_markers = int((mods == Modality.AUDIO).any()) + int((mods == Modality.VIDEO).any())
    start = min(int(av[-1]) + 1 + n_markers, len(layout))  # AV-only sequences (a chunk) have none
    return torch.arange(start, len(layout))


def predecessor(layout: TokenLayout, av: torch.Tensor) -> torch.Tensor:
    """For each AV token, the AV-pool index of its temporal predecessor, or -1: [N] long.

    Video: the same (h, w) patch at the latest earlier time. Audio: the previous audio token.
    Tokens of one track at the same time follow each other in pool order.
    """
    prev = torch.full((av.shape[0],), -1, dtype=torch.long)
    if av.numel() == 0:
        return prev
    mod = layout.modality[av].long()
    is_video = mod == Modality.VIDEO
    h = torch.where(is_video, layout.grid_h[av].long(), 0)
    w = torch.where(is_video, layout.grid_w[av].long(), 0)
    # One integer per track: the modality, and for video the patch position.
    track = (mod * (int(h.max()) + 1) + h) * (int(w.max()) + 1) + w
    order = torch.sort(layout.time_ids[av], stable=True).indices
    order = order[torch.sort(track[order], stable=True).indices]  # by track, then time, then index
    same = track[order[1:]] == track[order[:-1]]
    prev[order[1:][same]] = order[:-1][same]
    return prev


def temporal_novelty(hidden: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """1 − cos(h_i, h_prev(i)) per token ([N, D], [N] → [N]); 1 where there is no prev."""
    has = prev >= 0
    sim = torch.zeros(hidden.shape[0], device=hidden.device)
    if bool(has.any()):
        idx = has.nonzero().flatten().to(hidden.device)
        sim[idx] = F.cosine_similarity(
            hidden[idx].float(), hidden[prev[has].to(hidden.device)].float(), dim=-1
        )
    return (1.0 - sim).clamp_min(0.0)


def successor(prev: torch.Tensor) -> torch.Tensor:
    """The inverse of `predecessor`: each token's temporal successor in the pool, or -1: [N] long."""
    nxt = torch.full_like(prev, -1)
    has = prev >= 0
    nxt[prev[has]] = has.nonzero().flatten()
    return nxt


def context_novelty(hidden: torch.Tensor, prev: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """How much token i differs from its temporal context: [N, D], [N] → [N] float32.

    The mean of 1 − cos(h_i, h_j) over the neighbours j up to `radius` steps before and after i
    along `prev`'s chains (the same patch for video, the neighbouring audio tokens for audio);
    1 where i has none. Counting the steps after i as well as those before makes an event's
    end stand out like its start (a tone that stops, a shape that leaves), and a neighbour
    missing at the pool's edge (a chunk's last frame, whose successor has not arrived) simply
    drops out of the mean.
    """
    unit = F.normalize(hidden.detach().float(), dim=-1)  # stays on its device: only [N] comes back
    total = torch.zeros(unit.shape[0], device=unit.device)
    count = torch.zeros(unit.shape[0], device=unit.device)
    for chain in (prev.to(unit.device), successor(prev).to(unit.device)):
        cur = chain
        for _ in range(radius):
            has = cur >= 0
            step = cur.clamp_min(0)
            change = (1.0 - (unit * unit[step]).sum(-1)).clamp_min(0.0)
            total += torch.where(has, change, 0.0)
            count += has.float()
            cur = torch.where(has, chain[step], cur)
    return torch.where(count > 0, total / count.clamp_min(1), 1.0).cpu()


@torch.no_grad()
def training_free_scores(
    layer: nn.Module,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    layout: TokenLayout,
    *,
    block: int = 1024,
) -> torch.Tensor:
    """Scores of the AV tokens ([N] float32, in sequence order) from refiner attention.

    hidden [1, L, D] is the input of `layer`; cos/sin [1, L, head_dim] its rotary.
    """
    av = torch.nonzero(layout.av_mask).flatten()
    question = question_indices(layout)
    dev = hidden.device
    if question.numel() > 0:
        probs = attention_probs(layer, hidden, cos, sin, causal=False, queries=question, block=block)
        return probs[:, av.to(dev)].mean(0).float().cpu()

    n = int(av.shape[0])
    mod = layout.modality[av]
    chunk = layout.time_ids[av] // TIME_IDS_PER_CHUNK
    group = chunk * 2 + (mod == Modality.VIDEO).long()  # [N]: (chunk, modality) of each token
    other = chunk * 2 + (mod != Modality.VIDEO).long()  # the other modality in the same chunk
    n_groups = int(torch.maximum(group, other).max()) + 1  # one modality alone: `other` is past group's max
    central = torch.zeros(n, dtype=torch.float32)
    by_group = torch.zeros(n_groups, n, dtype=torch.float32)
    for start in range(0, n, block):
        rows = av[start : start + block]
        probs = attention_probs(layer, hidden, cos, sin, causal=False, queries=rows, block=block)
        cols = probs[:, av.to(dev)].float().cpu()  # [b, N]
        central += cols.sum(0)
        by_group.index_add_(0, group[start : start + block], cols)
    central /= n
    counts = torch.bincount(group, minlength=n_groups).float()
    has_other = counts[other] > 0
    co_attn = torch.where(has_other, by_group[other, torch.arange(n)] / counts[other].clamp_min(1), central)
    novelty = temporal_novelty(hidden[0, av.to(dev)], predecessor(layout, av)).cpu()
    return (
        central / (central.mean() + _EPS)
        + co_attn / (co_attn.mean() + _EPS)
        + novelty / (novelty.mean() + _EPS)
    )
