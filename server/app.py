"""`EchoServer`: one aiohttp port for the event WebSocket, WHIP, HTTP asks, health and metrics.

The model loads once at start-up; one engine thread owns it (engine.py). Sessions live
here, in this process (their media and cache cannot move); the store (in-process or
Redis) holds the registry, quotas, rate limits and history that other processes may read.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import Any

from aiohttp import web

from echo_core.config import StreamConfig
from echo_core.errors import ConfigError, EchoError
from echo_core.speech import Question, SpokenQuestion
from echo_core.stream.runtime import StreamModel
from echo_core.stream.scheduler import Scheduler
from echo_core.stream.session import StreamSession
from echo_core.stream.turns import Utterance
from echo_core.tts import VoiceCatalog, voice_catalog

from .allocator import release_free_memory
from .auth import AuthError
from .config import ServiceConfig
from .engine import AskJob, EngineWorker
from .errors import ServiceError
from .http_service import HttpService
from .journal import HistoryJournal
from .live import LiveSession
from .protocol import (
    Error,
    ResponseCreated,
    ResponseDone,
    ResponseTextDelta,
    ServerEvent,
    SessionSettings,
    SessionUpdated,
    TurnDetection,
    Usage,
    to_wire,
)
from .store import HistoryRecord, MemoryStore, RedisStore, Store
from .voice import VoiceInput

log = logging.getLogger(__name__)

#: An offer must carry at least one audio or video section (aiortc accepts an SDP without any).
MEDIA_LINE = re.compile(r"^m=(audio|video) ", re.MULTILINE)
#: A session nobody attached to and no peer ever connected to is closed after this long.
UNCLAIMED_SESSION_S = 60.0


class EchoServer(HttpService):
    """The service: sessions, the engine worker, the store and the HTTP/WebSocket app.

    In `worker` mode it also registers in Redis and runs the commands gateways route to it
    (server/worker_node.py); in `standalone` mode clients reach it directly.
    """

    def __init__(self, config: ServiceConfig, *, model: StreamModel | None = None) -> None:
        if config.server.mode == "gateway":
            raise ConfigError("server.mode=gateway runs server.gateway.Gateway, not EchoServer")
        super().__init__(config)
        self.model = model
        self.sessions: dict[str, LiveSession] = {}
        self.store: Store = MemoryStore()
        self.worker: EngineWorker | None = None
        self.worker_id = config.server.worker_id or f"worker-{uuid.uuid4().hex[:8]}"
        self.journal = HistoryJournal(config.server.history_maxlen)
        self.node: Any = None  # the WorkerNode in worker mode
        self._tasks: list[asyncio.Task[None]] = []
        self._reserved = 0  # sessions being created: counted against max_sessions before any await
        # espeak-ng runs as a subprocess per sentence: two threads keep one session's next sentence
        # synthesising while another session's is
        self.speech_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="echo-tts")
        self.voices = VoiceCatalog()  # espeak-ng's, read at start-up; empty: answers cannot be spoken

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Load the model (once), start the engine thread, the store and the HTTP listener."""
        if self.model is None:
            self.model = await asyncio.get_running_loop().run_in_executor(
                None, StreamModel.load, self.config.model, self.config.sieve
            )
        self.voices = await asyncio.to_thread(voice_catalog)
        if not self.voices.languages:
            log.warning("espeak-ng is not installed: sessions cannot ask for spoken answers")
        if self.config.server.redis_url:
            store = RedisStore(self.config.server.redis_url)
            await store.ping()
            self.store = store
        model = self.model
        self.worker = EngineWorker(Scheduler(model))
        self.worker.start()
        await self.listen(self.build_app())
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="echo-heartbeat"))
        if self.config.server.mode == "worker":
            from .worker_node import WorkerNode

            assert isinstance(self.store, RedisStore)
            self.node = WorkerNode(self, self.store)
            await self.node.start()
        log.info("echo-server listening on %s:%d (%s)", self.config.server.host, self.port, self.worker_id)

    async def stop(self) -> None:
        """Graceful shutdown: close every session, stop the engine, the listener and the store."""
        if self.node is not None:
            await self.node.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for live in list(self.sessions.values()):
            await self.close_session(live)
        if self.worker is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.worker.stop)
        await self.close_listener()
        await self.store.close()
        self.speech_executor.shutdown(wait=False, cancel_futures=True)

    async def _heartbeat(self, beat_s: float = 1.0) -> None:
        """Keep the store's session records fresh, close abandoned sessions, repair after outages.

        When the store restarted (its epoch changed) or a history write failed, every live
        session is registered again and the history journal is reconciled.
        """
        ttl = self.config.server.heartbeat_ttl_s
        epoch: str | None = None
        next_beat = 0.0
        while True:
            await asyncio.sleep(min(beat_s, ttl / 3))
            now = time.monotonic()
            await self.reap()
            try:
                current = await self.store.epoch()
                if epoch is not None and current != epoch:
                    log.warning("the store restarted; registering %d sessions again", len(self.sessions))
                    next_beat = 0.0
                if now >= next_beat:
                    for live in list(self.sessions.values()):
                        await self.store.heartbeat(live.session_id, live.key_id, ttl)
                    next_beat = now + ttl / 3
                if self.journal.dirty or (epoch is not None and current != epoch):
                    repaired = await self.journal.reconcile(self.store)
                    if repaired:
                        log.warning("wrote %d history entries the store had lost", repaired)
                epoch = current
            except Exception:  # the store may be restarting: retry on the next beat
                log.warning("store unreachable; retrying")
                next_beat = 0.0
                self.journal.dirty = True

    async def reap(self) -> None:
        """Close sessions nobody can use: peer failed or closed, never offered, or never connected.

        A session whose peer is not `connected` within `server.connect_timeout_s` of its
        creation is closed even while a socket is attached (an ICE that never completes would
        otherwise hold its key's quota for ever); it is counted in `echo_sessions_reaped_total`.
        """
        timeout = self.config.server.connect_timeout_s
        now = time.time()
        for live in list(self.sessions.values()):
            state = live.pc.connectionState
            if state == "connected":
                live.connected = True
            abandoned = live.attached == 0 and (
                state in ("failed", "closed") or (state == "new" and now - live.created > UNCLAIMED_SESSION_S)
            )
            never_connected = not live.connected and now - live.created > timeout
            if abandoned or never_connected:
                if never_connected:
                    self.counters["sessions_reaped"] += 1
                    log.info("%s: not connected within %.0f s; closing it", live.session_id, timeout)
                await self.close_session(live)

    def admit(self) -> None:
        """Refuse a new session (`server_busy`) when this process is full or its ingest is behind."""
        limit = self.config.server.max_sessions
        if len(self.sessions) + self._reserved >= limit:
            raise ServiceError("server_busy", f"this server is full ({limit} sessions); try again later")
        lag = max((live.session.ingest_lag_s for live in self.sessions.values()), default=0.0)
        if lag > self.config.server.max_ingest_lag_s:
            raise ServiceError("server_busy", f"ingest is {lag:.1f} s behind; try again later")

    # -------------------------------------------------------------- sessions
    def peer_connection(self) -> Any:
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

        servers = [
            RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
            for s in self.config.server.ice_servers
        ]
        return RTCPeerConnection(RTCConfiguration(iceServers=servers) if servers else None)

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

    async def create_session(self, key_id: str, settings: SessionSettings) -> tuple[LiveSession, str, float]:
        """A new session for an authenticated key (capacity and quota checked): (live, token, expiry).

        The process slot is reserved before the first await and the key's quota slot in one
        atomic store operation, so parallel creates cannot overshoot either limit; a failed
        creation releases both.
        """
        stream = self.stream_config(settings)
        self.admit()
        assert self.model is not None and self.worker is not None
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
                live = LiveSession(
                    session, key_id, self.peer_connection(), speech_executor=self.speech_executor
                )
                live.voice = VoiceInput(
                    session_id, live.events, partial(self.ask_spoken, weakref.ref(live)), live.interrupt
                )
                self.apply_settings(live, settings)
            except BaseException:
                if live is not None:
                    await live.close()
                await self.store.unregister_session(session_id, key_id)
                raise
        finally:
            self._reserved -= 1

        # the handlers hold the session weakly: a closed session is freed without a cyclic GC
        ref = weakref.ref(live)

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
                log.info("%s: peer %s", session_id, state)
                if held.attached == 0 and not held.closed:
                    await self.close_session(held)

        self.worker.scheduler.add(session)
        self.sessions[session_id] = live
        live.ticker = asyncio.create_task(live.tick(), name=f"tick-{session_id}")
        token, expiry = self.token_for(live)
        self.counters["sessions_created"] += 1
        log.info("%s: created for key %s", session_id, key_id)
        return live, token, expiry

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
                " (`espeak-ng --voices`; e.g. en-us, en-gb+f3)",
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

    def live_for(self, token: str | None, session_id: str | None = None) -> LiveSession:
        """The live session a token grants (AuthError / ServiceError otherwise)."""
        return self.held(self.signer.verify(token, session_id))

    def held(self, session_id: str) -> LiveSession:
        """A live session of this process (ServiceError `session_not_found` otherwise)."""
        live = self.sessions.get(session_id)
        if live is None or live.closed:
            raise ServiceError("session_not_found", "this session has ended; create a new one")
        return live

    async def close_session(self, live: LiveSession) -> None:
        """Forget the session everywhere first (no new work reaches it), then release its resources."""
        if self.sessions.pop(live.session_id, None) is None and live.closed:
            return  # closed already: release once
        if self.worker is not None:
            self.worker.scheduler.remove(live.session_id)
        try:
            await self.store.unregister_session(live.session_id, live.key_id)
        except Exception:
            log.warning("could not unregister %s from the store", live.session_id)
        await live.close()
        live.pc.remove_all_listeners()
        await asyncio.to_thread(release_free_memory)

    async def answer_sdp(self, live: LiveSession, offer_sdp: str) -> str:
        """Apply a client's SDP offer and return the answer (ServiceError on a malformed offer)."""
        from aiortc import RTCSessionDescription

        if not MEDIA_LINE.search(offer_sdp):
            raise ServiceError("bad_sdp", "the SDP offer has no audio or video m-line")
        try:
            await live.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            live.offer_answer_track()
            await live.pc.setLocalDescription(await live.pc.createAnswer())
        except Exception as exc:  # aiortc raises ValueError and friends on bad SDP
            raise ServiceError("bad_sdp", f"cannot use this SDP offer: {str(exc)[:200]}") from None
        return str(live.pc.localDescription.sdp)

    # ------------------------------------------------------------- questions
    async def ask(
        self, live: LiveSession, question: Question, window_s: float | None
    ) -> AsyncIterator[ServerEvent]:
        """Rate-limit, queue and stream one answer (to a typed or spoken question) as protocol
        events; the history records it (a spoken question as "(spoken, 1.8 s)").

        When the session's answers are spoken, the answer's `response.output_audio.*` events come
        between its text deltas and `response.done` waits for the speech to end (a cancel stops both).
        """
        if not await self.within_rate(live.key_id):
            raise ServiceError(
                "rate_limited", f"more than {self.config.server.questions_per_minute} questions per minute"
            )
        assert self.worker is not None
        response_id = uuid.uuid4().hex[:12]
        job: AskJob = self.worker.submit(live.session, question, window_s)
        live.jobs[response_id] = job
        self.counters["questions"] += 1
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
            usage = Usage(
                a.av_tokens, a.audio_tokens, a.video_tokens, round(a.ttft_ms, 2), round(a.total_ms, 2)
            )
        yield ResponseDone(response_id=response_id, answer=answer, status=status, reason=reason, usage=usage)

    async def ask_spoken(self, ref: weakref.ref[LiveSession], utterance: Utterance) -> None:
        """Ask a committed utterance; its events (refusals as `error`) go to the session's listeners.

        Unless `keep_spoken_in_scene`, the utterance's span of audio is taken out of the scene
        first, so the question is not also remembered as something the camera heard.
        """
        live = ref()
        if live is None or live.closed:
            return
        try:
            question = utterance.question()
        except EchoError as exc:
            self.count_error("invalid_audio")
            live.events.publish(Error(code="invalid_audio", message=str(exc)))
            return
        if not live.keep_spoken_in_scene:
            await asyncio.to_thread(live.session.forget_audio, utterance.start_s, utterance.end_s)
        try:
            async for event in self.ask(live, question, None):
                if isinstance(event, Error):
                    self.count_error(event.code)
                live.events.publish(event)
        except ServiceError as exc:
            self.count_error(exc.code)
            live.events.publish(Error(code=exc.code, message=exc.message))

    async def within_rate(self, key_id: str) -> bool:
        """The key's question rate limit; while the store is unreachable, questions are let through."""
        try:
            return await self.store.take_question(key_id, self.config.server.questions_per_minute)
        except Exception:
            log.warning("rate limit unavailable (store unreachable); allowing the question")
            return True

    # --------------------------------------------- the HTTP API (http_api.SessionFront)
    async def open_whip(self, key_id: str, offer_sdp: str) -> tuple[str, str, str]:
        live, token, _ = await self.create_session(key_id, SessionSettings())
        try:
            answer = await self.answer_sdp(live, offer_sdp)
        except ServiceError:
            await self.close_session(live)
            raise
        return live.session_id, token, answer

    async def session_key(self, session_id: str) -> str:
        return self.held(session_id).key_id

    async def trickle(self, session_id: str, candidates: list[tuple[str, str | None]]) -> None:
        from .connection import add_candidate

        live = self.held(session_id)
        for candidate, mid in candidates:
            await add_candidate(live, candidate, mid, None, self.config.server.max_ice_candidates)

    async def end_session(self, session_id: str) -> None:
        await self.close_session(self.held(session_id))

    async def answer_events(
        self, session_id: str, question: str, window_s: float | None
    ) -> AsyncIterator[dict[str, Any]]:
        async for event in self.ask(self.held(session_id), question, window_s):
            yield to_wire(event)

    async def session_events(
        self, session_id: str, turn_detection: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        live = self.held(session_id)
        if turn_detection is not None:  # this type, the other fields at their defaults
            self.apply_settings(live, SessionSettings(turn_detection=TurnDetection(type=turn_detection)))
        queue = live.events.subscribe()
        try:
            yield to_wire(SessionUpdated(session_id=session_id, settings=self.settings_of(live)))
            while (event := await queue.get()) is not None:  # None: the session ended
                yield to_wire(event)
        finally:
            live.events.unsubscribe(queue)

    # ------------------------------------------------------------------ HTTP
    def build_app(self) -> web.Application:
        from .connection import websocket_handler
        from .http_api import add_session_routes

        app = web.Application(client_max_size=self.config.server.max_message_bytes)
        app[SERVER_KEY] = self
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/ws", websocket_handler)
        add_session_routes(app, self)
        self.add_page_routes(app)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        ok = self.worker is not None and self.worker.alive
        body = {
            "status": "ok" if ok else "degraded",
            "mode": self.config.server.mode,
            "sessions": len(self.sessions),
            "max_sessions": self.config.server.max_sessions,
            "worker": self.worker_id,
        }
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text: aggregates over sessions; per-session labels with `server.metrics_per_session`."""
        if not self.metrics_allowed(request):
            raise web.HTTPUnauthorized(text="/metrics needs the metrics token")
        lives = list(self.sessions.values())
        # the session lock may be held by an ingest step: read the caches off the event loop
        caches = await asyncio.get_running_loop().run_in_executor(
            None, lambda: [sum(live.session.cache_counts()) for live in lives]
        )
        lines = [
            "# TYPE echo_sessions gauge",
            f"echo_sessions {len(self.sessions)}",
            "# TYPE echo_sessions_created_total counter",
            f"echo_sessions_created_total {self.counters['sessions_created']}",
            "# TYPE echo_sessions_reaped_total counter",
            f"echo_sessions_reaped_total {self.counters['sessions_reaped']}",
            "# TYPE echo_questions_total counter",
            f"echo_questions_total {self.counters['questions']}",
            "# TYPE echo_history_repaired_total counter",
            f"echo_history_repaired_total {self.journal.repaired}",
            *self.error_metric_lines(),
            "# TYPE echo_ingest_lag_seconds_max gauge",
            f"echo_ingest_lag_seconds_max {max((v.session.ingest_lag_s for v in lives), default=0.0):.3f}",
            "# TYPE echo_cache_tokens_sum gauge",
            f"echo_cache_tokens_sum {sum(caches)}",
            "# TYPE echo_chunks_ingested_sum counter",
            f"echo_chunks_ingested_sum {sum(v.session.stats.chunks_ingested for v in lives)}",
        ]
        if self.config.server.metrics_per_session:
            lines += ["# TYPE echo_ingest_lag_seconds gauge"]
            for live in lives:
                lines.append(
                    f'echo_ingest_lag_seconds{{session="{live.session_id}"}} {live.session.ingest_lag_s:.3f}'
                )
            lines += ["# TYPE echo_cache_tokens gauge"]
            for live, tokens in zip(lives, caches, strict=True):
                lines.append(f'echo_cache_tokens{{session="{live.session_id}"}} {tokens}')
            lines += ["# TYPE echo_cache_budget gauge"]
            for live in lives:
                lines.append(
                    f'echo_cache_budget{{session="{live.session_id}"}} {live.session.config.cache_budget}'
                )
            lines += ["# TYPE echo_chunks_ingested_total counter"]
            for live in lives:
                chunks = live.session.stats.chunks_ingested
                lines.append(f'echo_chunks_ingested_total{{session="{live.session_id}"}} {chunks}')
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")


#: Where handlers find the server in their aiohttp application.
SERVER_KEY: web.AppKey[EchoServer] = web.AppKey("echo_server", EchoServer)
