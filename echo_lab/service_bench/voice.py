"""`echo-bench voice`: spoken questions through the real service on loopback, with server VAD.

For each of N test clips a session streams the clip over WebRTC in real time (a camera filming
its scene at 30 fps, and a microphone track playing its sound), then the microphone speaks one
of the clip's questions in a held-out voice (`spoken_question`); later the same question is
typed on the same session.
Sessions ask for `modalities: ["text", "audio"]`: answers come back as text and as speech on
the peer connection's audio track, decoded at the client into a `RecordingSink`.
Measured at the client, from the wall-clock moment the last word's last sample was sent:
the delay to `input_audio.speech_stopped`, to `response.created`, to the spoken answer's
first text delta (answers without text are left out and counted), to the arrival of its first
non-silent audio frame, and to its `response.done`; p50/p95 of each; and the accuracy of the
spoken and the typed answers (first word vs the truth), overall and per question family.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.echo_client import EchoClient
from client.playback import RecordingSink
from echo_lab.world import Clip, make_clip
from echo_lab.world.questions import FAMILIES, Question
from echo_lab.world.spec import SAMPLE_RATE
from echo_lab.world.speech import PAD_S, spoken_question
from server.config import load_service_config
from server.protocol import (
    ResponseCreated,
    ResponseDone,
    ResponseTextDelta,
    SessionSettings,
    SpeechStopped,
    TurnDetection,
)
from server.resources import config_file

from ..launch.local_server import local_server
from ..live.clip_tracks import SpeakingTrack, camera
from .streams import percentile

DEMO_CONFIG = config_file("demo")

SERVER_VAD = TurnDetection(type="server_vad", silence_duration_ms=500, prefix_padding_ms=300)
SETTINGS = SessionSettings(turn_detection=SERVER_VAD, modalities=["text", "audio"])


@dataclass
class VoiceRow:
    family: str
    truth: str
    spoken_answer: str
    typed_answer: str
    spoken_s: float
    to_stopped_ms: float
    to_created_ms: float
    to_text_ms: float | None  # None when the answer had no text
    to_audio_ms: float | None  # None when no non-silent answer audio arrived
    to_done_ms: float

    @staticmethod
    def correct(answer: str, truth: str) -> bool:
        return bool(answer) and answer.split()[0] == truth


def pick_clips(
    count: int, duration_s: float | None, families: tuple[str, ...] = FAMILIES, split: str = "test"
) -> list[tuple[Clip, Question]]:
    """The first `count` clips of `split`, in order, such that clip k has a question of family
    k mod len(families) (families in turn; clips without one are passed over); with its question."""
    unknown = set(families) - set(FAMILIES)
    if not families or unknown:
        raise ValueError(f"families must be a non-empty subset of {FAMILIES}, got {families}")
    chosen: list[tuple[Clip, Question]] = []
    index = 0
    while len(chosen) < count:
        family = families[len(chosen) % len(families)]
        clip = make_clip(split, index, duration_s=duration_s)
        question = next((q for q in clip.questions if q.family == family), None)
        if question is not None:
            chosen.append((clip, question))
        index += 1
    return chosen


async def one_clip(url: str, key: str, clip: Clip, question: Question, k: int) -> VoiceRow:
    """Stream `clip`, speak `question` in a held-out voice, then type the same question."""
    words = spoken_question(clip.spec, question)
    words_s = len(words) / SAMPLE_RATE - 2 * PAD_S
    sink = RecordingSink()
    async with EchoClient(url, key, settings=SETTINGS) as client:
        mic = SpeakingTrack(seed=k)
        await client.stream_tracks([camera(clip), mic], answer_sink=sink)
        mic.say(clip.audio)
        at = mic.say(words)
        await asyncio.wait_for(mic.started.wait(), 30)
        assert mic.started_at is not None
        speech_end = mic.started_at + at / SAMPLE_RATE + PAD_S + words_s
        # the sink stamps arrivals with time.monotonic(); the end of speech is wall clock
        speech_end_monotonic = speech_end - (time.time() - time.monotonic())
        await client.next_event(SpeechStopped, timeout=120)
        to_stopped = 1000 * (time.time() - speech_end)
        since = len(sink.frames)  # the answer track is silent until an answer is spoken
        created = await client.next_event(ResponseCreated, timeout=120)
        to_created = 1000 * (time.time() - speech_end)
        text: list[str] = []
        to_text: float | None = None
        while True:
            event = await client.next_event(ResponseTextDelta, ResponseDone, timeout=120)
            if not isinstance(event, ResponseTextDelta):
                to_done = 1000 * (time.time() - speech_end)
                break
            if to_text is None:
                to_text = 1000 * (time.time() - speech_end)
            text.append(event.delta)
        # response.done leaves the server with the answer's last audio frame, so an answer with
        # words to say has its first loud frame in the sink by now (or a jitter buffer later)
        first = await sink.wait_loud(since, timeout_s=2.0) if "".join(text).strip() else None
        to_audio = None if first is None else 1000 * (sink.arrivals[first] - speech_end_monotonic)
        # the typed answer is spoken too: ask_text returns at its response.done
        typed = await client.ask_text(question.text)
        await client.stop_streaming()
    return VoiceRow(
        question.family,
        question.answer,
        "".join(text).strip(),
        typed,
        created.spoken_s or 0.0,
        to_stopped,
        to_created,
        to_text,
        to_audio,
        to_done,
    )


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def summarize(rows: list[VoiceRow]) -> dict[str, Any]:
    def accuracy(of: list[VoiceRow], typed: bool) -> float | None:
        if not of:
            return None
        return sum(VoiceRow.correct(r.typed_answer if typed else r.spoken_answer, r.truth) for r in of) / len(
            of
        )

    stopped = [r.to_stopped_ms for r in rows]
    created = [r.to_created_ms for r in rows]
    text = [r.to_text_ms for r in rows if r.to_text_ms is not None]
    audio = [r.to_audio_ms for r in rows if r.to_audio_ms is not None]
    done = [r.to_done_ms for r in rows]
    by_family: dict[str, list[VoiceRow]] = defaultdict(list)
    for r in rows:
        by_family[r.family].append(r)
    return {
        "questions": len(rows),
        "spoken_accuracy": accuracy(rows, typed=False),
        "typed_accuracy": accuracy(rows, typed=True),
        "speech_end_to_stopped_p50_ms": rounded(percentile(stopped, 50)),
        "speech_end_to_stopped_p95_ms": rounded(percentile(stopped, 95)),
        "speech_end_to_created_p50_ms": rounded(percentile(created, 50)),
        "speech_end_to_created_p95_ms": rounded(percentile(created, 95)),
        "speech_end_to_text_p50_ms": rounded(percentile(text, 50)),
        "speech_end_to_text_p95_ms": rounded(percentile(text, 95)),
        "answers_with_text": len(text),
        "speech_end_to_done_p50_ms": rounded(percentile(done, 50)),
        "speech_end_to_done_p95_ms": rounded(percentile(done, 95)),
        "speech_end_to_audio_p50_ms": rounded(percentile(audio, 50)),
        "speech_end_to_audio_p95_ms": rounded(percentile(audio, 95)),
        "answers_with_audio": len(audio),
        "families": {
            family: {
                "questions": len(of),
                "spoken_accuracy": accuracy(of, typed=False),
                "typed_accuracy": accuracy(of, typed=True),
                "speech_end_to_text_p50_ms": rounded(
                    percentile([r.to_text_ms for r in of if r.to_text_ms is not None], 50)
                ),
                "speech_end_to_audio_p50_ms": rounded(
                    percentile([r.to_audio_ms for r in of if r.to_audio_ms is not None], 50)
                ),
            }
            for family, of in sorted(by_family.items())
        },
        "rows": [{k: rounded(v) if isinstance(v, float) else v for k, v in vars(r).items()} for r in rows],
    }


async def run_voice(
    clips: int,
    config_path: Path = DEMO_CONFIG,
    duration_s: float | None = None,
    families: tuple[str, ...] = FAMILIES,
) -> dict[str, Any]:
    """Ask `clips` spoken (and typed) questions, one clip at a time, on a local echo-server;
    clip k's question is of family k mod len(`families`)."""
    config = load_service_config(config_path)
    key = config.server.api_keys[0]
    chosen = pick_clips(clips, duration_s, families)
    started = time.monotonic()
    rows: list[VoiceRow] = []
    async with local_server(
        config_path,
        f"server.max_sessions_per_key={clips + 1}",
        "server.questions_per_minute=1000",
    ) as url:
        for k, (clip, question) in enumerate(chosen):
            rows.append(await one_clip(url, key, clip, question, k))
    report = summarize(rows)
    return {
        "config": config_path.name,
        "clips": len(chosen),
        "turn_detection": dataclasses.asdict(SERVER_VAD),
        "modalities": SETTINGS.modalities,
        "families_asked": list(families),
        "voices": "held-out (test split)",
        **report,
        "wall_s": round(time.monotonic() - started, 1),
    }
