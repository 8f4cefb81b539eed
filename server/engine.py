"""The model's owner: one thread runs every session's ingest and every question.

Torch work never runs on the event loop and never runs twice at once: a single worker
thread alternates batched ingest steps (`Scheduler.step`) with queued questions, and when
neither is waiting it encodes a session's tail ahead of its next question
(`Scheduler.warm_tail`). An answer's text pieces come back to the event loop through an
asyncio queue, so the WebSocket handler streams them as they are generated; a cancelled
answer stops at the next piece.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from echo_core.errors import EchoError
from echo_core.speech import Question
from echo_core.stream.answer import Answer
from echo_core.stream.scheduler import Scheduler
from echo_core.stream.session import StreamSession

log = logging.getLogger(__name__)

_DONE = object()


@dataclass
class AskJob:
    """A question waiting for (or being answered by) the worker."""

    session: StreamSession
    question: Question  # typed text or a SpokenQuestion
    window_s: float | None
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    reason: str | None = None  # why it was cancelled: "client", "barge_in" (or None: it was not)
    answer: Answer | None = None

    def cancel(self, reason: str) -> None:
        """Stop generating at the next piece; the first reason given is the one reported."""
        if not self.cancelled.is_set():
            self.reason = reason
            self.cancelled.set()

    def emit(self, item: object) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)

    async def pieces(self) -> AsyncIterator[str]:
        """Answer text pieces as generated; raises the worker's EchoError if asking failed."""
        while True:
            item = await self.out.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield str(item)


class EngineWorker:
    """A daemon thread owning the scheduler (ingest) and the question queue."""

    def __init__(self, scheduler: Scheduler, *, idle_s: float = 0.01, name: str = "echo-engine") -> None:
        self.scheduler = scheduler
        self.idle_s = idle_s
        self._jobs: queue.Queue[AskJob | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.steps = 0
        self.errors = 0

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._jobs.put(None)
        self._thread.join(timeout)

    def submit(self, session: StreamSession, question: Question, window_s: float | None) -> AskJob:
        """Queue a question; iterate `job.pieces()` on the event loop for its text."""
        job = AskJob(session, question, window_s, asyncio.get_running_loop())
        self._jobs.put(job)
        return job

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.scheduler.step() > 0
                self.steps += 1
            except Exception:  # the scheduler isolates chunks; anything else must not kill the worker
                self.errors += 1
                log.exception("ingest step failed")
                worked = False
            if not worked and self._jobs.empty():
                worked = self._warm_tail()
            try:
                job = self._jobs.get(timeout=0 if worked else self.idle_s)
            except queue.Empty:
                continue
            if job is not None:
                self._answer(job)

    def _warm_tail(self) -> bool:
        """Spare time: encode a session's tail ahead of its next question."""
        try:
            return self.scheduler.warm_tail()
        except Exception:  # a session's own failures are kept by the session; this is anything else
            self.errors += 1
            log.exception("encoding a tail ahead failed")
            return False

    def _answer(self, job: AskJob) -> None:
        if job.cancelled.is_set():  # cancelled while queued (a prepared answer no longer wanted)
            job.emit(_DONE)
            return
        try:
            job.session.drain()
            stream = job.session.ask(job.question, job.window_s)
            while not job.cancelled.is_set():  # checked before each piece is generated
                try:
                    piece = next(stream)
                except StopIteration:
                    break
                job.emit(piece)
            job.answer = stream.finish()
        except EchoError as exc:
            job.emit(exc)
        except Exception as exc:
            self.errors += 1
            log.exception("%s: answering failed", job.session.session_id)
            job.emit(exc)
        finally:
            job.emit(_DONE)
