"""A worker in a deployment: registers its room in Redis and runs the commands gateways route.

The sessions, their media and their caches stay in this process (`LocalSessions`); a gateway
(`RoutedSessions`) sends each session call as a `Command` through the inbox stream, and this
node makes the same call here and writes back the protocol events it produced. Every beat
refreshes the worker's record with its capacity, load and ingest lag, which gateways use to
place new sessions. A session placed here publishes its own events and `window.stats` on
`stats:{id}`, which gateways relay to its sockets and event streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from echo_core.config import build
from echo_core.errors import ConfigError

from .auth import AuthError
from .errors import ServiceError
from .local_sessions import LocalSessions
from .protocol import ProtocolError, SessionSettings, WebRTCAnswer, to_wire
from .registry import WorkerInfo, WorkerRegistry
from .routing import Command, Inbox
from .session_host import WireEvent, input_audio_action
from .store import RedisStore

log = logging.getLogger(__name__)


class WorkerNode:
    """The registry beat and the inbox consumer of one worker process."""

    def __init__(self, sessions: LocalSessions, store: RedisStore) -> None:
        self.sessions = sessions
        self.config = sessions.config.server
        self.worker_id = sessions.worker_id
        self.registry = WorkerRegistry(store.redis, store.prefix)
        self.inbox = Inbox(store.redis, self.worker_id, self.handle, prefix=store.prefix)
        self.started = time.time()
        self._tasks: list[asyncio.Task[None]] = []
        self._publishers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.beat_now()
        self._tasks = [
            asyncio.create_task(self._beat(), name="worker-beat"),
            asyncio.create_task(self.inbox.run(), name="worker-inbox"),
        ]

    async def stop(self) -> None:
        """Leave the registry (gateways stop placing sessions here), then stop consuming."""
        for task in [*self._tasks, *self._publishers]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._publishers, return_exceptions=True)
        await self.inbox.stop()
        try:
            await self.registry.leave(self.worker_id)
        except Exception:
            log.warning("could not leave the registry; the record expires by itself")

    def info(self) -> WorkerInfo:
        s = self.sessions
        return WorkerInfo(
            self.worker_id, self.config.max_sessions, len(s.live), round(s.ingest_lag_s, 3), self.started
        )

    async def beat_now(self) -> None:
        try:
            await self.registry.beat(self.info(), self.config.worker_ttl_s)
        except Exception:
            log.warning("registry beat failed; retrying")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.config.worker_ttl_s / 3)
            await self.beat_now()

    async def publish(self, session_id: str) -> None:
        """Publish a gateway-placed session's events and `window.stats` on `stats:{id}`."""
        channel = f"{self.registry.prefix}stats:{session_id}"
        async for event in self.sessions.events(session_id, stats=True):
            try:
                await self.registry.redis.publish(channel, json.dumps(event, separators=(",", ":")))
            except asyncio.CancelledError:
                raise
            except Exception:  # stats come again next interval; a lost session event is worth a warning
                level = logging.DEBUG if event.get("type") == "window.stats" else logging.WARNING
                log.log(
                    level,
                    "%s: a %s event was not published (store unreachable)",
                    session_id,
                    event.get("type"),
                )

    # -------------------------------------------------------------- commands
    async def handle(self, command: Command) -> AsyncIterator[WireEvent]:
        """Run one routed command; its protocol events (errors included) in wire form."""
        try:
            async for event in self.run(command):
                yield event
        except (ServiceError, AuthError, ProtocolError) as exc:
            yield {"type": "error", "code": exc.code, "message": exc.message}

    async def run(self, command: Command) -> AsyncGenerator[WireEvent, None]:
        """The `LocalSessions` call a command names, its result in wire form."""
        s, sid, p = self.sessions, command.session_id, command.payload
        if command.kind == "create":
            created = await s.create(str(p.get("key_id", "")), settings_from(p))
            await self.beat_now()  # gateways place the next session knowing this one
            task = asyncio.create_task(self.publish(created.session_id), name=f"publish-{created.session_id}")
            self._publishers.add(task)
            task.add_done_callback(self._publishers.discard)
            yield to_wire(created)
        elif command.kind == "attach":
            yield to_wire(await s.attach(sid, by_key=bool(p.get("by_key"))))
        elif command.kind == "update":
            yield to_wire(await s.update(sid, settings_from(p)))
        elif command.kind == "offer":
            yield to_wire(WebRTCAnswer(sdp=await s.offer(sid, str(p.get("sdp", "")))))
        elif command.kind == "candidate":
            await s.candidate(sid, str(p.get("candidate", "")), p.get("sdp_mid"), p.get("sdp_mline_index"))
        elif command.kind == "ask":
            async for event in s.ask(sid, str(p.get("question", "")), p.get("window_s")):
                yield event
        elif command.kind == "cancel":
            await s.cancel(sid, p.get("response_id"))
        elif command.kind == "input_audio":
            await s.input_audio(sid, input_audio_action(str(p.get("action"))))
        elif command.kind == "close":
            await s.close(sid)
        else:  # pragma: no cover - Command.from_fields admits known kinds only
            raise ServiceError("invalid_event", f"unknown command {command.kind!r}")


def settings_from(payload: dict[str, Any]) -> SessionSettings:
    """The session settings a gateway forwarded (already checked there; checked again here)."""
    try:
        return build(SessionSettings, payload.get("settings") or {}, "settings")
    except ConfigError as exc:
        raise ProtocolError("invalid_field", str(exc)) from None
