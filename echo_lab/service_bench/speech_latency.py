"""`echo-bench speech-latency`: how long after an answer's text its speech reaches the client.

Starts echo-server (configs/demo.yaml: the bundled echo-tiny) in its own process, streams a
synthetic test clip over real WebRTC in a loop with `modalities: ["text", "audio"]`, asks the
clip's questions `asks` times one after another, and records for each answer, on the client's
clock: the last text delta, `response.output_audio.started`, and the first decoded Opus frame
of the answer's speech above the silence floor. Reported: p50/p95 of last delta → first
audio frame (synthesis, the track's next frame, Opus, loopback, the jitter buffer) and of
last delta → `output_audio.started`.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from client.echo_client import EchoClient
from client.playback import RecordingSink
from echo_lab.world import make_clip
from echo_lab.world.containers import write_webm
from server.config import load_service_config
from server.protocol import ResponseAudioDone, ResponseAudioStarted, ResponseTextDelta, SessionSettings

from ..launch.local_server import local_server
from .streams import percentile

SPOKEN = SessionSettings(modalities=["text", "audio"])


async def run_speech_latency(config_path: Path, asks: int, warmup_s: float = 4.0) -> dict[str, object]:
    """Ask `asks` questions of one looping clip; the delays from each answer's text to its speech."""
    key = load_service_config(config_path).server.api_keys[0]
    clip = make_clip("test", 0)
    to_audio: list[float] = []
    to_started: list[float] = []
    speech_ms: list[float] = []
    answers: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = write_webm(clip, Path(tmp) / "clip.webm")
        async with (
            local_server(config_path, "server.questions_per_minute=1000") as url,
            EchoClient(url, key, settings=SPOKEN) as client,
        ):
            sink = RecordingSink()
            await client.stream_file(str(path), loop=True, answer_sink=sink)
            await asyncio.sleep(warmup_s)  # the stream fills the cache: the first question has AV to read
            for i in range(asks):
                question = clip.questions[i % len(clip.questions)].text
                before = len(sink.frames)
                last_delta = started = 0.0
                async for event in client.respond(question):
                    now = time.monotonic()
                    if isinstance(event, ResponseTextDelta):
                        last_delta = now
                    elif isinstance(event, ResponseAudioStarted):
                        started = now
                    elif isinstance(event, ResponseAudioDone):
                        speech_ms.append(float(event.duration_ms))
                await sink.wait_quiet(before)
                loud = sink.loud_frames(before)
                answers.append(client.last_done.answer if client.last_done is not None else "")
                if not loud or not started:
                    continue  # nothing was said (an empty answer)
                to_audio.append(1000 * (sink.arrivals[loud[0]] - last_delta))
                to_started.append(1000 * (started - last_delta))

    def ms(values: list[float], q: float) -> float | None:
        value = percentile(values, q)
        return None if value is None else round(value, 1)

    return {
        "config": config_path.name,
        "asks": asks,
        "spoken": len(to_audio),
        "text_end_to_first_audio_ms_p50": ms(to_audio, 50),
        "text_end_to_first_audio_ms_p95": ms(to_audio, 95),
        "text_end_to_audio_started_ms_p50": ms(to_started, 50),
        "text_end_to_audio_started_ms_p95": ms(to_started, 95),
        "speech_ms_mean": round(statistics.fmean(speech_ms), 1) if speech_ms else None,
        "answers": sorted(set(answers)),
    }
