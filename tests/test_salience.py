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
from echo_core.sieve.saliency import context_novelty, predecessor, successor
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


def test_context_novelty_is_the_mean_change_to_the_neighbours_on_both_sides() -> None:
    # One audio stream of 9 tokens: silence (0-1), a tone (2-6), silence (7-8); and one video
    # patch over 3 frames with a different patch at frame 1 (its own chain, a single token).
    quiet, tone = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    audio = [quiet] * 2 + [tone] * 5 + [quiet] * 2
    video = [[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    embeds = torch.tensor(audio + video)
    n = len(audio) + len(video)
    layout = TokenLayout(
        input_ids=torch.zeros(n, dtype=torch.long),
        modality=torch.tensor([A] * 9 + [V] * 4),
        time_ids=torch.tensor([*range(9), 0, 1, 2, 1]),
        grid_h=torch.zeros(n, dtype=torch.long),
        grid_w=torch.tensor([0] * 12 + [1]),
        shares_prev=torch.zeros(n, dtype=torch.bool),
    )
    prev = predecessor(layout, torch.arange(n))
    assert prev.tolist() == [-1, 0, 1, 2, 3, 4, 5, 6, 7, -1, 9, 10, -1]
    assert successor(prev).tolist() == [1, 2, 3, 4, 5, 6, 7, 8, -1, 10, 11, -1, -1]
    novelty = context_novelty(embeds, prev, radius=2)

    # By hand: each token's neighbours within two steps on its own chain, both sides.
    chains = [list(range(9)), [9, 10, 11], [12]]
    expected = torch.ones(n)
    for chain in chains:
        for pos, i in enumerate(chain):
            near = [chain[q] for q in range(max(0, pos - 2), min(len(chain), pos + 3)) if q != pos]
            if near:
                d = [1 - torch.nn.functional.cosine_similarity(embeds[i], embeds[j], dim=0) for j in near]
                expected[i] = torch.stack(d).mean()
    assert torch.allclose(novelty, expected, atol=1e-6)
    # The tone's last token stands out as much as its first: the end of an event counts.
    assert torch.isclose(novelty[6], novelty[2]) and float(novelty[2]) == pytest.approx(0.5)
    assert float(novelty[4]) == pytest.approx(0.0)  # the tone's middle does not change
    assert float(novelty[12]) == 1.0  # no neighbour at all
    # A neighbour missing at the edge drops out of the mean instead of counting as a change.
    assert float(novelty[0]) == pytest.approx(0.5) and float(novelty[8]) == pytest.approx(0.5)


def test_predecessor_is_the_latest_earlier_token_of_the_same_track() -> None:
    # A shuffled pool: audio tokens (several per time id) and video patches on a 3 × 4 grid.
    g = torch.Generator().manual_seed(0)
    n = 300
    modality = torch.where(torch.rand(n, generator=g) < 0.4, A, V)
    is_video = modality == V
    layout = TokenLayout(
        input_ids=torch.zeros(n, dtype=torch.long),
        modality=modality,
        time_ids=torch.randint(0, 12, (n,), generator=g),
        grid_h=torch.where(is_video, torch.randint(0, 3, (n,), generator=g), 0),
        grid_w=torch.where(is_video, torch.randint(0, 4, (n,), generator=g), 0),
        shares_prev=torch.zeros(n, dtype=torch.bool),
    )
    av = torch.arange(n)
    expected = [-1] * n
    last: dict[tuple[int, ...], int] = {}
    for i in sorted(range(n), key=lambda i: (int(layout.time_ids[i]), i)):  # time, then pool order
        track = (V, int(layout.grid_h[i]), int(layout.grid_w[i])) if is_video[i] else (A,)
        expected[i] = last.get(track, -1)
        last[track] = i
    assert predecessor(layout, av).tolist() == expected
    assert predecessor(layout, av[:0]).numel() == 0


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
