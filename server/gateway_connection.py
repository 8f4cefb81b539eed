"""One WebSocket on a gateway: the same protocol as on a worker, each message routed to the owner.

Parsing, error events and task handling are `Connection`'s; only dispatch differs. While a
session is attached, a watch task checks its worker every `watch_s` seconds and tells the
client (`error` `worker_lost`) as soon as the worker's record expires.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from .connection import Connection
from .errors import ServiceError
from .protocol import (
    HistoryGet,
    InputAudioClear,
    InputAudioCommit,
    InputAudioStart,
    ResponseCancel,
    ResponseCreate,
    SessionAttach,
    SessionCreate,
    SessionSettings,
    SessionUpdate,
    WebRTCCandidate,
    WebRTCOffer,
)
from .registry import SessionOwner
from .routing import REDIS_DOWN, Command

if TYPE_CHECKING:
    from .gateway import Gateway


def to_wire_settings(settings: SessionSettings) -> dict[str, Any]:
    """Settings as the JSON object a worker rebuilds them from (unset fields left out)."""
    return {k: v for k, v in asdict(settings).items() if v is not None}


log = logging.getLogger(__name__)

#: Replies to one client event: they echo its `event_id`.
DIRECT_REPLIES = ("session.created", "session.updated", "webrtc.answer")


class GatewayConnection(Connection):
    """A client connection whose session lives on some worker."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway, None)  # type: ignore[arg-type]  # Connection's server-side hooks are unused
        self.gateway = gateway
        self.session_id: str | None = None
        self.owner: SessionOwner | None = None

    async def dispatch(self, event: Any) -> None:
        g = self.gateway
        if isinstance(event, SessionCreate):
            key_id = g.keys.check(event.api_key)
            owner, created = await g.create_session(key_id, event.settings)
            self.adopt(str(created["session_id"]), owner)
            await self.forward(created, event.event_id)
        elif isinstance(event, SessionAttach):
            if event.token is not None:
                sid = g.signer.verify(event.token, event.session_id)
                owner = await g.owner_of(sid)
            else:
                from .auth import AuthError

                key_id = g.keys.check(event.api_key)
                sid, owner = event.session_id, await g.owner_of(event.session_id)
                if owner.key_id != key_id:
                    raise AuthError("forbidden", "this session belongs to another API key")
            by_key = {"by_key": event.token is None}
            reply = await g.router.call_one(owner.worker_id, Command("attach", sid, by_key))
            if reply is None:
                raise ServiceError("session_not_found", "this session has ended; create a new one")
            if reply.get("type") != "error":
                self.adopt(sid, owner)
            await self.forward(reply, event.event_id)
        elif isinstance(event, SessionUpdate):
            settings = to_wire_settings(event.settings)
            await self.route(event.token, "update", {"settings": settings}, event.event_id)
        elif isinstance(event, WebRTCOffer):
            await self.route(event.token, "offer", {"sdp": event.sdp}, event.event_id)
        elif isinstance(event, WebRTCCandidate):
            payload = {
                "candidate": event.candidate,
                "sdp_mid": event.sdp_mid,
                "sdp_mline_index": event.sdp_mline_index,
            }
            await self.route(event.token, "candidate", payload, event.event_id)
        elif isinstance(event, ResponseCreate):
            sid, owner = await self.own_remote(event.token)
            self.spawn(self.answer_remote(sid, owner, event), f"answer-{sid}")
        elif isinstance(event, ResponseCancel):
            await self.route(event.token, "cancel", {"response_id": event.response_id}, event.event_id)
        elif isinstance(event, InputAudioStart | InputAudioCommit | InputAudioClear):
            action = event.type.removeprefix("input_audio.")
            await self.route(event.token, "input_audio", {"action": action}, event.event_id)
        elif isinstance(event, HistoryGet):
            await self.send_history(event)

    async def own_remote(self, token: str) -> tuple[str, SessionOwner]:
        """The session a token grants, with its live owner (attaching this connection to it)."""
        sid = self.gateway.signer.verify(token)
        if sid == self.session_id and self.owner is not None:
            return sid, self.owner
        owner = await self.gateway.owner_of(sid)
        self.adopt(sid, owner)
        return sid, owner

    def adopt(self, session_id: str, owner: SessionOwner) -> None:
        """Attach to a session and watch its worker."""
        if self.session_id == session_id:
            return
        self.session_id, self.owner = session_id, owner
        self.mark_authenticated()
        self.spawn(self.watch(session_id, owner), f"watch-{session_id}")
        self.spawn(self.relay_stats(session_id), f"stats-{session_id}")

    async def relay_stats(self, session_id: str) -> None:
        """Forward what the owning worker publishes for this session: `window.stats` and the
        session's own events (turn detection, answers to spoken questions)."""
        registry = self.gateway.registry
        while self.session_id == session_id:
            pubsub = registry.redis.pubsub()
            try:
                await pubsub.subscribe(f"{registry.prefix}stats:{session_id}")
                while self.session_id == session_id:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        await self.send_text(str(message["data"]))
            except REDIS_DOWN:
                await asyncio.sleep(1.0)  # subscribe again once Redis is back
            finally:
                await pubsub.aclose()

    async def route(self, token: str, kind: str, payload: dict[str, Any], event_id: str | None) -> None:
        """Run a command on the owner and forward what it replies."""
        sid, owner = await self.own_remote(token)
        self.gateway.counters["routed"] += 1
        async for reply in self.gateway.router.call(owner.worker_id, Command(kind, sid, payload)):
            await self.forward(reply, event_id)

    async def forward(self, reply: dict[str, Any], event_id: str | None) -> None:
        if reply.get("type") == "error":
            await self.fail(str(reply.get("code")), str(reply.get("message")), event_id)
            return
        if event_id is not None and reply.get("type") in DIRECT_REPLIES:
            reply = {**reply, "event_id": event_id}
        await self.send_text(json.dumps(reply, separators=(",", ":")))

    async def answer_remote(self, sid: str, owner: SessionOwner, event: ResponseCreate) -> None:
        """Stream a routed answer (a failed route ends it explicitly: gateway.routed_answer)."""
        async for reply in self.gateway.routed_answer(sid, owner, event.question, event.window_s):
            await self.forward(reply, event.event_id)

    async def watch(self, session_id: str, owner: SessionOwner) -> None:
        """Tell the client as soon as the session's worker is gone (and mark the session lost)."""
        from .gateway import LOST_MESSAGE

        g = self.gateway
        while self.session_id == session_id:
            await asyncio.sleep(g.watch_s)
            if await g.worker_alive(owner.worker_id):
                continue
            try:
                await g.registry.mark_lost(session_id, owner.key_id)
            except Exception:
                log.warning("%s: could not mark the session lost", session_id)
            g.counters["workers_lost_seen"] += 1
            if self.session_id == session_id:
                self.session_id, self.owner = None, None
            await self.fail("worker_lost", LOST_MESSAGE, None)
            return
