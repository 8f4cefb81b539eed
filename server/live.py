"""A live session on this worker: the engine session, its peer connection, ingest tasks, auth."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from echo_core.stream.session import StreamSession

from .clock import SessionClock
from .engine import AskJob
from .events import EventFeed
from .ingest import TrackIngest
from .voice import VoiceInput

log = logging.getLogger(__name__)


@dataclass
class LiveSession:
    """Everything one client's stream owns; `close` releases all of it."""

    session: StreamSession
    key_id: str
    pc: Any  # aiortc RTCPeerConnection
    clock: SessionClock = field(default_factory=SessionClock)
    ingests: list[TrackIngest] = field(default_factory=list)
    jobs: dict[str, AskJob] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    connected: bool = False  # the peer reached `connected` at least once
    candidates: int = 0  # remote ICE candidates added (capped by server.max_ice_candidates)
    closed: bool = False
    attached: int = 0  # WebSocket connections currently attached
    ticker: asyncio.Task[None] | None = None
    events: EventFeed = field(init=False)  # the session's own events (voice, spoken answers)
    voice: VoiceInput | None = None  # set by the server once the session exists
    keep_spoken_in_scene: bool = False
    #: Called on barge-in (speech over an answer): e.g. the spoken-answer track stops speaking.
    barge_in_hooks: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.events = EventFeed(self.session.session_id)

    @property
    def session_id(self) -> str:
        return self.session.session_id

    def add_track(self, track: Any) -> None:
        tap = self.voice.tap if self.voice is not None and track.kind == "audio" else None
        ingest = TrackIngest(track, self.session, self.clock, None, audio_tap=tap)
        ingest.start()
        self.ingests.append(ingest)
        log.info("%s: receiving %s", self.session_id, track.kind)

    async def tick(self, period_s: float = 0.25, margin_s: float = 1.0) -> None:
        """Keep the session's chunker on the clock: close due chunks in stalls, flush when media ends.

        `margin_s` leaves frames still being converted time to arrive before their chunk closes.
        """
        ended = False
        while not self.closed:
            now = self.clock.peek()
            if now is not None:
                self.session.mark_time(now - margin_s)
            if self.ingests and not ended and all(i.ended for i in self.ingests):
                ended = True
                self.session.end_stream()
            await asyncio.sleep(period_s)

    def interrupt(self, reason: str) -> int:
        """Cancel every answer in flight (`reason` goes into their `response.done`) and run the
        barge-in hooks; how many answers were cancelled."""
        jobs = [job for job in self.jobs.values() if not job.cancelled.is_set()]
        for job in jobs:
            job.cancel(reason)
        for hook in list(self.barge_in_hooks):
            try:
                hook()
            except Exception:
                log.exception("%s: a barge-in hook failed", self.session_id)
        if jobs:
            log.info("%s: %s cancelled %d answer(s)", self.session_id, reason, len(jobs))
        return len(jobs)

    def latest_job(self) -> AskJob | None:
        return next(reversed(self.jobs.values()), None) if self.jobs else None

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.ticker is not None:
            self.ticker.cancel()
            await asyncio.gather(self.ticker, return_exceptions=True)
            self.ticker = None  # its coroutine frame holds this session: drop the cycle
        for job in self.jobs.values():
            job.cancel("closed")
        await asyncio.gather(*(i.stop() for i in self.ingests), return_exceptions=True)
        self.events.close()
        if self.voice is not None:
            await self.voice.close()
            self.voice = None  # its callbacks hold this session: drop the cycle
        self.barge_in_hooks.clear()
        await self.pc.close()
        log.info("%s: closed", self.session_id)
