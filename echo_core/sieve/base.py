"""The sieve interface shared by CS2 and every baseline.

A sieve looks at a `TokenSequence` and decides which audio/video tokens to keep;
text tokens (markers, prompt, question) are always kept. Every sieve returns a
`SieveResult`, so benchmarks compare like with like.

`select_batch` sieves several sequences at once (the live runtime hands a sieve every chunk
of every session that closed together). By default it is `select` over each; a sieve that
can share work across sequences overrides it (CS2: one refiner call per token layout).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import torch

from ..errors import BudgetError, EmptyAVError
from ..model.aliasing import AliasingReport, aliasing_by_mode
from ..model.tokens import Modality, TokenSequence

_V = TypeVar("_V", int, float)

#: Tolerance for keep × n landing a hair above an integer in floating point.
_CEIL_EPS = 1e-9


def av_budget(n_av: int, keep: float | None = None, budget: int | None = None) -> int:
    """Number of AV tokens to keep: ceil(keep × n_av), or min(budget, n_av).

    Exactly one of `keep` (in (0, 1]) and `budget` (≥ 1) must be given.
    """
    if n_av < 1:
        raise EmptyAVError(f"sieve needs at least 1 audio or video token, got {n_av}")
    if (keep is None) == (budget is None):
        raise BudgetError(f"give exactly one of keep and budget (keep={keep}, budget={budget})")
    if keep is not None:
        if not (0.0 < keep <= 1.0) or math.isnan(keep):
            raise BudgetError(f"keep must be in (0, 1], got {keep}")
        return max(1, min(n_av, math.ceil(keep * n_av - _CEIL_EPS)))
    assert budget is not None
    if isinstance(budget, bool) or int(budget) != budget or budget < 1:
        raise BudgetError(f"token budget must be an integer ≥ 1, got {budget}")
    return min(int(budget), n_av)


@dataclass(frozen=True)
class SieveResult:
    """What a sieve kept from one sequence."""

    method: str
    kept: torch.Tensor  # [K] long, increasing sequence indices (all text + kept AV)
    scores: torch.Tensor  # [L] float32, score of each AV token; nan for text / unscored
    n_audio: int
    n_video: int
    kept_audio: int
    kept_video: int
    aliasing: dict[str, AliasingReport] = field(default_factory=dict)
    prune_layer: int | None = None  # FastV: tokens are dropped inside the LLM from this layer
    # [L, D]: what the LLM reads in place of the input embeddings (CS2 with feed "refined": the
    # refiner's output states); None: the embeddings themselves.
    inputs: torch.Tensor | None = None

    @property
    def n_av(self) -> int:
        return self.n_audio + self.n_video

    @property
    def kept_av(self) -> int:
        return self.kept_audio + self.kept_video

    def summary(self) -> dict[str, object]:
        return {
            "method": self.method,
            "n_audio": self.n_audio,
            "n_video": self.n_video,
            "kept_audio": self.kept_audio,
            "kept_video": self.kept_video,
            "prune_layer": self.prune_layer,
            "aliasing": {k: v.to_dict() for k, v in self.aliasing.items()},
        }


def _spread(value: _V | Sequence[_V] | None, n: int, what: str) -> list[_V | None]:
    if not isinstance(value, Sequence):
        return [value] * n
    if len(value) != n:
        raise BudgetError(f"{what}: {len(value)} values for {n} sequences")
    return list(value)


def per_sequence(
    n: int, keep: float | Sequence[float] | None, budget: int | Sequence[int] | None
) -> tuple[list[float | None], list[int | None]]:
    """`select_batch`'s keep and budget as one value per sequence: a single value applies to all
    `n` sequences, a list or tuple gives one value each."""
    return _spread(keep, n, "keep"), _spread(budget, n, "budget")


class Sieve(Protocol):
    """Anything that selects AV tokens from a sequence.

    Implementations subclass `Sieve` to inherit the default `select_batch` (a loop over `select`).
    """

    name: str

    def select(
        self, seq: TokenSequence, *, keep: float | None = None, budget: int | None = None
    ) -> SieveResult:
        """Keep ceil(keep × #AV) (or min(budget, #AV)) AV tokens and every text token."""
        ...

    def select_batch(
        self,
        seqs: Sequence[TokenSequence],
        *,
        keep: float | Sequence[float] | None = None,
        budget: int | Sequence[int] | None = None,
    ) -> list[SieveResult]:
        """`select` over each of `seqs`: one result per sequence, in order.

        `keep` / `budget` is one value for every sequence or one per sequence. Calls on a sieve
        with state (`random`'s generator) happen in the order of `seqs`.
        """
        keeps, budgets = per_sequence(len(seqs), keep, budget)
        return [self.select(s, keep=k, budget=b) for s, k, b in zip(seqs, keeps, budgets, strict=True)]


def av_indices(seq: TokenSequence) -> torch.Tensor:
    """Sequence indices of the AV tokens: [N] long."""
    return torch.nonzero(seq.layout.av_mask).flatten()


def finish(
    method: str,
    seq: TokenSequence,
    kept_av: torch.Tensor,
    scores_av: torch.Tensor | None,
    *,
    head_dim: int,
    theta: float,
    prune_layer: int | None = None,
) -> SieveResult:
    """Assemble a SieveResult from kept AV sequence indices ([K] long, any order).

    scores_av, when given, is [N] aligned with `av_indices(seq)`.
    """
    layout = seq.layout
    av = av_indices(seq)
    scores = torch.full((len(seq),), float("nan"))
    if scores_av is not None:
        scores[av] = scores_av.detach().float().cpu()
    keep_mask = ~layout.av_mask
    keep_mask[kept_av.cpu()] = True
    kept = torch.nonzero(keep_mask).flatten()
    kept_mod = layout.modality[kept_av.cpu()]
    return SieveResult(
        method=method,
        kept=kept,
        scores=scores,
        n_audio=layout.count(Modality.AUDIO),
        n_video=layout.count(Modality.VIDEO),
        kept_audio=int((kept_mod == Modality.AUDIO).sum()),
        kept_video=int((kept_mod == Modality.VIDEO).sum()),
        aliasing=aliasing_by_mode(layout.time_ids[kept_av.cpu()], head_dim, theta),
        prune_layer=prune_layer,
    )


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores ([N] → [k] long); ties broken by lower index."""
    order = torch.sort(scores.float().cpu(), descending=True, stable=True).indices
    return order[:k]
