"""The engine worker: ingest steps and questions on one thread, answers streamed to asyncio."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from echo_core.config import SieveConfig, StreamConfig
from echo_core.errors import EmptyAVError
from echo_core.model.backend import OmniBackend
from echo_core.sieve import CS2
from echo_core.stream.frames import AudioPacket, VideoFrame
from echo_core.stream.runtime import StreamModel
from echo_core.stream.scheduler import Scheduler
from echo_core.stream.session import StreamSession
from server.engine import AskJob, EngineWorker

pytestmark = pytest.mark.integration


@pytest.mark.asyncio
async def test_worker_ingests_and_answers(backend: OmniBackend, cs2: CS2) -> None:
    model = StreamModel(backend, cs2, SieveConfig(scoring="attention"))
    scheduler = Scheduler(model)
    session = StreamSession(model, StreamConfig(cache_budget=256, keep=0.5, max_new_tokens=4))
    empty = StreamSession(model, StreamConfig(), session_id="empty")
    scheduler.add(session)
    scheduler.add(empty)
    worker = EngineWorker(scheduler)
    worker.start()
    try:
        rng = np.random.default_rng(0)
        for k in range(10):  # 5 s of media, pushed from the event loop while the worker ingests
            session.push_video(VideoFrame(k / 2, rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)))
            session.push_audio(AudioPacket(k / 2, rng.standard_normal(8000).astype(np.float32) * 0.1, 16000))
            await asyncio.sleep(0.02)
        for _ in range(200):
            if session.stats.chunks_ingested >= 2:
                break
            await asyncio.sleep(0.02)
        assert session.stats.chunks_ingested >= 2
        for _ in range(200):  # with nothing else to do, the worker encodes the tail ahead
            if session.ready_tail() is not None:
                break
            await asyncio.sleep(0.02)
        assert session.ready_tail() is not None
        job = worker.submit(session, "what colour", None)
        pieces = [p async for p in job.pieces()]
        assert job.answer is not None and job.answer.text == "".join(pieces).strip()
        # The answer reads the cache and the tail: the open chunk [4, 5) s, encoded ahead.
        assert job.answer.tail_lag_s == 0.0 and job.answer.tail_tokens > 0
        assert job.answer.av_tokens == len(session.cache) + job.answer.tail_tokens
        assert job.answer.window_end_s == 5.0
        failing = worker.submit(empty, "what colour", None)
        with pytest.raises(EmptyAVError):
            _ = [p async for p in failing.pieces()]
        cancelled = worker.submit(session, "what colour", None)
        cancelled.cancelled.set()  # skipped if the worker had not taken it yet, else stopped at once
        assert [p async for p in cancelled.pieces()] == []
        assert cancelled.answer is None or cancelled.answer.text == ""
        # a job cancelled while queued is skipped: no ask runs (on `empty` it would raise EmptyAVError)
        queued = AskJob(empty, "what colour", None, asyncio.get_running_loop())
        queued.cancel("superseded")
        worker._answer(queued)
        assert [p async for p in queued.pieces()] == [] and queued.answer is None
    finally:
        worker.stop()
    assert worker.errors == 0
