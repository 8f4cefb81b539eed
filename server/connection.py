"""One WebSocket connection: parse events, check auth, dispatch, stream answers and stats.

Every failure a client can cause becomes an `error` event with a code; the connection
stays up. Answers stream in their own named tasks (so `response.cancel` and other events
are read meanwhile); all of a connection's tasks are cancelled when it closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from echo_core.rope import POSITIONS_PER_SECOND

from .auth import AuthError
from .errors import ServiceError
from .limits import TokenBucket
from .protocol import (
    Error,
    History,
    HistoryGet,
    HistoryItem,
    InputAudioClear,
    InputAudioCommit,
    InputAudioStart,
    ProtocolError,
    ResponseCancel,
    ResponseCreate,
    ServerEvent,
    SessionAttach,
    SessionCreate,
    SessionCreated,
    SessionUpdate,
    SessionUpdated,
    WebRTCAnswer,
    WebRTCCandidate,
    WebRTCOffer,
    WindowStats,
    encode,
    parse_client_event,
)
from .routing import REDIS_DOWN

if TYPE_CHECKING:
    from echo_core.stream.session import KeptLayout, StreamSession

    from .app import EchoServer
    from .live import LiveSession

log = logging.getLogger(__name__)

#: How long a closing WebSocket waits for the client's close frame.
CLOSE_TIMEOUT_S = 0.5
#: Window shown in `window.stats` when the session has no default window.
STATS_WINDOW_S = 30.0


def read_window(session: StreamSession, window_s: float) -> tuple[KeptLayout, tuple[int, int]]:
    """Where the window's kept tokens lie, and the whole cache's (audio, video) counts."""
    return session.kept_layout(window_s), session.cache_counts()


async def window_stats(live: LiveSession) -> WindowStats:
    """The session's `window.stats`: what it saw, what its cache keeps, where in the window."""
    s = live.session
    window = s.config.window_s or STATS_WINDOW_S
    # the session lock may be held by an ingest step: read the cache off the event loop
    layout, counts = await asyncio.get_running_loop().run_in_executor(None, read_window, s, window)
    (audio_times, patches, grid), (cache_audio, cache_video) = layout, counts
    end = (s.now_tid or 0) / POSITIONS_PER_SECOND
    st = s.stats
    return WindowStats(
        session_id=live.session_id,
        seen_audio=st.seen_audio,
        seen_video=st.seen_video,
        kept_audio=len(audio_times),
        kept_video=len(patches),
        cache_audio=cache_audio,
        cache_video=cache_video,
        cache_budget=s.config.cache_budget,
        ingest_lag_s=round(s.ingest_lag_s, 3),
        drops=st.video_dropped + st.audio_dropped + st.chunks_dropped,
        window_start_s=max(0.0, end - window),
        window_end_s=end,
        audio_times=audio_times,
        video_patches=patches,
        grid=grid,
    )


class Connection:
    """State of one WebSocket: the attached session and the tasks it owns."""

    def __init__(self, server: EchoServer, ws: web.WebSocketResponse | None) -> None:
        self.server = server
        self.ws = ws  # set by serve_websocket once the request is upgraded
        self.live: LiveSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self._send_lock = asyncio.Lock()
        limits = server.config.server
        self.bucket = TokenBucket(limits.messages_per_second, limits.message_burst)
        self.invalid_in_a_row = 0  # refused messages since the last accepted one
        self.authenticated = False  # holds a session (or read one's history with its token)

    def mark_authenticated(self) -> None:
        if not self.authenticated:
            self.authenticated = True
            self.server.socket_limits.authenticated()

    async def send(self, event: ServerEvent) -> None:
        await self.send_text(encode(event))

    async def send_text(self, text: str) -> None:
        if self.ws is None or self.ws.closed:
            return
        async with self._send_lock:
            await self.ws.send_str(text)

    async def fail(self, code: str, message: str, event_id: str | None) -> None:
        self.server.count_error(code)
        await self.send(Error(event_id=event_id, code=code, message=message))

    def spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def handle(self, raw: str) -> None:
        event_id = None
        try:
            event = parse_client_event(raw, max_bytes=self.server.config.server.max_message_bytes)
            event_id = event.event_id
            await self.dispatch(event)
            self.invalid_in_a_row = 0
        except (ProtocolError, AuthError) as exc:  # the client's fault: counted towards closing
            self.invalid_in_a_row += 1
            await self.fail(exc.code, exc.message, getattr(exc, "event_id", None) or event_id)
        except ServiceError as exc:  # RouteError too
            await self.fail(exc.code, exc.message, getattr(exc, "event_id", None) or event_id)
        except REDIS_DOWN:
            await self.fail("store_unavailable", "shared state (Redis) is unreachable; try again", event_id)
        except Exception:  # a bug must cost one message, not the connection
            log.exception("handling a client message failed")
            await self.fail("internal_error", "the server failed to handle this message", event_id)

    async def dispatch(self, event: Any) -> None:
        server = self.server
        if isinstance(event, SessionCreate):
            key_id = server.keys.check(event.api_key)
            live, token, expiry = await server.create_session(key_id, event.settings)
            await self.attach_and_confirm(live, token, expiry, event.event_id)
        elif isinstance(event, SessionAttach):
            if event.token is not None:
                live = server.live_for(event.token, event.session_id)
            else:
                key_id = server.keys.check(event.api_key)
                live = server.held(event.session_id)
                if live.key_id != key_id:
                    raise AuthError("forbidden", "this session belongs to another API key")
            token, expiry = server.token_for(live, by_key=event.token is None)
            await self.attach_and_confirm(live, token, expiry, event.event_id)
        elif isinstance(event, SessionUpdate):
            live = self.own(event.token)
            server.apply_settings(live, event.settings)
            await self.send(
                SessionUpdated(
                    event_id=event.event_id, session_id=live.session_id, settings=server.settings_of(live)
                )
            )
        elif isinstance(event, WebRTCOffer):
            live = self.own(event.token)
            sdp = await server.answer_sdp(live, event.sdp)
            await self.send(WebRTCAnswer(event_id=event.event_id, sdp=sdp))
        elif isinstance(event, WebRTCCandidate):
            live = self.own(event.token)
            limit = server.config.server.max_ice_candidates
            await add_candidate(live, event.candidate, event.sdp_mid, event.sdp_mline_index, limit)
        elif isinstance(event, ResponseCreate):
            live = self.own(event.token)
            self.spawn(self.answer(live, event), f"answer-{live.session_id}")
        elif isinstance(event, ResponseCancel):
            live = self.own(event.token)
            job = live.jobs.get(event.response_id) if event.response_id else live.latest_job()
            if job is not None:
                job.cancel("client")
        elif isinstance(event, InputAudioStart | InputAudioCommit | InputAudioClear):
            push_to_talk(self.own(event.token), event)
        elif isinstance(event, HistoryGet):
            await self.send_history(event)

    async def send_history(self, event: HistoryGet) -> None:
        """The session's history from the store: an ended (or lost) session's stays readable."""
        sid = self.server.signer.verify(event.token)
        self.mark_authenticated()
        records = await self.server.store.history(sid, max(0, min(event.limit, 1000)))
        items = [HistoryItem(r.response_id, r.question, r.answer, r.at) for r in records]
        await self.send(History(event_id=event.event_id, session_id=sid, items=items))

    async def attach_and_confirm(
        self, live: LiveSession, token: str, expiry: float, event_id: str | None
    ) -> None:
        """Attach this connection to `live` and send `session.created` with a fresh token."""
        self.attach(live)
        await self.send(
            SessionCreated(
                event_id=event_id,
                session_id=live.session_id,
                token=token,
                expires_at=expiry,
                settings=self.server.settings_of(live),
            )
        )

    def own(self, token: str) -> LiveSession:
        """The session this connection's token grants (and attach the connection to it)."""
        live = self.server.live_for(token)
        if self.live is not live:
            self.attach(live)
        return live

    def attach(self, live: LiveSession) -> None:
        if self.live is live:
            return
        if self.live is not None:
            self.live.attached -= 1
        self.live = live
        live.attached += 1
        self.mark_authenticated()
        self.spawn(self.stats_loop(live), f"stats-{live.session_id}")
        self.spawn(self.relay_events(live), f"events-{live.session_id}")

    async def relay_events(self, live: LiveSession) -> None:
        """Send the session's own events (turn detection, spoken answers) while attached to it."""
        try:
            queue = live.events.subscribe()
        except ServiceError as exc:
            await self.fail(exc.code, exc.message, None)
            return
        try:
            while self.live is live:
                event = await queue.get()
                if event is None:  # the session ended
                    return
                await self.send(event)
        finally:
            live.events.unsubscribe(queue)

    async def answer(self, live: LiveSession, event: ResponseCreate) -> None:
        try:
            async for out in self.server.ask(live, event.question, event.window_s):
                if isinstance(out, Error):
                    self.server.count_error(out.code)
                    out = Error(event_id=event.event_id, code=out.code, message=out.message)
                await self.send(out)
        except ServiceError as exc:
            await self.fail(exc.code, exc.message, event.event_id)

    async def stats_loop(self, live: LiveSession) -> None:
        interval = self.server.config.server.stats_interval_s
        while self.live is live and not live.closed:
            await self.send(await window_stats(live))
            await asyncio.sleep(interval)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.live is not None:
            self.live.attached -= 1
            if self.live.attached == 0 and self.live.pc.connectionState in ("failed", "closed"):
                await self.server.close_session(self.live)  # nobody can use it any more


def push_to_talk(live: LiveSession, event: InputAudioStart | InputAudioCommit | InputAudioClear) -> None:
    """`input_audio.start` / `commit` / `clear` on a session (ServiceError when not allowed now)."""
    voice = live.voice
    if voice is None:
        raise ServiceError("session_not_found", "this session has ended; create a new one")
    if isinstance(event, InputAudioStart):
        voice.start()
    elif isinstance(event, InputAudioCommit):
        voice.commit()
    else:
        voice.clear()


async def add_candidate(
    live: LiveSession, candidate: str, sdp_mid: str | None, index: int | None, limit: int
) -> None:
    """Add a trickled ICE candidate (`candidate:…` line) to the session's peer connection.

    An empty candidate (or `a=end-of-candidates`) ends the remote candidates, so ICE fails
    instead of waiting; past `limit` candidates per session, `too_many_candidates`.
    """
    from aiortc.sdp import candidate_from_sdp

    line = candidate.removeprefix("a=").removeprefix("candidate:")
    if not line.strip() or line.strip() == "end-of-candidates":
        await live.pc.addIceCandidate(None)
        return
    if live.candidates >= limit:
        raise ServiceError(
            "too_many_candidates",
            f"this session already added {live.candidates} ICE candidates (limit {limit})",
        )
    try:
        ice = candidate_from_sdp(line)
    except Exception:
        raise ServiceError("bad_candidate", f"cannot parse ICE candidate {candidate[:80]!r}") from None
    # Without a mid or index the candidate belongs to the first m-line (the BUNDLE group).
    ice.sdpMid, ice.sdpMLineIndex = sdp_mid, index if index is not None or sdp_mid is not None else 0
    live.candidates += 1
    try:
        await live.pc.addIceCandidate(ice)
    except (ValueError, OSError) as exc:
        raise ServiceError("bad_candidate", f"cannot use ICE candidate {candidate[:80]!r}: {exc}") from None


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    from .app import SERVER_KEY

    return await serve_websocket(request, Connection(request.app[SERVER_KEY], None))


def origin_allowed(request: web.Request, allowed: list[str]) -> bool:
    """Whether a browser's `Origin` may open a socket: one of `allowed`, or (when that is empty)
    the server's own origin (the bundled page). Clients that send no Origin are not browsers."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if allowed:
        return origin in allowed
    return urlsplit(origin).netloc.lower() == request.host.lower()


async def serve_websocket(request: web.Request, conn: Connection) -> web.WebSocketResponse:
    """Run one connection's event loop on an upgraded request.

    Checked first: the origin, the sockets of this address and those holding no session.
    Then every message spends a token of the connection's bucket before it is parsed; a
    socket that outruns its bucket, keeps sending refused messages, or holds no session
    after `server.auth_timeout_s` is closed (code 1008, policy violation).
    """
    server = conn.server
    limits = server.config.server
    if not origin_allowed(request, limits.allowed_origins):
        server.count_error("origin_not_allowed")
        raise web.HTTPForbidden(text=f"origin {request.headers.get('Origin')!r} is not allowed")
    address = request.remote or "unknown"
    refusal = server.socket_limits.refusal(address)
    if refusal is not None:
        server.count_error("too_many_connections")
        raise web.HTTPTooManyRequests(text=refusal)
    # a closing socket's messages are read (and dropped) until the peer's close frame: a flooder
    # never sends one, so the close handshake gets CLOSE_TIMEOUT_S, not aiohttp's 10 s
    ws = web.WebSocketResponse(
        max_msg_size=limits.max_message_bytes * 4, heartbeat=20.0, timeout=CLOSE_TIMEOUT_S
    )
    server.socket_limits.opened(address)
    try:
        await ws.prepare(request)
        conn.ws = ws
        opened = time.monotonic()
        while True:
            timeout = None if conn.authenticated else limits.auth_timeout_s - (time.monotonic() - opened)
            try:
                msg = await ws.receive(timeout=max(timeout, 0.0) if timeout is not None else None)
            except TimeoutError:
                server.count_error("auth_timeout")
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"no session within the time limit")
                break
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                break
            if msg.type == WSMsgType.ERROR:
                log.info("websocket error: %s", ws.exception())
                break
            if not conn.bucket.take():
                server.count_error("rate_limited")
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"message rate limit exceeded")
                break
            if msg.type == WSMsgType.TEXT:
                await conn.handle(msg.data)
            elif msg.type == WSMsgType.BINARY:
                conn.invalid_in_a_row += 1
                await conn.fail("invalid_event", "binary messages are not part of the protocol", None)
            if conn.invalid_in_a_row >= limits.max_invalid_messages:
                server.count_error("too_many_invalid")
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many invalid messages")
                break
    finally:
        server.socket_limits.closed(address, conn.authenticated)
        await conn.close()
    return ws
