"""`echo-bench voice`: spoken questions through the real service on loopback, with server VAD.

For each of N test clips a session streams the clip over WebRTC in real time (its frames, and
a microphone track playing its sound), then the microphone speaks one of the clip's questions
in a held-out voice (`spoken_question`); later the same question is typed on the same session.
Measured at the client, from the wall-clock moment the last word's last sample was sent:
the delay to `input_audio.speech_stopped`, to `response.created`, to the spoken answer's
first text delta (answers without text are left out and counted) and to its `response.done`,
and (with
`modalities: ["text", "audio"]`, when the server speaks answers) to its first audio frame;
p50/p95 of each; and the accuracy of the spoken and the typed answers (first word vs the
truth), overall and per question family.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echo_core.world import Clip, make_clip
from echo_core.world.questions import FAMILIES
from echo_core.world.spec import SAMPLE_RATE
from echo_core.world.speech import PAD_S, spoken_question
from server.config import load_service_config

from ..clip_tracks import FramesTrack, SpeakingTrack
from ..echo_client import EchoClient
from ..local_server import ROOT, local_server
from .streams import percentile

SERVER_VAD = {"type": "server_vad", "silence_duration_ms": 500, "prefix_padding_ms": 300}


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
    to_done_ms: float

    @staticmethod
    def correct(answer: str, truth: str) -> bool:
        return bool(answer) and answer.split()[0] == truth


def pick_clips(count: int, duration_s: float | None) -> list[Clip]:
    clips: list[Clip] = []
    index = 0
    while len(clips) < count:
        clip = make_clip("test", index, duration_s=duration_s)
        if clip.questions:
            clips.append(clip)
        index += 1
    return clips


async def one_clip(url: str, key: str, clip: Clip, k: int) -> VoiceRow:
    """Stream `clip`, speak question k mod n of it, then type the same question."""
    family = FAMILIES[k % len(FAMILIES)]  # families in turn, where the clip has one
    question = next((q for q in clip.questions if q.family == family), clip.questions[0])
    words = spoken_question(clip.spec, question)
    words_s = len(words) / SAMPLE_RATE - 2 * PAD_S
    async with EchoClient(url, key, settings={"turn_detection": SERVER_VAD}) as client:
        mic = SpeakingTrack(seed=k)
        await client.stream_tracks([FramesTrack(clip.frames), mic])
        mic.say(clip.audio)
        at = mic.say(words)
        await asyncio.wait_for(mic.started.wait(), 30)
        assert mic.started_at is not None
        speech_end = mic.started_at + at / SAMPLE_RATE + PAD_S + words_s
        stopped = await client.next_event("input_audio.speech_stopped", timeout=120)
        to_stopped = 1000 * (time.time() - speech_end)
        del stopped
        created = await client.next_event("response.created", timeout=120)
        to_created = 1000 * (time.time() - speech_end)
        text: list[str] = []
        to_text: float | None = None
        while True:
            event = await client.next_event("response.output_text.delta", "response.done", timeout=120)
            if event["type"] == "response.done":
                to_done = 1000 * (time.time() - speech_end)
                break
            if to_text is None:
                to_text = 1000 * (time.time() - speech_end)
            text.append(str(event["delta"]))
        typed = await client.ask_text(question.text)
        await client.stop_streaming()
    return VoiceRow(
        question.family,
        question.answer,
        "".join(text).strip(),
        typed,
        float(created.get("spoken_s") or 0.0),
        to_stopped,
        to_created,
        to_text,
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
        # the server does not speak answers in this build: no audio frames to time
        "speech_end_to_audio_p50_ms": None,
        "speech_end_to_audio_p95_ms": None,
        "families": {
            family: {
                "questions": len(of),
                "spoken_accuracy": accuracy(of, typed=False),
                "typed_accuracy": accuracy(of, typed=True),
                "speech_end_to_text_p50_ms": rounded(
                    percentile([r.to_text_ms for r in of if r.to_text_ms is not None], 50)
                ),
            }
            for family, of in sorted(by_family.items())
        },
        "rows": [{k: rounded(v) if isinstance(v, float) else v for k, v in vars(r).items()} for r in rows],
    }


async def run_voice(
    clips: int, config_path: Path = ROOT / "configs" / "demo.yaml", duration_s: float | None = None
) -> dict[str, Any]:
    """Ask `clips` spoken (and typed) questions, one clip at a time, on a local echo-server."""
    config = load_service_config(config_path)
    key = config.server.api_keys[0]
    chosen = pick_clips(clips, duration_s)
    started = time.monotonic()
    rows: list[VoiceRow] = []
    async with local_server(
        config_path,
        f"server.max_sessions_per_key={clips + 1}",
        "server.questions_per_minute=1000",
    ) as url:
        for k, clip in enumerate(chosen):
            rows.append(await one_clip(url, key, clip, k))
    report = summarize(rows)
    return {
        "config": config_path.name,
        "clips": len(chosen),
        "turn_detection": SERVER_VAD,
        "voices": "held-out (test split)",
        **report,
        "wall_s": round(time.monotonic() - started, 1),
    }
