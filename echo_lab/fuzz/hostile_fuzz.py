"""Hostile-client scenarios for `echo-bench fuzz`: what one bad message cannot show.

Each scenario attacks a running server and returns its outcome: `ok` when the server held
(refused with the documented code, closed the abusive socket, reaped what it should), or a
short reason it did not. They run while a healthy session streams beside them (fuzz.py).

Families: flood (junk on two sockets), slowloris (an HTTP body at a byte a second),
half_open (WHIP sessions whose ICE never connects), parallel_creates (more creates at once
than the server admits), budget_abuse (cache budgets past the maximum), token_forms
(malformed and forged tokens on the socket and over HTTP) and charsets (undecodable WHIP
bodies, lone surrogates).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from server.protocol import (
    ClientEvent,
    Error,
    HistoryGet,
    ServerEvent,
    SessionCreate,
    SessionCreated,
    SessionSettings,
    WindowStats,
    encode,
    parse_server_event,
)

JUNK = encode(HistoryGet(token="forged.0123456789abcdef.1.bad"))
#: A healthy /healthz answers within this while a scenario runs (the issue's bar).
HEALTHZ_P95_MS = 100.0

Scenario = Callable[[aiohttp.ClientSession, str, str], Awaitable[str]]


async def _reply(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> ServerEvent | None:
    """The next event other than `window.stats`; None when the socket closed (ProtocolError for a
    reply that is no server event of the protocol)."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            return None
        event = parse_server_event(msg.data)
        if not isinstance(event, WindowStats):
            return event


async def _call(ws: aiohttp.ClientWebSocketResponse, event: ClientEvent) -> ServerEvent | None:
    await ws.send_str(encode(event))
    return await _reply(ws)


def _code(reply: ServerEvent | None) -> str | None:
    """The error code of a reply (None for any other reply)."""
    return reply.code if isinstance(reply, Error) else None


async def _end(http: aiohttp.ClientSession, url: str, api_key: str, session_id: str) -> None:
    """End a session this scenario created (so the next one finds the server's room free)."""
    async with http.delete(f"{url}/whip/{session_id}", headers={"Authorization": f"Bearer {api_key}"}) as r:
        await r.read()


async def _healthz_p95(http: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> float:
    samples: list[float] = []
    while not stop.is_set():
        started = time.monotonic()
        async with http.get(f"{url}/healthz") as r:
            await r.read()
        samples.append((time.monotonic() - started) * 1000)
        await asyncio.sleep(0.05)
    samples.sort()
    return samples[max(0, int(0.95 * len(samples)) - 1)] if samples else 0.0


async def flood(http: aiohttp.ClientSession, url: str, api_key: str, seconds: float = 5.0) -> str:
    """Two keyless sockets send junk as fast as they can: both must be closed, /healthz stay fast."""
    closes: list[int | None] = []

    async def one() -> None:
        async with http.ws_connect(f"{url}/ws") as ws:
            end = time.monotonic() + seconds
            try:
                while not ws.closed and time.monotonic() < end:
                    await ws.send_str(JUNK)
                    await asyncio.sleep(0)
            except (ConnectionError, aiohttp.ClientError):
                pass
            while not ws.closed and time.monotonic() < end + 5:
                msg = await ws.receive(timeout=end + 5 - time.monotonic())
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    break
            closes.append(ws.close_code)

    stop = asyncio.Event()
    probe = asyncio.create_task(_healthz_p95(http, url, stop), name="fuzz-healthz")
    await asyncio.gather(one(), one())
    stop.set()
    p95 = await probe
    # 1008 (policy), or 1006 when the server dropped the socket before this side read its close frame
    if not all(code in (1008, 1006) for code in closes) or len(closes) != 2:
        return f"flooding sockets not closed: {closes}"
    return "ok" if p95 <= HEALTHZ_P95_MS else f"healthz p95 {p95:.0f} ms > {HEALTHZ_P95_MS:.0f} ms"


async def slowloris(http: aiohttp.ClientSession, url: str, api_key: str) -> str:
    """A declared 200 KB WHIP body sent at one byte a second is cut off with 408; headers sent
    at one byte a second get the connection closed."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(
            f"POST /whip HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {api_key}\r\n"
            "Content-Type: application/sdp\r\nContent-Length: 200000\r\n\r\n".encode()
        )
        started = time.monotonic()
        answer = b""
        while time.monotonic() - started < 60 and not answer:
            writer.write(b"v")
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(4096), 1.0)
            except TimeoutError:
                continue
        if not answer.startswith(b"HTTP/1.1 408"):
            return f"slow body answered {answer[:40]!r} after {time.monotonic() - started:.0f} s"
    finally:
        writer.close()
    # headers at one byte a second: the connection is closed (server.header_timeout_s)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        started = time.monotonic()
        for byte in f"GET /healthz HTTP/1.1\r\nHost: {parts.netloc}\r\nX-Slow: ".encode() + b"a" * 120:
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1), 1.0) == b"":
                    return "ok"
            except TimeoutError:
                continue
        return f"slow headers still open after {time.monotonic() - started:.0f} s"
    except ConnectionError:
        return "ok"
    finally:
        writer.close()


async def half_open(http: aiohttp.ClientSession, url: str, api_key: str, n: int = 2) -> str:
    """WHIP sessions whose ICE never completes (end-of-candidates sent) are reaped; the key recovers."""
    from aiortc import RTCPeerConnection
    from aiortc.mediastreams import AudioStreamTrack

    auth = {"Authorization": f"Bearer {api_key}"}
    peers: list[Any] = []
    locations: list[str] = []
    try:
        for _ in range(n):
            pc = RTCPeerConnection()
            peers.append(pc)
            pc.addTrack(AudioStreamTrack())
            await pc.setLocalDescription(await pc.createOffer())
            async with http.post(
                f"{url}/whip",
                data=pc.localDescription.sdp,
                headers={**auth, "Content-Type": "application/sdp"},
            ) as r:
                if r.status != 201:
                    return f"WHIP POST answered {r.status}"
                locations.append(r.headers["Location"])  # the answer is never applied: ICE never completes
            async with http.patch(
                f"{url}{locations[-1]}",
                data="a=mid:0\r\na=end-of-candidates\r\n",
                headers={**auth, "Content-Type": "application/trickle-ice-sdpfrag"},
            ) as r:
                if r.status != 204:
                    return f"end-of-candidates answered {r.status}"
        deadline = time.monotonic() + 90
        while locations and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            still: list[str] = []
            for location in locations:
                async with http.patch(
                    f"{url}{location}",
                    data="",
                    headers={**auth, "Content-Type": "application/trickle-ice-sdpfrag"},
                ) as r:
                    if r.status != 404:
                        still.append(location)
            locations = still
        return "ok" if not locations else f"{len(locations)} half-open sessions still held after 90 s"
    finally:
        for pc in peers:
            await pc.close()


async def parallel_creates(http: aiohttp.ClientSession, url: str, api_key: str, n: int = 12) -> str:
    """`n` creates at once: the server never holds more sessions than its cap."""
    async with http.get(f"{url}/healthz") as r:
        health = await r.json()
    room = int(health["max_sessions"]) - int(health["sessions"])
    sockets = [await http.ws_connect(f"{url}/ws") for _ in range(n)]
    try:
        replies = await asyncio.gather(*(_call(ws, SessionCreate(api_key=api_key)) for ws in sockets))
        created = sum(1 for r in replies if isinstance(r, SessionCreated))
        codes = {r.code for r in replies if isinstance(r, Error)}
        async with http.get(f"{url}/healthz") as r:
            after = await r.json()
        for reply in replies:
            if isinstance(reply, SessionCreated):
                await _end(http, url, api_key, reply.session_id)
    finally:
        for ws in sockets:
            await ws.close()
    if after["sessions"] > after["max_sessions"] or created > room:
        return f"{created} created with room for {room}: {after}"
    if not codes <= {"server_busy", "session_quota"}:
        return f"unexpected refusals {sorted(codes)}"
    return "ok"


async def budget_abuse(http: aiohttp.ClientSession, url: str, api_key: str) -> str:
    """Cache budgets past the operator's maximum are `invalid_settings`, never allocated."""
    async with http.ws_connect(f"{url}/ws") as ws:
        for budget in (600_000, 10**12, 2**63, 10**30):
            reply = await _call(
                ws, SessionCreate(api_key=api_key, settings=SessionSettings(cache_budget=budget))
            )
            if _code(reply) != "invalid_settings":
                return f"cache_budget {budget}: {reply}"
    return "ok"


def token_forms(good: str) -> list[str]:
    """Malformed and forged variants of a real token."""
    parts = good.split(".")
    sid, kid, exp, mac = parts if len(parts) == 4 else ("s", "k", "1", "m")
    return [
        "",
        "a.b.c",
        "a.b.c.d",
        ".....",
        "x" * 5000,
        f"{sid}.{kid}.\u00b2.{mac}",
        f"{sid}.{kid}.{chr(0x0661) * len(exp)}.{mac}",
        f"{sid}.{kid}.{'9' * 4300}.{mac}",
        f"{sid}.{kid}.{exp}.{chr(0xE9) * len(mac)}",
        f"{sid}.{kid}.{int(exp) + 1}.{mac}" if exp.isdigit() else "z",
        f"{sid}.0000000000000000.{exp}.{mac}",
        "eyJhbGciOiJub25lIn0.eyJzaWQiOiJ4In0.",
        f"{sid}.{kid}.{exp}.{mac}=",
        good + ".",
    ]


async def token_forms_scenario(http: aiohttp.ClientSession, url: str, api_key: str) -> str:
    """Every form is `invalid_token` on the socket and 401 over HTTP: never a 500."""
    async with http.ws_connect(f"{url}/ws") as ws:
        created = await _call(ws, SessionCreate(api_key=api_key))
        if not isinstance(created, SessionCreated):
            return f"could not create a session: {created}"
        sid = created.session_id
        for form in token_forms(created.token):
            reply = await _call(ws, HistoryGet(token=form))
            if _code(reply) != "invalid_token":
                return f"socket {form[:30]!r}: {reply}"
            header = f"Bearer {form}".encode().decode("latin-1")
            async with http.post(
                f"{url}/v1/sessions/{sid}/ask", json={"question": "q"}, headers={"Authorization": header}
            ) as r:
                if r.status != 401:
                    return f"HTTP {form[:30]!r}: {r.status}"
        await _end(http, url, api_key, sid)
    return "ok"


async def charsets(http: aiohttp.ClientSession, url: str, api_key: str) -> str:
    """Undecodable WHIP bodies are 400 `bad_sdp`; a lone surrogate is `invalid_event`."""
    auth = {"Authorization": f"Bearer {api_key}"}
    for content_type, body in (
        ("application/sdp", b"v=0\r\nm=audio \xff\xfe\r\n"),
        ("application/sdp; charset=x-unknown", b"v=0\r\nm=audio 9 RTP/AVP 0\r\n"),
        ("application/sdp; charset=utf-16", "v=0\r\nm=audio 9 RTP/AVP 0\r\n".encode("utf-16")),
    ):
        async with http.post(f"{url}/whip", data=body, headers={**auth, "Content-Type": content_type}) as r:
            if r.status != 400 or (await r.json()).get("code") != "bad_sdp":
                return f"WHIP {content_type}: {r.status}"
    async with http.ws_connect(f"{url}/ws") as ws:
        created = await _call(ws, SessionCreate(api_key=api_key))
        if not isinstance(created, SessionCreated):
            return f"could not create a session: {created}"
        lone = '", "question": "\\ud800"}'
        await ws.send_str('{"type": "response.create", "token": "' + created.token + lone)
        reply = await _reply(ws)
        await _end(http, url, api_key, created.session_id)
        if _code(reply) != "invalid_event":
            return f"lone surrogate: {reply}"
    return "ok"


SCENARIOS: dict[str, Scenario] = {
    "flood": flood,
    "slowloris": slowloris,
    "half_open": half_open,
    "parallel_creates": parallel_creates,
    "budget_abuse": budget_abuse,
    "token_forms": token_forms_scenario,
    "charsets": charsets,
}
