"""CS2's feed "refined" (the EchoingPixels reference semantics), checked against a plain
masked forward written here: the LLM reads the refiner's output states for every kept token,
text included, at the positions those tokens have in the full sequence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from echo_core.config import SieveConfig
from echo_core.errors import ConfigError
from echo_core.model.backend import OmniBackend
from echo_core.model.generate import prefill
from echo_core.model.positions import build_positions
from echo_core.model.rope import RopeMode
from echo_core.model.tokens import TokenSequence
from echo_core.sieve import CS2, CS2Sieve
from echo_core.sieve.base import av_indices, top_k
from echo_core.stream.frames import MediaChunk
from echo_core.stream.runtime import IngestRequest, StreamModel
from tests.conftest import av_clip

pytestmark = pytest.mark.integration


@torch.no_grad()
def _bidirectional(
    backend: OmniBackend, embeds: torch.Tensor, rows: torch.Tensor, rope: RopeMode
) -> torch.Tensor:
    """The LLM's first two decoder layers over [L, D] embeddings with no mask at all → [L, D]."""
    cos, sin = backend.lm.rope(rows, backend.lm.split(rope))
    hidden = embeds[None]
    open_mask = torch.zeros(1, 1, hidden.shape[1], hidden.shape[1], dtype=hidden.dtype)
    for layer in list(backend.lm.layers)[:2]:
        hidden = layer(hidden, attention_mask=open_mask, position_embeddings=(cos, sin))
    return hidden[0]


@torch.no_grad()
def test_refined_feed_matches_a_plain_reference_forward(
    backend: OmniBackend, sequence: TokenSequence
) -> None:
    lm = backend.lm
    cs2 = CS2(lm, n_layers=2, feed="refined")  # untrained: the refiner is a copy of layers 0..1
    sieve = CS2Sieve(lm, cs2, rope=RopeMode.TMROPE, scoring="attention")
    result = sieve.select(sequence, keep=0.1)
    assert result.inputs is not None and result.kept_av < result.n_av
    got = prefill(lm, sequence, RopeMode.TMROPE, result)

    full_rows = build_positions(sequence.layout, RopeMode.TMROPE)  # [3, L], every token
    refined = _bidirectional(backend, sequence.embeds, full_rows, RopeMode.TMROPE)  # [L, D]
    kept = result.kept
    rows = full_rows[:, kept]  # original position ids of every kept token, text included
    hidden = lm.forward(refined[kept][None], rows, lm.split(RopeMode.TMROPE)).hidden
    expected = lm.logits(hidden[:, -1])[0].float()
    assert torch.allclose(got.logits, expected, atol=1e-4), float((got.logits - expected).abs().max())
    assert got.next_position == int(full_rows.max()) + 1  # decoding continues after the full sequence

    # The embeddings feed differs: the same kept tokens, read as their input embeddings.
    embeddings = CS2Sieve(lm, CS2(lm, n_layers=2), rope=RopeMode.TMROPE, scoring="attention")
    plain = embeddings.select(sequence, keep=0.1)
    assert torch.equal(plain.kept, kept) and plain.inputs is None
    assert not torch.allclose(prefill(lm, sequence, RopeMode.TMROPE, plain).logits, got.logits, atol=1e-4)


def test_feed_round_trips_and_is_checked(backend: OmniBackend, tmp_path: Path) -> None:
    CS2(backend.lm, n_layers=2, trained=True, feed="refined").save(tmp_path)
    assert CS2.load_or_init(backend.lm, tmp_path).feed == "refined"
    with pytest.raises(ConfigError, match="feed must be one of"):
        CS2(backend.lm, n_layers=2, feed="raw")


@torch.no_grad()
def test_streaming_cache_holds_the_ingest_refiners_states(backend: OmniBackend) -> None:
    frames, pcm, _ = av_clip(seconds=2, seed=3)
    chunk = MediaChunk(0, 0.0, 2.0, frames, np.arange(4) / 2, pcm)
    for feed in ("refined", "embeddings"):
        torch.manual_seed(0)
        model = StreamModel(backend, CS2(backend.lm, n_layers=2, trained=True, feed=feed), SieveConfig())
        encoded = model.encode_chunks([chunk])
        prepared = model.sieve_chunks([IngestRequest(chunk, "cs2", 0.25)], encoded)[0]
        rel = encoded[0].relative  # one chunk's AV tokens, time relative to its start, no question
        rows = build_positions(rel.layout, model.rope)
        states = _bidirectional(backend, rel.embeds, rows, model.rope) if feed == "refined" else rel.embeds
        scores = model.sieve("cs2").score(rel)
        chosen = av_indices(rel)[top_k(scores, prepared.kept.embeds.shape[0])].sort().values
        assert torch.allclose(prepared.kept.embeds, states[chosen], atol=1e-5), feed
