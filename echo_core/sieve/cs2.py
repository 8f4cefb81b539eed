"""CS2, the Cross-Modal Semantic Sieve (EchoingPixels), in causal-chunk-ready form.

The refiner is a bidirectional copy of the first N decoder layers of the LLM, run over
the whole text + audio + video sequence (or one 2-s chunk of it). A score head,
RMSNorm → Linear(D, D) → SiLU → Linear(D, 1), scores every AV token, and one top-k
over the joint audio + video pool keeps k = ceil(keep × #AV) of them: the budget goes
to whichever modality is informative, with no per-modality quota. Text is always kept.
Kept tokens keep their original positions, and text after the AV block keeps its
full-sequence position (the reference rule; model/positions.py).

What the LLM reads (`feed`, stored in cs2.json): "embeddings", the kept tokens' input
embeddings; or "refined", the reference behaviour: the refiner's output states for every
kept token (prompt and question text included), so a kept token carries what the refiner
fused into it from the dropped ones. Decoded tokens enter as embeddings either way.

A trained head can rank on top of a training-free prior (`prior_weight` and `prior_novelty`,
stored in cs2.json): the score is z(head) + prior_weight · the encoder salience of
`salience.py` (novelty, by the `prior_novelty` cue, and distinctiveness, each z-scored within
its modality), so the head's joint ranking and the encoder cues share one scale. With
prior_weight 0 (the reference behaviour, and every checkpoint that does not set it) the head's
scores are used as they are.

Public Qwen2.5-Omni weights have no trained score head, so CS2 also has a training-free
scoring mode that reads saliency from the refiner's own attention (`saliency.py`).
"""

from __future__ import annotations

import copy
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..model.lm import LanguageModel, additive_mask, attention_probs
from ..model.positions import build_positions
from ..model.rope import RopeMode
from ..model.tokens import TokenLayout, TokenSequence
from .base import Sieve, SieveResult, av_budget, av_indices, finish, per_sequence, top_k
from .reference_ckpt import find_reference_cs2
from .salience import NOVELTY_CUES, encoder_salience
from .saliency import training_free_scores

#: The salience prior's novelty cue where cs2.json names none: the change from the previous
#: token, the cue the first prior weights were chosen with.
DEFAULT_PRIOR_NOVELTY = "previous"

log = logging.getLogger(__name__)

CS2_WEIGHTS = "cs2.safetensors"
CS2_CONFIG = "cs2.json"
SCORING_MODES = ("auto", "head", "attention")
FEEDS = ("embeddings", "refined")


class ScoreHead(nn.Module):
    """RMSNorm → Linear(D, D) → SiLU → Linear(D, 1): one score per token."""

    def __init__(self, hidden: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(hidden, eps=eps)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def zero_output_(self) -> None:
        """Zero the last layer: every token scores 0 until training moves it.

        A random last layer projects the audio and the video tokens' mean states onto different
        scores, so it starts out favouring one modality wholesale, by the luck of the seed.
        """
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., D] → [...] scores."""
        return self.fc2(F.silu(self.fc1(self.norm(hidden)))).squeeze(-1)


class Refiner(nn.Module):
    """Bidirectional copies of the LLM's first N decoder layers."""

    def __init__(self, lm: LanguageModel, n_layers: int) -> None:
        super().__init__()
        if not 1 <= n_layers <= len(lm.layers):
            raise ConfigError(f"refiner layers must be in [1, {len(lm.layers)}], got {n_layers}")
        self.layers = nn.ModuleList(copy.deepcopy(lm.layers[i]) for i in range(n_layers))

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """hidden [B, L, D] → refined [B, L, D], every token attending to every token."""
        return self.last_layer(self.last_layer_input(hidden, cos, sin), cos, sin)

    def last_layer_input(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Input of the last refiner layer (for reading its attention)."""
        return self._run(self.layers[:-1], hidden, cos, sin)

    def last_layer(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """The last refiner layer over its input [B, L, D] → refined [B, L, D]."""
        return self._run(self.layers[-1:], hidden, cos, sin)

    @staticmethod
    def _run(
        layers: nn.ModuleList, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        mask = additive_mask(hidden.shape[1], 0, causal=False, dtype=hidden.dtype, device=hidden.device)
        for layer in layers:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=(cos, sin))
        return hidden


class CS2(nn.Module):
    """Refiner + score head, with save/load beside a thinker checkpoint."""

    def __init__(
        self,
        lm: LanguageModel,
        n_layers: int = 4,
        *,
        trained: bool = False,
        feed: str = "embeddings",
        prior_weight: float = 0.0,
        prior_novelty: str = DEFAULT_PRIOR_NOVELTY,
    ) -> None:
        super().__init__()
        if feed not in FEEDS:
            raise ConfigError(f"CS2 feed must be one of {', '.join(FEEDS)}, got {feed!r}")
        self.n_layers = min(n_layers, len(lm.layers))
        self.refiner = Refiner(lm, self.n_layers)
        self.head = ScoreHead(int(lm.config.hidden_size), float(lm.config.rms_norm_eps))
        self.trained = trained
        self.feed = feed
        self.prior_weight = 0.0
        self.prior_novelty = DEFAULT_PRIOR_NOVELTY
        self.set_prior(prior_weight, prior_novelty)
        self.reference_keep: float | None = None  # a reference checkpoint's training keep ratio
        self.to(device=lm.device, dtype=lm.dtype)

    def set_prior(self, weight: float | None = None, novelty: str | None = None) -> None:
        """Set the salience prior's weight and/or novelty cue (None leaves one as it is)."""
        if weight is not None:
            if not weight >= 0:
                raise ConfigError(f"CS2 prior_weight must be ≥ 0, got {weight}")
            self.prior_weight = float(weight)
        if novelty is not None:
            if novelty not in NOVELTY_CUES:
                raise ConfigError(
                    f"CS2 prior_novelty must be one of {', '.join(NOVELTY_CUES)}, got {novelty!r}"
                )
            self.prior_novelty = novelty

    def save(self, directory: str | Path) -> None:
        """Write cs2.safetensors and cs2.json into `directory`."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(out / CS2_WEIGHTS))
        meta = {
            "n_layers": self.n_layers,
            "trained": self.trained,
            "feed": self.feed,
            "prior_weight": self.prior_weight,
            "prior_novelty": self.prior_novelty,
        }
        (out / CS2_CONFIG).write_text(json.dumps(meta))

    @classmethod
    def load_or_init(cls, lm: LanguageModel, directory: str | Path | None, n_layers: int = 4) -> CS2:
        """Load trained CS2 weights from `directory` if present, else initialise from the LLM."""
        path = Path(directory) if directory is not None else None
        if path is not None and not (path / CS2_WEIGHTS).is_file():
            reference = find_reference_cs2(path)
            if reference is not None:  # trained with the EchoingPixels reference code
                log.info("CS2 from reference-layout weights in %s (%d layers)", path, reference.n_layers)
                cs2 = cls(lm, reference.n_layers, trained=True, feed="refined")
                cs2.reference_keep = reference.keep
                return cs2._load(reference.state, str(path))
        if path is None or not (path / CS2_WEIGHTS).is_file():
            log.info("no trained CS2 weights; refiner initialised from the first %d LLM layers", n_layers)
            return cls(lm, n_layers, trained=False)
        meta = json.loads((path / CS2_CONFIG).read_text()) if (path / CS2_CONFIG).is_file() else {}
        cs2 = cls(
            lm,
            int(meta.get("n_layers", n_layers)),
            trained=bool(meta.get("trained", True)),
            feed=str(meta.get("feed", "embeddings")),
            prior_weight=float(meta.get("prior_weight", 0.0)),
            prior_novelty=str(meta.get("prior_novelty", DEFAULT_PRIOR_NOVELTY)),
        )
        return cs2._load(load_file(str(path / CS2_WEIGHTS)), str(path / CS2_WEIGHTS))

    def ranked(self, head_scores: torch.Tensor, seq: TokenSequence) -> torch.Tensor:
        """The head's scores of the AV tokens of `seq` with the salience prior added: [N].

        z(head) + prior_weight · encoder_salience(seq, prior_novelty); the head's scores unchanged when
        prior_weight is 0. Stays on the scores' device, and differentiable in the head's scores
        (training can rank by the sum: stage2.rank_with_prior).
        """
        if self.prior_weight == 0:
            return head_scores
        h = head_scores.float()
        std = h.std() if h.numel() > 1 else h.new_zeros(())
        z = (h - h.mean()) / std if float(std.detach()) > 0 else torch.zeros_like(h)
        return z + self.prior_weight * encoder_salience(seq, self.prior_novelty).to(h.device)

    def _load(self, state: dict[str, torch.Tensor], source: str) -> CS2:
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{source}: missing {len(missing)} / unexpected {len(unexpected)} keys, "
                f"e.g. {(missing or unexpected)[:3]}"
            )
        return self  # load_state_dict copies into the parameters, which already sit on the LLM's device/dtype


class CS2Sieve(Sieve):
    """Joint-pool top-k over CS2 scores (trained head, or training-free attention saliency)."""

    def __init__(
        self,
        lm: LanguageModel,
        cs2: CS2,
        *,
        rope: RopeMode = RopeMode.SYNC,
        scoring: str = "auto",
        name: str = "cs2",
    ) -> None:
        if scoring not in SCORING_MODES:
            raise ConfigError(f"CS2 scoring must be one of {', '.join(SCORING_MODES)}, got {scoring!r}")
        if scoring == "head" and not cs2.trained:
            raise ConfigError("CS2 scoring 'head' needs trained CS2 weights; use 'attention' or 'auto'")
        self.lm = lm
        self.cs2 = cs2
        self.rope = rope
        self.scoring = ("head" if cs2.trained else "attention") if scoring == "auto" else scoring
        self.name = name
        # Scores (and refined states, feed "refined") of the last sequence scored, so that several
        # budgets (or the baselines that share this scorer) over one sequence run the refiner once.
        self._memo: tuple[TokenSequence, RopeMode, torch.Tensor, torch.Tensor | None] | None = None

    def _rope(self, seq: TokenSequence) -> tuple[torch.Tensor, torch.Tensor]:
        positions = build_positions(seq.layout, self.rope)
        return self.lm.rope(positions, self.lm.split(self.rope))

    def refine(self, seq: TokenSequence) -> torch.Tensor:
        """The refiner's output states for every token of `seq`: [L, D] (differentiable)."""
        cos, sin = self._rope(seq)
        return self.cs2.refiner(seq.embeds[None], cos, sin)[0]

    def head_scores(self, seq: TokenSequence) -> torch.Tensor:
        """Trained-head scores of the AV tokens: [N] (differentiable)."""
        refined = self.refine(seq)  # [L, D]
        return self.cs2.head(refined[av_indices(seq).to(refined.device)])

    @torch.no_grad()
    def score(self, seq: TokenSequence) -> torch.Tensor:
        """Scores of the AV tokens, aligned with `av_indices(seq)`: [N] float (no gradient)."""
        return self._scored(seq)[0]

    @torch.no_grad()
    def _scored(self, seq: TokenSequence) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(scores [N], refined states [L, D] when the feed is "refined", else None)."""
        if self._memo is not None and self._memo[0] is seq and self._memo[1] is self.rope:
            return self._memo[2], self._memo[3]
        refiner = self.cs2.refiner
        cos, sin = self._rope(seq)
        hidden = refiner.last_layer_input(seq.embeds[None], cos, sin)  # [1, L, D]
        refined = None
        if self.scoring == "head" or self.cs2.feed == "refined":
            refined = refiner.last_layer(hidden, cos, sin)[0]  # [L, D]
        if self.scoring == "head":
            assert refined is not None
            scores = self.cs2.ranked(self.cs2.head(refined[av_indices(seq).to(refined.device)]), seq)
        else:  # the last layer's attention, read from its input (saliency.py)
            scores = training_free_scores(refiner.layers[-1], hidden, cos, sin, seq.layout)
        inputs = refined if self.cs2.feed == "refined" else None
        self._memo = (seq, self.rope, scores, inputs)
        return scores, inputs

    @torch.no_grad()
    def score_batch(self, seqs: list[TokenSequence]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(scores [N], refined states [L, D] or None) of sequences that share one layout, in one
        refiner call (trained head); the states are given when the feed is "refined".

        Same-shaped chunks of several live sessions have identical chunk-relative layouts,
        so their positions coincide and they stack into one [G, L, D] batch.
        """
        if self.scoring != "head" or len(seqs) < 2:
            return [self._scored(s) for s in seqs]
        first = seqs[0].layout
        for s in seqs[1:]:
            if len(s) != len(first) or not torch.equal(s.layout.time_ids, first.time_ids):
                raise ValueError(f"score_batch needs one layout; got lengths {len(first)} and {len(s)}")
        cos, sin = self._rope(seqs[0])
        refined = self.cs2.refiner(torch.stack([s.embeds for s in seqs]), cos, sin)  # [G, L, D]
        av = av_indices(seqs[0]).to(refined.device)
        heads = self.cs2.head(refined[:, av])
        scores = [self.cs2.ranked(h, s).float().cpu() for h, s in zip(heads, seqs, strict=True)]
        states = list(refined) if self.cs2.feed == "refined" else [None] * len(seqs)
        return list(zip(scores, states, strict=True))

    @torch.no_grad()
    def select(
        self, seq: TokenSequence, *, keep: float | None = None, budget: int | None = None
    ) -> SieveResult:
        av = av_indices(seq)
        k = av_budget(int(av.shape[0]), keep, budget)
        return self._result(seq, av, k, *self._scored(seq))

    @torch.no_grad()
    def select_batch(
        self,
        seqs: Sequence[TokenSequence],
        *,
        keep: float | Sequence[float] | None = None,
        budget: int | Sequence[int] | None = None,
    ) -> list[SieveResult]:
        """`select` over each of `seqs`, scoring the sequences that share one token layout (the
        same-shaped chunks of several live sessions) in one refiner call (`score_batch`)."""
        keeps, budgets = per_sequence(len(seqs), keep, budget)
        avs = [av_indices(seq) for seq in seqs]
        ks = [av_budget(int(av.shape[0]), k, b) for av, k, b in zip(avs, keeps, budgets, strict=True)]
        groups: dict[tuple[object, ...], list[int]] = defaultdict(list)
        for i, seq in enumerate(seqs):
            groups[layout_key(seq.layout)].append(i)
        scored: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for members in groups.values():
            scored.update(zip(members, self.score_batch([seqs[i] for i in members]), strict=True))
        return [self._result(seq, avs[i], ks[i], *scored[i]) for i, seq in enumerate(seqs)]

    def _result(
        self, seq: TokenSequence, av: torch.Tensor, k: int, scores: torch.Tensor, inputs: torch.Tensor | None
    ) -> SieveResult:
        """The top `k` of the AV tokens (sequence indices `av`, [N]) by `scores` ([N]) as a
        SieveResult, with `inputs` ([L, D]) when the feed is "refined"."""
        chosen = av[top_k(scores, k)]
        result = finish(self.name, seq, chosen, scores, head_dim=self.lm.head_dim, theta=self.lm.theta)
        return result if inputs is None else replace(result, inputs=inputs)

    def select_ste(
        self,
        seq: TokenSequence,
        *,
        keep: float | None = None,
        budget: int | None = None,
        gumbel: bool = False,
        tau: float = 1.0,
    ) -> tuple[SieveResult, TokenSequence]:
        """Training path over the whole sequence: hard top-k forward, soft gradient backward.

        Returns the result and the kept sequence whose AV embeddings carry the
        straight-through gate (value 1, gradient into the scores).
        """
        av = av_indices(seq)
        k = av_budget(int(av.shape[0]), keep, budget)
        scores = self.head_scores(seq)
        chosen_local, gate = straight_through_topk(scores, k, gumbel=gumbel, tau=tau)
        result = finish(
            self.name, seq, av[chosen_local.cpu()], scores, head_dim=self.lm.head_dim, theta=self.lm.theta
        )
        return result, apply_gates(seq, av[chosen_local.cpu()], gate[chosen_local])


def layout_key(layout: TokenLayout) -> tuple[object, ...]:
    """Equal for layouts that give equal positions, so their sequences stack into one refiner batch."""
    fields = (
        layout.modality,
        layout.time_ids,
        layout.grid_h,
        layout.grid_w,
        layout.shares_prev,
        layout.extents,
    )
    return (len(layout), *(f.numpy().tobytes() for f in fields))


def straight_through_topk(
    scores: torch.Tensor, k: int, *, gumbel: bool = False, tau: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard top-k with a straight-through soft gradient.

    y_soft = softmax(scores / tau) over the pool (Gumbel-softmax when `gumbel`), y_hard the
    top-k indicator, gate = y_hard − y_soft.detach() + y_soft: 1 on kept tokens in value,
    ∂gate/∂scores = ∂y_soft/∂scores.

    Args:
        scores: [N] differentiable scores.
    Returns:
        (chosen [k] long local indices, gate [N]).
    """
    logits = scores / tau
    if gumbel:
        u = torch.rand_like(logits).clamp_(1e-9, 1 - 1e-9)
        logits = logits - torch.log(-torch.log(u))
    y_soft = logits.softmax(-1)
    chosen = top_k(logits.detach(), k).to(scores.device)
    y_hard = torch.zeros_like(y_soft).scatter(0, chosen, 1.0)
    return chosen, y_hard - y_soft.detach() + y_soft


def apply_gates(seq: TokenSequence, gated: torch.Tensor, gate: torch.Tensor) -> TokenSequence:
    """Every text token of `seq` plus the AV tokens at sequence indices `gated` ([G]), those × `gate` ([G]).

    The gate is 1 in value (straight-through), so embeddings are unchanged but carry its gradient.
    """
    kept = torch.cat([torch.nonzero(~seq.layout.av_mask).flatten(), gated.cpu()]).sort().values
    multiplier = torch.ones(len(seq), dtype=seq.embeds.dtype, device=seq.embeds.device)
    multiplier = multiplier.index_put((gated.to(multiplier.device),), gate.to(multiplier.dtype))
    idx = kept.to(seq.embeds.device)
    return TokenSequence(seq.embeds[idx] * multiplier[idx, None], seq.layout.select(kept))


__all__ = [
    "CS2",
    "CS2Sieve",
    "Refiner",
    "ScoreHead",
    "apply_gates",
    "attention_probs",
    "straight_through_topk",
]
