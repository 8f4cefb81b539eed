"""The training-free joint sieve: cues by hand, one scale for both modalities, one top-k."""

from __future__ import annotations

import pytest
import torch

from echo_core.config import SieveConfig
from echo_core.model.backend import OmniBackend
from echo_core.model.tokens import Modality, TokenLayout, TokenSequence
from echo_core.sieve import CS2, make_sieve
from echo_core.sieve.base import av_indices
from echo_core.sieve.salience import JointSalienceSieve, distinctiveness, modality_zscore
from echo_core.stream.runtime import StreamModel

pytestmark = pytest.mark.integration

A, V = int(Modality.AUDIO), int(Modality.VIDEO)


def test_modality_zscore_puts_each_modality_on_its_own_unit_scale() -> None:
    values = torch.tensor([1.0, 2.0, 3.0, 100.0, 200.0, 300.0])
    modality = torch.tensor([A, A, A, V, V, V])
    z = modality_zscore(values, modality)
    assert torch.allclose(z, torch.tensor([-1.0, 0.0, 1.0, -1.0, 0.0, 1.0]))
    # A modality with one token (no spread) scores 0 rather than nan.
    assert modality_zscore(torch.tensor([5.0, 1.0, 2.0]), torch.tensor([A, V, V]))[0] == 0


def test_distinctiveness_is_distance_from_the_groups_mean() -> None:
    # Two video patches in one chunk: one background-like, one different; audio alone in its group.
    embeds = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    layout = TokenLayout(
        input_ids=torch.zeros(4, dtype=torch.long),
        modality=torch.tensor([V, V, V, A]),
        time_ids=torch.tensor([0, 0, 0, 0]),
        grid_h=torch.zeros(4, dtype=torch.long),
        grid_w=torch.tensor([0, 1, 2, 0]),
        shares_prev=torch.zeros(4, dtype=torch.bool),
    )
    d = distinctiveness(embeds, layout, torch.arange(4))
    mean = torch.tensor([2 / 3, 1 / 3])
    cos = lambda x: float(x @ mean / (x.norm() * mean.norm()))  # noqa: E731
    assert torch.allclose(d[:3], torch.tensor([1 - cos(embeds[0]), 1 - cos(embeds[1]), 1 - cos(embeds[2])]))
    assert float(d[3]) < 1e-6  # its own mean
    assert float(d[2]) > float(d[0])  # the odd patch out stands out


@torch.no_grad()
def test_one_top_k_over_both_modalities(backend: OmniBackend, cs2: CS2, sequence: TokenSequence) -> None:
    sieve = make_sieve("joint_salience", backend.lm, cs2)
    assert isinstance(sieve, JointSalienceSieve)
    result = sieve.select(sequence, keep=0.1)
    scores = result.scores[av_indices(sequence)]
    kept_av = result.kept[sequence.layout.av_mask[result.kept]]
    threshold = float(result.scores[kept_av].min())
    # Joint pool: every dropped token (either modality) scores no higher than every kept one.
    assert int((scores > threshold).sum()) <= result.kept_av
    assert result.kept_av == -(-result.n_av // 10)
    with_q = JointSalienceSieve(backend.lm, question_weight=1.0).cues(sequence)
    assert set(with_q) == {"novelty", "distinct", "question"}
    assert set(JointSalienceSieve(backend.lm).cues(sequence)) == {"novelty", "distinct"}


def test_auto_method_picks_cs2_only_with_a_trained_head(backend: OmniBackend, cs2: CS2) -> None:
    assert not cs2.trained
    assert StreamModel(backend, cs2, SieveConfig(method="auto")).sieve_config.method == "joint_salience"
    trained = CS2(backend.lm, n_layers=2, trained=True)
    assert StreamModel(backend, trained, SieveConfig(method="auto")).sieve_config.method == "cs2"
