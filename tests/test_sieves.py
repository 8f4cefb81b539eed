"""Every sieve keeps exactly k AV tokens, all text, and follows its own rule."""

from __future__ import annotations

import pytest
import torch

from echo_core.errors import BudgetError
from echo_core.model.backend import OmniBackend
from echo_core.model.tokens import TIME_IDS_PER_CHUNK, Modality, TokenSequence
from echo_core.sieve import CS2, METHODS, CS2Sieve, make_sieve
from echo_core.sieve.base import av_budget, av_indices
from echo_core.sieve.baselines import AudioGuidedSieve, PerModalitySieve, TemporalRedundancySieve
from echo_core.sieve.saliency import question_indices

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("keep", [0.05, 0.2, 0.5])
def test_each_sieve_keeps_exactly_k_and_all_text(
    backend: OmniBackend, cs2: CS2, sequence: TokenSequence, method: str, keep: float
) -> None:
    sieve = make_sieve(method, backend.lm, cs2)
    result = sieve.select(sequence, keep=keep)
    n_av = int(sequence.layout.av_mask.sum())
    k = n_av if method == "none" else av_budget(n_av, keep)
    assert result.kept_av == k
    kept_mask = torch.zeros(len(sequence), dtype=torch.bool)
    kept_mask[result.kept] = True
    assert bool(kept_mask[~sequence.layout.av_mask].all()), "text must always be kept"
    assert int(kept_mask[sequence.layout.av_mask].sum()) == k
    assert torch.equal(result.kept, torch.sort(result.kept).values)
    mod = sequence.layout.modality[result.kept]
    assert result.kept_audio == int((mod == Modality.AUDIO).sum())
    assert result.kept_video == int((mod == Modality.VIDEO).sum())
    assert set(result.aliasing) == {"tmrope", "sync", "compact"}


@pytest.mark.parametrize("method", [m for m in METHODS if m != "fastv"])
def test_select_batch_is_select_one_by_one(
    backend: OmniBackend, cs2: CS2, sequence: TokenSequence, ingest_sequence: TokenSequence, method: str
) -> None:
    """One call over sequences of mixed layouts, each with its own keep, = `select` on each in order."""
    seqs = [ingest_sequence, sequence, ingest_sequence]
    keeps = [0.25, 0.1, 0.5]
    batched = make_sieve(method, backend.lm, cs2).select_batch(seqs, keep=keeps)
    single = make_sieve(method, backend.lm, cs2)  # a fresh one: `random` replays the same draws
    assert len(batched) == len(seqs)
    for seq, keep, got in zip(seqs, keeps, batched, strict=True):
        want = single.select(seq, keep=keep)
        assert torch.equal(got.kept, want.kept)
        assert torch.allclose(got.scores, want.scores, atol=1e-5, equal_nan=True)
    with pytest.raises(BudgetError, match="2 values for 3 sequences"):
        single.select_batch(seqs, keep=[0.1, 0.2])


class CountingCS2Sieve(CS2Sieve):
    """CS2Sieve that records the size of every group it scores in one call."""

    groups: list[int]

    def score_batch(self, seqs: list[TokenSequence]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        self.groups = [*getattr(self, "groups", []), len(seqs)]
        return super().score_batch(seqs)


@pytest.mark.parametrize("feed", ["embeddings", "refined"])
def test_cs2_select_batch_batches_one_layout_with_the_prior(
    backend: OmniBackend, sequence: TokenSequence, ingest_sequence: TokenSequence, feed: str
) -> None:
    """A trained head scores same-layout sequences in one refiner call, salience prior included;
    each result matches `select` (scores, kept, and the refined states the LLM reads)."""
    torch.manual_seed(3)
    cs2 = CS2(backend.lm, n_layers=2, trained=True, feed=feed, prior_weight=0.5)
    other = TokenSequence(ingest_sequence.embeds.flip(0), ingest_sequence.layout)  # same layout
    seqs = [ingest_sequence, sequence, other]
    sieve = CountingCS2Sieve(backend.lm, cs2, scoring="head")
    batched = sieve.select_batch(seqs, budget=6)
    assert sorted(sieve.groups) == [1, 2]  # the two chunks of one layout share a refiner call
    for seq, got in zip(seqs, batched, strict=True):
        want = CS2Sieve(backend.lm, cs2, scoring="head").select(seq, budget=6)
        assert torch.equal(got.kept, want.kept)
        assert torch.allclose(got.scores, want.scores, atol=1e-4, equal_nan=True)
        assert (got.inputs is None) == (feed == "embeddings")
        if got.inputs is not None:
            assert want.inputs is not None
            assert torch.allclose(got.inputs, want.inputs, atol=1e-4)


def test_budget_form(backend: OmniBackend, cs2: CS2, sequence: TokenSequence) -> None:
    result = make_sieve("cs2", backend.lm, cs2).select(sequence, budget=7)
    assert result.kept_av == 7


def test_cs2_is_top_k_of_its_joint_scores(backend: OmniBackend, cs2: CS2, sequence: TokenSequence) -> None:
    sieve = CS2Sieve(backend.lm, cs2, scoring="attention")
    result = sieve.select(sequence, keep=0.1)
    av = av_indices(sequence)
    scores = result.scores[av]
    kept = torch.isin(av, result.kept)
    assert float(scores[kept].min()) >= float(scores[~kept].max())


def test_per_modality_split_is_proportional(backend: OmniBackend, cs2: CS2, sequence: TokenSequence) -> None:
    sieve = PerModalitySieve(CS2Sieve(backend.lm, cs2, scoring="attention"))
    result = sieve.select(sequence, keep=0.2)
    k = result.kept_av
    assert abs(result.kept_audio - k * result.n_audio / result.n_av) <= 1
    # within each modality it is still the scorer's top
    av = av_indices(sequence)
    for modality in (Modality.AUDIO, Modality.VIDEO):
        local = av[sequence.layout.modality[av] == modality]
        kept = torch.isin(local, result.kept)
        assert float(result.scores[local][kept].min()) >= float(result.scores[local][~kept].max())


def test_uniform_is_even_in_time(backend: OmniBackend, cs2: CS2, sequence: TokenSequence) -> None:
    result = make_sieve("uniform", backend.lm, cs2).select(sequence, keep=0.1)
    times = torch.sort(sequence.layout.time_ids[result.kept][sequence.layout.av_mask[result.kept]]).values
    span = int(sequence.layout.time_ids.max())
    gaps = (times[1:] - times[:-1]).float()
    assert float(gaps.max()) <= span / len(times) * 2 + 25


def test_random_is_seeded(backend: OmniBackend, cs2: CS2, sequence: TokenSequence) -> None:
    a = make_sieve("random", backend.lm, cs2, seed=3).select(sequence, keep=0.2)
    b = make_sieve("random", backend.lm, cs2, seed=3).select(sequence, keep=0.2)
    c = make_sieve("random", backend.lm, cs2, seed=4).select(sequence, keep=0.2)
    assert torch.equal(a.kept, b.kept) and not torch.equal(a.kept, c.kept)


def test_temporal_redundancy_drops_static_patches(backend: OmniBackend) -> None:
    """A video whose left half is static and right half changes keeps right-half patches."""
    rng = torch.Generator().manual_seed(0)
    frames = torch.zeros(8, 112, 112, 3, dtype=torch.uint8)
    frames[:, :, :56] = 90  # static left half
    frames[:, :, 56:] = torch.randint(0, 256, (8, 112, 56, 3), generator=rng, dtype=torch.uint8)
    video = backend.encode_video(frames.numpy())
    seq = backend.build_sequence([], video, None, [])
    sieve = TemporalRedundancySieve(backend.lm.head_dim, backend.lm.theta)
    n_first = video.grid_thw[1] * video.grid_thw[2]
    result = sieve.select(seq, budget=n_first + 8)
    kept_video = result.kept[seq.layout.modality[result.kept] == Modality.VIDEO]
    later = kept_video[seq.layout.time_ids[kept_video] > 0]
    assert len(later) == 8
    assert bool((seq.layout.grid_w[later] >= 2).all()), "changed patches are in the right half"


def test_audio_guided_gives_loud_windows_more_video(
    backend: OmniBackend, cs2: CS2, sequence: TokenSequence
) -> None:
    scorer = CS2Sieve(backend.lm, cs2, scoring="attention")
    result = AudioGuidedSieve(scorer).select(sequence, keep=0.3)
    av = av_indices(sequence)
    layout = sequence.layout
    window = layout.time_ids // TIME_IDS_PER_CHUNK
    mean_audio = []
    video_kept = []
    for w in range(int(window[av].max()) + 1):
        a = av[(layout.modality[av] == Modality.AUDIO) & (window[av] == w)]
        mean_audio.append(float(result.scores[a].mean()))
        v = result.kept[(layout.modality[result.kept] == Modality.VIDEO) & (window[result.kept] == w)]
        video_kept.append(len(v))
    louder = max(range(len(mean_audio)), key=lambda i: mean_audio[i])
    quieter = min(range(len(mean_audio)), key=lambda i: mean_audio[i])
    assert video_kept[louder] >= video_kept[quieter]


def test_fastv_prunes_inside_the_llm(backend: OmniBackend, cs2: CS2, sequence: TokenSequence) -> None:
    result = make_sieve("fastv", backend.lm, cs2, fastv_layer=1).select(sequence, keep=0.1)
    assert result.prune_layer == 1


def test_question_indices_skip_closing_markers(backend: OmniBackend, sequence: TokenSequence) -> None:
    q = question_indices(sequence.layout)
    ids = sequence.layout.input_ids[q].tolist()
    assert backend.special.vision_eos not in ids and backend.special.audio_eos not in ids
    assert backend.tokenizer.decode(ids[:4]) == "what colour was the"


def test_fastv_layer_out_of_range(backend: OmniBackend) -> None:
    from echo_core.errors import ConfigError
    from echo_core.sieve.baselines import FastVSieve

    with pytest.raises(ConfigError, match="FastV layer must be in \\[1, 2\\], got 3"):
        FastVSieve(backend.lm, layer=3)
