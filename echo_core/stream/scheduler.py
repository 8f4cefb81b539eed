"""Many sessions, one model: ingest work of every session batched into shared calls.

Each `step` drains every session's input queues into its chunker, takes closed chunks
round-robin (one per session per pass, so a busy session cannot starve a quiet one) up
to `max_batch` chunks, runs both encoders once over all of them and CS2 once per chunk
shape, and hands each session its kept tokens. If a batch fails (a chunk the encoders
reject), its chunks are retried one by one and only the failing ones are dropped and
counted, so one bad stream never costs another its chunks.
"""

from __future__ import annotations

import logging
import threading

from ..errors import ConfigError
from .runtime import IngestRequest, PreparedChunk, StreamModel
from .session import StreamSession

log = logging.getLogger(__name__)


class Scheduler:
    """Owns the set of live sessions of one worker and runs their ingest."""

    def __init__(self, model: StreamModel, *, max_batch: int = 16) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be ≥ 1, got {max_batch}")
        self.model = model
        self.max_batch = max_batch
        self._sessions: dict[str, StreamSession] = {}
        self._lock = threading.Lock()
        self.batches = 0
        self.failed_chunks = 0
        self._next_warm = 0  # where the round robin of `warm_tail` goes on

    def add(self, session: StreamSession) -> None:
        with self._lock:
            if session.session_id in self._sessions:
                raise ConfigError(f"session {session.session_id!r} is already scheduled")
            self._sessions[session.session_id] = session

    def remove(self, session_id: str) -> StreamSession | None:
        with self._lock:
            return self._sessions.pop(session_id, None)

    def get(self, session_id: str) -> StreamSession | None:
        return self._sessions.get(session_id)

    def sessions(self) -> list[StreamSession]:
        with self._lock:
            return list(self._sessions.values())

    def gather(self, sessions: list[StreamSession]) -> tuple[list[IngestRequest], list[StreamSession]]:
        """Closed chunks of `sessions`, one per session per pass up to `max_batch`, with their owners."""
        requests: list[IngestRequest] = []
        owners: list[StreamSession] = []
        progress = True
        while progress and len(requests) < self.max_batch:
            progress = False
            for s in sessions:
                if len(requests) >= self.max_batch:
                    break
                taken = s.take_requests(1)
                if taken:
                    requests += taken
                    owners.append(s)
                    progress = True
        return requests, owners

    def _prepare(
        self, requests: list[IngestRequest], owners: list[StreamSession]
    ) -> list[PreparedChunk | None]:
        try:
            return list(self.model.prepare(requests))
        except Exception:  # isolate the failing chunk below, whatever it raised
            if len(requests) == 1:
                log.exception(
                    "%s: chunk %d failed to ingest; dropped", owners[0].session_id, requests[0].chunk.index
                )
                owners[0].stats.chunks_dropped += 1
                self.failed_chunks += 1
                return [None]
        return [self._prepare([r], [o])[0] for r, o in zip(requests, owners, strict=True)]

    def step(self, *, flush: bool = False) -> int:
        """One batched ingest pass over every session; returns the number of chunks cached."""
        sessions = self.sessions()
        for s in sessions:
            s.drain(flush=flush)
        requests, owners = self.gather(sessions)
        if not requests:
            return 0
        self.batches += 1
        done = 0
        for owner, prepared in zip(owners, self._prepare(requests, owners), strict=True):
            if prepared is not None:
                owner.append_chunk(prepared)
                done += 1
        return done

    def warm_tail(self) -> bool:
        """Encode one session's tail ahead of its questions, taking sessions in turn (call when
        nothing else is waiting); returns whether one was encoded."""
        sessions = self.sessions()
        for i in range(len(sessions)):
            k = (self._next_warm + i) % len(sessions)
            if sessions[k].warm_tail():
                self._next_warm = k + 1
                return True
        return False

    def run_until_idle(self, *, flush: bool = False) -> int:
        """Step until no session has a closed chunk waiting; returns the chunks cached."""
        total = 0
        while True:
            n = self.step(flush=flush)
            total += n
            if n == 0 and not any(s.pending_chunks for s in self.sessions()):
                return total
