"""`EchoServer`: a standalone server or a worker, composed of its pieces and run.

One aiohttp port serves the event WebSocket (connection.py), WHIP and HTTP asks
(http_api.py), health and metrics, all over the sessions held in this process
(`LocalSessions`, local_sessions.py). In `worker` mode a `WorkerNode` also registers the
process in Redis and runs the commands gateways route to it. The model loads once at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from aiohttp import web

from echo_core.errors import ConfigError
from echo_core.stream.runtime import StreamModel
from echo_core.tts import voice_catalog

from .config import ServiceConfig
from .connection import WebSocketFront
from .http_api import add_session_routes
from .http_service import HttpService
from .journal import HistoryJournal
from .local_sessions import LocalSessions
from .metrics import LocalMetrics
from .shutdown import within
from .store import MemoryStore, RedisStore, Store
from .worker_node import WorkerNode

log = logging.getLogger(__name__)


class EchoServer(HttpService):
    """The service of one process: its sessions, their fronts, the heartbeat and (as a worker) its node."""

    def __init__(self, config: ServiceConfig, *, model: StreamModel | None = None) -> None:
        if config.server.mode == "gateway":
            raise ConfigError("server.mode=gateway runs server.gateway.Gateway, not EchoServer")
        journal = HistoryJournal(config.server.history_maxlen)
        metrics = LocalMetrics(
            per_session=config.server.metrics_per_session, history_repaired=lambda: journal.repaired
        )
        super().__init__(config, metrics)
        self.metrics: LocalMetrics = metrics
        self.model = model
        self.worker_id = config.server.worker_id or f"worker-{uuid.uuid4().hex[:8]}"
        self.sessions = LocalSessions(config, self.signer, metrics, journal, self.worker_id)
        self.sockets = WebSocketFront(self, self.sessions)
        self.node: WorkerNode | None = None  # in worker mode
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Load the model (once), start the engine thread, the store and the HTTP listener."""
        if self.model is None:
            self.model = await asyncio.get_running_loop().run_in_executor(
                None, StreamModel.load, self.config.model, self.config.sieve
            )
        voices = await asyncio.to_thread(voice_catalog)
        if not voices.languages:
            log.warning("espeak-ng is not installed: sessions cannot ask for spoken answers")
        store: Store = MemoryStore()
        if self.config.server.redis_url:
            redis_store = RedisStore(self.config.server.redis_url)
            await redis_store.ping()
            store = redis_store
        self.sessions.start(self.model, store, voices)
        await self.listen(self.build_app())
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="echo-heartbeat"))
        if self.config.server.mode == "worker":
            assert isinstance(store, RedisStore)  # ServerConfig requires redis_url for workers
            self.node = WorkerNode(self.sessions, store)
            await self.node.start()
        log.info("echo-server listening on %s:%d (%s)", self.config.server.host, self.port, self.worker_id)

    async def stop(self) -> None:
        """Graceful shutdown: leave the cluster, close every session, stop the engine, listener, store."""
        if self.node is not None:
            await within(self.node.stop(), "leaving the cluster")
        for task in self._tasks:
            task.cancel()
        await within(asyncio.gather(*self._tasks, return_exceptions=True), "the heartbeat")
        await self.sessions.stop()
        await within(self.close_listener(), "closing the listener")
        await within(self.sessions.store.close(), "closing the store")

    async def _heartbeat(self, beat_s: float = 1.0) -> None:
        """Keep the store's session records fresh, close abandoned sessions, repair after outages.

        When the store restarted (its epoch changed) or a history write failed, every live
        session is registered again and the history journal is reconciled.
        """
        ttl = self.config.server.heartbeat_ttl_s
        sessions = self.sessions
        epoch: str | None = None
        next_beat = 0.0
        while True:
            await asyncio.sleep(min(beat_s, ttl / 3))
            now = time.monotonic()
            await sessions.reap()
            try:
                current = await sessions.store.epoch()
                if epoch is not None and current != epoch:
                    log.warning("the store restarted; registering %d sessions again", len(sessions.live))
                    next_beat = 0.0
                if now >= next_beat:
                    await sessions.register_all(ttl)
                    next_beat = now + ttl / 3
                if sessions.journal.dirty or (epoch is not None and current != epoch):
                    repaired = await sessions.journal.reconcile(sessions.store)
                    if repaired:
                        log.warning("wrote %d history entries the store had lost", repaired)
                epoch = current
            except Exception:  # the store may be restarting: retry on the next beat
                log.warning("store unreachable; retrying")
                next_beat = 0.0
                sessions.journal.dirty = True

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.server.max_message_bytes)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_get("/ws", self.sockets.handle)
        add_session_routes(app, self, self.sessions)
        self.add_page_routes(app)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        engine = self.sessions.engine
        ok = engine is not None and engine.alive
        body = {
            "status": "ok" if ok else "degraded",
            "mode": self.config.server.mode,
            "sessions": len(self.sessions.live),
            "max_sessions": self.config.server.max_sessions,
            "worker": self.worker_id,
        }
        return web.json_response(body, status=200 if ok else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        """Prometheus text: aggregates over sessions; per-session labels with `server.metrics_per_session`."""
        if not self.metrics_allowed(request):
            raise web.HTTPUnauthorized(text="/metrics needs the metrics token")
        self.metrics.figures.sessions = await self.sessions.figures()
        return self.metrics_response(request)
