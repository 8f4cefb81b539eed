"""`echo-bench faults`: break a running deployment and time what clients see.

Each scenario starts its own deployment (Redis without persistence, two workers, one
gateway, all separate processes; configs/cluster.yaml) and real WebRTC clients on the gateway:

- `worker_killed`: SIGKILL the worker holding a streaming session. Measured: time until
  that client gets `worker_lost` (detection), until a new session on the surviving worker
  answers (recovery); whether its old history (read with the old token) kept every answered
  question; whether a session on the other worker kept answering.
- `redis_restarted`: kill Redis and start it again empty. Measured: whether a question sent
  during the outage is answered and how long it took, whether the session kept ingesting,
  and whether every answered question is in the history again (and when).
- `client_dropped`: a client vanishes right after asking. Measured: whether the worker
  finishes and records the answer, how long until it frees the session, and whether another
  session is unaffected.
- `media_stalled`: a client's media stops for `stall_s` seconds, then resumes. Measured:
  questions during the stall (answered from the cache), ingest after the resume.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiortc.mediastreams import MediaStreamTrack

from client.echo_client import ClientError, EchoClient
from server.protocol import ResponseCreate, ResponseDone

from .fleet import FLEET_KEY, Fleet, fleet
from .streams import clip_files

WORKER_TTL_S = 3.0


def _key() -> str:
    return FLEET_KEY


async def _owner(fleet_: Fleet, session_id: str) -> str:
    r = aioredis.from_url(fleet_.redis.url, decode_responses=True)
    try:
        return str(await r.hget(f"echo:session:{session_id}", "worker"))
    finally:
        await r.aclose()


async def _metric(url: str, name: str, session_id: str) -> float | None:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(f'{name}{{session="{session_id}"}}'):
                return float(line.split()[-1])
    return None


async def _answer(client: EchoClient) -> ResponseDone | str:
    """Ask one question; its `response.done` event, or the code of the error that ended it."""
    try:
        await client.ask_text("what colour is the shape")
    except (ClientError, TimeoutError) as exc:
        return str(getattr(exc, "code", "timeout"))
    assert client.last_done is not None  # ask_text ends at its response.done
    return client.last_done


def outcome(answer: ResponseDone | str) -> str:
    """`completed`, `cancelled`, `failed`, or the error code that ended the question."""
    return answer.status if isinstance(answer, ResponseDone) else answer


def completed_id(answer: ResponseDone | str) -> str | None:
    """The response id of a completed answer (None for any other outcome)."""
    return answer.response_id if isinstance(answer, ResponseDone) and answer.status == "completed" else None


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float, step_s: float = 0.1) -> float | None:
    """Seconds until `check()` holds (None if it never did within `timeout_s`)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if await check():
            return round(time.monotonic() - started, 2)
        await asyncio.sleep(step_s)
    return None


async def reconnect(url: str, key: str, patience_s: float = 20.0) -> EchoClient:
    """A new session, retrying while the deployment answers `server_busy` (what clients should do)."""
    deadline = time.monotonic() + patience_s
    while True:
        client = EchoClient(url, key)
        try:
            await client.connect()
            return client
        except ClientError as exc:
            await client.close()
            if exc.code != "server_busy" or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def worker_killed(clips: list[Path]) -> dict[str, Any]:
    async with fleet(2, f"server.worker_ttl_s={WORKER_TTL_S}") as f:
        key = _key()
        async with EchoClient(f.gateway.url, key) as victim, EchoClient(f.gateway.url, key) as bystander:
            await victim.stream_file(str(clips[0]), loop=True)
            await bystander.stream_file(str(clips[1]), loop=True)
            await asyncio.sleep(6)
            answered = [await _answer(victim), await _answer(victim)]
            acked = [rid for rid in map(completed_id, answered) if rid is not None]
            owner = await _owner(f, victim.session_id)
            old_token = victim.token
            killed = time.monotonic()
            f.kill(owner)
            error = await victim.next_error(timeout=30)
            detection_s = time.monotonic() - killed
            after_kill = await _answer(victim)  # explicitly failed, never silent
            bystander_after = await _answer(bystander)
            async with await reconnect(f.gateway.url, key) as again:
                new_owner = await _owner(f, again.session_id)
                await again.stream_file(str(clips[0]), loop=True)
                await asyncio.sleep(4)
                recovered = await _answer(again)
                recovery_s = time.monotonic() - killed
                history = await again.history(token=old_token)
        kept = {i.response_id for i in history}
        return {
            "killed": owner,
            "detected_s": round(detection_s, 2),
            "victim_saw": error.code,
            "question_after_kill": outcome(after_kill),
            "reconnected_to": new_owner,
            "recovered_answer": outcome(recovered),
            "recovery_s": round(recovery_s, 2),
            "recovery_note": "includes 4 s of streaming before the first question on the new session",
            "acknowledged": len(acked),
            "acknowledged_lost": len([r for r in acked if r not in kept]),
            "bystander_after_kill": outcome(bystander_after),
        }


async def redis_restarted(clips: list[Path], down_s: float = 2.0) -> dict[str, Any]:
    async with fleet(2, f"server.worker_ttl_s={WORKER_TTL_S}") as f:
        async with EchoClient(f.gateway.url, _key()) as client:
            await client.stream_file(str(clips[0]), loop=True)
            await asyncio.sleep(6)
            answers = [await _answer(client) for _ in range(3)]
            acked = [a.response_id if isinstance(a, ResponseDone) else None for a in answers]
            owner = f.workers[await _owner(f, client.session_id)]
            chunks_before = await _metric(owner.url, "echo_chunks_ingested_total", client.session_id) or 0
            f.redis.stop(kill=True)
            stopped = time.monotonic()
            during = asyncio.create_task(_answer(client))  # asked while Redis is down
            await asyncio.sleep(down_s)
            f.redis.start()
            restarted = time.monotonic()
            answer = await during
            answered_s = time.monotonic() - stopped
            acked.append(completed_id(answer))
            wanted = {r for r in acked if r}

            async def repaired() -> bool:
                return wanted <= {i.response_id for i in await client.history()}

            repair_s = await _until(repaired, 30.0, 0.25)
            chunks_after = await _metric(owner.url, "echo_chunks_ingested_total", client.session_id) or 0
            after = await _answer(client)
            history = {i.response_id for i in await client.history()}
        return {
            "redis_down_s": round(restarted - stopped, 2),
            "question_during_outage": outcome(answer),
            "answered_after_s": round(answered_s, 2),
            "history_complete_after_restart_s": repair_s,
            "acknowledged": len(wanted),
            "acknowledged_lost": len(wanted - history),
            "chunks_ingested_during": int(chunks_after - chunks_before),
            "question_after": outcome(after),
        }


async def client_dropped(clips: list[Path]) -> dict[str, Any]:
    async with fleet(1, f"server.worker_ttl_s={WORKER_TTL_S}") as f:
        key, worker = _key(), f.workers["w1"]
        async with EchoClient(f.gateway.url, key) as other:
            await other.stream_file(str(clips[1]), loop=True)
            client = EchoClient(f.gateway.url, key)
            await client.connect()
            await client.stream_file(str(clips[0]), loop=True)
            await asyncio.sleep(6)
            token, session_id = client.token, client.session_id
            await client.send(ResponseCreate(token=token, question="what colour"))
            await client.close()  # gone mid-answer: WebSocket and peer connection
            dropped = time.monotonic()

            async def freed() -> bool:
                return await _metric(worker.url, "echo_cache_tokens", session_id) is None

            freed_s = await _until(freed, 60.0, 0.25)
            other_answer = await _answer(other)
            items = await other.history(token=token)
            del dropped
        return {
            "answer_recorded": bool(items),
            "recorded_answer": items[0].answer if items else None,
            "session_freed_s": freed_s,
            "other_session_answer": outcome(other_answer),
        }


class StallableTrack(MediaStreamTrack):
    """Relays a track, holding frames back while `stalled` is set (a frozen camera or a bad link)."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source
        self.stalled = asyncio.Event()

    async def recv(self) -> Any:
        while self.stalled.is_set():
            await asyncio.sleep(0.02)
        return await self.source.recv()


async def media_stalled(clips: list[Path], stall_s: float = 8.0) -> dict[str, Any]:
    async with fleet(1, f"server.worker_ttl_s={WORKER_TTL_S}") as f:
        worker = f.workers["w1"]
        async with EchoClient(f.gateway.url, _key()) as client:
            tracks = [StallableTrack(t) for t in client.open_media(str(clips[0]), loop=True)]
            await client.stream_tracks(tracks)
            await asyncio.sleep(6)
            sid = client.session_id
            for t in tracks:
                t.stalled.set()
            stalled = time.monotonic()
            await asyncio.sleep(1.0)
            during = await _answer(client)
            answered_in_s = time.monotonic() - stalled - 1.0
            await asyncio.sleep(max(0.0, stall_s - (time.monotonic() - stalled)))
            chunks_at_resume = await _metric(worker.url, "echo_chunks_ingested_total", sid) or 0
            for t in tracks:
                t.stalled.clear()

            async def ingesting() -> bool:
                return (await _metric(worker.url, "echo_chunks_ingested_total", sid) or 0) > chunks_at_resume

            resumed_s = await _until(ingesting, 30.0, 0.25)
            lag = await _metric(worker.url, "echo_ingest_lag_seconds", sid)
            after = await _answer(client)
        return {
            "stall_s": stall_s,
            "question_during_stall": outcome(during),
            "answered_during_stall_in_s": round(answered_in_s, 2),
            "ingest_resumed_after_s": resumed_s,
            "ingest_lag_after_resume_s": lag,
            "question_after_resume": outcome(after),
        }


SCENARIOS = {
    "worker_killed": worker_killed,
    "redis_restarted": redis_restarted,
    "client_dropped": client_dropped,
    "media_stalled": media_stalled,
}


async def run_faults(only: list[str] | None = None) -> dict[str, Any]:
    """Every scenario (or those named), each on a fresh deployment."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="echo-faults-") as tmp:
        clips = clip_files(2, Path(tmp))
        for name, scenario in SCENARIOS.items():
            if only and name not in only:
                continue
            started = time.monotonic()
            results[name] = await scenario(clips)
            results[name]["wall_s"] = round(time.monotonic() - started, 1)
            print(f"faults: {name}: {results[name]}", flush=True)
    return {
        "benchmark": "faults",
        "worker_ttl_s": WORKER_TTL_S,
        "targets": {"worker_loss_detected_s": 5.0, "acknowledged_lost": 0},
        "scenarios": results,
    }
