"""A live session on this worker: the engine session, its peer connection, ingest tasks, auth."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from echo_core.stream.session import StreamSession

from .clock import SessionClock
from .engine import AskJob
from .ingest import TrackIngest

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

    @property
    def session_id(self) -> str:
        return self.session.session_id

    def add_track(self, track: Any) -> None:
        ingest = TrackIngest(track, self.session, self.clock, None)
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
            job.cancelled.set()
        await asyncio.gather(*(i.stop() for i in self.ingests), return_exceptions=True)
        await self.pc.close()
        log.info("%s: closed", self.session_id)
