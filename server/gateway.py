"""`echo-server` in gateway mode: admits sessions onto workers and routes their control messages.

A gateway loads no model. `session.create` goes to the least-loaded live worker with
room (by share of capacity, then ingest lag); the worker's SDP answer carries its own
ICE candidates, so media flows from the client straight to that worker. Every later
control message is routed to the owning worker through Redis Streams (routing.py);
history is read from Redis directly. WHIP and HTTP asks (http_api.py) are routed the same
way, so clients never need to reach a worker's HTTP port. A worker that stops beating is
detected by every gateway connection watching one of its sessions: the session is marked
lost, the client gets `error` `worker_lost`, and an answer in flight ends with
`response.done` `failed`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from functools import partial
from typing import Any, TypeVar

from aiohttp import web

from echo_core.errors import ConfigError

from .config import ServiceConfig
from .errors import ServiceError
from .gateway_connection import GatewayConnection
from .http_service import HttpService
from .protocol import SessionSettings
from .registry import SessionOwner, WorkerRegistry
from .routing import REDIS_DOWN, Command, RouteError, Router, with_retry
from .store import HistoryRecord, RedisStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class Gateway(HttpService):
    """Places sessions on workers and relays their control messages; holds no media."""

    def __init__(self, config: ServiceConfig, *, watch_s: float = 0.5) -> None:
        if config.server.mode != "gateway":
            raise ConfigError(f"Gateway needs server.mode=gateway, got {config.server.mode!r}")
        super().__init__(config)
        assert config.server.redis_url is not None  # ServerConfig checks it for this mode
        self.store = RedisStore(config.server.redis_url)
        self.registry = WorkerRegistry(self.store.redis, self.store.prefix)
        self.router = Router(
            self.store.redis, self.registry, prefix=self.store.prefix, timeout_s=config.server.route_timeout_s
        )
        self.watch_s = watch_s
        self.gateway_id = config.server.worker_id or f"gateway-{uuid.uuid4().hex[:8]}"
        self.connections: set[GatewayConnection] = set()
        self._epoch: tuple[str, float] = ("", 0.0)  # (Redis run id, when this gateway first saw it)

    async def start(self) -> None:
        await self.store.ping()
        self._epoch = (await self.store.epoch(), 0.0)  # a later run id means Redis restarted
        await self.listen(self.build_app())
        log.info("echo gateway listening on %s:%d", self.config.server.host, self.port)

    async def stop(self) -> None:
        for conn in list(self.connections):
            if conn.ws is not None:
                await conn.ws.close()
        await self.close_listener()
        await self.store.close()

    def build_app(self) -> web.Application:
        from .http_api import add_session_routes

        app = web.Application(client_max_size=self.config.server.max_message_bytes)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/ws", self.websocket)
        add_session_routes(app, self)
        self.add_page_routes(app)
        return app

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        from .connection import serve_websocket

        conn = GatewayConnection(self)
        self.connections.add(conn)
        try:
            return await serve_websocket(request, conn)
        finally:
            self.connections.discard(conn)

    # ------------------------------------------------------------- placement
    async def create_session(
        self, key_id: str, settings: SessionSettings
    ) -> tuple[SessionOwner, dict[str, Any]]:
        """Create a session on the least-loaded worker with room: (its owner record, `session.created`)."""
        limit = self.config.server.max_sessions_per_key
        if await self.patiently(lambda: self.store.live_sessions(key_id), "quota") >= limit:
            raise ServiceError("session_quota", f"this API key already has {limit} live sessions")
        lag_limit = self.config.server.max_ingest_lag_s
        live = await self.patiently(self.registry.live_workers, "workers")
        workers = [w for w in live if w.room > 0 and w.lag_s <= lag_limit]
        payload = {"key_id": key_id, "settings": to_wire_settings(settings)}
        for worker in workers:
            if not await self.patiently(partial(self.registry.reserve, worker.worker_id), "reserve"):
                continue  # filled up (or gone) since we listed it
            reply = await self.router.call_one(worker.worker_id, Command("create", "", payload))
            if reply is None:
                continue
            if reply.get("type") == "error":
                if reply.get("code") == "server_busy":
                    continue  # filled up since its last beat: try the next one
                raise ServiceError(str(reply.get("code")), str(reply.get("message")))
            self.counters["sessions_created"] += 1
            return SessionOwner(worker.worker_id, key_id, False), reply
        raise ServiceError("server_busy", "no worker has room for a new session; try again later")

    async def owner_of(self, session_id: str) -> SessionOwner:
        """The live worker holding a session (ServiceError when it ended or its worker was lost)."""
        owner = await self.patiently(lambda: self.registry.owner(session_id), "owner")
        if owner is None:
            raise ServiceError("session_not_found", "this session has ended; create a new one")
        if owner.lost:
            raise ServiceError("worker_lost", LOST_MESSAGE)
        return owner

    # ---------------------------------------------------------------- routing
    async def run_on_owner(self, worker_id: str, command: Command) -> dict[str, Any] | None:
        """A command's first reply; an `error` reply or a failed route raises ServiceError."""
        self.counters["routed"] += 1
        reply = await self.router.call_one(worker_id, command)  # RouteError is a ServiceError
        if reply is not None and reply.get("type") == "error":
            raise ServiceError(str(reply.get("code")), str(reply.get("message")))
        return reply

    async def routed_answer(
        self, session_id: str, owner: SessionOwner, question: str, window_s: float | None
    ) -> AsyncIterator[dict[str, Any]]:
        """A question answered by the session's worker, as wire events (errors included).

        No question is dropped silently: if the route fails after the worker took the
        question (its worker died, Redis stayed away), an `error` is followed by
        `response.done` `failed`, and the history records the question unanswered.
        """
        payload = {"question": question, "window_s": window_s}
        response_id: str | None = None
        self.counters["routed"] += 1
        try:
            async for reply in self.router.call(owner.worker_id, Command("ask", session_id, payload)):
                if reply.get("type") == "response.created":
                    response_id = str(reply.get("response_id"))
                elif reply.get("type") == "response.done":
                    response_id = None
                yield reply
        except RouteError as exc:
            yield {"type": "error", "code": exc.code, "message": exc.message}
            if response_id is None:
                return
            yield {"type": "response.done", "response_id": response_id, "answer": "", "status": "failed"}
            failed = HistoryRecord(response_id, question, "", time.time())
            try:
                await self.store.append_history(session_id, failed, self.config.server.history_maxlen)
            except Exception:
                log.warning("%s: could not record the failed question", session_id)

    # --------------------------------------------- the HTTP API (http_api.SessionFront)
    async def open_whip(self, key_id: str, offer_sdp: str) -> tuple[str, str, str]:
        owner, created = await self.create_session(key_id, SessionSettings())
        session_id = str(created["session_id"])
        try:
            answer = await self.run_on_owner(
                owner.worker_id, Command("offer", session_id, {"sdp": offer_sdp})
            )
        except ServiceError:
            await self.end_session(session_id)
            raise
        assert answer is not None  # an offer is answered or refused
        return session_id, str(created["token"]), str(answer["sdp"])

    async def session_key(self, session_id: str) -> str:
        return (await self.owner_of(session_id)).key_id

    async def trickle(self, session_id: str, candidates: list[tuple[str, str | None]]) -> None:
        owner = await self.owner_of(session_id)
        for candidate, mid in candidates:
            payload = {"candidate": candidate, "sdp_mid": mid, "sdp_mline_index": None}
            await self.run_on_owner(owner.worker_id, Command("candidate", session_id, payload))

    async def end_session(self, session_id: str) -> None:
        owner = await self.owner_of(session_id)
        await self.run_on_owner(owner.worker_id, Command("close", session_id))

    async def answer_events(
        self, session_id: str, question: str, window_s: float | None
    ) -> AsyncIterator[dict[str, Any]]:
        owner = await self.owner_of(session_id)
        async for event in self.routed_answer(session_id, owner, question, window_s):
            yield event

    async def session_events(
        self, session_id: str, turn_detection: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        """The session's own events as its worker publishes them (window.stats left out)."""
        import json

        owner = await self.owner_of(session_id)
        if turn_detection is not None:
            settings = {"turn_detection": {"type": turn_detection}}
            reply = await self.run_on_owner(
                owner.worker_id, Command("update", session_id, {"settings": settings})
            )
        else:
            reply = await self.run_on_owner(owner.worker_id, Command("update", session_id, {"settings": {}}))
        pubsub = self.registry.redis.pubsub()
        try:
            await pubsub.subscribe(f"{self.registry.prefix}stats:{session_id}")
            assert reply is not None
            yield reply
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    if (await self.registry.owner(session_id)) is None:
                        return  # the session ended
                    continue
                event = json.loads(message["data"])
                if event.get("type") != "window.stats":
                    yield event
        finally:
            await pubsub.aclose()

    async def patiently(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        """A Redis read, retried through an outage for up to `route_timeout_s`."""
        return await with_retry(op, time.monotonic() + self.config.server.route_timeout_s, what)

    async def worker_alive(self, worker_id: str) -> bool:
        """False once a worker's record expired; True while Redis is unreachable or just restarted.

        A Redis restart without persistence drops every record until workers beat again,
        so for one worker TTL after a new Redis run id is seen, absence is not loss.
        """
        try:
            if await self.registry.alive(worker_id):
                return True
            run_id = await self.store.epoch()
        except REDIS_DOWN:
            return True
        now = time.monotonic()
        if run_id != self._epoch[0]:
            self._epoch = (run_id, now if self._epoch[0] else 0.0)
        return now - self._epoch[1] < self.config.server.worker_ttl_s

    # ------------------------------------------------------------------ HTTP
    async def healthz(self, request: web.Request) -> web.Response:
        try:
            workers = await self.registry.live_workers()
        except REDIS_DOWN:
            return web.json_response(
                {"status": "degraded", "mode": "gateway", "redis": "unreachable"}, status=503
            )
        body = {
            "status": "ok",
            "mode": "gateway",
            "gateway": self.gateway_id,
            "workers": len(workers),
            "room": sum(max(0, w.room) for w in workers),
            "connections": len(self.connections),
        }
        return web.json_response(body)

    async def metrics(self, request: web.Request) -> web.Response:
        if not self.metrics_allowed(request):
            raise web.HTTPUnauthorized(text="/metrics needs the metrics token")
        try:
            workers = await self.registry.live_workers()
        except REDIS_DOWN:
            workers = []
        lines = [
            "# TYPE echo_gateway_connections gauge",
            f"echo_gateway_connections {len(self.connections)}",
            "# TYPE echo_workers gauge",
            f"echo_workers {len(workers)}",
            "# TYPE echo_worker_load gauge",
            *(f'echo_worker_load{{worker="{w.worker_id}"}} {w.load}' for w in workers),
            "# TYPE echo_sessions_created_total counter",
            f"echo_sessions_created_total {self.counters['sessions_created']}",
            "# TYPE echo_routed_total counter",
            f"echo_routed_total {self.counters['routed']}",
            *self.error_metric_lines(),
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")


LOST_MESSAGE = (
    "the worker holding this session stopped; create a new session (the old token still reads its history)"
)


def to_wire_settings(settings: SessionSettings) -> dict[str, Any]:
    """Settings as the JSON object a worker rebuilds them from (unset fields left out)."""
    return {k: v for k, v in asdict(settings).items() if v is not None}
