"""`echo-bench flood`: a junk-message flood on two sockets beside a healthy streaming session.

The server runs as a child process (any checkout: `server_root`, so the same probe measures
code before and after a change). A healthy client streams live synthetic tracks (a tone,
10-fps 224² colour frames) over WebRTC;
then flooders in a separate process (so their CPU is not the probe's) open `sockets`
WebSockets without an API key and send `history.get` with a bad token as fast as the
server takes them, reconnecting whenever a socket is closed. Measured: `/healthz` latency
(p50/p95) before and during the flood, the healthy session's `seen_audio`/`seen_video`
over the same length of time before and during the flood (and its drops and the server's
CPU share), and whether its question (asked mid-flood) is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from client.echo_client import ClientError, EchoClient
from server.protocol import WindowStats
from server.resources import config_file

from ..fuzz.media_fuzz import MediaCase, OddAudioTrack, OddVideoTrack
from ..launch.local_server import free_port, stop_process, wait_healthy
from .streams import percentile

DEMO_KEY = "demo-key-change-me"
JUNK = json.dumps({"type": "history.get", "token": "forged.0123456789abcdef.1.bad"})


async def flood_worker(url: str, seconds: float) -> dict[str, int]:
    """Send junk on one socket as fast as it goes; reconnect when the server closes it."""
    sent = replies = connects = refused = 0
    end = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < end:
            try:
                async with http.ws_connect(f"{url}/ws", autoping=True) as ws:
                    connects += 1

                    async def drain(ws: aiohttp.ClientWebSocketResponse = ws) -> int:
                        n = 0
                        async for _ in ws:
                            n += 1
                        return n

                    reader = asyncio.create_task(drain(), name="flood-drain")
                    try:
                        while time.monotonic() < end and not ws.closed:
                            await ws.send_str(JUNK)
                            sent += 1
                            if sent % 64 == 0:
                                await asyncio.sleep(0)  # let the drain task read replies
                    except (ConnectionError, aiohttp.ClientError, RuntimeError):
                        pass
                    await ws.close()
                    replies += await asyncio.wait_for(reader, 5)
            except (aiohttp.ClientError, OSError, TimeoutError):
                refused += 1
                await asyncio.sleep(0.01)
    return {"sent": sent, "replies": replies, "connects": connects, "refused": refused}


async def _flood_process(url: str, sockets: int, seconds: float) -> None:
    results = await asyncio.gather(*(flood_worker(url, seconds) for _ in range(sockets)))
    if not results:  # --sockets 0: the control run, no flood
        await asyncio.sleep(seconds)
    total = {k: sum(r[k] for r in results) for k in ("sent", "replies", "connects", "refused")}
    print(json.dumps(total), flush=True)


def _spawn_server(server_root: Path, port: int, *overrides: str) -> subprocess.Popen[bytes]:
    # the demo config of this installation, so that every server root runs the same one
    cmd = [sys.executable, "-m", "server.cli", "--config", str(config_file("demo"))]
    cmd += [f"server.port={port}", "server.host=127.0.0.1", *overrides]
    env = {**os.environ, "PYTHONPATH": str(server_root)}
    return subprocess.Popen(cmd, cwd=server_root, env=env)


async def _healthz_ms(http: aiohttp.ClientSession, url: str) -> float:
    started = time.monotonic()
    try:
        async with http.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=10)) as r:
            await r.read()
    except (aiohttp.ClientError, TimeoutError):
        return 10_000.0
    return (time.monotonic() - started) * 1000


async def _probe(http: aiohttp.ClientSession, url: str, seconds: float, period_s: float = 0.1) -> list[float]:
    samples: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(await _healthz_ms(http, url))
        await asyncio.sleep(period_s)
    return samples


def stats_of(client: EchoClient) -> WindowStats:
    """The session's latest `window.stats` (all zero before the first)."""
    return client.last_stats or WindowStats()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms(values: list[float], q: float) -> float | None:
    p = percentile(values, q)
    return None if p is None else round(p, 1)


async def run_flood(
    server_root: Path, seconds: float = 20.0, sockets: int = 2, baseline_s: float = 20.0
) -> dict[str, Any]:
    """Flood a fresh server from `server_root` beside a healthy session; the figures as a dict."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _spawn_server(server_root, port)
    report: dict[str, Any] = {"benchmark": "flood", "server_root": str(server_root), "sockets": sockets}
    try:
        await wait_healthy(url, proc)
        # live tracks: their clocks only move forward (a looped file restarts its own)
        live = MediaCase("live", rate=48000, layout="mono", sizes=((224, 224),))
        async with aiohttp.ClientSession() as http, EchoClient(url, DEMO_KEY) as client:
            await client.stream_tracks([OddAudioTrack(live), OddVideoTrack(live)])
            deadline = time.monotonic() + 60
            while not stats_of(client).seen_audio and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            seen_start = stats_of(client)
            cpu_start = cpu_s(proc.pid)
            before = await _probe(http, url, baseline_s)
            seen0 = stats_of(client)
            cpu0 = cpu_s(proc.pid)
            flooders = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "echo_lab.service_bench.flood",
                url,
                str(sockets),
                str(seconds),
                stdout=asyncio.subprocess.PIPE,
            )
            probe = asyncio.create_task(_probe(http, url, seconds), name="flood-probe")
            await asyncio.sleep(seconds / 3)
            answer: str | None = None
            error: str | None = None
            try:
                answer = await asyncio.wait_for(client.ask_text("what colour is the shape"), seconds)
            except (ClientError, TimeoutError) as exc:
                error = getattr(exc, "code", "timeout")
            during = await probe
            seen1 = stats_of(client)
            cpu1 = cpu_s(proc.pid)
            out, _ = await flooders.communicate()
            lines = out.decode().strip().splitlines()
            report["flood"] = json.loads(lines[-1]) if lines else {}
        report.update(
            healthz_before_p50_ms=_ms(before, 50),
            healthz_before_p95_ms=_ms(before, 95),
            healthz_flood_p50_ms=_ms(during, 50),
            healthz_flood_p95_ms=_ms(during, 95),
            healthz_flood_max_ms=round(max(during), 1) if during else None,
            seen_audio_before_flood=seen0.seen_audio - seen_start.seen_audio,
            seen_video_before_flood=seen0.seen_video - seen_start.seen_video,
            seen_audio_during_flood=seen1.seen_audio - seen0.seen_audio,
            seen_video_during_flood=seen1.seen_video - seen0.seen_video,
            server_cpu_share_before=round((cpu0 - cpu_start) / baseline_s, 2),
            server_cpu_share_flood=round((cpu1 - cpu0) / seconds, 2),
            drops_before_flood=seen0.drops - seen_start.drops,
            drops_during_flood=seen1.drops - seen0.drops,
            ingest_lag_s_end=seen1.ingest_lag_s,
            answered=answer is not None,
            answer=answer,
            answer_error=error,
        )
        if report.get("flood", {}).get("sent"):
            report["flood_messages_per_s"] = round(report["flood"]["sent"] / seconds)
    finally:
        stop_process(proc)
    return report


def main(argv: list[str] | None = None) -> int:
    """`python -m echo_lab.service_bench.flood URL SOCKETS SECONDS`: the flooder process itself."""
    args = sys.argv[1:] if argv is None else argv
    # the attacker's CPU is not the service's: on a shared 2-core host the flooder would
    # otherwise starve the healthy client's video encoder, not the server
    os.nice(10)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_flood_process(args[0], int(args[1]), float(args[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
