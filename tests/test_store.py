"""Session registry, quotas, rate limits and history: the in-process store and a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from server.store import HistoryRecord, MemoryStore, RedisStore, Store

pytestmark = pytest.mark.e2e


@pytest_asyncio.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    url = request.getfixturevalue("redis_url")
    s = RedisStore(url, prefix=f"test-{uuid.uuid4().hex[:8]}:")
    assert await s.ping()
    yield s
    await s.close()


@pytest.mark.asyncio
async def test_registry_and_quota(store: Store) -> None:
    await store.register_session("s1", "k", "w1", ttl_s=5)
    await store.register_session("s2", "k", "w1", ttl_s=5)
    await store.register_session("s3", "other", "w1", ttl_s=5)
    assert await store.live_sessions("k") == 2 and await store.live_sessions("other") == 1
    assert await store.session_alive("s1") and not await store.session_alive("nope")
    await store.unregister_session("s1", "k")
    assert await store.live_sessions("k") == 1 and not await store.session_alive("s1")


@pytest.mark.asyncio
async def test_sessions_expire_without_heartbeat(store: Store) -> None:
    await store.register_session("a", "k2", "w", ttl_s=0.3)
    await store.register_session("b", "k2", "w", ttl_s=0.3)
    await asyncio.sleep(0.15)
    await store.heartbeat("b", "k2", ttl_s=2.0)
    await asyncio.sleep(0.3)
    assert not await store.session_alive("a") and await store.session_alive("b")
    assert await store.live_sessions("k2") == 1


@pytest.mark.asyncio
async def test_question_rate_limit(store: Store) -> None:
    results = [await store.take_question("k3", per_minute=3) for _ in range(5)]
    assert results[:3] == [True, True, True] and results[3:] == [False, False]
    assert await store.take_question("k4", per_minute=3)


@pytest.mark.asyncio
async def test_history_is_capped_and_ordered(store: Store) -> None:
    for i in range(7):
        await store.append_history("h1", HistoryRecord(f"r{i}", f"q{i}", f"a{i}", 100.0 + i), maxlen=5)
    items = await store.history("h1", limit=10)
    assert [r.response_id for r in items] == ["r2", "r3", "r4", "r5", "r6"]
    assert items[-1] == HistoryRecord("r6", "q6", "a6", 106.0)
    assert [r.response_id for r in await store.history("h1", limit=2)] == ["r5", "r6"]
    assert await store.history("h2", limit=10) == [] and await store.history("h1", limit=0) == []


def test_local_redis_leaves_no_working_directory_behind() -> None:
    from echo_lab.launch.local_redis import LocalRedis

    with LocalRedis() as redis:
        workdir = redis.workdir
        assert workdir.is_dir()
        redis.restart()  # a restart keeps the directory
        assert workdir.is_dir()
    assert not workdir.exists()
