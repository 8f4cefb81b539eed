"""Baseline sieves behind the common interface.

- none: keep everything.
- random: k AV tokens uniformly at random (seeded).
- uniform: k AV tokens evenly spaced in time over the joint pool.
- per_modality: the CS2 scorer with a fixed audio/video split proportional to the
  modalities' token counts (the "separate budgets" design the joint pool replaces).
- temporal_redundancy (TimeChat-Online style): video patches ranked by how much they
  changed from the same patch at the previous temporal step (1 − cosine of encoder
  features; the first step counts as fully new); video and audio get proportional
  quotas and audio, which the method does not address, is kept evenly in time.
- audio_guided (OmniZip style): audio keeps its proportional quota by CS2 saliency; each
  2-s window's mean audio saliency sets that window's share of the video budget, and
  within a window the highest-scoring video tokens are kept.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..model.lm import LanguageModel, attention_probs
from ..model.positions import build_positions
from ..model.rope import RopeMode
from ..model.tokens import TIME_IDS_PER_CHUNK, Modality, TokenSequence
from .base import Sieve, SieveResult, av_budget, av_indices, finish, top_k
from .cs2 import CS2Sieve
from .saliency import predecessor, temporal_novelty


class _Baseline(Sieve):
    """Shared plumbing: budget, AV indices, and result assembly."""

    name = "baseline"

    def __init__(self, head_dim: int, theta: float) -> None:
        self.head_dim = head_dim
        self.theta = theta

    def _finish(self, seq: TokenSequence, kept: torch.Tensor, scores: torch.Tensor | None) -> SieveResult:
        return finish(self.name, seq, kept, scores, head_dim=self.head_dim, theta=self.theta)


def proportional_split(k: int, n_audio: int, n_video: int) -> tuple[int, int]:
    """(k_audio, k_video) proportional to token counts, summing to k, within capacity."""
    n = n_audio + n_video
    k_audio = min(n_audio, max(0, round(k * n_audio / n)))
    k_video = min(n_video, k - k_audio)
    k_audio = k - k_video
    return k_audio, k_video


def allocate(total: int, capacity: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Split `total` items over bins ∝ weight, each bin ≤ its capacity ([W] long → [W] long).

    Water-filling: bins that fill up hand their surplus to the others; remainders go
    one at a time to the bin with the largest unmet share.
    """
    alloc = torch.zeros_like(capacity)
    remaining = min(total, int(capacity.sum()))
    while remaining > 0:
        free = capacity - alloc
        active = free > 0
        w = torch.where(active, weight.double().clamp_min(0), torch.zeros((), dtype=torch.double))
        if float(w.sum()) <= 0:
            w = active.double()
        exact = remaining * w / w.sum()
        give = torch.minimum(exact.floor().long(), free)
        if int(give.sum()) == 0:
            give = torch.zeros_like(alloc)
            give[int(torch.where(active, exact, torch.full_like(exact, -1.0)).argmax())] = 1
        alloc += give
        remaining -= int(give.sum())
    return alloc


class NoSieve(_Baseline):
    name = "none"

    def select(
        self, seq: TokenSequence, *, keep: float | None = None, budget: int | None = None
    ) -> SieveResult:
        av = av_indices(seq)
        av_budget(int(av.shape[0]), 1.0)  # validates a non-empty AV pool
        return self._finish(seq, av, None)


class RandomSieve(_Baseline):
    name = "random"

    def __init__(self, head_dim: int, theta: float, seed: int = 0) -> None:
        super().__init__(head_dim, theta)
        self.generator = torch.Generator().manual_seed(seed)

    def select(
        self, seq: TokenSequence, *, keep: float | None = None, budget: int | None = None
    ) -> SieveResult:
        av = av_indices(seq)
        k = av_budget(int(av.shape[0]), keep, budget)
        pick = torch.randperm(int(av.shape[0]), generator=self.generator)[:k]
        return self._finish(seq, av[pick], None)


def evenly_spaced(n: int, k: int) -> torch.Tensor:
    """k distinct indices spread evenly over range(n) (centres of k equal strata)."""
    return ((torch.arange(k, dtype=torch.float64) + 0.5) * n / k).floor().long().clamp_max(n - 1)


class UniformSieve(_Baseline):
    name = "uniform"

    def select(
        self, seq: TokenSequence, *, keep: float | None = None, budget: int | None = None
    ) -> SieveResult:
        av = av_indices(seq)
        k = av_budget(int(av.shape[0]), keep, budget)
        by_time = torch.sort(seq.layout.time_ids[av], stable=True).indices
        return self._finish(seq, av[by_time[evenly_spaced(int(av.shape[0]), k)]], None)


class PerModalitySieve(_Baseline):
    name = "per_modality"

    def __init__(self, scorer: CS2Sieve) -> None:
        super().__init__(scorer.lm.head_dim, scorer.lm.theta)
        self.scorer = scorer

    @torch.no_grad()
    def select(
        self, seq: TokenSequence, *, keep: float | None = None, budget: int | None = None
    ) -> SieveResult:
        av = av_indices(seq)
        k = av_budget(int(av.shape[0]), keep, budget)
        scores = self.scorer.score(seq).float().cpu()
        mod = seq.layout.modality[av]
        is_a, is_v = mod == Modality.AUDIO, mod == Modality.VIDEO
        k_a, k_v = proportional_split(k, int(is_a.sum()), int(is_v.sum()))
        parts = []
        for mask, quota in ((is_a, k_a), (is_v, k_v)):
            local = mask.nonzero().flatten()
            parts.append(local[top_k(scores[local], quota)])
        return self._finish(seq, av[torch.cat(parts)], scores)


class TemporalRedundancySieve(_Baseline):
    name = "temporal_redundancy"

    def select(
        self, seq: TokenSequence, *, keep: float | None = None, budget: int | None = None
    ) -> SieveResult:
        av = av_indices(seq)
        k = av_budget(int(av.shape[0]), keep, budget)
        layout = seq.layout
        novelty = temporal_novelty(
            seq.embeds[av.to(seq.embeds.device)].detach(), predecessor(layout, av)
        ).cpu()
        mod = layout.modality[av]
        is_a, is_v = mod == Modality.AUDIO, mod == Modality.VIDEO
        k_a, k_v = proportional_split(k, int(is_a.sum()), int(is_v.sum()))
        video = is_v.nonzero().flatten()
        audio = is_a.nonzero().flatten()
        audio = audio[torch.sort(layout.time_ids[av[audio]], stable=True).indices]
        kept_v = video[top_k(novelty[video], k_v)]
        kept_a = audio[evenly_spaced(int(audio.shape[0]), k_a)] if k_a else audio[:0]
        scores = torch.where(is_v, novelty, torch.full_like(novelty, float("nan")))
        return self._finish(seq, av[torch.cat([kept_a, kept_v])], scores)


class AudioGuidedSieve(_Baseline):
    name = "audio_guided"

    def __init__(self, scorer: CS2Sieve) -> None:
        super().__init__(scorer.lm.head_dim, scorer.lm.theta)
        self.scorer = scorer

    @torch.no_grad()
    def select(
        self, seq: TokenSequence, *, keep: float | None = None, budget: int | None = None
    ) -> SieveResult:
        av = av_indices(seq)
        k = av_budget(int(av.shape[0]), keep, budget)
        layout = seq.layout
        scores = self.scorer.score(seq).float().cpu()
        mod = layout.modality[av]
        is_a, is_v = mod == Modality.AUDIO, mod == Modality.VIDEO
        k_a, k_v = proportional_split(k, int(is_a.sum()), int(is_v.sum()))
        audio = is_a.nonzero().flatten()
        kept = [audio[top_k(scores[audio], k_a)]]
        window = layout.time_ids[av] // TIME_IDS_PER_CHUNK  # [N]
        n_win = int(window.max()) + 1
        video_count = torch.bincount(window[is_v], minlength=n_win)
        audio_count = torch.bincount(window[is_a], minlength=n_win)
        audio_sum = torch.zeros(n_win, dtype=torch.float64).index_add_(0, window[is_a], scores[is_a].double())
        has_audio = audio_count > 0
        mean = torch.where(
            has_audio, audio_sum / audio_count.clamp_min(1), torch.zeros(n_win, dtype=torch.float64)
        )
        if bool(has_audio.any()):
            ref = mean[has_audio]
            z = (mean - ref.mean()) / (ref.std(unbiased=False) + 1e-9) if ref.numel() > 1 else mean * 0
            weight = torch.where(has_audio, z.exp(), torch.ones_like(z))  # silent windows: average weight
        else:
            weight = torch.ones(n_win, dtype=torch.float64)
        per_window = allocate(k_v, video_count, weight * video_count.double())
        for wi in range(n_win):
            quota = int(per_window[wi])
            if quota:
                local = (is_v & (window == wi)).nonzero().flatten()
                kept.append(local[top_k(scores[local], quota)])
        return self._finish(seq, av[torch.cat(kept)], scores)


class FastVSieve(_Baseline):
    """FastV: attention from the last text token at LLM layer K ranks AV tokens; the rest
    are pruned inside the LLM from layer K on (layers < K see every token)."""

    name = "fastv"

    def __init__(self, lm: LanguageModel, layer: int = 2, rope: RopeMode = RopeMode.SYNC) -> None:
        super().__init__(lm.head_dim, lm.theta)
        if not 1 <= layer < len(lm.layers):
            raise ConfigError(f"FastV layer must be in [1, {len(lm.layers) - 1}], got {layer}")
        self.lm = lm
        self.layer = layer
        self.rope = rope

    @torch.no_grad()
    def select(
        self, seq: TokenSequence, *, keep: float | None = None, budget: int | None = None
    ) -> SieveResult:
        av = av_indices(seq)
        k = av_budget(int(av.shape[0]), keep, budget)
        split = self.lm.split(self.rope)
        positions = build_positions(seq.layout, self.rope)
        hidden = self.lm.run_layers(seq.embeds[None], positions, split, layers=range(self.layer))
        cos, sin = self.lm.rope(positions, split)
        last = torch.tensor([len(seq) - 1])
        probs = attention_probs(self.lm.layers[self.layer], hidden, cos, sin, causal=True, queries=last)
        scores = probs[0, av.to(probs.device)].float().cpu()
        return finish(
            self.name,
            seq,
            av[top_k(scores, k)],
            scores,
            head_dim=self.head_dim,
            theta=self.theta,
            prune_layer=self.layer,
        )


__all__ = [
    "AudioGuidedSieve",
    "FastVSieve",
    "NoSieve",
    "PerModalitySieve",
    "RandomSieve",
    "TemporalRedundancySieve",
    "UniformSieve",
    "allocate",
    "evenly_spaced",
    "proportional_split",
]
