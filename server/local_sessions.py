"""`LocalSessions`: the `SessionHost` whose sessions live in this process (a standalone server or a worker).

A session's media, cache and peer connection cannot move, so they live here; the store
(in-process or Redis) holds the registry, quotas, rate limits and history that other
processes may read. One engine thread owns the model (engine.py); questions, typed or
spoken, go through its queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import Any

from echo_core.config import StreamConfig
from echo_core.errors import ConfigError, EchoError
from echo_core.speech import Question, SpokenQuestion
from echo_core.stream.runtime import StreamModel
from echo_core.stream.scheduler import Scheduler
from echo_core.stream.session import StreamSession
from echo_core.stream.turns import Utterance
from echo_core.tts import VoiceCatalog

from .allocator import release_free_memory
from .auth import AuthError, TokenSigner
from .config import ServiceConfig
from .engine import AskJob, EngineWorker
from .errors import ServiceError
from .journal import HistoryJournal
from .live import LiveSession, window_stats
from .metrics import LocalMetrics, SessionFigure
from .peer import add_candidate, answer_sdp, peer_connection
from .protocol import (
    Error,
    HistoryItem,
    ResponseCreated,
    ResponseDone,
    ResponseTextDelta,
    ServerEvent,
    SessionCreated,
    SessionSettings,
    SessionUpdated,
    Usage,
    to_wire,
)
from .session_host import InputAudioAction, WireEvent
from .shutdown import within
from .store import HistoryRecord, MemoryStore, Store
from .voice import Prepared, VoiceInput

log = logging.getLogger(__name__)

#: A session nobody attached to and no peer ever connected to is closed after this long.
UNCLAIMED_SESSION_S = 60.0


class LocalSessions:
    """The sessions of this process, their engine thread, and the session API over them."""

    def __init__(
        self,
        config: ServiceConfig,
        signer: TokenSigner,
        metrics: LocalMetrics,
        journal: HistoryJournal,
        worker_id: str,
    ) -> None:
        self.config = config
        self.signer = signer
        self.metrics = metrics
        self.journal = journal
        self.worker_id = worker_id
        self.live: dict[str, LiveSession] = {}  # the live sessions by id
        self.store: Store = MemoryStore()
        self.model: StreamModel | None = None
        self.engine: EngineWorker | None = None
        self.voices = VoiceCatalog()  # espeak-ng's; empty: answers cannot be spoken
        # espeak-ng runs as a subprocess per sentence: two threads keep one session's next sentence
        # synthesising while another session's is
        self.speech_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="echo-tts")
        self._reserved = 0  # sessions being created: counted against max_sessions before any await

    # ------------------------------------------------------------- lifecycle
    def start(self, model: StreamModel, store: Store, voices: VoiceCatalog) -> None:
        """Start the engine thread over `model`; sessions are kept in `store`."""
        self.model, self.store, self.voices = model, store, voices
        self.engine = EngineWorker(Scheduler(model))
        self.engine.start()

    async def stop(self) -> None:
        """Close every session, then stop the engine thread and the speech threads (each step
        bounded: `shutdown.within`)."""
        for live in list(self.live.values()):
            await within(self.close_live(live), f"closing session {live.session_id}")
        if self.engine is not None:
            await within(asyncio.get_running_loop().run_in_executor(None, self.engine.stop), "the engine")
        self.speech_executor.shutdown(wait=False, cancel_futures=True)

    @property
    def ingest_lag_s(self) -> float:
        """The largest ingest lag of a live session."""
        return max((live.session.ingest_lag_s for live in self.live.values()), default=0.0)

    async def register_all(self, ttl_s: float) -> None:
        """Refresh every live session's record in the store."""
        for live in list(self.live.values()):
            await self.store.heartbeat(live.session_id, live.key_id, ttl_s)

    async def reap(self) -> None:
        """Close sessions nobody can use: peer failed or closed, never offered, or never connected.

        A session whose peer is not `connected` within `server.connect_timeout_s` of its
        creation is closed even while a socket is attached (an ICE that never completes would
        otherwise hold its key's quota for ever); it is counted in `echo_sessions_reaped_total`.
        """
        timeout = self.config.server.connect_timeout_s
        now = time.time()
        for live in list(self.live.values()):
            state = live.pc.connectionState
            if state == "connected":
                live.connected = True
            abandoned = live.attached == 0 and (
                state in ("failed", "closed") or (state == "new" and now - live.created > UNCLAIMED_SESSION_S)
            )
            never_connected = not live.connected and now - live.created > timeout
            if abandoned or never_connected:
                if never_connected:
                    self.metrics.sessions_reaped.inc()
                    log.info("%s: not connected within %.0f s; closing it", live.session_id, timeout)
                await self.close_live(live)

    async def figures(self) -> list[SessionFigure]:
        """Every live session's figures for /metrics."""
        lives = list(self.live.values())
        # the session lock may be held by an ingest step: read the caches off the event loop
        caches = await asyncio.get_running_loop().run_in_executor(
            None, lambda: [sum(live.session.cache_counts()) for live in lives]
        )
        return [
            SessionFigure(
                live.session_id,
                round(live.session.ingest_lag_s, 3),
                tokens,
                live.session.config.cache_budget,
                live.session.stats.chunks_ingested,
            )
            for live, tokens in zip(lives, caches, strict=True)
        ]

    # -------------------------------------------------------------- admission
    def admit(self) -> None:
        """Refuse a new session (`server_busy`) when this process is full or its ingest is behind."""
        limit = self.config.server.max_sessions
        if len(self.live) + self._reserved >= limit:
            raise ServiceError("server_busy", f"this server is full ({limit} sessions); try again later")
        lag = self.ingest_lag_s
        if lag > self.config.server.max_ingest_lag_s:
            raise ServiceError("server_busy", f"ingest is {lag:.1f} s behind; try again later")

    def stream_config(self, settings: SessionSettings) -> StreamConfig:
        """The stream config of a new session (`invalid_settings` past `stream.max_cache_budget`)."""
        stream = self.config.stream
        budget = settings.cache_budget
        if budget is None:
            return stream
        ceiling = stream.max_cache_budget or stream.cache_budget
        if not 1 <= budget <= ceiling:
            raise ServiceError(
                "invalid_settings",
                f"cache_budget must be in [1, {ceiling}] (stream.max_cache_budget), got {budget}",
            )
        return replace(stream, cache_budget=budget)

    # ------------------------------------------------------------- SessionHost
    async def create(self, key_id: str, settings: SessionSettings) -> SessionCreated:
        live = await self.create_live(key_id, settings)
        token, expiry = self.token_for(live)
        return SessionCreated(None, live.session_id, token, expiry, self.settings_of(live))

    async def create_live(self, key_id: str, settings: SessionSettings) -> LiveSession:
        """A new live session for an authenticated key (capacity and quota checked).

        The process slot is reserved before the first await and the key's quota slot in one
        atomic store operation, so parallel creates cannot overshoot either limit; a failed
        creation releases both.
        """
        stream = self.stream_config(settings)
        self.admit()
        assert self.model is not None and self.engine is not None, "LocalSessions.start() first"
        model, limit, ttl = (
            self.model,
            self.config.server.max_sessions_per_key,
            self.config.server.heartbeat_ttl_s,
        )
        session_id = uuid.uuid4().hex[:16]
        live: LiveSession | None = None
        self._reserved += 1
        try:
            if not await self.store.reserve_session(session_id, key_id, self.worker_id, ttl, limit):
                raise ServiceError("session_quota", f"this API key already has {limit} live sessions")
            try:
                # preallocating the cache and prefilling the prefix takes a while: not on the loop
                session = await asyncio.to_thread(StreamSession, model, stream, session_id=session_id)
                pc = peer_connection(self.config.server.ice_servers)
                live = LiveSession(session, key_id, pc, speech_executor=self.speech_executor)
                held = weakref.ref(live)
                live.voice = VoiceInput(
                    session_id,
                    live.events,
                    partial(self.ask_spoken, held),
                    live.interrupt,
                    prepare=partial(self.prepare_spoken, held),
                )
                self.apply_settings(live, settings)
            except BaseException:
                if live is not None:
                    await live.close()
                await self.store.unregister_session(session_id, key_id)
                raise
        finally:
            self._reserved -= 1
        self.watch_peer(live)
        self.engine.scheduler.add(session)
        self.live[session_id] = live
        live.ticker = asyncio.create_task(live.tick(), name=f"tick-{session_id}")
        self.metrics.sessions_created.inc()
        log.info("%s: created for key %s", session_id, key_id)
        return live

    def watch_peer(self, live: LiveSession) -> None:
        """Ingest the peer's tracks; close the session when its peer fails and nobody is attached."""
        ref = weakref.ref(live)  # the handlers hold the session weakly: freed without a cyclic GC

        @live.pc.on("track")
        def on_track(track: Any) -> None:
            held = ref()
            if held is not None:
                held.add_track(track)

        @live.pc.on("connectionstatechange")
        async def on_state() -> None:
            held = ref()
            if held is None:
                return
            state = held.pc.connectionState
            if state == "connected":
                held.connected = True
            if state in ("failed", "closed"):
                log.info("%s: peer %s", held.session_id, state)
                if held.attached == 0 and not held.closed:
                    await self.close_live(held)

    async def attach(self, session_id: str, *, by_key: bool) -> SessionCreated:
        live = self.held(session_id)
        token, expiry = self.token_for(live, by_key=by_key)
        return SessionCreated(None, live.session_id, token, expiry, self.settings_of(live))

    async def key_of(self, session_id: str) -> str:
        return self.held(session_id).key_id

    async def join(self, session_id: str) -> None:
        self.held(session_id).attached += 1

    async def leave(self, session_id: str) -> None:
        live = self.live.get(session_id)
        if live is None:
            return
        live.attached -= 1
        if live.attached == 0 and live.pc.connectionState in ("failed", "closed"):
            await self.close_live(live)  # nobody can use it any more

    async def update(self, session_id: str, settings: SessionSettings) -> SessionUpdated:
        live = self.held(session_id)
        self.apply_settings(live, settings)
        return SessionUpdated(None, live.session_id, self.settings_of(live))

    async def offer(self, session_id: str, sdp: str) -> str:
        return await answer_sdp(self.held(session_id), sdp)

    async def candidate(
        self, session_id: str, candidate: str, sdp_mid: str | None, index: int | None
    ) -> None:
        live = self.held(session_id)
        await add_candidate(live, candidate, sdp_mid, index, self.config.server.max_ice_candidates)

    async def ask(
        self, session_id: str, question: str, window_s: float | None
    ) -> AsyncGenerator[WireEvent, None]:
        async for event in self.answer(self.held(session_id), question, window_s):
            yield to_wire(event)

    async def cancel(self, session_id: str, response_id: str | None) -> None:
        live = self.held(session_id)
        job = live.jobs.get(response_id) if response_id else live.latest_job()
        if job is not None:
            job.cancel("client")

    async def input_audio(self, session_id: str, action: InputAudioAction) -> None:
        voice = self.held(session_id).voice
        if voice is None:
            raise ServiceError("session_not_found", "this session has ended; create a new one")
        if action == "start":
            voice.start()
        elif action == "commit":
            voice.commit()
        else:
            voice.clear()

    async def events(
        self, session_id: str, *, stats: bool, settings: SessionSettings | None = None
    ) -> AsyncGenerator[WireEvent, None]:
        live = self.held(session_id)
        queue = live.events.subscribe()
        try:
            if settings is not None:
                yield to_wire(await self.update(session_id, settings))
            interval = self.config.server.stats_interval_s
            next_stats = time.monotonic() if stats else None
            while True:
                wait = None if next_stats is None else next_stats - time.monotonic()
                if wait is not None and wait <= 0:
                    yield to_wire(await window_stats(live))
                    next_stats = time.monotonic() + interval
                    continue
                try:
                    async with asyncio.timeout(wait):
                        event = await queue.get()
                except TimeoutError:
                    continue
                if event is None:  # the session ended
                    return
                yield to_wire(event)
        finally:
            live.events.unsubscribe(queue)

    async def history(self, session_id: str, limit: int) -> list[HistoryItem]:
        records = await self.store.history(session_id, max(0, min(limit, 1000)))
        return [HistoryItem(r.response_id, r.question, r.answer, r.at) for r in records]

    async def close(self, session_id: str) -> None:
        await self.close_live(self.held(session_id))

    # -------------------------------------------------------------- sessions
    def held(self, session_id: str) -> LiveSession:
        """A live session of this process (ServiceError `session_not_found` otherwise)."""
        live = self.live.get(session_id)
        if live is None or live.closed:
            raise ServiceError("session_not_found", "this session has ended; create a new one")
        return live

    def token_for(self, live: LiveSession, *, by_key: bool = True) -> tuple[str, float]:
        """A fresh token for `live`; one minted from another token never outlives `server.max_session_s`."""
        not_after = None if by_key else live.created + self.config.server.max_session_s
        if not_after is not None and time.time() >= not_after:
            raise AuthError(
                "token_expired",
                f"this session is older than server.max_session_s={self.config.server.max_session_s:.0f} s;"
                " attach with its API key",
            )
        return self.signer.issue(live.session_id, live.key_id, not_after)

    def apply_settings(self, live: LiveSession, settings: SessionSettings) -> None:
        """Apply client settings (ConfigError → `invalid_settings`); the cache budget is fixed at creation."""
        budget = settings.cache_budget
        if budget is not None and budget != live.session.config.cache_budget:
            raise ServiceError("invalid_settings", "cache_budget is fixed when a session is created")
        self.check_voice(settings)
        try:
            live.session.update(  # each wire setting is the engine's setting of the same name
                window_s=settings.window_s,
                keep=settings.keep,
                ask_budget=settings.ask_budget,
                method=settings.method,
            )
        except ConfigError as exc:
            raise ServiceError("invalid_settings", str(exc)) from None
        if settings.modalities is not None:
            live.modalities = tuple(settings.modalities)
        if settings.voice is not None:
            live.answer_voice = settings.voice
        if settings.turn_detection is not None and live.voice is not None:
            live.voice.configure(settings.turn_detection)
        if settings.keep_spoken_in_scene is not None:
            live.keep_spoken_in_scene = settings.keep_spoken_in_scene

    def check_voice(self, settings: SessionSettings) -> None:
        """Spoken answers need espeak-ng and one of its voices (`invalid_settings` otherwise)."""
        if settings.modalities is not None and "audio" in settings.modalities and not self.voices.languages:
            raise ServiceError(
                "invalid_settings",
                "modalities 'audio' needs espeak-ng on the server (Debian/Ubuntu: apt-get install espeak-ng)",
            )
        if settings.voice is not None and self.voices.languages and not self.voices.knows(settings.voice):
            raise ServiceError(
                "invalid_settings",
                f"voice {settings.voice!r} is not an espeak-ng voice of this server"
                " (`espeak-ng --voices`; e.g. en-us, en-us+f3)",
            )

    def settings_of(self, live: LiveSession) -> SessionSettings:
        c = live.session.config
        return SessionSettings(
            window_s=c.window_s,
            cache_budget=c.cache_budget,
            method=live.session.method,
            keep=c.keep,
            ask_budget=c.ask_budget,
            modalities=list(live.modalities),
            voice=live.answer_voice,
            turn_detection=live.voice.settings if live.voice is not None else None,
            keep_spoken_in_scene=live.keep_spoken_in_scene,
        )

    async def close_live(self, live: LiveSession) -> None:
        """Forget the session everywhere first (no new work reaches it), then release its resources."""
        if self.live.pop(live.session_id, None) is None and live.closed:
            return  # closed already: release once
        if self.engine is not None:
            self.engine.scheduler.remove(live.session_id)
        try:
            await self.store.unregister_session(live.session_id, live.key_id)
        except Exception:
            log.warning("could not unregister %s from the store", live.session_id)
        await live.close()
        live.pc.remove_all_listeners()
        await asyncio.to_thread(release_free_memory)

    # ------------------------------------------------------------- questions
    async def answer(
        self,
        live: LiveSession,
        question: Question,
        window_s: float | None,
        prepared: AskJob | None = None,
    ) -> AsyncIterator[ServerEvent]:
        """Rate-limit, queue and stream one answer (to a typed or spoken question) as protocol
        events; the history records it (a spoken question as "(spoken, 1.8 s)").

        `prepared`: the engine's job for this question, submitted earlier and not yet announced
        (a spoken turn answered while its silence window ran out); it is used instead of a new one.

        When the session's answers are spoken, the answer's `response.output_audio.*` events come
        between its text deltas and `response.done` waits for the speech to end (a cancel stops both).
        """
        if not await self.within_rate(live.key_id):
            if prepared is not None:
                prepared.cancel("rate_limited")
            raise ServiceError(
                "rate_limited", f"more than {self.config.server.questions_per_minute} questions per minute"
            )
        assert self.engine is not None
        response_id = uuid.uuid4().hex[:12]
        job = prepared if prepared is not None else self.engine.submit(live.session, question, window_s)
        live.jobs[response_id] = job
        self.metrics.questions.inc()
        spoken = isinstance(question, SpokenQuestion)
        yield ResponseCreated(
            response_id=response_id,
            question=str(question),
            input="spoken" if spoken else "text",
            spoken_s=round(question.duration_s, 2) if isinstance(question, SpokenQuestion) else None,
        )
        text: list[str] = []
        status = "completed"
        reason: str | None = None
        failure: Error | None = None
        speech = live.speak(response_id, job.cancelled.is_set)
        try:
            items = job.pieces() if speech is None else speech.interleave(job.pieces())
            async for item in items:
                if isinstance(item, ServerEvent):
                    yield item
                    continue
                text.append(item)
                yield ResponseTextDelta(response_id=response_id, delta=item)
            if job.cancelled.is_set():
                status, reason = "cancelled", job.reason or "client"
        except EchoError as exc:
            status, failure = "failed", Error(code=exc.code, message=str(exc))
        except Exception:  # a bug: the client still gets `error` and a failed `response.done`
            log.exception("%s: answering %s failed", live.session_id, response_id)
            status = "failed"
            failure = Error(code="internal_error", message="the server failed while answering this question")
        finally:
            live.jobs.pop(response_id, None)
            answer = "".join(text).strip()
            record = HistoryRecord(
                response_id, str(question), answer if status != "failed" else "", time.time()
            )
            if not await self.journal.write(self.store, live.session_id, record):
                log.warning("%s: history write failed; the journal will repair it", live.session_id)
        if failure is not None:
            yield failure
        a = job.answer
        usage = Usage()
        if a is not None:
            usage = Usage(**a.usage())
        yield ResponseDone(response_id=response_id, answer=answer, status=status, reason=reason, usage=usage)

    async def prepare_spoken(self, ref: weakref.ref[LiveSession], utterance: Utterance) -> AskJob | None:
        """Start answering an utterance the turn will likely end with, announcing nothing yet.

        The utterance's audio leaves the scene as `ask_spoken` would take it out. None when it
        cannot be prepared (the session ended, the audio is not a valid question): `ask_spoken`
        then asks afresh and reports why.
        """
        live = ref()
        if live is None or live.closed or self.engine is None:
            return None
        try:
            question = utterance.question()
        except EchoError:
            return None
        if not live.keep_spoken_in_scene:
            await asyncio.to_thread(live.session.forget_audio, utterance.start_s, utterance.end_s)
        if live.closed:
            return None
        return self.engine.submit(live.session, question, None)

    async def ask_spoken(
        self,
        ref: weakref.ref[LiveSession],
        utterance: Utterance,
        prepared: asyncio.Task[Prepared | None] | None = None,
    ) -> None:
        """Ask a committed utterance; its events (refusals as `error`) go to the session's listeners.

        Unless `keep_spoken_in_scene`, the utterance's span of audio is taken out of the scene
        first, so the question is not also remembered as something the camera heard.
        `prepared`: `prepare_spoken`'s task for this utterance, whose answer is used when it has one.
        """
        job = None
        if prepared is not None:
            try:
                job = await prepared
            except Exception:  # preparing failed (a bug): ask afresh
                log.exception("preparing a spoken answer failed; asking afresh")
        assert job is None or isinstance(job, AskJob)
        live = ref()
        if live is None or live.closed:
            if job is not None:
                job.cancel("client")
            return
        try:
            question = utterance.question()
        except EchoError as exc:
            self.metrics.count_error("invalid_audio")
            live.events.publish(Error(code="invalid_audio", message=str(exc)))
            return
        if job is None and not live.keep_spoken_in_scene:
            await asyncio.to_thread(live.session.forget_audio, utterance.start_s, utterance.end_s)
        try:
            async for event in self.answer(live, question, None, job):
                if isinstance(event, Error):
                    self.metrics.count_error(event.code)
                live.events.publish(event)
        except ServiceError as exc:
            self.metrics.count_error(exc.code)
            live.events.publish(Error(code=exc.code, message=exc.message))

    async def within_rate(self, key_id: str) -> bool:
        """The key's question rate limit; while the store is unreachable, questions are let through."""
        try:
            return await self.store.take_question(key_id, self.config.server.questions_per_minute)
        except Exception:
            log.warning("rate limit unavailable (store unreachable); allowing the question")
            return True
