"""A worker in a deployment: registers its room in Redis and runs the commands gateways route.

The sessions, their media and their caches stay in this process (`EchoServer`); a gateway
only forwards control messages (create, offer, ask, …) through the inbox stream and reads
back the protocol events each produces. Every beat refreshes the worker's record with its
capacity, load and ingest lag, which gateways use to place new sessions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from echo_core.config import build
from echo_core.errors import ConfigError

from .auth import AuthError
from .errors import ServiceError
from .protocol import (
    InputAudioClear,
    InputAudioCommit,
    InputAudioStart,
    ProtocolError,
    SessionSettings,
    encode,
    to_wire,
)
from .registry import WorkerInfo, WorkerRegistry
from .routing import Command, Inbox

if TYPE_CHECKING:
    from .app import EchoServer
    from .live import LiveSession
    from .store import RedisStore

log = logging.getLogger(__name__)


class WorkerNode:
    """The registry beat and the inbox consumer of one worker process."""

    def __init__(self, server: EchoServer, store: RedisStore) -> None:
        self.server = server
        self.registry = WorkerRegistry(store.redis, store.prefix)
        self.inbox = Inbox(store.redis, server.worker_id, self.handle, prefix=store.prefix)
        self.started = time.time()
        self._tasks: list[asyncio.Task[None]] = []
        self._publishers: set[asyncio.Task[None]] = set()
        self.stopping = False

    async def start(self) -> None:
        await self.beat_now()
        self._tasks = [
            asyncio.create_task(self._beat(), name="worker-beat"),
            asyncio.create_task(self.inbox.run(), name="worker-inbox"),
        ]

    async def stop(self) -> None:
        """Leave the registry (gateways stop placing sessions here), then stop consuming."""
        self.stopping = True
        for task in [*self._tasks, *self._publishers]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._publishers, return_exceptions=True)
        await self.inbox.stop()
        try:
            await self.registry.leave(self.server.worker_id)
        except Exception:
            log.warning("could not leave the registry; the record expires by itself")

    def info(self) -> WorkerInfo:
        sessions = self.server.sessions.values()
        lag = max((live.session.ingest_lag_s for live in sessions), default=0.0)
        return WorkerInfo(
            self.server.worker_id,
            self.server.config.server.max_sessions,
            len(sessions),
            round(lag, 3),
            self.started,
        )

    async def beat_now(self) -> None:
        try:
            await self.registry.beat(self.info(), self.server.config.server.worker_ttl_s)
        except Exception:
            log.warning("registry beat failed; retrying")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.server.config.server.worker_ttl_s / 3)
            await self.beat_now()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._publishers.add(task)
        task.add_done_callback(self._publishers.discard)

    async def publish_stats(self, live: LiveSession) -> None:
        """Publish a gateway-placed session's `window.stats` on `stats:{id}` for gateways to relay."""
        from .connection import window_stats

        channel = f"{self.registry.prefix}stats:{live.session_id}"
        while not live.closed and not self.stopping:
            try:
                await self.registry.redis.publish(channel, encode(await window_stats(live)))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.debug("%s: stats not published (store unreachable)", live.session_id)
            await asyncio.sleep(self.server.config.server.stats_interval_s)

    async def publish_events(self, live: LiveSession) -> None:
        """Publish the session's own events (turn detection, answers to spoken questions) on the
        same `stats:{id}` channel, which gateways relay to the session's sockets and SSE streams."""
        channel = f"{self.registry.prefix}stats:{live.session_id}"
        queue = live.events.subscribe()
        try:
            while not self.stopping:
                event = await queue.get()
                if event is None:  # the session ended
                    return
                try:
                    await self.registry.redis.publish(channel, encode(event))
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("%s: a session event was not published (store unreachable)", live.session_id)
        finally:
            live.events.unsubscribe(queue)

    # -------------------------------------------------------------- commands
    async def handle(self, command: Command) -> AsyncIterator[dict[str, Any]]:
        """Run one routed command; its protocol events (errors included) in wire form."""
        try:
            async for event in self._run(command):
                yield event
        except (ServiceError, AuthError, ProtocolError) as exc:
            yield {"type": "error", "code": exc.code, "message": exc.message}

    async def _run(self, command: Command) -> AsyncIterator[dict[str, Any]]:
        from .connection import add_candidate
        from .protocol import SessionCreated, SessionUpdated, WebRTCAnswer

        server, p = self.server, command.payload
        if command.kind == "create":
            # like a WHIP session, it lives while its peer connection does (or is closed unclaimed)
            live, token, expiry = await server.create_session(str(p.get("key_id", "")), settings_from(p))
            await self.beat_now()  # gateways place the next session knowing this one
            self._spawn(self.publish_stats(live))
            self._spawn(self.publish_events(live))
            yield to_wire(SessionCreated(None, live.session_id, token, expiry, server.settings_of(live)))
            return
        live = server.held(command.session_id)
        if command.kind == "attach":
            token, expiry = server.token_for(live, by_key=bool(p.get("by_key")))
            yield to_wire(SessionCreated(None, live.session_id, token, expiry, server.settings_of(live)))
        elif command.kind == "update":
            server.apply_settings(live, settings_from(p))
            yield to_wire(SessionUpdated(None, live.session_id, server.settings_of(live)))
        elif command.kind == "offer":
            yield to_wire(WebRTCAnswer(None, await server.answer_sdp(live, str(p.get("sdp", "")))))
        elif command.kind == "candidate":
            limit = server.config.server.max_ice_candidates
            await add_candidate(
                live, str(p.get("candidate", "")), p.get("sdp_mid"), p.get("sdp_mline_index"), limit
            )
        elif command.kind == "ask":
            window_s = p.get("window_s")
            async for event in server.ask(live, str(p.get("question", "")), window_s):
                yield to_wire(event)
        elif command.kind == "cancel":
            job = live.jobs.get(p["response_id"]) if p.get("response_id") else live.latest_job()
            if job is not None:
                job.cancel("client")
        elif command.kind == "input_audio":
            from .connection import push_to_talk

            action = str(p.get("action"))
            kinds: dict[str, type[InputAudioStart | InputAudioCommit | InputAudioClear]] = {
                "start": InputAudioStart,
                "commit": InputAudioCommit,
                "clear": InputAudioClear,
            }
            if action not in kinds:
                raise ProtocolError("invalid_field", f"unknown input_audio action {action[:32]!r}")
            push_to_talk(live, kinds[action]())
        elif command.kind == "close":
            await server.close_session(live)
        else:  # pragma: no cover - Command.from_fields admits known kinds only
            raise ServiceError("invalid_event", f"unknown command {command.kind!r}")


def settings_from(payload: dict[str, Any]) -> SessionSettings:
    """The session settings a gateway forwarded (already checked there; checked again here)."""
    try:
        return build(SessionSettings, payload.get("settings") or {}, "settings")
    except ConfigError as exc:
        raise ProtocolError("invalid_field", str(exc)) from None
