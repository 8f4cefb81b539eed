"""`RoutedSessions`: a gateway's `SessionHost`, every call run on the session's worker through Redis.

`create` places the session on the least-loaded live worker with room (by share of
capacity, then ingest lag); every later call goes to the owning worker as a `Command`
(routing.py), where `WorkerNode` runs it on its `LocalSessions`, and comes back as wire
events. A worker's `error` reply is raised here as a `ServiceError` with its code. The
session's own events come over Redis pub/sub (`stats:{id}`); while a stream of them is open,
its worker is watched, and the stream ends with `error` `worker_lost` (the session marked
lost) as soon as the worker's record expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import asdict
from functools import partial
from typing import Any, TypeVar

from echo_core.config import build
from echo_core.errors import ConfigError

from .config import ServiceConfig
from .errors import ServiceError
from .metrics import GatewayMetrics
from .protocol import HistoryItem, SessionCreated, SessionSettings, SessionUpdated, to_wire
from .registry import SessionOwner, WorkerRegistry
from .routing import REDIS_DOWN, Command, RouteError, Router, with_retry
from .session_host import InputAudioAction, WireEvent
from .store import HistoryRecord, RedisStore

log = logging.getLogger(__name__)
T = TypeVar("T")

LOST_MESSAGE = (
    "the worker holding this session stopped; create a new session (the old token still reads its history)"
)


def settings_to_wire(settings: SessionSettings) -> dict[str, Any]:
    """Settings as the JSON object a worker rebuilds them from (unset fields left out)."""
    return {k: v for k, v in asdict(settings).items() if v is not None}


def settings_from_wire(data: Any) -> SessionSettings:
    """Settings rebuilt from their JSON object (ConfigError when they are not settings)."""
    return build(SessionSettings, data if isinstance(data, dict) else {}, "settings")


def session_created(reply: WireEvent) -> SessionCreated:
    """A worker's `session.created` reply, typed."""
    try:
        settings = settings_from_wire(reply.get("settings"))
    except ConfigError as exc:
        raise ServiceError("internal_error", f"a worker sent bad settings: {exc}") from None
    return SessionCreated(
        None, str(reply["session_id"]), str(reply["token"]), float(reply["expires_at"]), settings
    )


class RoutedSessions:
    """The sessions of every worker, reached through Redis (a gateway holds no media)."""

    def __init__(
        self, config: ServiceConfig, store: RedisStore, metrics: GatewayMetrics, *, watch_s: float
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.watch_s = watch_s
        self.registry = WorkerRegistry(store.redis, store.prefix)
        self.router = Router(
            store.redis, self.registry, prefix=store.prefix, timeout_s=config.server.route_timeout_s
        )
        self._epoch: tuple[str, float] = ("", 0.0)  # (Redis run id, when this gateway first saw it)

    async def start(self) -> None:
        self._epoch = (await self.store.epoch(), 0.0)  # a later run id means Redis restarted

    # ------------------------------------------------------------- placement
    async def create(self, key_id: str, settings: SessionSettings) -> SessionCreated:
        """Create a session on the least-loaded worker with room."""
        limit = self.config.server.max_sessions_per_key
        if await self.patiently(lambda: self.store.live_sessions(key_id), "quota") >= limit:
            raise ServiceError("session_quota", f"this API key already has {limit} live sessions")
        lag_limit = self.config.server.max_ingest_lag_s
        live = await self.patiently(self.registry.live_workers, "workers")
        workers = [w for w in live if w.room > 0 and w.lag_s <= lag_limit]
        payload = {"key_id": key_id, "settings": settings_to_wire(settings)}
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
            self.metrics.sessions_created.inc()
            return session_created(reply)
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
    async def run(
        self, session_id: str, kind: str, payload: dict[str, Any] | None = None
    ) -> WireEvent | None:
        """Run a command on the session's worker: its reply (None when it replies nothing).

        An `error` reply or a failed route raises ServiceError.
        """
        owner = await self.owner_of(session_id)
        self.metrics.routed.inc()
        reply = await self.router.call_one(owner.worker_id, Command(kind, session_id, payload or {}))
        if reply is not None and reply.get("type") == "error":
            raise ServiceError(str(reply.get("code")), str(reply.get("message")))
        return reply

    async def attach(self, session_id: str, *, by_key: bool) -> SessionCreated:
        reply = await self.run(session_id, "attach", {"by_key": by_key})
        if reply is None:
            raise ServiceError("session_not_found", "this session has ended; create a new one")
        return session_created(reply)

    async def key_of(self, session_id: str) -> str:
        return (await self.owner_of(session_id)).key_id

    async def join(self, session_id: str) -> None:
        await self.owner_of(session_id)  # a gateway's sockets do not hold a worker's session

    async def leave(self, session_id: str) -> None:
        return None

    async def update(self, session_id: str, settings: SessionSettings) -> SessionUpdated:
        reply = await self.run(session_id, "update", {"settings": settings_to_wire(settings)})
        assert reply is not None  # an update is answered or refused
        try:
            return SessionUpdated(None, str(reply["session_id"]), settings_from_wire(reply.get("settings")))
        except ConfigError as exc:
            raise ServiceError("internal_error", f"a worker sent bad settings: {exc}") from None

    async def offer(self, session_id: str, sdp: str) -> str:
        reply = await self.run(session_id, "offer", {"sdp": sdp})
        assert reply is not None  # an offer is answered or refused
        return str(reply["sdp"])

    async def candidate(
        self, session_id: str, candidate: str, sdp_mid: str | None, index: int | None
    ) -> None:
        payload = {"candidate": candidate, "sdp_mid": sdp_mid, "sdp_mline_index": index}
        await self.run(session_id, "candidate", payload)

    async def ask(
        self, session_id: str, question: str, window_s: float | None
    ) -> AsyncGenerator[WireEvent, None]:
        """A question answered by the session's worker, as wire events (errors included).

        No question is dropped silently: if the route fails after the worker took the
        question (its worker died, Redis stayed away), an `error` is followed by
        `response.done` `failed`, and the history records the question unanswered.
        """
        owner = await self.owner_of(session_id)
        payload = {"question": question, "window_s": window_s}
        response_id: str | None = None
        self.metrics.routed.inc()
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

    async def cancel(self, session_id: str, response_id: str | None) -> None:
        await self.run(session_id, "cancel", {"response_id": response_id})

    async def input_audio(self, session_id: str, action: InputAudioAction) -> None:
        await self.run(session_id, "input_audio", {"action": action})

    async def events(
        self, session_id: str, *, stats: bool, settings: SessionSettings | None = None
    ) -> AsyncGenerator[WireEvent, None]:
        """What the session's worker publishes on `stats:{id}` (`window.stats` only with `stats`)."""
        owner = await self.owner_of(session_id)
        channel = f"{self.registry.prefix}stats:{session_id}"
        pubsub = await self.subscribe(channel)
        try:
            if settings is not None:
                yield to_wire(await self.update(session_id, settings))
            next_watch = time.monotonic() + self.watch_s
            while True:
                message = None
                try:
                    if pubsub is None:
                        pubsub = await self.subscribe(channel)
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.watch_s)
                except REDIS_DOWN:
                    if pubsub is not None:
                        await _close(pubsub)
                        pubsub = None
                    await asyncio.sleep(1.0)  # subscribe again once Redis is back
                if message is not None:
                    event = json.loads(message["data"])
                    if stats or event.get("type") != "window.stats":
                        yield event
                if time.monotonic() < next_watch:
                    continue
                next_watch = time.monotonic() + self.watch_s
                if not await self.worker_alive(owner.worker_id):
                    await self.lost(session_id, owner)
                    yield {"type": "error", "code": "worker_lost", "message": LOST_MESSAGE}
                    return
                if message is None and not stats and await self.session_gone(session_id):
                    return  # the session ended
        finally:
            if pubsub is not None:
                await _close(pubsub)

    async def subscribe(self, channel: str) -> Any:
        """A pub/sub connection listening on `channel` (retried through a Redis outage)."""
        pubsub = self.registry.redis.pubsub()
        try:
            await self.patiently(lambda: pubsub.subscribe(channel), "subscribe")
        except BaseException:
            await _close(pubsub)
            raise
        return pubsub

    async def history(self, session_id: str, limit: int) -> list[HistoryItem]:
        records = await self.store.history(session_id, max(0, min(limit, 1000)))
        return [HistoryItem(r.response_id, r.question, r.answer, r.at) for r in records]

    async def close(self, session_id: str) -> None:
        await self.run(session_id, "close")

    # --------------------------------------------------------- worker health
    async def lost(self, session_id: str, owner: SessionOwner) -> None:
        """Mark a session whose worker stopped as lost (its later calls get `worker_lost`)."""
        try:
            await self.registry.mark_lost(session_id, owner.key_id)
        except Exception:
            log.warning("%s: could not mark the session lost", session_id)
        self.metrics.workers_lost_seen.inc()

    async def session_gone(self, session_id: str) -> bool:
        try:
            return await self.registry.owner(session_id) is None
        except REDIS_DOWN:
            return False

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


async def _close(pubsub: Any) -> None:
    """Close a pub/sub connection (a broken one has nothing left to release)."""
    with contextlib.suppress(*REDIS_DOWN):
        await pubsub.aclose()
