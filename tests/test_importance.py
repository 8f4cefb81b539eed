"""Dense targets for the score head: the teacher's gradient × input and the listwise loss."""

from __future__ import annotations

import math

import pytest
import torch

from echo_core.model.backend import OmniBackend
from echo_core.model.rope import RopeMode
from echo_core.model.tokens import TokenLayout, TokenSequence
from echo_lab.train.importance import distillation_loss, listwise_loss, teacher_view

pytestmark = pytest.mark.integration


def prefix_and_answer(backend: OmniBackend, sequence: TokenSequence) -> tuple[TokenSequence, TokenSequence]:
    """`sequence` up to its last AV token (the prefix), and a three-token text whose last two are targets."""
    n_prefix = int(torch.nonzero(sequence.layout.av_mask).max()) + 1
    answer = torch.tensor([5, 6, 7])
    question = TokenSequence(backend.embed_ids(answer).detach(), TokenLayout.text(answer))
    return sequence.select(torch.arange(n_prefix)), question


def test_listwise_loss_by_hand_and_its_minimum() -> None:
    scores = torch.tensor([0.0, 0.0], requires_grad=True)
    loss = listwise_loss(scores, torch.tensor([3.0, 1.0]))
    assert math.isclose(float(loss.detach()), math.log(2), rel_tol=1e-6)  # -(.75 + .25) log .5
    loss.backward()
    assert scores.grad is not None and float(scores.grad[0]) < 0 < float(scores.grad[1])  # moves towards 3:1
    best = torch.log(torch.tensor([0.75, 0.25]))  # softmax(best) = target: the loss is the entropy
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert math.isclose(float(listwise_loss(best, torch.tensor([3.0, 1.0]))), entropy, rel_tol=1e-6)
    assert float(listwise_loss(torch.zeros(3), torch.zeros(3))) == 0.0


def test_distillation_loss_by_hand() -> None:
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # p = (0.75, 0.25)
    student = torch.zeros(1, 2, requires_grad=True)  # q = (0.5, 0.5)
    loss = distillation_loss(student, teacher)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-6)
    loss.backward()
    assert student.grad is not None and float(student.grad[0, 0]) < 0 < float(student.grad[0, 1])
    assert float(distillation_loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-7)
    # averaged over target positions: two copies of the row give the same value
    twice = distillation_loss(student.detach().repeat(2, 1), teacher.repeat(2, 1))
    assert math.isclose(float(twice), expected, rel_tol=1e-6)


def test_teacher_view_is_gradient_times_input(backend: OmniBackend, sequence: TokenSequence) -> None:
    lm = backend.lm
    prefix, question = prefix_and_answer(backend, sequence)
    n_prefix = len(prefix)
    importance, logits = teacher_view(lm, [prefix], [(0, question, 2)], RopeMode.SYNC)
    got = importance[0]
    assert got.shape == (n_prefix,) and bool((got >= 0).all()) and float(got.sum()) > 0

    # The same by hand, with plain autograd on a sequence of prefix + question.
    from echo_lab.train.examples import answer_loss

    x = prefix.embeds.detach().clone().requires_grad_(True)
    whole = TokenSequence.concat([TokenSequence(x, prefix.layout), question])
    loss, _ = answer_loss(lm, [whole], [2], RopeMode.SYNC)
    (grad,) = torch.autograd.grad(loss, x)
    expected = (grad * x.detach()).sum(-1).abs()
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-7)
    # the logits it returns are the teacher's for the two answer targets (6, 7), detached
    assert logits.shape[0] == 2 and not logits.requires_grad
    by_logits = torch.nn.functional.cross_entropy(logits, torch.tensor([6, 7]))
    assert torch.allclose(by_logits, loss.detach(), rtol=1e-4)
