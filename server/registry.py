"""The worker registry in Redis: who serves, with what room, and who owns each session.

Layout (under the store's prefix, default `echo:`):
- `worker:{id}` hash {capacity, load, lag_s, started}, expiring `ttl_s` after the last beat;
- `workers` sorted set of worker ids scored by the expiry of their last beat;
- `session:{id}` hash (written by the store) gains `state` = `lost` when its worker is lost.

A worker is alive while its hash exists: a worker that stops beating is gone at most
`ttl_s` later, which bounds how long worker loss takes to detect.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WorkerInfo:
    """One worker's last beat."""

    worker_id: str
    capacity: int
    load: int
    lag_s: float = 0.0
    started: float = 0.0

    @property
    def room(self) -> int:
        return self.capacity - self.load


@dataclass(frozen=True)
class SessionOwner:
    """Where a session lives and whether its worker is known lost."""

    worker_id: str
    key_id: str
    lost: bool


class WorkerRegistry:
    """Worker records and session ownership, on the same Redis client as the store."""

    def __init__(self, redis: Any, prefix: str = "echo:") -> None:
        self.redis = redis
        self.prefix = prefix
        self._redis = redis
        self._p = prefix

    async def beat(self, info: WorkerInfo, ttl_s: float) -> None:
        """Publish (or refresh) a worker's record; it expires `ttl_s` after this beat."""
        key = f"{self._p}worker:{info.worker_id}"
        fields = {"capacity": info.capacity, "load": info.load, "lag_s": info.lag_s, "started": info.started}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, int(ttl_s * 1000))
            pipe.zadd(f"{self._p}workers", {info.worker_id: time.time() + ttl_s})
            await pipe.execute()

    async def leave(self, worker_id: str) -> None:
        """Withdraw a worker at a clean shutdown."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(f"{self._p}worker:{worker_id}")
            pipe.zrem(f"{self._p}workers", worker_id)
            await pipe.execute()

    async def alive(self, worker_id: str) -> bool:
        return bool(await self._redis.exists(f"{self._p}worker:{worker_id}"))

    async def live_workers(self) -> list[WorkerInfo]:
        """Every worker whose record has not expired, least loaded (by share of capacity) first."""
        index = f"{self._p}workers"
        await self._redis.zremrangebyscore(index, "-inf", time.time())
        ids = await self._redis.zrange(index, 0, -1)
        async with self._redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.hgetall(f"{self._p}worker:{worker_id}")
            records = await pipe.execute()
        workers = [
            WorkerInfo(wid, int(r["capacity"]), int(r["load"]), float(r["lag_s"]), float(r["started"]))
            for wid, r in zip(ids, records, strict=True)
            if r
        ]
        return sorted(workers, key=lambda w: (w.load / max(1, w.capacity), w.lag_s, w.worker_id))

    async def reserve(self, worker_id: str) -> bool:
        """Count a session about to be placed on a worker before its next beat does (False: full or gone).

        Two gateways (or two connections of one) placing sessions at the same moment would
        otherwise both read the same load and pick the same worker.
        """
        return bool(await self._redis.eval(_RESERVE, 1, f"{self._p}worker:{worker_id}"))

    async def owner(self, session_id: str) -> SessionOwner | None:
        """The worker holding a session (None when the session is unknown or expired)."""
        record = await self._redis.hgetall(f"{self._p}session:{session_id}")
        if not record or "worker" not in record:
            return None
        return SessionOwner(record["worker"], record.get("key_id", ""), record.get("state") == "lost")

    async def mark_lost(self, session_id: str, key_id: str) -> None:
        """Record that a session's worker is gone and free its place in the key's quota."""
        key = f"{self._p}session:{session_id}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.exists(key)
            pipe.zrem(f"{self._p}key:{key_id}:sessions", session_id)
            exists, _ = await pipe.execute()
        if exists:
            await self._redis.hset(key, "state", "lost")


#: Take one slot of a live worker with room: 1, or 0 when it is full or its record expired
#: (never recreate a record without its TTL).
_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local capacity = tonumber(redis.call('HGET', KEYS[1], 'capacity') or '0')
local load = tonumber(redis.call('HGET', KEYS[1], 'load') or '0')
if load >= capacity then return 0 end
redis.call('HINCRBY', KEYS[1], 'load', 1)
return 1
"""
