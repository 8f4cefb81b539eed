"""`echo-server` in gateway mode: the same fronts as a worker, over sessions routed to workers.

A gateway loads no model. Its WebSocket handler (connection.py) and HTTP front (http_api.py)
are the ones every `echo-server` runs, over `RoutedSessions` (routed_sessions.py): a new
session goes to the least-loaded live worker with room, the worker's SDP answer carries its
own ICE candidates (media flows from the client straight to that worker), and every later
call is routed to the owning worker through Redis Streams (routing.py); history is read from
Redis directly. A worker that stops beating is detected by every stream of its sessions'
events: the session is marked lost, the client gets `error` `worker_lost`, and an answer in
flight ends with `response.done` `failed`.
"""

from __future__ import annotations

import logging
import uuid

from aiohttp import web

from echo_core.errors import ConfigError

from .config import ServiceConfig
from .connection import WebSocketFront
from .http_api import add_session_routes
from .http_service import HttpService
from .metrics import GatewayMetrics
from .routed_sessions import RoutedSessions
from .routing import REDIS_DOWN
from .shutdown import within
from .store import RedisStore

log = logging.getLogger(__name__)


class Gateway(HttpService):
    """Places sessions on workers and relays their control messages; holds no media."""

    def __init__(self, config: ServiceConfig, *, watch_s: float = 0.5) -> None:
        if config.server.mode != "gateway":
            raise ConfigError(f"Gateway needs server.mode=gateway, got {config.server.mode!r}")
        metrics = GatewayMetrics()
        super().__init__(config, metrics)
        self.metrics: GatewayMetrics = metrics
        assert config.server.redis_url is not None  # ServerConfig checks it for this mode
        self.store = RedisStore(config.server.redis_url)
        self.sessions = RoutedSessions(config, self.store, metrics, watch_s=watch_s)
        self.sockets = WebSocketFront(self, self.sessions)
        self.gateway_id = config.server.worker_id or f"gateway-{uuid.uuid4().hex[:8]}"

    async def start(self) -> None:
        await self.store.ping()
        await self.sessions.start()
        await self.listen(self.build_app())
        log.info("echo gateway listening on %s:%d", self.config.server.host, self.port)

    async def stop(self) -> None:
        """Close every socket, the listener and the store (each step bounded: `shutdown.within`)."""
        await within(self.sockets.close_all(), "closing the sockets")
        await within(self.close_listener(), "closing the listener")
        await within(self.store.close(), "closing the store")

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.server.max_message_bytes)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_get("/ws", self.sockets.handle)
        add_session_routes(app, self, self.sessions)
        self.add_page_routes(app)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            workers = await self.sessions.registry.live_workers()
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
            "connections": len(self.sockets.connections),
        }
        return web.json_response(body)

    async def metrics_page(self, request: web.Request) -> web.Response:
        if not self.metrics_allowed(request):
            raise web.HTTPUnauthorized(text="/metrics needs the metrics token")
        try:
            workers = await self.sessions.registry.live_workers()
        except REDIS_DOWN:
            workers = []
        self.metrics.connections.set(len(self.sockets.connections))
        self.metrics.set_workers({w.worker_id: w.load for w in workers})
        return self.metrics_response(request)
