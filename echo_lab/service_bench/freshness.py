"""`echo-bench freshness --service`: the freshness measurement through the real service.

The same questions as the in-process `echo-bench freshness` (`echo_lab.bench.freshness`): each
hinges on one shape that appears at t and stays on screen; it is asked at t + δ. Here a local
echo-server (the demo config: bundled echo-tiny on CPU) takes the clip over WebRTC on loopback
in real time (a `FramesTrack` of its frames and a `SpeakingTrack` playing its sound), and the
question goes over the WebSocket at the wall-clock moment `frames.started_at + t + δ`: frame
time t is on screen then, and the server's session clock anchors the video track at its first
frame's arrival. TTFT is measured at the client, from sending `response.create` to the first
`response.text.delta`; the answer's first word is scored against the truth.

One δ per session, sessions in turn: for each clip, one session per δ streams the clip from
its start and asks every question of that δ at its own moment (different questions hinge on
different shapes, so a session's asks lie apart; one still waits for the previous answer to
finish, and `ask_late_ms_max` says by how much an ask went out after its moment). Asking
several δ of one question on one session would put asks 0.25 s apart, closer than an answer
takes on a contended CPU: the later ask would wait behind the earlier one and time the queue,
not freshness. Sessions in turn rather than side by side keep one stream's load on the server.
The session of the last δ streams on to the clip's end and asks every question again
`END_SETTLE_S` after it (the last chunk has closed by then): `end_accuracy`, the reference.
Every other session closes after its last answer.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.echo_client import EchoClient
from echo_lab.bench.freshness import DEFAULT_DELAYS, target_shape
from echo_lab.world import Clip, make_clip
from echo_lab.world.questions import Question
from server.config import load_service_config
from server.protocol import ResponseTextDelta
from server.resources import config_file

from ..launch.local_server import local_server
from ..live.clip_tracks import FramesTrack, SpeakingTrack

DEMO_CONFIG = config_file("demo")
#: After the clip's end, the last 2-s chunk closes 0.5 s later; ask the reference after that.
END_SETTLE_S = 3.0


@dataclass(frozen=True)
class Ask:
    """One question asked at stream time `at_s` (the onset of its shape + δ)."""

    question: Question
    at_s: float


@dataclass(frozen=True)
class Answer:
    """What came back for one ask."""

    text: str
    ttft_ms: float | None  # None when the answer had no text
    late_ms: float  # how long after its moment the ask went out

    def correct(self, truth: str) -> bool:
        return bool(self.text.split()) and self.text.split()[0] == truth


@dataclass
class _Tally:
    right: int = 0
    n: int = 0
    ttft: list[float] = field(default_factory=list)
    late: list[float] = field(default_factory=list)

    def add(self, answer: Answer, truth: str) -> None:
        self.n += 1
        self.right += answer.correct(truth)
        self.late.append(answer.late_ms)
        if answer.ttft_ms is not None:
            self.ttft.append(answer.ttft_ms)


def plan_asks(clip: Clip, delay_s: float) -> list[Ask]:
    """The asks of one δ on `clip`, in time order: each shape question at its shape's onset + δ,
    where the shape is still on screen then and the moment is within the clip."""
    asks = []
    for q in clip.questions:
        shape = target_shape(clip, q.text, q.family, q.answer)
        if shape is None:
            continue
        at = shape.t_on + delay_s
        if at <= clip.spec.duration_s and at < shape.t_off:
            asks.append(Ask(q, at))
    return sorted(asks, key=lambda a: a.at_s)


def end_questions(clip: Clip) -> list[Question]:
    """The questions that hinge on one shape, asked at the clip's end as the reference."""
    return [q for q in clip.questions if target_shape(clip, q.text, q.family, q.answer) is not None]


async def timed_ask(client: EchoClient, question: str, due: float) -> Answer:
    """Ask `question` (`due`: the time.time() it should go out); first text delta time and text."""
    late_ms = max(0.0, 1000 * (time.time() - due))
    sent = time.monotonic()
    first: float | None = None
    text: list[str] = []
    async for event in client.respond(question):  # sends response.create on the first step
        if isinstance(event, ResponseTextDelta):
            first = first or time.monotonic()
            text.append(event.delta)
    ttft = None if first is None else 1000 * (first - sent)
    return Answer("".join(text).strip(), ttft, late_ms)


async def stream_and_ask(
    url: str, key: str, clip: Clip, asks: list[Ask], *, end: bool, seed: int = 0
) -> tuple[list[Answer], list[Answer]]:
    """One session: stream `clip` in real time, ask each of `asks` at its moment; with `end`, stream
    to the clip's end and ask the reference questions `END_SETTLE_S` later. (answers, end answers)"""
    answers: list[Answer] = []
    end_answers: list[Answer] = []
    async with EchoClient(url, key) as client:
        frames, mic = FramesTrack(clip.frames), SpeakingTrack(seed=seed)
        await client.stream_tracks([frames, mic])
        mic.say(clip.audio)
        await asyncio.wait_for(frames.started.wait(), 30)
        assert frames.started_at is not None
        for ask in asks:
            due = frames.started_at + ask.at_s
            await asyncio.sleep(max(0.0, due - time.time()))
            answers.append(await timed_ask(client, ask.question.text, due))
        if end:
            due = frames.started_at + clip.spec.duration_s + END_SETTLE_S
            await asyncio.sleep(max(0.0, due - time.time()))
            for q in end_questions(clip):
                end_answers.append(await timed_ask(client, q.text, due))
        await client.stop_streaming()
    return answers, end_answers


def pick_clips(split: str, count: int, delays: tuple[float, ...], duration_s: float | None) -> list[Clip]:
    """The first `count` clips of `split` with at least one ask at some δ of `delays`."""
    chosen: list[Clip] = []
    index = 0
    while len(chosen) < count:
        clip = make_clip(split, index, duration_s=duration_s)
        if any(plan_asks(clip, d) for d in delays):
            chosen.append(clip)
        index += 1
        if index > 100 * count:
            raise RuntimeError(f"fewer than {count} {split} clips ask a shape question ({len(chosen)})")
    return chosen


async def run_service_freshness(
    *,
    clips: int = 2,
    delays: tuple[float, ...] = DEFAULT_DELAYS,
    split: str = "test",
    duration_s: float | None = None,
    config_path: Path = DEMO_CONFIG,
) -> dict[str, Any]:
    """Accuracy and TTFT per δ after an event's onset through a local echo-server, vs clip end."""
    config = load_service_config(config_path)
    key = config.server.api_keys[0]
    chosen = pick_clips(split, clips, delays, duration_s)
    tallies = {d: _Tally() for d in delays}
    end = _Tally()
    started = time.monotonic()
    async with local_server(
        config_path,
        f"server.max_sessions_per_key={clips * len(delays) + 1}",
        "server.questions_per_minute=1000",
    ) as url:
        for k, clip in enumerate(chosen):
            plans = [(d, plan_asks(clip, d)) for d in delays]
            last = max(i for i, (_, asks) in enumerate(plans) if asks)
            for i, (d, asks) in enumerate(plans):
                if not asks:
                    continue
                answers, end_answers = await stream_and_ask(url, key, clip, asks, end=i == last, seed=k)
                for ask, answer in zip(asks, answers, strict=True):
                    tallies[d].add(answer, ask.question.answer)
                for q, answer in zip(end_questions(clip) if i == last else [], end_answers, strict=True):
                    end.add(answer, q.answer)
    rows = [
        {
            "delay_s": d,
            "accuracy": round(t.right / t.n, 4) if t.n else None,
            "ttft_ms": round(statistics.median(t.ttft), 1) if t.ttft else None,
            "n": t.n,
            "answers_with_text": len(t.ttft),
            "ask_late_ms_max": round(max(t.late), 1) if t.late else None,
        }
        for d, t in tallies.items()
    ]
    return {
        "mode": "service",
        "model": "echo-tiny",
        "config": config_path.name,
        "keep": config.stream.keep,
        "split": split,
        "n_clips": len(chosen),
        "clips": [c.spec.index for c in chosen],
        "duration_s": duration_s,
        "asks": "one δ per session, sessions in turn; clip end on the last δ's session",
        "end_accuracy": round(end.right / end.n, 4) if end.n else None,
        "end_n": end.n,
        "end_ttft_ms": round(statistics.median(end.ttft), 1) if end.ttft else None,
        "rows": rows,
        "wall_s": round(time.monotonic() - started, 1),
    }
