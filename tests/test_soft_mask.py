"""Soft masking (stage2.estimator soft): relaxed keep gates as attention-key biases."""

from __future__ import annotations

import math

import pytest
import torch

from echo_core.model.backend import OmniBackend
from echo_core.model.rope import RopeMode
from echo_core.model.tokens import TokenSequence
from echo_lab.train.examples import shared_prefix_logits
from echo_lab.train.soft_mask import GATE_FLOOR, key_bias, soft_keep
from tests.test_importance import prefix_and_answer

pytestmark = pytest.mark.integration


def test_soft_keep_opens_exactly_k_gates_and_every_score_gets_a_gradient() -> None:
    scores = torch.tensor([3.0, -1.0, 0.5, 2.0, 0.0, -2.0], requires_grad=True)
    gates = soft_keep(scores, 2, tau=0.2)
    assert torch.nonzero(gates > 0.5).flatten().tolist() == [0, 3]  # the two largest
    assert bool((gates > 0).all()) and bool((gates < 1).all())
    gates.sum().backward()
    assert scores.grad is not None and bool((scores.grad != 0).all())
    # sharper with a smaller tau; all kept when k covers the pool
    sharp, blunt = soft_keep(scores.detach(), 2, tau=0.05), soft_keep(scores.detach(), 2, tau=0.5)
    assert float(sharp[1]) < float(blunt[1])
    assert torch.equal(soft_keep(scores.detach(), 6, tau=0.2), torch.ones(6))


def test_key_bias_is_log_gate_at_the_members() -> None:
    bias = key_bias(5, torch.tensor([1, 3]), torch.tensor([0.5, 0.0]))
    assert bias[0] == bias[2] == bias[4] == 0.0
    assert math.isclose(float(bias[1]), math.log(0.5), rel_tol=1e-6)
    assert math.isclose(float(bias[3]), math.log(GATE_FLOOR), rel_tol=1e-6)


def test_a_key_bias_reaches_every_prefix_token(backend: OmniBackend, sequence: TokenSequence) -> None:
    lm = backend.lm
    prefix, question = prefix_and_answer(backend, sequence)
    n_prefix = len(prefix)
    questions = [(0, question, 2)]
    plain = shared_prefix_logits(lm, [prefix], questions, RopeMode.SYNC).logits
    bias = torch.zeros(n_prefix, requires_grad=True)
    with torch.enable_grad():
        biased = shared_prefix_logits(lm, [prefix], questions, RopeMode.SYNC, [bias])
        assert torch.allclose(biased.logits, plain, atol=1e-5)  # a zero bias changes nothing
        loss, _ = biased.loss()
        (grad,) = torch.autograd.grad(loss, bias)
    av = prefix.layout.av_mask
    assert bool((grad[av] != 0).all())  # the answer loss reaches every AV token's gate
    # masking a token hard changes the answer's logits
    masked = torch.zeros(n_prefix)
    masked[torch.nonzero(av).flatten()[::2]] = math.log(GATE_FLOOR)
    changed = shared_prefix_logits(lm, [prefix], questions, RopeMode.SYNC, [masked]).logits
    assert not torch.allclose(changed, plain, atol=1e-4)
