"""Hostile clients (issue 17): every row of the review, against a real server (and real Redis).

Each test names the row it guards. Servers listen on loopback, on free ports.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from echo_core.config import SieveConfig, StreamConfig
from echo_core.errors import ConfigError
from echo_core.model.backend import OmniBackend
from echo_core.sieve import CS2
from echo_core.stream.runtime import StreamModel
from server.app import EchoServer
from server.auth import key_id
from server.config import ServerConfig, ServiceConfig, load_service_config
from server.store import RedisStore
from tests.media_tracks import ColourTrack, ToneTrack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
KEY = "hostile-key-0123456789"
OTHER = "hostile-other-0123456789"
SECRET = "a-test-secret-of-more-than-16-chars"


@asynccontextmanager
async def running(
    backend: OmniBackend, cs2: CS2, *, budget: int = 128, **server: Any
) -> AsyncIterator[EchoServer]:
    """A started EchoServer on a free loopback port with `server` settings; stopped after."""
    model = StreamModel(backend, cs2, SieveConfig(scoring="attention"))
    settings: dict[str, Any] = {"port": 0, "api_keys": [KEY, OTHER], "token_secret": SECRET, **server}
    config = ServiceConfig(
        stream=StreamConfig(cache_budget=budget, max_new_tokens=2), server=ServerConfig(**settings)
    )
    srv = EchoServer(config, model=model)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def until(check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll `check` until it holds (the heartbeat's reaping and socket closes happen on their own)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


async def call(ws: aiohttp.ClientWebSocketResponse, kind: str, **fields: Any) -> dict[str, Any]:
    """Send one event; the first reply that is not `window.stats`."""
    await ws.send_str(json.dumps({"type": kind, **fields}))
    while True:
        msg = await asyncio.wait_for(ws.receive(), 20)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        event: dict[str, Any] = json.loads(msg.data)
        if event["type"] != "window.stats":
            return event


async def closed_with(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> int | None:
    """Read until the server closes the socket; its close code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return ws.close_code
    raise AssertionError("the server did not close the socket")


# ---------------------------------------------------------------- row 1: fail closed
def test_row1_exposed_address_fails_closed_with_published_secrets_or_no_tls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def server(**kw: Any) -> EchoServer:
        return EchoServer(ServiceConfig(server=ServerConfig(**kw)))

    exposed = {"host": "0.0.0.0", "api_keys": [KEY], "token_secret": SECRET}
    for bad, match in (
        ({"api_keys": ["demo-key-change-me"]}, "published demo key"),
        ({"token_secret": "change-this-shared-secret-in-production"}, "published placeholder"),
        ({"api_keys": ["short-key"]}, "at least 16"),
        ({}, "no TLS"),
    ):
        with pytest.raises(ConfigError, match=match):
            server(**{**exposed, **bad})
    with caplog.at_level("WARNING"):
        server(**exposed, allow_plaintext=True)
    assert "without TLS" in caplog.text
    # loopback (the demo) keeps the demo key and plain HTTP
    demo = load_service_config(ROOT / "configs" / "demo.yaml", ["server.port=0"])
    assert demo.server.api_keys == ["demo-key-change-me"]
    EchoServer(demo)


def test_row1_the_cli_refuses_an_exposed_demo_config() -> None:
    cmd = [sys.executable, "-m", "server.cli", "--config", "configs/demo.yaml", "server.host=0.0.0.0"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "published demo key" in done.stderr and "Traceback" not in done.stderr


def test_row1_cluster_config_takes_its_secrets_from_the_environment() -> None:
    path = ROOT / "configs" / "cluster.yaml"
    text = path.read_text()
    assert "demo-key-change-me" not in text and "change-this-shared-secret" not in text
    with pytest.raises(ConfigError, match="ECHO_API_KEY"):
        load_service_config(path, environ={})
    env = {"ECHO_API_KEY": "k" * 32, "ECHO_TOKEN_SECRET": "s" * 64}
    s = load_service_config(path, environ=env).server
    assert s.api_keys == ["k" * 32] and s.token_secret == "s" * 64
    with pytest.raises(ConfigError, match="no TLS"):  # as shipped it listens on 0.0.0.0
        EchoServer(load_service_config(path, environ=env))


# ------------------------------------------------------------ row 2: budget abuse
@pytest.mark.asyncio
async def test_row2_cache_budget_past_the_operator_maximum_is_invalid_settings(
    backend: OmniBackend, cs2: CS2
) -> None:
    async with (
        running(backend, cs2) as srv,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{srv.url}/ws") as ws,
    ):
        for budget in (129, 600_000, 10**12, 2**63, 0, -5):
            event = await call(ws, "session.create", api_key=KEY, settings={"cache_budget": budget})
            assert event["type"] == "error" and event["code"] == "invalid_settings", (budget, event)
            assert "128" in event["message"], event
        assert not srv.sessions.live
        event = await call(ws, "session.create", api_key=KEY, settings={"cache_budget": 128})
        assert event["type"] == "session.created" and event["settings"]["cache_budget"] == 128


# ------------------------------------------- row 3: sessions that never connect are reaped
@pytest.mark.asyncio
async def test_row3_a_session_whose_ice_never_connects_is_reaped_and_frees_its_quota(
    backend: OmniBackend, cs2: CS2
) -> None:
    async with (
        running(backend, cs2, connect_timeout_s=1.5, max_sessions_per_key=1) as srv,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{srv.url}/ws") as ws,
    ):
        created = await call(ws, "session.create", api_key=KEY)
        pc = RTCPeerConnection()  # offers, but never applies the answer: ICE never completes
        pc.addTrack(ColourTrack())
        pc.addTrack(ToneTrack())
        await pc.setLocalDescription(await pc.createOffer())
        answer = await call(ws, "webrtc.offer", token=created["token"], sdp=pc.localDescription.sdp)
        assert answer["type"] == "webrtc.answer"
        # end-of-candidates is accepted silently: the next reply is the quota refusal, not an error for it
        await ws.send_str(
            json.dumps({"type": "webrtc.candidate", "token": created["token"], "candidate": ""})
        )
        refused = await call(ws, "session.create", api_key=KEY)
        assert refused["code"] == "session_quota", refused
        await until(lambda: created["session_id"] not in srv.sessions.live)  # while the socket is attached
        assert srv.metrics.value("echo_sessions_reaped_total") == 1
        again = await call(ws, "session.create", api_key=KEY)
        assert again["type"] == "session.created", again
        await pc.close()


@pytest.mark.asyncio
async def test_row14_ice_candidates_per_session_are_capped(backend: OmniBackend, cs2: CS2) -> None:
    async with (
        running(backend, cs2, max_ice_candidates=2) as srv,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{srv.url}/ws") as ws,
    ):
        created = await call(ws, "session.create", api_key=KEY)
        pc = RTCPeerConnection()
        pc.addTrack(ColourTrack())
        await pc.setLocalDescription(await pc.createOffer())
        await call(ws, "webrtc.offer", token=created["token"], sdp=pc.localDescription.sdp)
        line = "candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host"
        for port in (9, 10):
            await ws.send_str(
                json.dumps(
                    {
                        "type": "webrtc.candidate",
                        "token": created["token"],
                        "candidate": line.format(port=port),
                    }
                )
            )
        refused = await call(ws, "webrtc.candidate", token=created["token"], candidate=line.format(port=11))
        assert refused["code"] == "too_many_candidates" and "limit 2" in refused["message"], refused
        await pc.close()


# ------------------------------------------- row 4: quotas are atomic in Redis
@pytest.mark.asyncio
async def test_row4_parallel_reservations_in_redis_never_overshoot(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix="echo-row4:")
    try:
        got = await asyncio.gather(*(store.reserve_session(f"s{i}", "k1", "w", 30.0, 4) for i in range(20)))
        assert sum(got) == 4 and await store.live_sessions("k1") == 4
        first = f"s{got.index(True)}"
        await store.unregister_session(first, "k1")
        await store.unregister_session(first, "k1")  # a second release frees nothing more
        assert await store.live_sessions("k1") == 3
    finally:
        await store.redis.delete(*[k async for k in store.redis.scan_iter("echo-row4:*")])
        await store.close()


@pytest.mark.asyncio
async def test_row4_parallel_creates_hold_the_key_quota_and_the_server_cap_with_redis(
    backend: OmniBackend, cs2: CS2, redis_url: str
) -> None:
    async with (
        running(
            backend,
            cs2,
            redis_url=redis_url,
            max_sessions_per_key=4,
            max_sessions=6,
            max_connections_per_address=64,
        ) as srv,
        aiohttp.ClientSession() as http,
    ):
        sockets = [await http.ws_connect(f"{srv.url}/ws") for _ in range(20)]
        try:
            replies = await asyncio.gather(
                *(call(ws, "session.create", api_key=KEY if i % 2 else OTHER) for i, ws in enumerate(sockets))
            )
            created = [r for r in replies if r["type"] == "session.created"]
            codes = sorted({r.get("code", "") for r in replies if r["type"] == "error"})
            per_key = {k: await srv.sessions.store.live_sessions(key_id(k)) for k in (KEY, OTHER)}
            assert len(created) == len(srv.sessions.live) == 6, (len(created), codes)
            assert max(per_key.values()) <= 4 and sum(per_key.values()) == 6, per_key
            assert set(codes) <= {"session_quota", "server_busy"}, codes
        finally:
            for ws in sockets:
                await ws.close()


# ------------------------------------------- rows 5 and 10: floods, caps and timeouts
@pytest.mark.asyncio
async def test_row5_a_flooding_socket_is_closed_and_a_chatty_invalid_one_too(
    backend: OmniBackend, cs2: CS2
) -> None:
    async with (
        running(backend, cs2, messages_per_second=20, message_burst=40, max_invalid_messages=8) as srv,
        aiohttp.ClientSession() as http,
    ):
        async with http.ws_connect(f"{srv.url}/ws") as ws:
            token = (await call(ws, "session.create", api_key=KEY))["token"]
            valid = json.dumps({"type": "response.cancel", "token": token})  # valid, answered by silence
            for _ in range(200):
                if ws.closed:
                    break
                await ws.send_str(valid)
            assert await closed_with(ws) == 1008
        junk = json.dumps({"type": "history.get", "token": "x.y.z.w"})
        async with http.ws_connect(f"{srv.url}/ws") as ws:
            for _ in range(7):
                assert (await call(ws, "history.get", token="x.y.z.w"))["code"] == "invalid_token"
            await ws.send_str(junk)
            assert await closed_with(ws) == 1008
        assert srv.metrics.value("echo_errors_total", code="rate_limited") >= 1
        assert srv.metrics.value("echo_errors_total", code="too_many_invalid") == 1
        async with http.ws_connect(f"{srv.url}/ws") as ws:  # a polite client is served as before
            assert (await call(ws, "session.create", api_key=KEY))["type"] == "session.created"


@pytest.mark.asyncio
async def test_row10_sockets_per_address_unauthenticated_sockets_and_auth_timeout(
    backend: OmniBackend, cs2: CS2
) -> None:
    async with (
        running(
            backend, cs2, max_connections_per_address=3, max_unauthenticated=2, auth_timeout_s=1.0
        ) as srv,
        aiohttp.ClientSession() as http,
    ):
        a = await http.ws_connect(f"{srv.url}/ws")
        b = await http.ws_connect(f"{srv.url}/ws")
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:  # two hold no session yet
            await http.ws_connect(f"{srv.url}/ws")
        assert info.value.status == 429
        assert (await call(a, "session.create", api_key=KEY))["type"] == "session.created"
        c = await http.ws_connect(f"{srv.url}/ws")  # a holds a session now: room for one more
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:  # three from this address
            await http.ws_connect(f"{srv.url}/ws")
        assert info.value.status == 429
        started = time.monotonic()
        assert await closed_with(b) == 1008  # never created a session: closed after auth_timeout_s
        assert await closed_with(c) == 1008
        assert 0.5 < time.monotonic() - started < 5
        assert not a.closed
        assert (await call(a, "history.get", token="x.y.z.w"))["code"] == "invalid_token"
        await a.close()


@pytest.mark.asyncio
async def test_row10_a_slow_http_body_is_cut_off(backend: OmniBackend, cs2: CS2) -> None:
    async with running(backend, cs2, body_timeout_s=1.0) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(
            b"POST /whip HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n"
            b"Content-Type: application/sdp\r\nContent-Length: 200000\r\n\r\nv"
        )
        await writer.drain()
        started = time.monotonic()
        head = await asyncio.wait_for(reader.read(4096), 10)
        assert head.startswith(b"HTTP/1.1 408"), head[:80]
        assert b"body_timeout" in head and time.monotonic() - started < 5
        writer.close()


@pytest.mark.asyncio
async def test_row10_slow_headers_are_cut_off(backend: OmniBackend, cs2: CS2) -> None:
    async with running(backend, cs2, header_timeout_s=1.0) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        started = time.monotonic()
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
            try:
                writer.write(bytes([byte]))
                await writer.drain()
                if await asyncio.wait_for(reader.read(1), 0.2) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except ConnectionError:
                closed = True
                break
        assert closed and time.monotonic() - started < 5, time.monotonic() - started
        writer.close()


# ------------------------------------------- row 6: unencodable text
@pytest.mark.asyncio
async def test_row6_lone_surrogates_are_invalid_event_and_history_stays_clean(
    backend: OmniBackend, cs2: CS2, redis_url: str
) -> None:
    async with running(backend, cs2, redis_url=redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{srv.url}/ws") as ws:
            created = await call(ws, "session.create", api_key=KEY)
            token = created["token"]
            lone = '", "question": "what \\ud800"}'
            await ws.send_str('{"type": "response.create", "token": "' + token + lone)
            event = json.loads((await ws.receive()).data)
            while event["type"] == "window.stats":
                event = json.loads((await ws.receive()).data)
            assert event["type"] == "error" and event["code"] == "invalid_event", event
            sid = created["session_id"]
            ask = f"{srv.url}/v1/sessions/{sid}/ask"
            headers = {"Authorization": f"Bearer {created['token']}", "Content-Type": "application/json"}
            async with http.post(ask, data='{"question": "\\udc00 hi"}', headers=headers) as r:
                assert r.status == 400 and (await r.json())["code"] == "invalid_event"
        assert not srv.sessions.journal.dirty and srv.metrics.value("echo_questions_total") == 0


# ------------------------------------------- row 7: /metrics exposure
@pytest.mark.asyncio
async def test_row7_metrics_carry_no_session_ids_unless_asked_and_can_need_a_token(
    backend: OmniBackend, cs2: CS2
) -> None:
    for per_session in (False, True):
        token = "metrics-token-0123456789" if per_session else None
        async with (
            running(backend, cs2, metrics_per_session=per_session, metrics_token=token) as srv,
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{srv.url}/ws") as ws,
        ):
            sid = (await call(ws, "session.create", api_key=KEY))["session_id"]
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.get(f"{srv.url}/metrics", headers=headers) as r:
                text = await r.text()
                assert r.status == 200 and "echo_sessions 1" in text
            assert (sid in text) is per_session, text
            if token:
                for bad in ({}, {"Authorization": "Bearer wrong"}):
                    async with http.get(f"{srv.url}/metrics", headers=bad) as r:
                        assert r.status == 401


# ------------------------------------------- row 8: malformed tokens
@pytest.mark.asyncio
async def test_row8_malformed_tokens_are_401_invalid_token_never_500(
    backend: OmniBackend, cs2: CS2, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(backend, cs2) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{srv.url}/ws") as ws:
            token = (await call(ws, "session.create", api_key=KEY))["token"]
            sid, kid, exp, mac = token.split(".")
            forms = [
                f"{sid}.{kid}.\u00b2.{mac}",
                f"{sid}.{kid}.{chr(0x0661) * len(exp)}.{mac}",
                f"{sid}.{kid}.{'9' * 4300}.{mac}",
                f"{sid}.{kid}.{exp}.{chr(0xE9) * len(mac)}",
                "x" * 5000,
            ]
            for form in forms:
                assert (await call(ws, "history.get", token=form))["code"] == "invalid_token", form[:30]
        with caplog.at_level("ERROR"):
            for form in forms:
                headers = {"Authorization": f"Bearer {form}".encode().decode("latin-1")}
                async with http.post(
                    f"{srv.url}/v1/sessions/{sid}/ask", json={"question": "q"}, headers=headers
                ) as r:
                    assert r.status == 401 and (await r.json())["code"] == "invalid_token", form[:30]
        assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.levelname == "ERROR"]


# ------------------------------------------- rows 9 and 13: WHIP bodies and the existence oracle
@pytest.mark.asyncio
async def test_row9_undecodable_whip_bodies_are_400_bad_sdp(backend: OmniBackend, cs2: CS2) -> None:
    async with running(backend, cs2) as srv, aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {KEY}"}
        for content_type, body in (
            ("application/sdp", b"v=0\r\nm=audio \xff\xfe\r\n"),
            ("application/sdp; charset=x-no-such-charset", b"v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"),
        ):
            async with http.post(
                f"{srv.url}/whip", data=body, headers={**auth, "Content-Type": content_type}
            ) as r:
                assert r.status == 400 and (await r.json())["code"] == "bad_sdp", content_type
        async with http.ws_connect(f"{srv.url}/ws") as ws:
            sid = (await call(ws, "session.create", api_key=KEY))["session_id"]
            async with http.patch(
                f"{srv.url}/whip/{sid}",
                data=b"a=candidate:\xff\xfe",
                headers={**auth, "Content-Type": "application/trickle-ice-sdpfrag"},
            ) as r:
                assert r.status == 400 and (await r.json())["code"] == "bad_sdp"
            async with http.patch(
                f"{srv.url}/whip/{sid}",
                data="a=mid:0\r\na=end-of-candidates\r\n",
                headers={**auth, "Content-Type": "application/trickle-ice-sdpfrag"},
            ) as r:
                assert r.status == 204


@pytest.mark.asyncio
async def test_row13_whip_resources_answer_alike_for_unknown_and_live_ids(
    backend: OmniBackend, cs2: CS2
) -> None:
    async with (
        running(backend, cs2) as srv,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{srv.url}/ws") as ws,
    ):
        live = (await call(ws, "session.create", api_key=KEY))["session_id"]
        unknown = "0123456789abcdef"
        for headers, status in (({}, 401), ({"Authorization": f"Bearer {OTHER}"}, 404)):
            answers = []
            for sid in (unknown, live):
                async with http.delete(f"{srv.url}/whip/{sid}", headers=headers) as r:
                    answers.append((r.status, (await r.json())["code"]))
            assert answers[0] == answers[1] and answers[0][0] == status, answers
        assert live in srv.sessions.live


# ------------------------------------------- row 11: origins
@pytest.mark.asyncio
async def test_row11_sockets_default_to_the_servers_own_origin(backend: OmniBackend, cs2: CS2) -> None:
    async with running(backend, cs2) as srv, aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(f"{srv.url}/ws", headers={"Origin": "https://evil.test"})
        assert info.value.status == 403
        for headers in ({"Origin": srv.url}, {}):  # the bundled page; a non-browser client
            async with http.ws_connect(f"{srv.url}/ws", headers=headers) as ws:
                assert (await call(ws, "history.get", token="a.b.c.d"))["code"] == "invalid_token"


# ------------------------------------------- row 12: tokens bound to keys and lifetimes
@pytest.mark.asyncio
async def test_row12_tokens_die_with_their_key_and_reattach_cannot_outlive_max_session_s(
    backend: OmniBackend, cs2: CS2, redis_url: str
) -> None:
    async with (
        running(backend, cs2, redis_url=redis_url, max_session_s=1.0) as srv,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{srv.url}/ws") as ws,
    ):
        created = await call(ws, "session.create", api_key=KEY)
        sid, token = created["session_id"], created["token"]
        again = await call(ws, "session.attach", session_id=sid, token=token)
        assert again["type"] == "session.created" and again["expires_at"] <= time.time() + 1.0
        await until(lambda: time.time() > srv.sessions.live[sid].created + 1.0)
        late = await call(ws, "session.attach", session_id=sid, token=token)
        assert late["code"] == "token_expired" and "max_session_s" in late["message"], late
        by_key = await call(ws, "session.attach", session_id=sid, api_key=KEY)
        assert by_key["type"] == "session.created" and by_key["expires_at"] > time.time() + 60
        history_token = by_key["token"]
    # the same secret and Redis, but the key that minted the token is gone
    async with (
        running(backend, cs2, redis_url=redis_url, api_keys=[OTHER]) as srv2,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{srv2.url}/ws") as ws,
    ):
        refused = await call(ws, "history.get", token=history_token)
        assert refused["code"] == "invalid_token" and "no longer valid" in refused["message"]


# ------------------------------------------- row 14: no cycle keeps a closed session alive
@pytest.mark.asyncio
async def test_row14_a_closed_session_is_freed_without_the_cyclic_gc(backend: OmniBackend, cs2: CS2) -> None:
    import gc
    import weakref

    async with running(backend, cs2) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{srv.url}/ws") as ws:
            sid = (await call(ws, "session.create", api_key=KEY))["session_id"]
            ref = weakref.ref(srv.sessions.live[sid])
        await until(lambda: sid not in srv.sessions.live or srv.sessions.live[sid].attached == 0)
        gc.disable()
        try:
            await srv.sessions.close_live(srv.sessions.live[sid])
            await asyncio.sleep(0)  # let the closed tasks finish
            assert ref() is None, gc.get_referrers(ref()) if ref() is not None else None
        finally:
            gc.enable()


@pytest.mark.asyncio
async def test_row4_parallel_creates_through_a_gateway_hold_the_key_quota(
    backend: OmniBackend, cs2: CS2
) -> None:
    from echo_lab.launch.local_redis import LocalRedis
    from server.gateway import Gateway

    def config(url: str, mode: str, worker_id: str | None = None) -> ServiceConfig:
        server = ServerConfig(
            port=0,
            mode=mode,
            worker_id=worker_id,
            api_keys=[KEY],
            token_secret=SECRET,
            redis_url=url,
            max_sessions=8,
            max_sessions_per_key=3,
            max_connections_per_address=64,
            max_unauthenticated=64,
        )
        return ServiceConfig(stream=StreamConfig(cache_budget=64, max_new_tokens=2), server=server)

    redis = LocalRedis().start()
    model = StreamModel(backend, cs2, SieveConfig(scoring="attention"))
    workers = [EchoServer(config(redis.url, "worker", w), model=model) for w in ("w1", "w2")]
    gateway: Gateway | None = None
    try:
        for worker in workers:
            await worker.start()
        gateway = Gateway(config(redis.url, "gateway"))
        await gateway.start()
        async with aiohttp.ClientSession() as http:
            sockets = [await http.ws_connect(f"{gateway.url}/ws") for _ in range(10)]
            replies = await asyncio.gather(*(call(ws, "session.create", api_key=KEY) for ws in sockets))
            created = [r for r in replies if r["type"] == "session.created"]
            refused = {r.get("code") for r in replies if r["type"] == "error"}
            held = sum(len(w.sessions.live) for w in workers)
            assert len(created) == held == 3, (len(created), held, refused)
            assert refused == {"session_quota"}, refused
            for ws in sockets:
                await ws.close()
    finally:
        if gateway is not None:
            await gateway.stop()
        for worker in workers:
            await worker.stop()
        redis.close()


@pytest.mark.asyncio
async def test_row6_a_fault_while_answering_ends_in_error_and_a_failed_response_done(
    backend: OmniBackend, cs2: CS2
) -> None:
    """A window so large its position arithmetic overflows (a fault deep in the core, not a
    refusal): the client gets `error` `internal_error` and `response.done` `failed`, not silence."""
    from tests.test_server import Client, stream_to
    from tests.waiting import wait_ingested

    async with (
        running(backend, cs2, budget=256) as srv,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{srv.url}/ws") as ws,
    ):
        client = Client(ws)
        await client.create(KEY)
        pc = await stream_to(client)
        await wait_ingested(srv.sessions.live[client.session_id].session, 1)
        await client.send(type="response.create", token=client.token, question="what colour", window_s=1e308)
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["type"] != "response.done":
            msg = await asyncio.wait_for(ws.receive(), 30)
            event = json.loads(msg.data)
            if event["type"] != "window.stats":
                seen.append(event)
        assert [e["type"] for e in seen] == ["response.created", "error", "response.done"], seen
        assert seen[1]["code"] == "internal_error" and seen[2]["status"] == "failed", seen
        await client.send(type="response.create", token=client.token, question="what colour")
        assert (await client.recv("response.done"))["status"] == "completed"  # the session lives on
        await pc.close()
