"""Dense targets for the CS2 score head from a full-token teacher.

Straight-through top-k gives a dropped token almost no gradient, and on echo-tiny it lets one
modality take the whole budget (docs/experiments.md). Here every AV token gets a target: how
much the frozen full-token thinker's answer loss depends on it, measured as gradient × input,
|⟨∂loss/∂x_i, x_i⟩|. Audio and video tokens are scored by the same loss, so the targets live
on one scale and one joint top-k can follow them. The score head learns the ranking with a
listwise loss: cross-entropy between the targets normalised over the pool and the softmax of
the scores.

With `stage2.distill_weight` the sieved model's answer distribution is also pulled toward the
teacher's (`distillation_loss`): a target for the LLM that says how the full-token model hedges,
not only which word is right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from echo_core.model.lm import LanguageModel
from echo_core.model.rope import RopeMode
from echo_core.model.tokens import TokenSequence

from .examples import shared_prefix_logits


def teacher_view(
    teacher: LanguageModel,
    prefixes: list[TokenSequence],
    questions: list[tuple[int, TokenSequence, int]],
    rope: RopeMode,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """What the frozen full-token teacher says of every prefix token and of the answers.

    Args:
        teacher: the frozen full-token language model.
        prefixes: full (unsieved) clip prefixes; their embeddings are detached here.
        questions: (prefix index, question + answer sequence, number of targets), as for
            `shared_prefix_logits`; a prefix's importance sums over its questions.
    Returns:
        (one [L_i] float32 tensor per prefix: gradient × input of the teacher's answer loss,
        |⟨∂loss/∂x_i, x_i⟩| ≥ 0; the teacher's answer logits [T, V], detached).
    """
    leaves = [p.embeds.detach().requires_grad_(True) for p in prefixes]
    inputs = [TokenSequence(x, p.layout) for x, p in zip(leaves, prefixes, strict=True)]
    detached_q = [(c, TokenSequence(q.embeds.detach(), q.layout), t) for c, q, t in questions]
    with torch.enable_grad():
        answers = shared_prefix_logits(teacher, inputs, detached_q, rope)
        loss, _ = answers.loss()
        grads = torch.autograd.grad(loss, leaves)
    importance = [(g * x.detach()).sum(-1).abs().float() for g, x in zip(grads, leaves, strict=True)]
    return importance, answers.logits.detach()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) of the answer distributions, averaged over target positions.

    Args:
        student: [T, V] logits of the sieved model (differentiable).
        teacher: [T, V] logits of the full-token teacher at the same positions (no gradient).
    """
    log_s, log_t = student.float().log_softmax(-1), teacher.float().log_softmax(-1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")


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
