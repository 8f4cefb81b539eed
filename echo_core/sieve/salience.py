"""A training-free joint sieve: per-modality z-scored salience, one top-k over both modalities.

For public weights with no trained CS2 head. Every AV token gets cues computed from the
encoder outputs x (no LLM layer needed, so the live ingest pays almost nothing):

    n_i = mean_j (1 − cos(x_i, x_j))  temporal novelty: j runs over i's neighbours up to
                                      2 steps before and after it (the same (h, w) patch at
                                      the neighbouring times for video, the neighbouring
                                      audio tokens for audio), so an event's end stands out
                                      like its start
    d_i = 1 − cos(x_i, x̄_g(i))       distinctiveness: x̄_g = mean of the token's own modality in
                                      its 2-s chunk (a shape against its background, a tone
                                      against the noise floor)

With a question after the AV block (the ask re-sieve, offline evaluation) a third cue is the
attention the question tokens pay to each AV token at a middle layer of the causal LLM:

    a_i = mean_{q ∈ question} A_ℓ[q, i],  ℓ = ⌊layers / 2⌋

Each cue is z-scored *within its modality* over the pool, so that an audio and a video score
mean the same thing (how unusual the token is among its own kind) and one top-k serves
both: a modality whose tokens stand out more takes more of the budget, with no quota.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..model.lm import LanguageModel, attention_probs
from ..model.positions import build_positions
from ..model.rope import RopeMode
from ..model.tokens import TIME_IDS_PER_CHUNK, Modality, TokenLayout, TokenSequence
from .base import Sieve, SieveResult, av_budget, av_indices, finish, top_k
from .saliency import context_novelty, predecessor, question_indices, temporal_novelty

#: Cue settings, chosen on `val` (docs/experiments.md): the question cue is measured but off.
NOVELTY_RADIUS = 2
#: The novelty cues `encoder_cues` knows: the change to the neighbours on both sides, or from the
#: token before only.
NOVELTY_CUES = ("context", "previous")
DISTINCT_WEIGHT = 1.0
QUESTION_WEIGHT = 0.0


def modality_zscore(values: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
    """(v − mean) / std within each modality of the pool: [N] float, [N] long → [N] float."""
    out = torch.zeros_like(values, dtype=torch.float32)
    for m in (Modality.AUDIO, Modality.VIDEO):
        sel = modality == m
        if int(sel.sum()) < 2:
            continue
        v = values[sel].float()
        std = v.std()
        out[sel] = (v - v.mean()) / std if float(std) > 0 else torch.zeros_like(v)
    return out


def distinctiveness(embeds: torch.Tensor, layout: TokenLayout, av: torch.Tensor) -> torch.Tensor:
    """1 − cos(x_i, mean of x over i's (modality, 2-s chunk) group): [N, D] → [N] float32."""
    mod = layout.modality[av]
    group = (layout.time_ids[av] // TIME_IDS_PER_CHUNK) * 3 + mod  # [N]
    _, inverse = torch.unique(group, return_inverse=True)
    x = embeds.float()  # stays on its device: only the [N] result comes back
    inverse = inverse.to(x.device)
    sums = torch.zeros(int(inverse.max()) + 1, x.shape[1], device=x.device).index_add_(0, inverse, x)
    means = sums / torch.bincount(inverse).float()[:, None]
    return (1.0 - F.cosine_similarity(x, means[inverse], dim=-1)).clamp_min(0.0).cpu()


def combine_encoder_cues(
    cues: dict[str, torch.Tensor], modality: torch.Tensor, distinct_weight: float = DISTINCT_WEIGHT
) -> torch.Tensor:
    """z(novelty) + distinct_weight · z(distinctiveness), each z within its modality: [N] float32."""
    total = modality_zscore(cues["novelty"], modality)
    return total + distinct_weight * modality_zscore(cues["distinct"], modality)


@torch.no_grad()
def encoder_salience(seq: TokenSequence, novelty: str = "context") -> torch.Tensor:
    """The question-free joint salience of the AV tokens of `seq` (aligned with `av_indices`): [N].

    What `JointSalienceSieve` ranks by without a question (`novelty` "context"); CS2 adds it to
    its head's scores as a prior (`CS2.prior_weight`, with the cue `CS2.prior_novelty`).
    """
    av = av_indices(seq)
    return combine_encoder_cues(encoder_cues(seq, av, novelty), seq.layout.modality[av])


def encoder_cues(seq: TokenSequence, av: torch.Tensor, novelty: str = "context") -> dict[str, torch.Tensor]:
    """Novelty and distinctiveness of the AV tokens `av` of `seq`: name → [N] float32.

    `novelty`: "context", the change to the neighbours up to NOVELTY_RADIUS steps before and
    after (`context_novelty`), or "previous", the change from the token before only.
    """
    x = seq.embeds[av.to(seq.embeds.device)].detach()
    prev = predecessor(seq.layout, av)
    if novelty == "context":
        change = context_novelty(x, prev, NOVELTY_RADIUS)
    elif novelty == "previous":
        change = temporal_novelty(x, prev).float().cpu()
    else:
        raise ConfigError(f"novelty must be one of {', '.join(NOVELTY_CUES)}, got {novelty!r}")
    return {"novelty": change, "distinct": distinctiveness(x, seq.layout, av)}


class JointSalienceSieve(Sieve):
    """Training-free joint-pool sieve (see the module docstring)."""

    name = "joint_salience"

    def __init__(
        self,
        lm: LanguageModel,
        rope: RopeMode = RopeMode.SYNC,
        *,
        distinct_weight: float = DISTINCT_WEIGHT,
        question_weight: float = QUESTION_WEIGHT,
    ) -> None:
        self.lm = lm
        self.rope = rope
        self.layer = max(1, len(lm.layers) // 2)
        self.distinct_weight = distinct_weight
        self.question_weight = question_weight

    @torch.no_grad()
    def cues(self, seq: TokenSequence) -> dict[str, torch.Tensor]:
        """The per-token cues of the AV tokens, aligned with `av_indices(seq)`: name → [N] float32."""
        av = av_indices(seq)
        out = encoder_cues(seq, av)
        question = question_indices(seq.layout)
        if question.numel() > 0 and self.question_weight > 0:
            out["question"] = self.question_attention(seq, av, question)
        return out

    def question_attention(
        self, seq: TokenSequence, av: torch.Tensor, question: torch.Tensor
    ) -> torch.Tensor:
        """Mean attention of the question tokens onto each AV token at the middle LLM layer: [N]."""
        split = self.lm.split(self.rope)
        positions = build_positions(seq.layout, self.rope)
        hidden = self.lm.run_layers(seq.embeds[None], positions, split, layers=range(self.layer))
        cos, sin = self.lm.rope(positions, split)
        probs = attention_probs(self.lm.layers[self.layer], hidden, cos, sin, causal=True, queries=question)
        return probs[:, av.to(probs.device)].mean(0).float().cpu()

    @torch.no_grad()
    def score(self, seq: TokenSequence) -> torch.Tensor:
        """Joint scores of the AV tokens (aligned with `av_indices(seq)`): [N] float32."""
        mod = seq.layout.modality[av_indices(seq)]
        cues = self.cues(seq)
        total = combine_encoder_cues(cues, mod, self.distinct_weight)
        if "question" in cues:
            total = total + self.question_weight * modality_zscore(cues["question"], mod)
        return total

    @torch.no_grad()
    def select(
        self, seq: TokenSequence, *, keep: float | None = None, budget: int | None = None
    ) -> SieveResult:
        av = av_indices(seq)
        k = av_budget(int(av.shape[0]), keep, budget)
        scores = self.score(seq)
        kept = av[top_k(scores, k)]
        return finish(self.name, seq, kept, scores, head_dim=self.lm.head_dim, theta=self.lm.theta)
