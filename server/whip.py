"""WHIP ingest (RFC 9725): robots and cameras stream with standard tools and no Echo code.

`POST /whip` with `Authorization: Bearer <API key>` and an `application/sdp` offer →
`201 Created`, the SDP answer, `Location: /whip/<session id>`, and the session token in
`X-Echo-Session-Token` (for `session.attach` or `POST /v1/sessions/{id}/ask`).
`PATCH /whip/<id>` (`application/trickle-ice-sdpfrag`) adds ICE candidates; `DELETE`
ends the session. Those two take the API key that created the session, or its token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .app import SERVER_KEY
from .auth import AuthError
from .protocol import SessionSettings

if TYPE_CHECKING:
    from .live import LiveSession


def add_whip_routes(app: web.Application) -> None:
    app.router.add_post("/whip", whip_post)
    app.router.add_patch("/whip/{session_id}", whip_patch)
    app.router.add_delete("/whip/{session_id}", whip_delete)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"type": "error", "code": code, "message": message}, status=status)


async def whip_post(request: web.Request) -> web.Response:
    from .app import ServiceError, bearer

    server = request.app[SERVER_KEY]
    try:
        key_id = server.keys.check(bearer(request))
    except AuthError as exc:
        server.counters[f"error:{exc.code}"] += 1
        return _error(401, exc.code, exc.message)
    if request.content_type != "application/sdp":
        return _error(415, "bad_content_type", f"WHIP needs application/sdp, got {request.content_type!r}")
    offer = await request.text()
    if "m=" not in offer:
        return _error(400, "bad_sdp", "the body is not an SDP offer with media sections")
    try:
        live, token, _ = await server.create_session(key_id, SessionSettings())
    except ServiceError as exc:
        status = {"session_quota": 429, "server_busy": 503}.get(exc.code, 400)
        return _error(status, exc.code, exc.message)
    try:
        answer = await server.answer_sdp(live, offer)
    except ServiceError as exc:
        await server.close_session(live)
        server.counters[f"error:{exc.code}"] += 1
        return _error(400, exc.code, exc.message)
    return web.Response(
        status=201,
        text=answer,
        content_type="application/sdp",
        headers={"Location": f"/whip/{live.session_id}", "X-Echo-Session-Token": token},
    )


def _authorised(request: web.Request) -> LiveSession | web.Response:
    from .app import bearer

    server = request.app[SERVER_KEY]
    sid = request.match_info["session_id"]
    live = server.sessions.get(sid)
    if live is None:
        return _error(404, "session_not_found", f"no session {sid}")
    credential = bearer(request)
    try:
        if credential and credential.count(".") == 2:
            server.signer.verify(credential, sid)
        elif server.keys.check(credential) != live.key_id:
            raise AuthError("forbidden", "this session belongs to another API key")
    except AuthError as exc:
        return _error(401 if exc.code != "forbidden" else 403, exc.code, exc.message)
    return live


async def whip_patch(request: web.Request) -> web.Response:
    from .app import ServiceError
    from .connection import add_candidate

    found = _authorised(request)
    if isinstance(found, web.Response):
        return found
    mid: str | None = None
    try:
        for line in (await request.text()).splitlines():
            if line.startswith("a=mid:"):
                mid = line[6:].strip()
            elif line.startswith("a=candidate:"):
                await add_candidate(found, line[2:], mid, None)
    except ServiceError as exc:
        return _error(400, exc.code, exc.message)
    return web.Response(status=204)


async def whip_delete(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    found = _authorised(request)
    if isinstance(found, web.Response):
        return found
    await server.close_session(found)
    return web.Response(status=200)
