"""The WebSocket front: one connection's events, checked and dispatched to a `SessionHost`.

The same handler serves a standalone server or a worker (`LocalSessions`) and a gateway
(`RoutedSessions`). Credentials are checked here (API keys, session tokens); the host only
sees session and key ids. Every failure a client can cause becomes an `error` event with a
code; the connection stays up. Answers stream in their own named tasks (so `response.cancel`
and other events are read meanwhile), and so do the attached session's events and
`window.stats`; all of a connection's tasks are cancelled when it closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from .auth import AuthError
from .errors import ServiceError
from .http_service import HttpService
from .limits import TokenBucket
from .protocol import (
    ClientEvent,
    Error,
    History,
    HistoryGet,
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
    WebRTCAnswer,
    WebRTCCandidate,
    WebRTCOffer,
    encode,
    parse_client_event,
)
from .routing import REDIS_DOWN
from .session_host import InputAudioAction, SessionHost, WireEvent

log = logging.getLogger(__name__)

#: How long a closing WebSocket waits for the client's close frame.
CLOSE_TIMEOUT_S = 0.5
#: `input_audio.*` events and the host operation each asks for.
INPUT_AUDIO: dict[type[ClientEvent], InputAudioAction] = {
    InputAudioStart: "start",
    InputAudioCommit: "commit",
    InputAudioClear: "clear",
}


class Connection:
    """State of one WebSocket: the attached session and the tasks it owns."""

    def __init__(self, service: HttpService, host: SessionHost, ws: web.WebSocketResponse | None) -> None:
        self.service = service
        self.host = host
        self.ws = ws  # set by serve_websocket once the request is upgraded
        self.session_id: str | None = None  # the attached session
        self.relay: asyncio.Task[None] | None = None  # its events and stats, to this socket
        self.tasks: set[asyncio.Task[None]] = set()
        self._send_lock = asyncio.Lock()
        limits = service.config.server
        self.bucket = TokenBucket(limits.messages_per_second, limits.message_burst)
        self.invalid_in_a_row = 0  # refused messages since the last accepted one
        self.authenticated = False  # holds a session (or read one's history with its token)

    def mark_authenticated(self) -> None:
        if not self.authenticated:
            self.authenticated = True
            self.service.socket_limits.authenticated()

    async def send(self, event: ServerEvent) -> None:
        await self.send_text(encode(event))

    async def send_text(self, text: str) -> None:
        if self.ws is None or self.ws.closed:
            return
        async with self._send_lock:
            await self.ws.send_str(text)

    async def forward(self, event: WireEvent, event_id: str | None) -> None:
        """Send a host's event; an `error` one is counted and answers `event_id`."""
        if event.get("type") == "error":
            await self.fail(str(event.get("code")), str(event.get("message")), event_id)
            return
        await self.send_text(json.dumps(event, separators=(",", ":")))

    async def fail(self, code: str, message: str, event_id: str | None) -> None:
        self.service.count_error(code)
        await self.send(Error(event_id=event_id, code=code, message=message))

    def spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def handle(self, raw: str) -> None:
        event_id = None
        try:
            event = parse_client_event(raw, max_bytes=self.service.config.server.max_message_bytes)
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

    async def dispatch(self, event: ClientEvent) -> None:
        host, service = self.host, self.service
        if isinstance(event, SessionCreate):
            key_id = service.keys.check(event.api_key)
            await self.confirm(await host.create(key_id, event.settings), event.event_id)
        elif isinstance(event, SessionAttach):
            if event.token is not None:
                sid = service.signer.verify(event.token, event.session_id)
            else:
                key_id = service.keys.check(event.api_key)
                sid = event.session_id
                if await host.key_of(sid) != key_id:
                    raise AuthError("forbidden", "this session belongs to another API key")
            await self.confirm(await host.attach(sid, by_key=event.token is None), event.event_id)
        elif isinstance(event, SessionUpdate):
            updated = await host.update(await self.own(event.token), event.settings)
            await self.send(replace(updated, event_id=event.event_id))
        elif isinstance(event, WebRTCOffer):
            sdp = await host.offer(await self.own(event.token), event.sdp)
            await self.send(WebRTCAnswer(event_id=event.event_id, sdp=sdp))
        elif isinstance(event, WebRTCCandidate):
            sid = await self.own(event.token)
            await host.candidate(sid, event.candidate, event.sdp_mid, event.sdp_mline_index)
        elif isinstance(event, ResponseCreate):
            sid = await self.own(event.token)
            self.spawn(self.answer(sid, event), f"answer-{sid}")
        elif isinstance(event, ResponseCancel):
            await host.cancel(await self.own(event.token), event.response_id)
        elif isinstance(event, InputAudioStart | InputAudioCommit | InputAudioClear):
            await host.input_audio(await self.own(event.token), INPUT_AUDIO[type(event)])
        elif isinstance(event, HistoryGet):
            await self.send_history(event)

    async def send_history(self, event: HistoryGet) -> None:
        """The session's history from the store: an ended (or lost) session's stays readable."""
        sid = self.service.signer.verify(event.token)
        self.mark_authenticated()
        items = await self.host.history(sid, event.limit)
        await self.send(History(event_id=event.event_id, session_id=sid, items=items))

    async def confirm(self, created: SessionCreated, event_id: str | None) -> None:
        """Attach this connection to the session and send its `session.created`."""
        await self.attach(created.session_id)
        await self.send(replace(created, event_id=event_id))

    async def own(self, token: str) -> str:
        """The session this connection's token grants (and attach the connection to it)."""
        sid = self.service.signer.verify(token)
        await self.attach(sid)
        return sid

    async def attach(self, session_id: str) -> None:
        """Hold the session and relay its events and stats here (detaching from another one)."""
        if self.session_id == session_id:
            return
        await self.host.join(session_id)
        previous, relay = self.session_id, self.relay
        self.session_id = session_id
        self.mark_authenticated()
        self.relay = self.spawn(self.relay_events(session_id), f"events-{session_id}")
        if relay is not None:
            relay.cancel()
        if previous is not None:
            await self.host.leave(previous)

    async def relay_events(self, session_id: str) -> None:
        """Send the session's own events (turn detection, spoken answers) and `window.stats`."""
        try:
            async for event in self.host.events(session_id, stats=True):
                await self.forward(event, None)
        except ServiceError as exc:
            await self.fail(exc.code, exc.message, None)

    async def answer(self, session_id: str, event: ResponseCreate) -> None:
        try:
            async for out in self.host.ask(session_id, event.question, event.window_s):
                await self.forward(out, event.event_id)
        except ServiceError as exc:
            await self.fail(exc.code, exc.message, event.event_id)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.relay = None  # its cancellation's traceback holds this connection: drop the cycle
        if self.session_id is not None:
            try:
                await self.host.leave(self.session_id)
            except (ServiceError, *REDIS_DOWN):
                log.info("%s: could not leave the session", self.session_id)


class WebSocketFront:
    """`GET /ws` of one server: a `Connection` per socket, all of them closed on `close_all`."""

    def __init__(self, service: HttpService, host: SessionHost) -> None:
        self.service = service
        self.host = host
        self.connections: set[Connection] = set()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        conn = Connection(self.service, self.host, None)
        self.connections.add(conn)
        try:
            return await serve_websocket(request, conn)
        finally:
            self.connections.discard(conn)

    async def close_all(self) -> None:
        for conn in list(self.connections):
            if conn.ws is not None:
                await conn.ws.close()


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
    server = conn.service
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
