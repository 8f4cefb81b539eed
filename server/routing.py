"""Control messages between gateways and workers over Redis Streams.

A gateway appends a `Command` to the owning worker's inbox stream `inbox:{worker}`; the
worker reads it through the consumer group `engine` (at-least-once: an entry stays
pending until acknowledged, and `XAUTOCLAIM` hands entries idle past `claim_idle_s` to
the live consumer), runs it once (the command id is its idempotency key: `done:{id}` is
set before it runs), and appends the resulting protocol events to `reply:{id}`, ending
with an `_end` entry. The gateway reads the reply stream from its start, so a duplicate
delivery or a retried send returns the same events. While it waits it checks that the
worker is alive: a lost worker fails the command with `worker_lost` instead of leaving
the client waiting. Redis outages are retried with backoff until a deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import ServiceError
from .registry import WorkerRegistry

log = logging.getLogger(__name__)

T = TypeVar("T")
#: What a Redis call raises while the server is down or restarting.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
#: The kinds of command a worker runs.
COMMAND_KINDS = ("create", "attach", "offer", "candidate", "update", "ask", "cancel", "input_audio", "close")
END = "_end"
GROUP = "engine"
REPLY_TTL_S = 600
DONE_TTL_S = 3600
INBOX_MAXLEN = 10_000


class RouteError(ServiceError):
    """A routed command that could not be delivered or answered; `code` goes to the client."""


@dataclass(frozen=True)
class Command:
    """One control message for the worker that owns `session_id` (empty for `create`)."""

    kind: str
    session_id: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_fields(self) -> dict[str, str]:
        return {
            "id": self.request_id,
            "kind": self.kind,
            "session": self.session_id,
            "payload": json.dumps(self.payload, separators=(",", ":")),
        }

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Command:
        """Parse a stream entry (ValueError when it is not a command)."""
        try:
            kind, payload = fields["kind"], json.loads(fields["payload"])
            command = cls(kind, fields["session"], payload, fields["id"])
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a command: {exc}") from None
        if kind not in COMMAND_KINDS or not isinstance(payload, dict):
            raise ValueError(f"not a command of a known kind: {kind!r}")
        return command


async def with_retry(op: Callable[[], Awaitable[T]], deadline: float, what: str) -> T:
    """Run a Redis call, retrying with backoff while Redis is down, until `deadline` (monotonic)."""
    delay = 0.05
    while True:
        try:
            return await op()
        except REDIS_DOWN:
            if time.monotonic() + delay > deadline:
                raise RouteError("store_unavailable", f"Redis is unreachable ({what})") from None
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)


class Router:
    """The gateway's side: send a command to a worker and stream its reply events."""

    def __init__(
        self,
        redis: Any,
        registry: WorkerRegistry,
        *,
        prefix: str = "echo:",
        timeout_s: float,
        poll_s: float = 0.5,
    ) -> None:
        self._redis = redis
        self._registry = registry
        self._p = prefix
        self.timeout_s = timeout_s
        self.poll_s = poll_s

    async def call(self, worker_id: str, command: Command) -> AsyncIterator[dict[str, Any]]:
        """Deliver `command` and yield the worker's events (RouteError: worker lost, timeout, no Redis)."""
        deadline = time.monotonic() + self.timeout_s
        inbox = f"{self._p}inbox:{worker_id}"
        fields = command.to_fields()
        await with_retry(
            lambda: self._redis.xadd(inbox, fields, maxlen=INBOX_MAXLEN, approximate=True), deadline, "send"
        )
        reply, last = f"{self._p}reply:{command.request_id}", "0-0"
        seen: set[str] = set()
        while True:
            try:
                got = await self._redis.xread({reply: last}, count=64, block=int(self.poll_s * 1000))
            except REDIS_DOWN:
                if time.monotonic() > deadline:
                    raise RouteError("store_unavailable", "Redis is unreachable (reply)") from None
                await asyncio.sleep(self.poll_s)
                continue
            if got:
                deadline = time.monotonic() + self.timeout_s  # the worker is making progress
                for entry_id, entry in got[0][1]:
                    last = entry_id
                    tag = entry.get("tag")
                    if tag is not None:
                        if tag in seen:
                            continue  # a reply written twice (its write was retried)
                        seen.add(tag)
                    event = json.loads(entry["event"])
                    if event.get("type") == END:
                        return
                    yield event
                continue
            try:
                alive = await self._registry.alive(worker_id)
            except REDIS_DOWN:
                alive = True  # unknown: keep waiting until the deadline
            if not alive:
                raise RouteError("worker_lost", f"worker {worker_id} stopped while handling {command.kind}")
            if time.monotonic() > deadline:
                raise RouteError("route_timeout", f"worker {worker_id} did not answer {command.kind} in time")

    async def call_one(self, worker_id: str, command: Command) -> dict[str, Any] | None:
        """The first reply event of a command (None when it replies nothing)."""
        first = None
        async for event in self.call(worker_id, command):
            first = event if first is None else first
        return first


Handler = Callable[[Command], AsyncIterator[dict[str, Any]]]


class Inbox:
    """The worker's side: consume its inbox through the consumer group, once per command."""

    def __init__(
        self,
        redis: Any,
        worker_id: str,
        handle: Handler,
        *,
        prefix: str = "echo:",
        claim_idle_s: float = 30.0,
        block_s: float = 1.0,
    ) -> None:
        self._redis = redis
        self._handle = handle
        self._p = prefix
        self.stream = f"{prefix}inbox:{worker_id}"
        self.consumer = f"{worker_id}-{uuid.uuid4().hex[:8]}"  # this process's incarnation
        self.claim_idle_s = claim_idle_s
        self.block_s = block_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._group_ready = False
        self.handled = 0
        self.duplicates = 0

    async def run(self) -> None:
        """Read and dispatch commands until cancelled; Redis outages are waited out."""
        next_claim = 0.0
        while True:
            try:
                if not self._group_ready:
                    await self._create_group()
                if time.monotonic() >= next_claim:
                    await self._claim()
                    next_claim = time.monotonic() + self.claim_idle_s / 2
                got = await self._redis.xreadgroup(
                    GROUP, self.consumer, {self.stream: ">"}, count=16, block=int(self.block_s * 1000)
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._group_ready = False  # Redis restarted without the stream
                continue
            except REDIS_DOWN:
                self._group_ready = False
                await asyncio.sleep(0.5)
                continue
            for _, entries in got or []:
                for entry_id, fields in entries:
                    self._spawn(entry_id, fields)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _create_group(self) -> None:
        try:
            await self._redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _claim(self) -> None:
        """Take over entries another consumer (an earlier incarnation) left pending too long."""
        start = "0-0"
        while True:
            result = await self._redis.xautoclaim(
                self.stream, GROUP, self.consumer, int(self.claim_idle_s * 1000), start_id=start, count=32
            )
            start, entries = result[0], result[1]
            for entry_id, fields in entries:
                if fields:
                    self._spawn(entry_id, fields)
            if start in ("0-0", b"0-0"):
                return

    def _spawn(self, entry_id: str, fields: dict[str, str]) -> None:
        task = asyncio.create_task(self._process(entry_id, fields), name=f"command-{entry_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            command = Command.from_fields(fields)
        except ValueError as exc:
            log.warning("dropping inbox entry %s: %s", entry_id, exc)
            await self._ack(entry_id)
            return
        done = f"{self._p}done:{command.request_id}"
        fresh = await with_retry(
            lambda: self._redis.set(done, self.consumer, nx=True, ex=DONE_TTL_S), self._patience(), "claim"
        )
        if not fresh:
            self.duplicates += 1
            owner = await self._redis.get(done)
            if owner == self.consumer:
                return  # being handled in this process already; it acknowledges when done
            if not await self._finished(command):  # its handler died with an earlier incarnation
                await self._reply(
                    command,
                    0,
                    {
                        "type": "error",
                        "code": "worker_restarted",
                        "message": ("the worker restarted while handling this request; its session is gone"),
                    },
                )
                await self._reply(command, 1, {"type": END})
            await self._ack(entry_id)
            return
        n = 0
        try:
            async for event in self._handle(command):
                await self._reply(command, n, event)
                n += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("command %s (%s) failed", command.request_id, command.kind)
            error = {"type": "error", "code": "internal_error", "message": str(exc)[:200]}
            await self._reply(command, n, error)
            n += 1
        await self._reply(command, n, {"type": END})
        self.handled += 1
        await self._ack(entry_id)

    async def _finished(self, command: Command) -> bool:
        last = await self._redis.xrevrange(f"{self._p}reply:{command.request_id}", count=1)
        return bool(last) and json.loads(last[0][1]["event"]).get("type") == END

    async def _reply(self, command: Command, n: int, event: dict[str, Any]) -> None:
        """Append the `n`-th reply event. A write retried after a connection error may land
        twice; its tag (this incarnation, n) lets the reader drop the copy."""
        key = f"{self._p}reply:{command.request_id}"
        data = {"event": json.dumps(event, separators=(",", ":")), "tag": f"{self.consumer}:{n}"}

        async def write() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xadd(key, data)
                pipe.expire(key, REPLY_TTL_S)
                await pipe.execute()

        try:
            await with_retry(write, self._patience(), "reply")
        except RouteError:
            log.warning("reply to %s lost: Redis stayed down", command.request_id)

    async def _ack(self, entry_id: str) -> None:
        try:
            await with_retry(lambda: self._redis.xack(self.stream, GROUP, entry_id), self._patience(), "ack")
        except RouteError:
            log.warning("could not acknowledge %s; it will be claimed again", entry_id)

    @staticmethod
    def _patience() -> float:
        return time.monotonic() + 60.0
