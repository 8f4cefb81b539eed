"""Generation after a sieved prefill, with the KV cache, equals recomputation without it."""

from __future__ import annotations

import pytest
import torch

from echo_core.errors import ConfigError
from echo_core.model.backend import OmniBackend
from echo_core.model.generate import GenerationConfig, generate_ids, prefill, stream_text
from echo_core.model.positions import build_positions
from echo_core.model.rope import RopeMode
from echo_core.model.tokens import TokenLayout, TokenSequence
from echo_core.sieve import CS2, make_sieve

pytestmark = pytest.mark.integration


def reference_greedy(backend: OmniBackend, kept: TokenSequence, rope: RopeMode, steps: int) -> list[int]:
    """Greedy tokens recomputing the whole sequence every step, no cache."""
    out: list[int] = []
    seq = kept
    for _ in range(steps):
        positions = build_positions(seq.layout, rope)
        hidden = backend.lm.forward(seq.embeds[None], positions, backend.lm.split(rope)).hidden
        token = int(backend.lm.logits(hidden[:, -1])[0].argmax())
        out.append(token)
        nxt = TokenSequence(backend.embed_ids(torch.tensor([token])), TokenLayout.text([token]))
        seq = TokenSequence.concat([seq, nxt])
    return out


@pytest.mark.parametrize("rope", list(RopeMode))
@pytest.mark.parametrize("method", ["cs2", "uniform", "none"])
@torch.no_grad()
def test_cached_generation_matches_no_cache_reference(
    backend: OmniBackend, cs2: CS2, sequence: TokenSequence, rope: RopeMode, method: str
) -> None:
    result = make_sieve(method, backend.lm, cs2, rope=rope).select(sequence, keep=0.2)
    state = prefill(backend.lm, sequence, rope, result)
    cached = list(generate_ids(backend.lm, state, GenerationConfig(max_new_tokens=4), stop_ids=()))
    assert cached == reference_greedy(backend, sequence.select(result.kept), rope, 4)


@torch.no_grad()
def test_fastv_prefill_then_generation(backend: OmniBackend, cs2: CS2, sequence: TokenSequence) -> None:
    result = make_sieve("fastv", backend.lm, cs2, fastv_layer=1).select(sequence, keep=0.2)
    state = prefill(backend.lm, sequence, RopeMode.SYNC, result)
    assert state.cache.get_seq_length(0) == len(sequence)
    assert state.cache.get_seq_length(1) == len(result.kept)
    tokens = list(generate_ids(backend.lm, state, GenerationConfig(max_new_tokens=3), stop_ids=()))
    assert len(tokens) == 3


@torch.no_grad()
def test_sampling_is_seeded_and_text_streams(backend: OmniBackend, sequence: TokenSequence) -> None:
    cfg = GenerationConfig(max_new_tokens=5, temperature=1.0, top_p=0.9, seed=7)
    a = list(generate_ids(backend.lm, prefill(backend.lm, sequence, RopeMode.SYNC), cfg, stop_ids=()))
    b = list(generate_ids(backend.lm, prefill(backend.lm, sequence, RopeMode.SYNC), cfg, stop_ids=()))
    assert a == b
    pieces = list(stream_text(backend.tokenizer, iter(a)))
    assert "".join(pieces).strip() == backend.tokenizer.decode(a, skip_special_tokens=True).strip()


def test_generation_config_validation() -> None:
    with pytest.raises(ConfigError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(ConfigError, match="top_p"):
        GenerationConfig(top_p=0)
