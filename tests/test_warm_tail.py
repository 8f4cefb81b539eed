"""A tail encoded ahead while the engine is idle: read while current, re-encoded when due, never cached."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echo_core.config import SieveConfig
from echo_core.errors import InvalidMediaError
from echo_core.model.backend import OmniBackend
from echo_core.sieve import CS2
from echo_core.stream.frames import AudioPacket, MediaChunk, VideoFrame
from echo_core.stream.runtime import StreamModel
from echo_core.stream.scheduler import Scheduler
from echo_core.stream.session import StreamSession
from tests.test_stream_session import SIZE, cfg, feed
from tests.test_stream_tail import cache_state

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model(backend: OmniBackend, cs2: CS2) -> StreamModel:
    return StreamModel(backend, cs2, SieveConfig(method="cs2", rope="sync", scoring="attention"))


def audio(session: StreamSession, start_s: float, seconds: float) -> None:
    """Push `seconds` of audio (0.1-s packets) and no video from `start_s`."""
    rng = np.random.default_rng(int(start_s * 10))
    for k in range(round(seconds * 10)):
        pcm = (0.2 * rng.standard_normal(1600)).astype(np.float32)
        session.push_audio(AudioPacket(start_s + k / 10, pcm, 16000))


def test_an_answer_reads_the_warm_tail_while_it_is_current(model: StreamModel) -> None:
    config = cfg(cache_budget=512, keep=0.5, tail_warm_s=0.5)
    warm, cold = StreamSession(model, config), StreamSession(model, config)
    for s in (warm, cold):
        feed(s, 0.0, 5.0)
        assert s.process() == 2  # [4, 5) s still open: the tail
    assert warm.ready_tail() is None
    assert warm.warm_tail() and not warm.warm_tail()  # encoded once, then not due
    assert warm.stats.tails_warmed == 1 and warm.ready_tail() is not None
    # Encoded from the same media, the warm tail answers exactly as one encoded at ask time.
    a, b = warm.ask("what colour"), cold.ask("what colour")
    assert torch.allclose(a.first_logits, b.first_logits, atol=1e-5)
    ra, rb = a.result(), b.result()
    assert ra.tail_lag_s == 0.0 and rb.tail_lag_s is None
    assert ra.tail_tokens == rb.tail_tokens > 0 and ra.window_end_s == rb.window_end_s == pytest.approx(5.0)

    # Audio newer than the warm tail, up to tail_warm_s: read as it was, the lag reported.
    for s in (warm, cold):
        audio(s, 5.0, 0.3)
    late = warm.ask("what colour").result()
    assert late.tail_lag_s == pytest.approx(0.3) and late.window_end_s == pytest.approx(5.0)
    assert cold.ask("what colour").result().window_end_s == pytest.approx(5.3, abs=0.05)
    assert not warm.warm_tail()  # 0.3 s of audio: not due yet (due beyond tail_warm_s)

    # More than tail_warm_s of newer audio: the answer encodes its own tail; the next warm is due.
    audio(warm, 5.3, 0.3)
    assert warm.ready_tail() is None
    own = warm.ask("what colour").result()
    assert own.tail_lag_s is None and own.window_end_s == pytest.approx(5.6, abs=0.05)
    assert warm.warm_tail() and warm.ask("what colour").result().tail_lag_s == 0.0

    # A frame the chunker takes (a new 2-fps slot) makes it stale at once.
    warm.push_video(VideoFrame(5.5, np.zeros((SIZE, SIZE, 3), dtype=np.uint8)))
    assert warm.ready_tail() is None and warm.warm_tail()
    # So do a forgotten span (its audio is silenced in the tail) and ingest (the cache moved).
    warm.forget_audio(4.2, 4.6)
    assert warm.ready_tail() is None and warm.warm_tail()
    feed(warm, 6.0, 1.0, seed=2)  # frames to 6.5 s: [4, 6) closes
    assert warm.process() == 1
    assert warm.ready_tail() is None
    assert warm.ask("what colour").result().tail_lag_s is None


def test_warming_leaves_ingest_exact(model: StreamModel) -> None:
    config = cfg(cache_budget=64, keep=0.5, tail_warm_s=0.5)
    warmed, quiet = StreamSession(model, config), StreamSession(model, config)
    for start in np.arange(0.0, 9.0, 0.5):
        for s in (warmed, quiet):
            feed(s, float(start), 0.5, seed=int(start * 2))
            s.process()
        warmed.warm_tail()
        warmed.ask("what colour").result()
    assert warmed.stats.tails_warmed >= 10
    for s in (warmed, quiet):
        s.process(flush=True)
    assert warmed.stats.chunks_ingested == quiet.stats.chunks_ingested == 5
    for x, y in zip(cache_state(warmed), cache_state(quiet), strict=True):
        assert torch.equal(x, y)


def test_off_means_every_tail_is_encoded_at_ask_time(model: StreamModel) -> None:
    for config in (cfg(tail_warm_s=None), cfg(ask_tail=False)):
        s = StreamSession(model, config)
        feed(s, 0.0, 3.0)
        s.process()
        assert not s.warm_tail() and s.ready_tail() is None and s.stats.tails_warmed == 0
        assert s.ask("what colour").result().tail_lag_s is None


def test_a_tail_that_fails_to_encode_ahead_is_left_to_the_answer(model: StreamModel) -> None:
    s = StreamSession(model, cfg(cache_budget=128, tail_warm_s=0.5))
    broken = np.zeros((4, 56, 56, 2), dtype=np.uint8)  # two channels: the encoder rejects it
    s._pending.append(MediaChunk(0, 0.0, 2.0, broken, np.arange(4) / 2, None))
    assert s.warm_tail()  # tried once and kept as failed: not retried on every idle step
    assert not s.warm_tail() and s.ready_tail() is None
    with pytest.raises(InvalidMediaError, match="2 channels"):
        s.ask("what colour")  # the answer encodes the tail itself and reports what the encoders say


def test_the_scheduler_warms_sessions_in_turn(model: StreamModel) -> None:
    scheduler = Scheduler(model)
    sessions = [StreamSession(model, cfg(tail_warm_s=0.5), session_id=f"s{i}") for i in range(2)]
    for s in sessions:
        scheduler.add(s)
        feed(s, 0.0, 3.0)
    assert scheduler.run_until_idle() == 2
    assert scheduler.warm_tail() and [s.stats.tails_warmed for s in sessions] == [1, 0]
    assert scheduler.warm_tail() and [s.stats.tails_warmed for s in sessions] == [1, 1]
    assert not scheduler.warm_tail()  # both current
    audio(sessions[1], 3.0, 0.6)
    assert scheduler.warm_tail() and [s.stats.tails_warmed for s in sessions] == [1, 2]


def test_a_30_fps_camera_is_re_encoded_at_the_models_2_fps(model: StreamModel) -> None:
    """Every camera frame is pushed, but only a frame the chunker takes (one per 2-fps slot)
    makes the warm tail stale; so does 0.5 s of audio on its own."""
    s = StreamSession(model, cfg(cache_budget=512, keep=0.5, tail_warm_s=0.5))
    rgb = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    for k in range(60):  # 2 s of a 30-fps camera, with 0.1 s of audio every third frame
        s.push_video(VideoFrame(k / 30, rgb))
        if k % 3 == 0:
            audio(s, k / 30, 0.1)
        s.warm_tail()
    assert s.stats.video_frames_in == 60 and s.chunker.stats.frames_used == 4
    assert s.stats.tails_warmed == 4  # at 0.0, 0.5, 1.0 and 1.5 s: the frames, not the audio
    # The last one saw media up to 1.6 s; with audio alone it is due once more than 0.5 s came
    # since: at 2.2 s, and not again up to 2.6 s.
    for k in range(6):
        audio(s, 2.0 + k / 10, 0.1)
        s.warm_tail()
        assert s.stats.tails_warmed == (4 if k == 0 else 5)
