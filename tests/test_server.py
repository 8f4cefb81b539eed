"""The live service end to end: a real aiohttp server, real WebRTC over loopback, real clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiortc import RTCPeerConnection, RTCSessionDescription

from echo_core.config import SieveConfig, StreamConfig
from echo_core.model.backend import OmniBackend
from echo_core.sieve import CS2
from echo_core.stream.runtime import StreamModel
from server.app import EchoServer
from server.auth import key_id
from server.config import ServerConfig, ServiceConfig
from tests.media_tracks import ColourTrack, ToneTrack
from tests.waiting import wait_ingested

pytestmark = pytest.mark.e2e

KEY = "test-key-0123456789"


@pytest_asyncio.fixture
async def server(backend: OmniBackend, cs2: CS2) -> AsyncIterator[EchoServer]:
    model = StreamModel(backend, cs2, SieveConfig(scoring="attention"))
    config = ServiceConfig(
        stream=StreamConfig(cache_budget=512, keep=0.5, max_new_tokens=3),
        server=ServerConfig(
            port=0, api_keys=[KEY, "other-key-0123456789"], questions_per_minute=4, stats_interval_s=0.2
        ),
    )
    srv = EchoServer(config, model=model)
    await srv.start()
    yield srv
    await srv.stop()


class Client:
    """A WebSocket client speaking the protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.token = ""
        self.session_id = ""

    async def send(self, **event: Any) -> None:
        await self.ws.send_str(json.dumps(event))

    async def recv(self, kind: str, timeout: float = 20.0) -> dict[str, Any]:
        """The next event of type `kind` (others skipped), or the first error."""
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), timeout)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            event = json.loads(msg.data)
            if event["type"] in (kind, "error"):
                return event

    async def create(self, key: str = KEY) -> dict[str, Any]:
        await self.send(type="session.create", api_key=key)
        event = await self.recv("session.created")
        self.token, self.session_id = event.get("token", ""), event.get("session_id", "")
        return event


async def stream_to(client: Client) -> RTCPeerConnection:
    pc = RTCPeerConnection()
    pc.addTrack(ColourTrack())
    pc.addTrack(ToneTrack())
    await pc.setLocalDescription(await pc.createOffer())
    await client.send(type="webrtc.offer", token=client.token, sdp=pc.localDescription.sdp)
    answer = await client.recv("webrtc.answer")
    assert answer["type"] == "webrtc.answer", answer
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    return pc


@pytest.mark.asyncio
async def test_websocket_session_stream_ask_history(server: EchoServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{server.url}/ws") as ws:
            client = Client(ws)
            created = await client.create()
            assert created["version"] == "echo.v1" and created["settings"]["cache_budget"] == 512
            pc = await stream_to(client)
            while True:  # window.stats until kept tokens of both modalities show up
                stats = await client.recv("window.stats")
                if stats["kept_audio"] and stats["kept_video"]:
                    break
            assert stats["grid"] == [4, 4] and all(len(p) == 3 for p in stats["video_patches"])
            assert stats["cache_budget"] == 512
            assert stats["cache_audio"] >= stats["kept_audio"] and stats["cache_video"] >= stats["kept_video"]
            await client.send(type="response.create", token=client.token, question="what colour", window_s=10)
            created_r = await client.recv("response.created")
            done = await client.recv("response.done")
            assert done["response_id"] == created_r["response_id"] and done["status"] == "completed"
            assert (
                done["usage"]["av_tokens"]
                == done["usage"]["audio_tokens"] + done["usage"]["video_tokens"]
                > 0
            )
            assert done["usage"]["ttft_ms"] > 0
            # media still streams, so the open chunk is newer than the cache: the answer read it
            assert 0 < done["usage"]["tail_tokens"] <= done["usage"]["av_tokens"]
            await client.send(type="history.get", token=client.token, event_id="h")
            history = await client.recv("history")
            assert [i["question"] for i in history["items"]] == ["what colour"]
        async with http.ws_connect(f"{server.url}/ws") as ws2:  # the socket dropped, media goes on
            again = Client(ws2)
            await again.send(type="session.attach", session_id=client.session_id, token=client.token)
            attached = await again.recv("session.created")
            assert attached["session_id"] == client.session_id
            await again.send(type="history.get", token=attached["token"])
            assert (await again.recv("history"))["items"][0]["answer"] == done["answer"]
            await pc.close()
        for _ in range(100):  # peer gone, nobody attached: the session ends
            if client.session_id not in server.sessions.live:
                break
            await asyncio.sleep(0.05)
        assert client.session_id not in server.sessions.live
        async with http.ws_connect(f"{server.url}/ws") as ws3:  # its history stays readable with its token
            late = Client(ws3)
            await late.send(type="history.get", token=client.token)
            assert (await late.recv("history"))["items"][0]["question"] == "what colour"
        async with http.get(f"{server.url}/healthz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        async with http.get(f"{server.url}/metrics") as r:
            text = await r.text()
            assert "echo_questions_total 1" in text and "echo_sessions " in text


@pytest.mark.asyncio
async def test_bad_input_gets_codes_and_the_connection_lives(server: EchoServer) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{server.url}/ws") as ws:
        client = Client(ws)

        async def expect(code: str, raw: str) -> None:
            await ws.send_str(raw)
            event = await client.recv("error")
            assert event["type"] == "error" and event["code"] == code, event

        await expect("invalid_json", "{nope")
        await expect("unknown_event", '{"type": "session.destroy"}')
        await expect("invalid_field", '{"type": "session.create", "api_key": 7}')
        await expect("bad_api_key", '{"type": "session.create", "api_key": "wrong"}')
        await expect("message_too_large", json.dumps({"type": "history.get", "token": "x" * 300_000}))
        await expect("invalid_token", '{"type": "history.get", "token": "a.1.b"}')
        await client.create()
        await expect(
            "bad_sdp", json.dumps({"type": "webrtc.offer", "token": client.token, "sdp": "v=0 junk"})
        )
        no_media = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"  # aiortc itself would accept it
        await expect("bad_sdp", json.dumps({"type": "webrtc.offer", "token": client.token, "sdp": no_media}))
        await expect(
            "invalid_settings",
            json.dumps({"type": "session.update", "token": client.token, "settings": {"keep": 2.0}}),
        )
        other = Client(ws)
        await other.create("other-key-0123456789")
        await expect(
            "forbidden",
            json.dumps({"type": "session.attach", "session_id": other.session_id, "token": client.token}),
        )
        await expect(
            "forbidden",
            json.dumps({"type": "session.attach", "session_id": other.session_id, "api_key": KEY}),
        )
        await expect(
            "empty_av", json.dumps({"type": "response.create", "token": client.token, "question": "q"})
        )
        for _ in range(3):  # 4 per minute: the empty one above counted
            await client.send(type="response.create", token=client.token, question="q")
            await client.recv("error")
        await expect(
            "rate_limited", json.dumps({"type": "response.create", "token": client.token, "question": "q"})
        )
        await expect(
            "invalid_settings",
            json.dumps({"type": "session.update", "token": client.token, "settings": {"cache_budget": 64}}),
        )
        await client.send(type="session.update", token=client.token, settings={"window_s": 5})
        updated = await client.recv("session.updated")
        assert updated["settings"]["window_s"] == 5.0


@pytest.mark.asyncio
async def test_whip_ingest_and_http_ask(server: EchoServer) -> None:
    pc = RTCPeerConnection()
    pc.addTrack(ColourTrack())
    pc.addTrack(ToneTrack())
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    async with aiohttp.ClientSession() as http:
        sdp = {"Content-Type": "application/sdp"}
        async with http.post(f"{server.url}/whip", data=offer, headers=sdp) as r:
            assert r.status == 401
        async with http.post(
            f"{server.url}/whip", data=offer, headers={**sdp, "Authorization": "Bearer nope"}
        ) as r:
            assert r.status == 401 and (await r.json())["code"] == "bad_api_key"
        auth = {**sdp, "Authorization": f"Bearer {KEY}"}
        async with http.post(f"{server.url}/whip", data="v=0\r\nm=video junk\r\n", headers=auth) as r:
            assert r.status == 400 and (await r.json())["code"] == "bad_sdp"
        async with http.post(f"{server.url}/whip", data=offer, headers=auth) as r:
            assert r.status == 201, await r.text()
            location, token = r.headers["Location"], r.headers["X-Echo-Session-Token"]
            await pc.setRemoteDescription(RTCSessionDescription(sdp=await r.text(), type="answer"))
        sid = location.rsplit("/", 1)[1]
        live = server.sessions.live[sid]
        await wait_ingested(live.session, 1)
        assert live.session.stats.seen_audio > 0 and live.session.stats.seen_video > 0
        bearer = {"Authorization": f"Bearer {token}"}
        async with http.post(
            f"{server.url}/v1/sessions/{sid}/ask", json={"question": "what colour"}, headers=bearer
        ) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            body = await r.text()
        events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
        assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.done"
        assert 0 < events[-1]["usage"]["tail_tokens"] <= events[-1]["usage"]["av_tokens"]  # the open chunk
        async with http.post(f"{server.url}/v1/sessions/{sid}/ask", json={"question": "q"}, headers={}) as r:
            assert r.status == 401
        ask = f"{server.url}/v1/sessions/{sid}/ask"
        refusals = [  # checked as response.create is on the WebSocket
            ({"question": "q" * 501}, "question_too_long"),
            ({"question": "q", "window_s": 0}, "invalid_field"),
            ({"question": "q", "extra": 1}, "invalid_field"),
            ([1, 2], "invalid_event"),
        ]
        for body, code in refusals:
            async with http.post(ask, json=body, headers=bearer) as r:
                assert r.status == 400 and (await r.json())["code"] == code, body
        for raw in ("[" * 100_000 + "]" * 100_000, "{not json", '{"question": {"a": ' * 40 + "1" + "}" * 40):
            async with http.post(ask, data=raw, headers=bearer) as r:
                assert r.status == 400 and (await r.json())["code"] in {"invalid_json", "too_deep"}, raw[:20]
        async with http.delete(
            f"{server.url}{location}", headers={"Authorization": "Bearer other-key-0123456789"}
        ) as r:  # another key's session looks like an unknown id (no existence oracle)
            assert r.status == 404
        async with http.delete(f"{server.url}{location}", headers={"Authorization": f"Bearer {KEY}"}) as r:
            assert r.status == 200
        assert sid not in server.sessions.live
    await pc.close()


@pytest.mark.asyncio
async def test_python_client_errors_and_stream(server: EchoServer, tmp_path: Any) -> None:
    from client.echo_client import ClientError, EchoClient
    from echo_lab.world import make_clip
    from echo_lab.world.containers import write_webm

    with pytest.raises(ClientError) as info:
        await EchoClient("http://127.0.0.1:9", KEY).connect()
    assert info.value.code == "server_unreachable"
    with pytest.raises(ClientError) as info:
        async with EchoClient(server.url, "wrong-key"):
            pass
    assert info.value.code == "bad_api_key"
    async with EchoClient(server.url, KEY) as client:
        with pytest.raises(ClientError) as info:
            await client.stream_file(str(tmp_path / "missing.webm"))
        assert info.value.code == "no_media"
        clip = make_clip("test", 0)
        await client.stream_file(str(write_webm(clip, tmp_path / "clip.webm")))
        live = server.sessions.live[client.session_id]
        await wait_ingested(live.session, 2)
        text = await client.ask_text("what pitch was the first tone", window_s=30)
        assert isinstance(text, str) and client.last_done is not None
        assert client.last_done.status == "completed"
        assert [h.question for h in await client.history()] == ["what pitch was the first tone"]


@pytest.mark.asyncio
async def test_redis_backed_history_and_origin_allow_list(
    backend: OmniBackend, cs2: CS2, redis_url: str
) -> None:
    import redis.asyncio as aioredis

    model = StreamModel(backend, cs2, SieveConfig(scoring="attention"))
    config = ServiceConfig(
        stream=StreamConfig(cache_budget=256, max_new_tokens=2),
        server=ServerConfig(
            port=0, api_keys=[KEY], redis_url=redis_url, allowed_origins=["https://echo.test"]
        ),
    )
    srv = EchoServer(config, model=model)
    await srv.start()
    try:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await http.ws_connect(f"{srv.url}/ws", headers={"Origin": "https://evil.test"})
            async with http.ws_connect(f"{srv.url}/ws", headers={"Origin": "https://echo.test"}) as ws:
                client = Client(ws)
                await client.create()
                pc = await stream_to(client)
                live = srv.sessions.live[client.session_id]
                await wait_ingested(live.session, 1)
                await client.send(type="response.create", token=client.token, question="what colour")
                done = await client.recv("response.done")
                await pc.close()
        r = aioredis.from_url(redis_url, decode_responses=True)
        entries = await r.xrange(f"echo:history:{client.session_id}")
        assert [e[1]["answer"] for e in entries] == [done["answer"]]
        assert not await r.exists(f"echo:session:{client.session_id}")  # unregistered when the peer left
        await r.aclose()
    finally:
        await srv.stop()


@pytest.mark.asyncio
async def test_peer_disconnect_frees_the_session(backend: OmniBackend, cs2: CS2) -> None:
    model = StreamModel(backend, cs2, SieveConfig(scoring="attention"))
    config = ServiceConfig(server=ServerConfig(port=0, api_keys=[KEY], heartbeat_ttl_s=0.6))
    srv = EchoServer(config, model=model)
    await srv.start()
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{srv.url}/ws") as ws:
            client = Client(ws)
            await client.create()
            pc = await stream_to(client)
            for _ in range(100):
                if pc.connectionState == "connected":
                    break
                await asyncio.sleep(0.05)
            await pc.close()
        for _ in range(100):
            if not srv.sessions.live:
                break
            await asyncio.sleep(0.05)
        assert (
            srv.sessions.live == {}
            and srv.sessions.engine is not None
            and srv.sessions.engine.scheduler.sessions() == []
        )
        assert await srv.sessions.store.live_sessions(key_id(KEY)) == 0
    finally:
        await srv.stop()


@pytest.mark.asyncio
async def test_response_cancel_stops_the_answer(server: EchoServer) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{server.url}/ws") as ws:
        client = Client(ws)
        await client.create()
        pc = await stream_to(client)
        live = server.sessions.live[client.session_id]
        await wait_ingested(live.session, 1)
        # The engine is busy with this session (its lock held), so the answer cannot start before the
        # cancel arrives: the cancel is then checked before the first piece is generated.
        with live.session._lock:
            await client.send(type="response.create", token=client.token, question="what colour")
            created = await client.recv("response.created")
            await client.send(type="response.cancel", token=client.token, response_id=created["response_id"])
            await asyncio.sleep(0.3)  # the cancel is read while the answer waits
        done = await client.recv("response.done")
        assert done["response_id"] == created["response_id"]
        assert done["status"] == "cancelled" and done["answer"] == ""
        await client.send(type="response.cancel", token=client.token)  # nothing running: a no-op
        await client.send(type="response.create", token=client.token, question="what colour")
        assert (await client.recv("response.done"))["status"] == "completed"  # the engine goes on
        await pc.close()


@pytest.mark.asyncio
async def test_whip_patch_trickles_candidates(server: EchoServer) -> None:
    pc = RTCPeerConnection()
    pc.addTrack(ToneTrack())
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {KEY}"}
        async with http.post(
            f"{server.url}/whip",
            data=pc.localDescription.sdp,
            headers={**auth, "Content-Type": "application/sdp"},
        ) as r:
            assert r.status == 201
            location, token = r.headers["Location"], r.headers["X-Echo-Session-Token"]
        live = server.sessions.live[location.rsplit("/", 1)[1]]
        frag = {"Content-Type": "application/trickle-ice-sdpfrag"}
        candidate = "a=candidate:9 1 udp 2122260223 127.0.0.1 45999 typ host"
        body = f"a=ice-ufrag:x\r\na=ice-pwd:y\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n{candidate}\r\n"
        async with http.patch(f"{server.url}{location}", data=body, headers={**frag, **auth}) as r:
            assert r.status == 204
        assert "127.0.0.1 45999 typ host" in live.pc.remoteDescription.sdp
        bare = "a=candidate:10 1 udp 2122260222 127.0.0.1 46000 typ host\r\n"  # no mid: the first m-line
        bearer = {"Authorization": f"Bearer {token}"}  # the session token works too
        async with http.patch(f"{server.url}{location}", data=bare, headers={**frag, **bearer}) as r:
            assert r.status == 204
        assert "127.0.0.1 46000 typ host" in live.pc.remoteDescription.sdp
        async with http.patch(
            f"{server.url}{location}", data="a=candidate:junk\r\n", headers={**frag, **auth}
        ) as r:
            assert r.status == 400 and (await r.json())["code"] == "bad_candidate"
        async with http.patch(f"{server.url}{location}", data=body, headers=frag) as r:
            assert r.status == 401
        async with http.patch(
            f"{server.url}{location}",
            data=body,
            headers={**frag, "Authorization": "Bearer other-key-0123456789"},
        ) as r:  # another key's session looks like an unknown id (no existence oracle)
            assert r.status == 404
        async with http.delete(f"{server.url}{location}", headers=auth) as r:
            assert r.status == 200
    await pc.close()
