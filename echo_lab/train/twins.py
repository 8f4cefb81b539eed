"""Typed twins: a spoken question learns to mean what the same question typed means.

In stage 1 (with `stage1.twin_weight` > 0) every question asked aloud is also asked typed on
the same clip, in the same batch. The two sequences end alike: the assistant header and the
answer are the same tokens after either form of the question. The typed twin's decoder-layer
outputs over that shared ending are the target (no gradient flows into the twin); the spoken
question's outputs there are pulled towards them by cosine distance, averaged over layers and
positions. The answer loss is taken on the asked questions only, so the twins add a target,
not typed practice.

Where the cross-entropy tells the spoken path only which answer word is right, the twin tells
it, layer by layer, how the model represents the question it heard when it reads it as text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from echo_core.model.backend import OmniBackend
from echo_core.model.question import ASSISTANT_HEADER, question_suffix
from echo_core.model.tokens import Modality, TokenSequence

from ..world import Question


def is_spoken(suffix: TokenSequence) -> bool:
    """Whether a question suffix asks aloud (it holds a spoken question's audio tokens)."""
    return bool((suffix.layout.modality == int(Modality.SPEECH)).any())


@dataclass(frozen=True)
class Twins:
    """Typed twins appended after the asked questions of one batch."""

    suffixes: list[tuple[int, TokenSequence, int]]  # (clip index, typed suffix, target count)
    pairs: list[tuple[int, int]]  # (row of the spoken question, row of its twin) in the batch
    shared: list[int]  # per pair: how many tokens end both sequences alike


def typed_twins(
    backend: OmniBackend,
    asked: list[tuple[int, Question, TokenSequence, int]],
) -> Twins:
    """A typed twin for each spoken question of `asked` ((clip index, question, its suffix,
    target count) in batch order); twins take the rows after `len(asked)`."""
    header = len(backend.tokenize(ASSISTANT_HEADER))
    suffixes: list[tuple[int, TokenSequence, int]] = []
    pairs: list[tuple[int, int]] = []
    shared: list[int] = []
    for row, (c, question, suffix, n_targets) in enumerate(asked):
        if not is_spoken(suffix):
            continue
        with torch.no_grad():
            twin, n_twin = question_suffix(backend, question.text, question.answer)
        tail = header + n_targets
        ending = suffix.layout.input_ids[-tail:]
        assert n_twin == n_targets and torch.equal(twin.layout.input_ids[-tail:], ending)
        pairs.append((row, len(asked) + len(suffixes)))
        suffixes.append((c, twin, n_twin))
        shared.append(tail)
    return Twins(suffixes, pairs, shared)


def twin_loss(states: list[torch.Tensor], lengths: list[int], twins: Twins) -> torch.Tensor:
    """Mean cosine distance between each spoken question's layer outputs over its shared ending
    and its twin's (detached).

    Args:
        states: per decoder layer, the question rows' outputs [Nq, L, D] (right-padded).
        lengths: each question row's length in tokens (its padding after).
        twins: which rows pair up, and how long their shared ending is.
    """
    if not twins.pairs:
        return states[0].new_zeros(())
    distances = []
    for (spoken, typed), tail in zip(twins.pairs, twins.shared, strict=True):
        a, b = lengths[spoken], lengths[typed]
        for layer in states:
            student = layer[spoken, a - tail : a].float()
            teacher = layer[typed, b - tail : b].detach().float()
            distances.append(1.0 - F.cosine_similarity(student, teacher, dim=-1).mean())
    return torch.stack(distances).mean()
