"""The sessions' HTTP API: WHIP ingest (RFC 9725) and `POST /v1/sessions/{id}/ask`.

Robots and cameras stream with standard tools and no Echo code:
`POST /whip` with `Authorization: Bearer <API key>` and an `application/sdp` offer →
`201 Created`, the SDP answer, `Location: /whip/<session id>`, and the session token in
`X-Echo-Session-Token` (for `session.attach` or the ask endpoint).
`PATCH /whip/<id>` (`application/trickle-ice-sdpfrag`) adds ICE candidates; `DELETE`
ends the session. Those two take the API key that created the session, or its token.
`POST /v1/sessions/{id}/ask` {question, window_s?} with the session token streams the
answer as server-sent events named after the protocol events.
`GET /v1/sessions/{id}/events` with the session token streams the session's own events
(turn detection, answers to spoken questions) the same way, for clients without a WebSocket.

The handlers are the same on every process: they check credentials and call a `SessionHost`,
the sessions held here (a standalone server or a worker) or routed to their worker (a gateway).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .auth import AuthError, looks_like_token
from .errors import ServiceError
from .http_service import HttpService
from .protocol import (
    TURN_DETECTION_TYPES,
    ProtocolError,
    SessionSettings,
    TurnDetection,
    parse_ask_body,
)
from .session_host import Candidate, SessionHost, WireEvent


@dataclass(frozen=True)
class HttpFront:
    """What the handlers use: the service's credentials and counters, and the session host."""

    service: HttpService
    host: SessionHost

    async def open_whip(self, key_id: str, offer_sdp: str) -> tuple[str, str, str]:
        """A new session streaming from `offer_sdp`: (session id, token, SDP answer)."""
        created = await self.host.create(key_id, SessionSettings())
        try:
            answer = await self.host.offer(created.session_id, offer_sdp)
        except ServiceError:
            await self.host.close(created.session_id)
            raise
        return created.session_id, created.token, answer

    async def trickle(self, session_id: str, candidates: list[Candidate]) -> None:
        for candidate, mid in candidates:
            await self.host.candidate(session_id, candidate, mid, None)


FRONT_KEY: web.AppKey[HttpFront] = web.AppKey("echo_front", HttpFront)


def add_session_routes(app: web.Application, service: HttpService, host: SessionHost) -> None:
    app[FRONT_KEY] = HttpFront(service, host)
    app.router.add_post("/whip", whip_post)
    app.router.add_patch("/whip/{session_id}", whip_patch)
    app.router.add_delete("/whip/{session_id}", whip_delete)
    app.router.add_post("/v1/sessions/{session_id}/ask", http_ask)
    app.router.add_get("/v1/sessions/{session_id}/events", http_events)


def bearer(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer …` header, if any."""
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.startswith("Bearer ") else None


def sse(data: dict[str, Any]) -> bytes:
    """One server-sent event named after the event type."""
    return f"event: {data['type']}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _error(front: HttpFront, status: int, code: str, message: str) -> web.Response:
    front.service.count_error(code)
    return web.json_response({"type": "error", "code": code, "message": message}, status=status)


#: HTTP status of a refused request, by error code (anything else: 400).
_STATUS = {
    "session_quota": 429,
    "rate_limited": 429,
    "server_busy": 503,
    "store_unavailable": 503,
    "route_timeout": 504,
    "session_not_found": 404,
    "body_timeout": 408,
    "worker_lost": 410,
    "forbidden": 403,
}


def _status(exc: Exception, code: str) -> int:
    return 401 if isinstance(exc, AuthError) and code != "forbidden" else _STATUS.get(code, 400)


async def read_body(request: web.Request, timeout_s: float) -> bytes:
    """The request body, or ServiceError `body_timeout` when it does not arrive within `timeout_s`.

    (aiohttp caps its size at `client_max_size`; this caps how long a slow sender holds the socket.)
    """
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        raise ServiceError(
            "body_timeout", f"the request body did not arrive within {timeout_s:.0f} s"
        ) from None


async def read_sdp(request: web.Request, timeout_s: float) -> str:
    """An SDP body as text: UTF-8 whatever the declared charset (ServiceError `bad_sdp` otherwise)."""
    body = await read_body(request, timeout_s)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ServiceError("bad_sdp", f"the SDP body is not UTF-8 (byte {exc.start})") from None


def sdpfrag_candidates(body: str) -> list[Candidate]:
    """The candidates of a trickle-ICE SDP fragment (RFC 8840), each with its m-line's mid.

    A candidate before any `a=mid` line belongs to the first m-line (the BUNDLE group);
    `a=end-of-candidates` becomes an empty candidate (the end of the remote candidates).
    """
    mid: str | None = None
    found: list[Candidate] = []
    for line in body.splitlines():
        if line.startswith("a=mid:"):
            mid = line[6:].strip()
        elif line.startswith("a=candidate:"):
            found.append((line[2:], mid))
        elif line.strip() == "a=end-of-candidates":
            found.append(("", mid))
    return found


async def whip_post(request: web.Request) -> web.Response:
    front = request.app[FRONT_KEY]
    try:
        key_id = front.service.keys.check(bearer(request))
    except AuthError as exc:
        return _error(front, 401, exc.code, exc.message)
    if request.content_type != "application/sdp":
        return _error(
            front, 415, "bad_content_type", f"WHIP needs application/sdp, got {request.content_type!r}"
        )
    try:
        offer = await read_sdp(request, front.service.body_timeout_s)
        if "m=" not in offer:
            raise ServiceError("bad_sdp", "the body is not an SDP offer with media sections")
        session_id, token, answer = await front.open_whip(key_id, offer)
    except ServiceError as exc:
        return _error(front, _status(exc, exc.code), exc.code, exc.message)
    return web.Response(
        status=201,
        text=answer,
        content_type="application/sdp",
        headers={"Location": f"/whip/{session_id}", "X-Echo-Session-Token": token},
    )


async def _authorised(request: web.Request) -> str:
    """The session of a WHIP resource, if the bearer is its token or the key that created it.

    Credentials are checked before the session is looked up, and a key that did not create
    the session gets the same 404 as an unknown id: the answer tells nothing about ids.
    """
    front = request.app[FRONT_KEY]
    session_id = request.match_info["session_id"]
    credential = bearer(request)
    if looks_like_token(credential):
        front.service.signer.verify(credential, session_id)
        await front.host.key_of(session_id)
        return session_id
    key_id = front.service.keys.check(credential)
    try:
        owner = await front.host.key_of(session_id)
    except ServiceError as exc:
        if exc.code != "session_not_found":
            raise
        owner = None
    if owner != key_id:
        raise ServiceError("session_not_found", "no session with this id for this API key")
    return session_id


async def whip_patch(request: web.Request) -> web.Response:
    front = request.app[FRONT_KEY]
    try:
        session_id = await _authorised(request)
        await front.trickle(
            session_id, sdpfrag_candidates(await read_sdp(request, front.service.body_timeout_s))
        )
    except (AuthError, ServiceError) as exc:
        return _error(front, _status(exc, exc.code), exc.code, exc.message)
    return web.Response(status=204)


async def whip_delete(request: web.Request) -> web.Response:
    front = request.app[FRONT_KEY]
    try:
        await front.host.close(await _authorised(request))
    except (AuthError, ServiceError) as exc:
        return _error(front, _status(exc, exc.code), exc.code, exc.message)
    return web.Response(status=200)


async def http_ask(request: web.Request) -> web.StreamResponse:
    """`POST /v1/sessions/{id}/ask` {question, window_s?} → server-sent events of the answer."""
    front = request.app[FRONT_KEY]
    session_id = request.match_info["session_id"]
    try:
        front.service.signer.verify(bearer(request), session_id)
        try:
            body = json.loads(await read_body(request, front.service.body_timeout_s))
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser
            raise ProtocolError("invalid_json", "the body must be JSON {question, window_s?}") from None
        asked = parse_ask_body(body)
        events = front.host.ask(session_id, asked.question, asked.window_s)
        first = await anext(events)  # refusals (unknown session, rate limit) come before it
    except (AuthError, ServiceError, ProtocolError) as exc:
        return _error(front, _status(exc, exc.code), exc.code, exc.message)
    return await _serve_sse(request, front, first, events)


async def http_events(request: web.Request) -> web.StreamResponse:
    """`GET /v1/sessions/{id}/events[?turn_detection=server_vad|none]` → server-sent events of the
    session's own events (turn detection, answers to spoken questions) until it ends."""
    front = request.app[FRONT_KEY]
    session_id = request.match_info["session_id"]
    kind = request.query.get("turn_detection")
    try:
        front.service.signer.verify(bearer(request), session_id)
        if kind is not None and kind not in TURN_DETECTION_TYPES:
            raise ProtocolError(
                "invalid_field", f"turn_detection must be one of {TURN_DETECTION_TYPES}, got {kind[:32]!r}"
            )
        settings = SessionSettings(turn_detection=None if kind is None else TurnDetection(type=kind))
        events = front.host.events(session_id, stats=False, settings=settings)
        first = await anext(events)
    except (AuthError, ServiceError, ProtocolError) as exc:
        return _error(front, _status(exc, exc.code), exc.code, exc.message)
    return await _serve_sse(request, front, first, events)


async def _serve_sse(
    request: web.Request, front: HttpFront, first: WireEvent, events: AsyncGenerator[WireEvent, None]
) -> web.StreamResponse:
    """`first`, then `events`, as server-sent events until they end. A refusal that comes as the
    first event (a gateway relays the worker's) becomes the HTTP error response instead."""
    if first.get("type") == "error":
        code = str(first.get("code"))
        return _error(front, _STATUS.get(code, 400), code, str(first.get("message")))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        await response.write(sse(first))
        async for event in events:
            if event.get("type") == "error":
                front.service.count_error(str(event.get("code")))
            await response.write(sse(event))
        await response.write_eof()
    except ServiceError as exc:
        front.service.count_error(exc.code)
        await response.write(sse({"type": "error", "code": exc.code, "message": exc.message}))
        await response.write_eof()
    except ConnectionResetError:  # the client went away (aiohttp's ClientConnectionResetError too)
        pass
    finally:
        await events.aclose()
    return response
