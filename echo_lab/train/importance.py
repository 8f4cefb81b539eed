"""Dense targets for the CS2 score head from a full-token teacher.

Straight-through top-k gives a dropped token almost no gradient, and on echo-tiny it lets one
modality take the whole budget (docs/experiments.md). Here every AV token gets a target: how
much the frozen full-token thinker's answer loss depends on it, measured as gradient × input,
|⟨∂loss/∂x_i, x_i⟩|. Audio and video tokens are scored by the same loss, so the targets live
on one scale and one joint top-k can follow them. The score head learns the ranking with a
listwise loss: cross-entropy between the targets normalised over the pool and the softmax of
the scores.
"""

from __future__ import annotations

import torch

from echo_core.model.lm import LanguageModel
from echo_core.model.rope import RopeMode
from echo_core.model.tokens import TokenSequence

from .examples import shared_prefix_loss


def teacher_importance(
    teacher: LanguageModel,
    prefixes: list[TokenSequence],
    questions: list[tuple[int, TokenSequence, int]],
    rope: RopeMode,
) -> list[torch.Tensor]:
    """Gradient × input of the teacher's answer loss for every token of every prefix.

    Args:
        teacher: the frozen full-token language model.
        prefixes: full (unsieved) clip prefixes; their embeddings are detached here.
        questions: (prefix index, question + answer sequence, number of targets), as for
            `shared_prefix_loss`; a prefix's importance sums over its questions.
    Returns:
        one [L_i] float32 tensor per prefix, ≥ 0.
    """
    leaves = [p.embeds.detach().requires_grad_(True) for p in prefixes]
    inputs = [TokenSequence(x, p.layout) for x, p in zip(leaves, prefixes, strict=True)]
    detached_q = [(c, TokenSequence(q.embeds.detach(), q.layout), t) for c, q, t in questions]
    with torch.enable_grad():
        loss, _ = shared_prefix_loss(teacher, inputs, detached_q, rope)
        grads = torch.autograd.grad(loss, leaves)
    return [(g * x.detach()).sum(-1).abs().float() for g, x in zip(grads, leaves, strict=True)]


def listwise_loss(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of softmax(`scores`) against `target` normalised to a distribution.

    Args:
        scores: [N] differentiable scores of one pool.
        target: [N] ≥ 0 importance of the same tokens (no gradient).
    Returns:
        scalar loss; 0 when the target carries no mass.
    """
    total = target.sum()
    if not bool(total > 0):
        return scores.sum() * 0.0
    p = (target / total).to(scores.dtype)
    return -(p * scores.log_softmax(-1)).sum()
