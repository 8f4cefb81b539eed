"""CS2: the refiner is bidirectional, STE gradients reach it, scores are sane, weights round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from echo_core.errors import CheckpointError, ConfigError
from echo_core.model.backend import OmniBackend
from echo_core.model.positions import build_positions
from echo_core.model.rope import RopeMode
from echo_core.model.tokens import TokenSequence
from echo_core.sieve import CS2, CS2Sieve
from echo_core.sieve.base import av_indices

pytestmark = pytest.mark.integration


def _rope(backend: OmniBackend, seq: TokenSequence) -> tuple[torch.Tensor, torch.Tensor]:
    return backend.lm.rope(build_positions(seq.layout, RopeMode.SYNC), backend.lm.split(RopeMode.SYNC))


@torch.no_grad()
def test_refiner_is_bidirectional_and_llm_is_causal(
    backend: OmniBackend, cs2: CS2, sequence: TokenSequence
) -> None:
    av = av_indices(sequence)
    first, last = int(av[0]), int(av[-1])
    changed = sequence.embeds.clone()
    changed[last] += 1.0
    cos, sin = _rope(backend, sequence)
    before = cs2.refiner(sequence.embeds[None], cos, sin)[0, first]
    after = cs2.refiner(changed[None], cos, sin)[0, first]
    assert float((before - after).abs().max()) > 1e-4, "the first AV token must see the last one"

    split = backend.lm.split(RopeMode.SYNC)
    positions = build_positions(sequence.layout, RopeMode.SYNC)
    llm_before = backend.lm.run_layers(sequence.embeds[None], positions, split)[0, first]
    llm_after = backend.lm.run_layers(changed[None], positions, split)[0, first]
    assert torch.equal(llm_before, llm_after), "the causal LLM's first token must not see the future"


def test_refiner_starts_as_a_copy_of_the_first_layers(backend: OmniBackend, cs2: CS2) -> None:
    for mine, theirs in zip(cs2.refiner.layers, backend.lm.layers, strict=False):
        for (name, a), (_, b) in zip(mine.named_parameters(), theirs.named_parameters(), strict=True):
            assert torch.equal(a, b), name
        assert mine is not theirs
    assert len(cs2.refiner.layers) == 2


@pytest.mark.parametrize("gumbel", [False, True])
def test_ste_gradient_reaches_score_head_and_refiner(
    backend: OmniBackend, sequence: TokenSequence, gumbel: bool
) -> None:
    torch.manual_seed(0)
    cs2 = CS2(backend.lm, n_layers=2, trained=True)
    sieve = CS2Sieve(backend.lm, cs2, scoring="head")
    result, kept = sieve.select_ste(sequence, keep=0.2, gumbel=gumbel, tau=0.5)
    assert result.kept_av == result.n_av // 5 + (1 if result.n_av % 5 else 0)
    # forward value of the gate is 1: kept embeddings are unchanged
    assert torch.allclose(kept.embeds.detach(), sequence.embeds[result.kept], atol=1e-6)
    positions = build_positions(kept.layout, RopeMode.SYNC)
    hidden = backend.lm.forward(kept.embeds[None], positions, backend.lm.split(RopeMode.SYNC)).hidden
    logits = backend.lm.logits(hidden)[0, :-1]
    targets = kept.layout.input_ids[1:]
    loss = F.cross_entropy(logits.float(), targets)
    loss.backward()
    head_grad = sum(float(p.grad.abs().sum()) for p in cs2.head.parameters() if p.grad is not None)
    refiner_grad = sum(float(p.grad.abs().sum()) for p in cs2.refiner.parameters() if p.grad is not None)
    assert head_grad > 0 and refiner_grad > 0
    assert all(p.grad is None for p in backend.encoder_parameters()), "encoders stay frozen"
    backend.model.zero_grad(set_to_none=True)


def test_zero_head_ties_and_gumbel_explores(backend: OmniBackend, sequence: TokenSequence) -> None:
    """A zeroed last layer scores all tokens 0; with Gumbel noise the first picks are random draws."""
    cs2 = CS2(backend.lm, n_layers=2, trained=True)
    cs2.head.zero_output_()
    sieve = CS2Sieve(backend.lm, cs2, scoring="head")
    assert torch.count_nonzero(sieve.head_scores(sequence)) == 0
    picks = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        result, _ = sieve.select_ste(sequence, keep=0.2, gumbel=True, tau=0.5)
        picks.append(set(result.kept.tolist()))
    assert picks[0] != picks[1]
    loss = sieve.select_ste(sequence, keep=0.2, gumbel=True, tau=0.5)[1].embeds.sum()
    loss.backward()
    assert float(cs2.head.fc2.weight.grad.abs().sum()) > 0  # the zeroed layer still learns
    backend.model.zero_grad(set_to_none=True)


def test_training_free_scores_with_and_without_question(
    backend: OmniBackend, cs2: CS2, sequence: TokenSequence, ingest_sequence: TokenSequence
) -> None:
    sieve = CS2Sieve(backend.lm, cs2, scoring="auto")
    assert sieve.scoring == "attention"  # untrained CS2 → training-free
    with_q = sieve.score(sequence)
    assert with_q.shape == (len(av_indices(sequence)),)
    assert bool(torch.isfinite(with_q).all()) and float(with_q.min()) >= 0
    assert float(with_q.sum()) <= 1.0 + 1e-5  # attention mass of question rows onto AV
    ingest = sieve.score(ingest_sequence)
    assert bool(torch.isfinite(ingest).all())
    # three mean-normalised cues: the pool mean is 3 by construction
    assert abs(float(ingest.mean()) - 3.0) < 1e-3
    result = sieve.select(ingest_sequence, keep=0.25)
    assert result.kept_audio > 0 or result.kept_video > 0


def test_head_scoring_requires_trained_weights(backend: OmniBackend, cs2: CS2) -> None:
    with pytest.raises(ConfigError, match="trained CS2 weights"):
        CS2Sieve(backend.lm, cs2, scoring="head")
    with pytest.raises(ConfigError, match="scoring must be one of"):
        CS2Sieve(backend.lm, cs2, scoring="magic")
    with pytest.raises(ConfigError, match="refiner layers must be in"):
        CS2(backend.lm, n_layers=0)


def test_cs2_weights_round_trip(backend: OmniBackend, tmp_path: Path, sequence: TokenSequence) -> None:
    torch.manual_seed(1)
    trained = CS2(backend.lm, n_layers=2, trained=True)
    trained.save(tmp_path)
    loaded = CS2.load_or_init(backend.lm, tmp_path)
    assert loaded.trained and loaded.n_layers == 2
    a = CS2Sieve(backend.lm, trained).select(sequence, keep=0.1)
    b = CS2Sieve(backend.lm, loaded).select(sequence, keep=0.1)
    assert torch.equal(a.kept, b.kept)
    fresh = CS2.load_or_init(backend.lm, tmp_path / "absent")
    assert not fresh.trained
    (tmp_path / "bad").mkdir()
    from safetensors.torch import save_file

    save_file({"nope": torch.zeros(1)}, str(tmp_path / "bad" / "cs2.safetensors"))
    with pytest.raises(CheckpointError, match="missing"):
        CS2.load_or_init(backend.lm, tmp_path / "bad")


@torch.no_grad()
def test_salience_prior_adds_to_the_z_scored_head(
    backend: OmniBackend, tmp_path: Path, sequence: TokenSequence, ingest_sequence: TokenSequence
) -> None:
    """score = z(head) + w · the encoder salience with the prior's novelty cue (by default the change
    from the previous token); w = 0 is the bare head; a huge w ranks by that salience alone; the
    cue and weight are stored in cs2.json and a checkpoint that names no cue gets the default."""
    from echo_core.sieve.base import av_indices, top_k
    from echo_core.sieve.cs2 import CS2_CONFIG
    from echo_core.sieve.salience import JointSalienceSieve, encoder_salience

    torch.manual_seed(2)
    cs2 = CS2(backend.lm, n_layers=2, trained=True)
    bare = CS2Sieve(backend.lm, cs2, scoring="head")
    head = bare.head_scores(sequence).float()
    assert torch.equal(bare.score(sequence), bare.head_scores(sequence))  # prior_weight 0
    assert cs2.prior_novelty == "previous"
    salience = encoder_salience(sequence, "previous")
    assert not torch.allclose(salience, JointSalienceSieve(backend.lm).score(sequence))  # a cue of its own
    cs2.prior_weight = 0.5
    with_prior = CS2Sieve(backend.lm, cs2, scoring="head").score(sequence)
    z = (head - head.mean()) / head.std()
    assert torch.allclose(with_prior, z + 0.5 * salience, atol=1e-5)

    cs2.prior_weight = 1e6
    sieve = CS2Sieve(backend.lm, cs2, scoring="head")
    mine = sieve.select(sequence, keep=0.1).kept
    av = av_indices(sequence)
    theirs = av[top_k(salience, len(mine) - (len(sequence) - len(av)))]
    assert torch.equal(
        mine, torch.cat([torch.nonzero(~sequence.layout.av_mask).flatten(), theirs]).sort().values
    )
    with pytest.raises(ConfigError, match="novelty"):
        encoder_salience(sequence, "next")
    # the batched ingest path ranks each chunk as the single path does
    batched = sieve.score_batch([ingest_sequence, ingest_sequence])
    assert torch.allclose(batched[0][0], sieve.score(ingest_sequence).float().cpu(), atol=1e-4)

    cs2.prior_weight = 0.5
    with torch.enable_grad():  # training ranks by the sum (stage2.rank_with_prior): the head learns
        scores = torch.randn(len(salience), requires_grad=True)
        cs2.ranked(scores, sequence)[0].backward()
        assert scores.grad is not None and float(scores.grad.abs().sum()) > 0
    cs2.save(tmp_path)
    assert CS2.load_or_init(backend.lm, tmp_path).prior_weight == 0.5
    with pytest.raises(ConfigError, match="prior_weight"):
        CS2(backend.lm, n_layers=2, prior_weight=-1.0)

    # the context cue (joint_salience's): the prior follows it, and it is saved and loaded
    cs2.set_prior(novelty="context")
    context = encoder_salience(sequence, "context")
    assert not torch.allclose(context, salience)
    assert torch.allclose(
        CS2Sieve(backend.lm, cs2, scoring="head").score(sequence), z + 0.5 * context, atol=1e-5
    )
    cs2.save(tmp_path)
    loaded = CS2.load_or_init(backend.lm, tmp_path)
    assert (loaded.prior_weight, loaded.prior_novelty) == (0.5, "context")
    meta = json.loads((tmp_path / CS2_CONFIG).read_text())
    del meta["prior_novelty"]  # written before the cue was a setting
    (tmp_path / CS2_CONFIG).write_text(json.dumps(meta))
    assert CS2.load_or_init(backend.lm, tmp_path).prior_novelty == "previous"
    with pytest.raises(ConfigError, match="prior_novelty"):
        cs2.set_prior(novelty="next")
    with pytest.raises(ConfigError, match="prior_novelty"):
        CS2(backend.lm, n_layers=2, prior_novelty="both")
