"""Session registry, quotas, rate limits and Q&A history: in-process or Redis, one interface.

Redis layout (every key under `prefix`, default `echo:`):
- `session:{id}` hash {key_id, worker, created}, expiring `ttl_s` after the last heartbeat;
- `key:{key_id}:sessions` sorted set of session ids scored by their expiry (live count);
- `key:{key_id}:q:{minute}` counter of questions in that minute (fixed-window limit);
- `history:{id}` stream of {response_id, question, answer, at}, trimmed to `maxlen`
  and kept `history_ttl_s` after its last entry so a reconnect can replay it.
Media never goes through the store.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class HistoryRecord:
    """One answered (or failed) question."""

    response_id: str
    question: str
    answer: str
    at: float


class Store(Protocol):
    """What the server needs from shared state."""

    async def register_session(self, session_id: str, key_id: str, worker: str, ttl_s: float) -> None: ...
    async def reserve_session(
        self, session_id: str, key_id: str, worker: str, ttl_s: float, limit: int
    ) -> bool: ...
    async def heartbeat(self, session_id: str, key_id: str, ttl_s: float) -> None: ...
    async def unregister_session(self, session_id: str, key_id: str) -> None: ...
    async def session_alive(self, session_id: str) -> bool: ...
    async def live_sessions(self, key_id: str) -> int: ...
    async def take_question(self, key_id: str, per_minute: int) -> bool: ...
    async def append_history(self, session_id: str, record: HistoryRecord, maxlen: int) -> None: ...
    async def history(self, session_id: str, limit: int) -> list[HistoryRecord]: ...
    async def epoch(self) -> str: ...
    async def close(self) -> None: ...


class MemoryStore:
    """The embedded default: one process, no Redis."""

    def __init__(self, clock: Callable[[], float] = time.time, history_ttl_s: float = 86_400.0) -> None:
        self._clock = clock
        self._sessions: dict[str, tuple[str, float]] = {}  # id → (key_id, expiry)
        self._questions: dict[tuple[str, int], int] = defaultdict(int)
        self._history: dict[str, deque[HistoryRecord]] = {}
        self._history_expiry: dict[str, float] = {}
        self.history_ttl_s = history_ttl_s

    async def register_session(self, session_id: str, key_id: str, worker: str, ttl_s: float) -> None:
        self._sessions[session_id] = (key_id, self._clock() + ttl_s)

    async def reserve_session(
        self, session_id: str, key_id: str, worker: str, ttl_s: float, limit: int
    ) -> bool:
        """Register the session if its key has fewer than `limit` live ones (one step, no await)."""
        now = self._clock()
        live = sum(1 for k, exp in self._sessions.values() if k == key_id and exp > now)
        if live >= limit:
            return False
        self._sessions[session_id] = (key_id, now + ttl_s)
        return True

    async def heartbeat(self, session_id: str, key_id: str, ttl_s: float) -> None:
        if session_id in self._sessions:
            self._sessions[session_id] = (key_id, self._clock() + ttl_s)

    async def unregister_session(self, session_id: str, key_id: str) -> None:
        self._sessions.pop(session_id, None)

    async def session_alive(self, session_id: str) -> bool:
        entry = self._sessions.get(session_id)
        return entry is not None and entry[1] > self._clock()

    async def live_sessions(self, key_id: str) -> int:
        now = self._clock()
        for sid in [s for s, (_, exp) in self._sessions.items() if exp <= now]:
            del self._sessions[sid]
        return sum(1 for k, _ in self._sessions.values() if k == key_id)

    async def take_question(self, key_id: str, per_minute: int) -> bool:
        minute = int(self._clock() // 60)
        for old in [k for k in self._questions if k[1] < minute - 1]:
            del self._questions[old]
        self._questions[(key_id, minute)] += 1
        return self._questions[(key_id, minute)] <= per_minute

    async def append_history(self, session_id: str, record: HistoryRecord, maxlen: int) -> None:
        self._expire_history()
        items = self._history.setdefault(session_id, deque(maxlen=maxlen))
        items.append(record)
        self._history_expiry[session_id] = self._clock() + self.history_ttl_s

    async def history(self, session_id: str, limit: int) -> list[HistoryRecord]:
        self._expire_history()
        items = list(self._history.get(session_id, ()))
        return items[-limit:] if limit > 0 else []

    async def epoch(self) -> str:
        return "memory"  # never restarts under a live process

    def _expire_history(self) -> None:
        now = self._clock()
        for sid in [s for s, exp in self._history_expiry.items() if exp <= now]:
            self._history.pop(sid, None)
            del self._history_expiry[sid]

    async def close(self) -> None:
        return None


#: Check a key's live sessions against its quota and register the new one, atomically.
#: KEYS: the key's session set, the session hash; ARGV: session id, key id, worker, now, ttl_s, limit.
RESERVE_SESSION = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[6]) then
  return 0
end
redis.call('HSET', KEYS[2], 'key_id', ARGV[2], 'worker', ARGV[3])
redis.call('HSETNX', KEYS[2], 'created', ARGV[4])
redis.call('PEXPIRE', KEYS[2], math.floor(tonumber(ARGV[5]) * 1000))
redis.call('ZADD', KEYS[1], tonumber(ARGV[4]) + tonumber(ARGV[5]), ARGV[1])
return 1
"""


class RedisStore:
    """Shared state in a Redis server (`redis_url`), for several workers and gateways."""

    def __init__(self, url: str, *, prefix: str = "echo:", history_ttl_s: float = 86_400.0) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError as exc:  # pragma: no cover - redis is a declared dependency
            raise RuntimeError("RedisStore needs the 'redis' package: pip install redis") from exc
        self._redis: Any = aioredis.from_url(url, decode_responses=True)
        self._p = prefix
        self.history_ttl_s = history_ttl_s
        self._workers: dict[str, str] = {}  # sessions this process registered → their worker
        self._reserve = self._redis.register_script(RESERVE_SESSION)

    @property
    def redis(self) -> Any:
        """The client, shared with the worker registry and the router."""
        return self._redis

    @property
    def prefix(self) -> str:
        return self._p

    async def epoch(self) -> str:
        """The Redis server's run id: it changes when Redis restarts (and may have lost data)."""
        info = await self._redis.info("server")
        return str(info.get("run_id", ""))

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def register_session(self, session_id: str, key_id: str, worker: str, ttl_s: float) -> None:
        """(Re)write the session's record: a heartbeat after a Redis restart recreates it."""
        self._workers[session_id] = worker
        now = time.time()
        key = f"{self._p}session:{session_id}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"key_id": key_id, "worker": worker})
            pipe.hsetnx(key, "created", now)
            pipe.pexpire(key, int(ttl_s * 1000))
            pipe.zadd(f"{self._p}key:{key_id}:sessions", {session_id: now + ttl_s})
            await pipe.execute()

    async def reserve_session(
        self, session_id: str, key_id: str, worker: str, ttl_s: float, limit: int
    ) -> bool:
        """Register the session if its key has fewer than `limit` live ones: one Lua script, atomic."""
        keys = [f"{self._p}key:{key_id}:sessions", f"{self._p}session:{session_id}"]
        ok = await self._reserve(
            keys=keys, args=[session_id, key_id, worker, repr(time.time()), ttl_s, limit]
        )
        if ok:
            self._workers[session_id] = worker
        return bool(ok)

    async def heartbeat(self, session_id: str, key_id: str, ttl_s: float) -> None:
        await self.register_session(session_id, key_id, self._workers.get(session_id, ""), ttl_s)

    async def unregister_session(self, session_id: str, key_id: str) -> None:
        self._workers.pop(session_id, None)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(f"{self._p}session:{session_id}")
            pipe.zrem(f"{self._p}key:{key_id}:sessions", session_id)
            await pipe.execute()

    async def session_alive(self, session_id: str) -> bool:
        return bool(await self._redis.exists(f"{self._p}session:{session_id}"))

    async def live_sessions(self, key_id: str) -> int:
        key = f"{self._p}key:{key_id}:sessions"
        now = time.time()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zcard(key)
            _, count = await pipe.execute()
        return int(count)

    async def take_question(self, key_id: str, per_minute: int) -> bool:
        key = f"{self._p}key:{key_id}:q:{int(time.time() // 60)}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 120)
            count, _ = await pipe.execute()
        return int(count) <= per_minute

    async def append_history(self, session_id: str, record: HistoryRecord, maxlen: int) -> None:
        key = f"{self._p}history:{session_id}"
        fields = {
            "response_id": record.response_id,
            "question": record.question,
            "answer": record.answer,
            "at": repr(record.at),
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(key, fields, maxlen=maxlen, approximate=False)
            pipe.expire(key, int(self.history_ttl_s))
            await pipe.execute()

    async def history(self, session_id: str, limit: int) -> list[HistoryRecord]:
        if limit <= 0:
            return []
        entries = await self._redis.xrevrange(f"{self._p}history:{session_id}", count=limit)
        records = [
            HistoryRecord(f["response_id"], f["question"], f["answer"], float(f["at"])) for _, f in entries
        ]
        return sorted(records, key=lambda r: r.at)  # entries repaired after an outage come in late

    async def close(self) -> None:
        await self._redis.aclose()
