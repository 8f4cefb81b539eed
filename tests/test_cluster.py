"""Scale-out with a real Redis: a gateway, two workers, routed commands, worker loss, Redis restarts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiortc import RTCPeerConnection, RTCSessionDescription

from echo_core.config import SieveConfig, StreamConfig
from echo_core.model.backend import OmniBackend
from echo_core.sieve import CS2
from echo_core.stream.runtime import StreamModel
from echo_lab.launch.local_redis import LocalRedis
from server.app import EchoServer
from server.config import ServerConfig, ServiceConfig
from server.gateway import Gateway
from server.routing import Command
from tests.media_tracks import ColourTrack, ToneTrack
from tests.test_server import KEY, Client, stream_to
from tests.waiting import wait_ingested

pytestmark = pytest.mark.e2e

SECRET = "cluster-test-secret-0123456789"


def cluster_config(
    redis_url: str, mode: str, worker_id: str | None = None, **server: object
) -> ServiceConfig:
    return ServiceConfig(
        stream=StreamConfig(cache_budget=256, keep=0.5, max_new_tokens=3),
        server=ServerConfig(
            port=0,
            mode=mode,
            worker_id=worker_id,
            api_keys=[KEY],
            token_secret=SECRET,
            redis_url=redis_url,
            worker_ttl_s=1.0,
            route_timeout_s=10.0,
            max_sessions=2,
            max_sessions_per_key=10,
            stats_interval_s=0.2,
            **server,  # type: ignore[arg-type]
        ),
    )


@dataclass
class Cluster:
    redis: LocalRedis
    gateway: Gateway
    workers: dict[str, EchoServer]


@pytest_asyncio.fixture
async def cluster(backend: OmniBackend, cs2: CS2) -> AsyncIterator[Cluster]:
    redis = LocalRedis().start()
    model = StreamModel(backend, cs2, SieveConfig(scoring="attention"))
    workers = {wid: EchoServer(cluster_config(redis.url, "worker", wid), model=model) for wid in ("w1", "w2")}
    for worker in workers.values():
        await worker.start()
    gateway = Gateway(cluster_config(redis.url, "gateway"), watch_s=0.2)
    await gateway.start()
    yield Cluster(redis, gateway, workers)
    await gateway.stop()
    for worker in workers.values():
        if worker.sessions.engine is not None and worker.sessions.engine.alive:
            await worker.stop()
    redis.close()


async def crash(worker: EchoServer) -> None:
    """Cut a worker off the way a killed process is: no more beats, no inbox, no goodbye.

    (Its sessions stay in this test process until the fixture stops it; nothing reaches them.)
    """
    assert worker.node is not None
    for task in worker.node._tasks + worker._tasks:
        task.cancel()
    await asyncio.gather(*worker.node._tasks, *worker._tasks, return_exceptions=True)
    await worker.node.inbox.stop()


async def streaming_via(cluster: Cluster, client: Client) -> tuple[RTCPeerConnection, str, EchoServer]:
    """Create a session through the gateway and stream to it: (peer, owner id, owner)."""
    await client.create()
    pc = await stream_to(client)
    owner_id, owner = next((w, s) for w, s in cluster.workers.items() if client.session_id in s.sessions.live)
    return pc, owner_id, owner


@pytest.mark.asyncio
async def test_gateway_places_sessions_and_routes_everything(cluster: Cluster) -> None:
    gw = cluster.gateway
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{gw.url}/ws") as ws1, http.ws_connect(f"{gw.url}/ws") as ws2:
            a, b = Client(ws1), Client(ws2)
            await a.create()
            await b.create()
            owners = {
                w for w, srv in cluster.workers.items() for s in (a, b) if s.session_id in srv.sessions.live
            }
            assert owners == {"w1", "w2"}, "the second session goes to the less loaded worker"
            stats = await a.recv("window.stats")  # relayed from the worker through Redis
            assert stats["session_id"] == a.session_id and stats["cache_budget"] == 256
            pc = await stream_to(a)  # offer routed; media goes straight to the worker
            owner = next(srv for srv in cluster.workers.values() if a.session_id in srv.sessions.live)
            await wait_ingested(owner.sessions.live[a.session_id].session)
            await a.send(type="session.update", token=a.token, settings={"window_s": 20}, event_id="u1")
            updated = await a.recv("session.updated")
            assert updated["event_id"] == "u1" and updated["settings"]["window_s"] == 20
            await a.send(type="response.create", token=a.token, question="what colour", event_id="q1")
            created = await a.recv("response.created")
            done = await a.recv("response.done")
            assert done["status"] == "completed" and done["response_id"] == created["response_id"]
            assert 0 < done["usage"]["tail_tokens"] <= done["usage"]["av_tokens"]  # read the open chunk
            await a.send(type="history.get", token=a.token)
            items = (await a.recv("history"))["items"]
            assert [i["response_id"] for i in items] == [done["response_id"]]
            # errors from the worker come back with the client's event id
            await a.send(type="session.update", token=a.token, settings={"keep": 7}, event_id="bad")
            error = await a.recv("session.updated")
            assert (
                error["type"] == "error"
                and error["code"] == "invalid_settings"
                and error["event_id"] == "bad"
            )
            # a third and fourth session fit (2 per worker); a fifth is refused explicitly
            async with http.ws_connect(f"{gw.url}/ws") as ws3, http.ws_connect(f"{gw.url}/ws") as ws4:
                await Client(ws3).create()
                await Client(ws4).create()
                async with http.ws_connect(f"{gw.url}/ws") as ws5:
                    refused = await Client(ws5).create()
                    assert refused["type"] == "error" and refused["code"] == "server_busy"
            await pc.close()
        async with http.get(f"{gw.url}/healthz") as r:
            body = await r.json()
            assert r.status == 200 and body["mode"] == "gateway" and body["workers"] == 2
        async with http.get(f"{gw.url}/metrics") as r:
            assert "echo_workers 2" in await r.text()


@pytest.mark.asyncio
async def test_whip_and_http_asks_through_the_gateway(cluster: Cluster) -> None:
    """A WHIP client and an HTTP asker talk to the gateway only; media goes to the worker."""
    gw = cluster.gateway
    pc = RTCPeerConnection()
    pc.addTrack(ColourTrack())
    pc.addTrack(ToneTrack())
    await pc.setLocalDescription(await pc.createOffer())
    auth = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as http:
        sdp = {"Content-Type": "application/sdp"}
        async with http.post(f"{gw.url}/whip", data=pc.localDescription.sdp, headers={**sdp, **auth}) as r:
            assert r.status == 201, await r.text()
            location, token = r.headers["Location"], r.headers["X-Echo-Session-Token"]
            await pc.setRemoteDescription(RTCSessionDescription(sdp=await r.text(), type="answer"))
        sid = location.rsplit("/", 1)[1]
        owner = next(srv for srv in cluster.workers.values() if sid in srv.sessions.live)
        live = owner.sessions.live[sid]
        await wait_ingested(live.session, 1)
        frag = {"Content-Type": "application/trickle-ice-sdpfrag"}
        candidate = "a=mid:0\r\na=candidate:9 1 udp 2122260223 127.0.0.1 45999 typ host\r\n"
        async with http.patch(f"{gw.url}{location}", data=candidate, headers={**frag, **auth}) as r:
            assert r.status == 204
        assert "127.0.0.1 45999 typ host" in live.pc.remoteDescription.sdp
        async with http.patch(
            f"{gw.url}{location}", data="a=candidate:junk\r\n", headers={**frag, **auth}
        ) as r:
            assert r.status == 400 and (await r.json())["code"] == "bad_candidate"  # the worker's verdict
        ask = f"{gw.url}/v1/sessions/{sid}/ask"
        async with http.post(
            ask, json={"question": "what colour"}, headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            body = await r.text()
        events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
        assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.done"
        assert events[-1]["status"] == "completed"
        assert 0 < events[-1]["usage"]["tail_tokens"] <= events[-1]["usage"]["av_tokens"]  # the open chunk
        async with http.post(ask, json={"question": "q"}) as r:
            assert r.status == 401
        async with http.post(ask, json={"question": 3}, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 400 and (await r.json())["code"] == "invalid_field"
        async with http.get(f"{gw.url}/v1/sessions/{sid}/ask") as r:
            assert r.status == 405
        async with http.delete(f"{gw.url}{location}", headers=auth) as r:
            assert r.status == 200
        assert sid not in owner.sessions.live
        async with http.post(ask, json={"question": "q"}, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 404 and (await r.json())["code"] == "session_not_found"
        history = await cluster.gateway.store.history(sid, 10)
        assert [h.response_id for h in history] == [events[0]["response_id"]]
    await pc.close()


@pytest.mark.asyncio
async def test_worker_loss_is_reported_and_a_reconnect_lands_on_a_live_worker(cluster: Cluster) -> None:
    gw = cluster.gateway
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{gw.url}/ws") as ws:
        client = Client(ws)
        pc, owner_id, owner = await streaming_via(cluster, client)
        await wait_ingested(owner.sessions.live[client.session_id].session)
        await client.send(type="response.create", token=client.token, question="what colour")
        first = await client.recv("response.done")
        assert first["status"] == "completed"
        old_token, old_id = client.token, client.session_id
        started = time.monotonic()
        await crash(owner)
        lost = await client.recv("no such event", timeout=10)  # the next error
        detected_s = time.monotonic() - started
        assert lost["code"] == "worker_lost"
        assert detected_s <= 1.0 + 2.0, f"worker loss took {detected_s:.1f} s to reach the client"
        await client.send(type="response.create", token=old_token, question="still there?")
        assert (await client.recv("response.done"))["code"] == "worker_lost"  # explicit, not silent
        await pc.close()
        created = await client.create()  # reconnect: a new session on the live worker
        survivor = next(w for w in cluster.workers if w != owner_id)
        assert (
            created["type"] == "session.created"
            and client.session_id in cluster.workers[survivor].sessions.live
        )
        await client.send(type="history.get", token=old_token)
        history = await client.recv("history")
        assert history["session_id"] == old_id and [i["response_id"] for i in history["items"]] == [
            first["response_id"]
        ]


@pytest.mark.asyncio
async def test_a_command_delivered_twice_runs_once(cluster: Cluster) -> None:
    gw = cluster.gateway
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{gw.url}/ws") as ws:
        client = Client(ws)
        pc, owner_id, owner = await streaming_via(cluster, client)
        await wait_ingested(owner.sessions.live[client.session_id].session)
        command = Command("ask", client.session_id, {"question": "what colour", "window_s": None})
        r = aioredis.from_url(cluster.redis.url, decode_responses=True)
        try:
            for _ in range(2):  # at-least-once delivery: the same command id twice
                await r.xadd(f"echo:inbox:{owner_id}", command.to_fields())
            first = [e async for e in gw.sessions.router.call(owner_id, command)]  # sends it a third time
            second = [e async for e in gw.sessions.router.call(owner_id, command)]
        finally:
            await r.aclose()
        assert first[0]["type"] == "response.created" and first[-1]["type"] == "response.done"
        assert first == second, "a duplicate reads the same reply"
        await client.send(type="history.get", token=client.token)
        items = (await client.recv("history"))["items"]
        assert len(items) == 1, "answered once, recorded once"
        assert owner.node is not None and owner.node.inbox.duplicates >= 3
        await pc.close()


@pytest.mark.asyncio
async def test_a_reply_written_twice_is_read_once(cluster: Cluster) -> None:
    """A worker's reply write retried after a lost connection may land twice; the gateway drops the copy."""
    command = Command("ask", "s", {"question": "q", "window_s": None})
    r = aioredis.from_url(cluster.redis.url, decode_responses=True)
    try:
        key = f"echo:reply:{command.request_id}"
        done = json.dumps({"type": "response.done", "response_id": "x", "answer": "a", "status": "completed"})
        for tag, event in (("w-1:0", done), ("w-1:0", done), ("w-1:1", json.dumps({"type": "_end"}))):
            await r.xadd(key, {"event": event, "tag": tag})
        events = [e async for e in cluster.gateway.sessions.router.call("nobody", command)]
    finally:
        await r.aclose()
    assert [e["type"] for e in events] == ["response.done"]


@pytest.mark.asyncio
async def test_a_stuck_entry_is_claimed_by_the_live_consumer(cluster: Cluster) -> None:
    """An entry read by a consumer that died before acknowledging it is re-run via XAUTOCLAIM."""
    worker = cluster.workers["w1"]
    assert worker.node is not None
    worker.node.inbox.claim_idle_s = 0.5
    command = Command("create", "", {"key_id": "k", "settings": {}})
    r = aioredis.from_url(cluster.redis.url, decode_responses=True)
    try:
        # stop the live consumer reading new entries, so only the ghost sees this one
        await r.xadd("echo:inbox:w1", command.to_fields())
        await r.xreadgroup("engine", "ghost", {"echo:inbox:w1": ">"}, count=10)
        pending = await r.xpending("echo:inbox:w1", "engine")
        assert pending["pending"] >= 1
        reply = await cluster.gateway.sessions.router.call_one(
            "w1", Command("attach", "nope")
        )  # the consumer is live
        assert reply is not None and reply["code"] == "session_not_found"
        for _ in range(100):
            events = await r.xrange(f"echo:reply:{command.request_id}")
            if events:
                break
            await asyncio.sleep(0.1)
        first = json.loads(events[0][1]["event"])
        assert first["type"] == "session.created" and first["session_id"] in worker.sessions.live
    finally:
        await r.aclose()


@pytest.mark.asyncio
async def test_sessions_survive_a_redis_restart_and_history_is_repaired(cluster: Cluster) -> None:
    gw = cluster.gateway
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{gw.url}/ws") as ws:
        client = Client(ws)
        pc, owner_id, owner = await streaming_via(cluster, client)
        session = owner.sessions.live[client.session_id].session
        await wait_ingested(session)
        await client.send(type="response.create", token=client.token, question="what colour")
        before = await client.recv("response.done")
        chunks = session.stats.chunks_ingested
        cluster.redis.restart()  # no persistence: Redis comes back empty
        await wait_ingested(session, chunks + 1)  # media never stopped
        # the gateway waits out the restart instead of calling the worker lost
        await client.send(type="response.create", token=client.token, question="and now")
        after = await client.recv("response.done")
        assert after["type"] == "response.done" and after["status"] == "completed", after
        for _ in range(100):  # the worker's beat re-registers it and repairs the history
            await client.send(type="history.get", token=client.token)
            ids = [i["response_id"] for i in (await client.recv("history"))["items"]]
            if len(ids) == 2:
                break
            await asyncio.sleep(0.1)
        assert ids == [before["response_id"], after["response_id"]]
        assert owner.sessions.journal.repaired >= 1
        assert await gw.sessions.registry.alive(owner_id)
        await pc.close()
