"""Answers that read the tail: media newer than the cache, encoded at ask time and never cached."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from echo_core.config import SieveConfig
from echo_core.errors import EmptyAVError
from echo_core.model.backend import OmniBackend
from echo_core.model.rope import POSITIONS_PER_SECOND
from echo_core.sieve import CS2
from echo_core.stream.frames import MediaChunk, newest_frame_alone
from echo_core.stream.runtime import IngestRequest, StreamModel
from echo_core.stream.session import StreamSession
from tests.test_stream_session import cfg, feed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model(backend: OmniBackend, cs2: CS2) -> StreamModel:
    return StreamModel(backend, cs2, SieveConfig(method="cs2", rope="sync", scoring="attention"))


def cache_state(s: StreamSession) -> list[torch.Tensor]:
    n = len(s.cache)
    assert s.kv is not None
    return [
        s.cache.embeds[:n],
        s.cache.time_ids[:n],
        s.cache.modality[:n],
        s.kv.keys[:, :, : s.kv.prefix_len + n],
        s.kv.values[:, :, : s.kv.prefix_len + n],
    ]


def test_tail_is_read_at_its_times_and_ingest_stays_exact(model: StreamModel) -> None:
    asked = StreamSession(model, cfg(cache_budget=512, keep=0.5))
    quiet = StreamSession(model, cfg(cache_budget=512, keep=0.5))
    for s in (asked, quiet):
        feed(s, 0.0, 5.0)
        assert s.process() == 2  # chunks [0, 2) and [2, 4) closed; [4, 5) s still open
    cached = len(asked.cache)
    fresh = asked.tail()
    assert fresh is not None
    tail_s = fresh.tokens.time_ids.double() / POSITIONS_PER_SECOND
    assert float(tail_s.min()) >= 4.0 and float(tail_s.max()) < 5.0
    assert fresh.end_tid == 5 * POSITIONS_PER_SECOND
    reused = asked.ask("what colour", kv_reuse=True)
    prefilled = asked.ask("what colour", kv_reuse=False)
    # KV reuse + tail equals one fresh prefill of prefix + cache + tail + question (positions included).
    diff = float((reused.first_logits - prefilled.first_logits).abs().max())
    assert diff < 1e-4, diff
    a = reused.result()
    assert a.tail_tokens == len(fresh.tokens) > 0
    assert a.av_tokens == cached + a.tail_tokens
    assert a.window_end_s == pytest.approx(5.0)
    without = asked.ask("what colour", tail=False).result()
    assert without.tail_tokens == 0 and without.av_tokens == cached
    assert without.window_end_s == pytest.approx(4.0)
    # Nothing was cached, and the rest of the stream is ingested as if no question was asked.
    assert len(asked.cache) == cached
    for s in (asked, quiet):
        feed(s, 5.0, 3.0, seed=1)
        s.process(flush=True)
    assert asked.stats.chunks_ingested == quiet.stats.chunks_ingested == 4
    for x, y in zip(cache_state(asked), cache_state(quiet), strict=True):
        assert torch.equal(x, y)


def test_tail_answers_before_any_chunk_is_ingested(model: StreamModel) -> None:
    s = StreamSession(model, cfg(cache_budget=512, keep=0.5))
    with pytest.raises(EmptyAVError):
        s.ask("what")
    feed(s, 0.0, 3.0)
    s.drain()
    assert s.pending_chunks == 1 and len(s.cache) == 0  # closed, not encoded yet
    reused = s.ask("what colour", kv_reuse=True)
    prefilled = s.ask("what colour", kv_reuse=False)
    assert float((reused.first_logits - prefilled.first_logits).abs().max()) < 1e-4
    answer = reused.result()
    assert answer.tail_tokens == answer.av_tokens > 0
    assert answer.window_start_s == 0.0 and answer.window_end_s == pytest.approx(3.0)
    assert s.pending_chunks == 1  # the waiting chunk is still ingested by the scheduler
    with pytest.raises(EmptyAVError):
        s.ask("what", tail=False)


def test_tail_with_window_and_ask_sieve(model: StreamModel) -> None:
    s = StreamSession(model, cfg(cache_budget=512, keep=0.5))
    feed(s, 0.0, 7.0)
    s.process()
    fresh = s.tail()
    assert fresh is not None
    # The window ends at the newest media, so a 1-s window holds only the tail's last second.
    short = s.ask("what colour", 1.0).result()
    inside = int((fresh.tokens.time_ids >= 6 * POSITIONS_PER_SECOND).sum())
    assert short.av_tokens == short.tail_tokens == inside
    # The question re-sieves cache and tail together down to 10 tokens.
    sieved = s.ask("what colour", ask_budget=10).result()
    assert sieved.av_tokens == 10 and sieved.tail_tokens <= min(10, len(fresh.tokens))
    assert s.ask("what colour", ask_budget=10, kv_reuse=False).result().av_tokens == 10


def test_answer_reads_the_store_in_place_and_survives_ingest(model: StreamModel) -> None:
    config = cfg(cache_budget=64, keep=0.5, max_new_tokens=6)
    a, b = StreamSession(model, config), StreamSession(model, config)
    for s in (a, b):
        feed(s, 0.0, 4.0)
        s.process(flush=True)
    text_ref = b.ask("what colour", tail=False).result().text
    lent = a.ask("what colour", tail=False)
    kv = a.kv
    assert kv is not None and len(kv._lent) == len(model.lm.layers)  # reads the store: no private copy
    layers = list(kv._lent)
    seen = [layer.keys.clone() for layer in layers]  # type: ignore[union-attr]
    pieces = [next(lent)]
    feed(a, 4.0, 4.0, seed=3)
    a.process(flush=True)  # appends and evicts (budget 64) while the answer is half done
    assert a.stats.evicted_audio + a.stats.evicted_video > 0 and len(kv._lent) == 0
    for layer, before in zip(layers, seen, strict=True):  # moved to a copy before the store changed
        assert torch.equal(layer.keys[:, :, : before.shape[2]], before)  # type: ignore[index]
    pieces += list(lent)
    assert "".join(pieces).strip() == text_ref


def test_the_tails_newest_frame_gets_a_temporal_patch_of_its_own(model: StreamModel) -> None:
    """The encoder pairs frames; in the tail the newest frame is not averaged with the one half
    a second older (its pair partner is replaced by it), and ingest still encodes the real pair."""
    s = StreamSession(model, cfg(cache_budget=512, keep=0.5, tail_keep=1.0))
    feed(s, 0.0, 5.0)
    s.process()
    (open_chunk,) = s.tail_chunks()  # [4, 5) s: frames at 4.0 and 4.5, one pair
    assert open_chunk.frames is not None and len(open_chunk.frames) == 2
    alone = newest_frame_alone(open_chunk)
    assert alone.frames is not None
    assert np.array_equal(alone.frames[0], open_chunk.frames[1]) and np.array_equal(
        alone.frames[1], open_chunk.frames[1]
    )
    assert not np.array_equal(open_chunk.frames[0], open_chunk.frames[1])  # the test's frames differ
    fresh = s.tail()
    assert fresh is not None

    def encoded(chunk: MediaChunk) -> torch.Tensor:
        (prepared,) = model.prepare([IngestRequest(chunk, s.method, 1.0)])
        return prepared.kept.embeds

    assert torch.equal(fresh.tokens.embeds, encoded(alone))
    assert not torch.equal(fresh.tokens.embeds, encoded(open_chunk))
    # an odd frame count is left alone: the encoder already pairs the last frame with itself
    odd = replace(open_chunk, frames=open_chunk.frames[:1], frame_times=open_chunk.frame_times[:1])
    assert newest_frame_alone(odd) is odd
    no_video = replace(open_chunk, frames=None, frame_times=None)
    assert newest_frame_alone(no_video) is no_video
