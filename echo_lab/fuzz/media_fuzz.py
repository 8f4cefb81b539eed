"""Odd media over real WebRTC: audio at odd rates and layouts, video at odd sizes, jumping clocks.

Each case is a session of its own whose tracks produce raw frames the way a broken camera or
a misconfigured robot might: audio at 8 kHz … 96 kHz (or a prime rate) in mono to 7.1,
video from 2×2 to 1920×1080 or with a size that changes every frame, timestamps that leap
forwards or backwards. aiortc encodes them (Opus, VP8) as a browser would; the server must
decode, resample and chunk them, then answer a question about the session or refuse it with
an error code. A case fails when the question neither answers nor errs in time, or when the
server stops answering `/healthz`.
"""

from __future__ import annotations

import asyncio
import fractions
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame, VideoFrame

from client.echo_client import ClientError, EchoClient

RATES = (8000, 11025, 16000, 22050, 44100, 48000, 96000, 7919)
LAYOUTS = ("mono", "stereo", "2.1", "quad", "5.1", "7.1")
SIZES = ((2, 2), (3, 7), (17, 9), (64, 4), (4, 64), (641, 479), (1920, 1080), (112, 112))
FAMILIES = ("audio_rate", "audio_layout", "video_size", "video_size_changes", "timestamp_jump")
CASE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class MediaCase:
    """One odd stream: its audio format, its video sizes (cycled per frame) and a clock jump."""

    family: str
    rate: int = 48000
    layout: str = "stereo"
    sizes: tuple[tuple[int, int], ...] = ((112, 112),)
    jump_s: float = 0.0  # added to both clocks after one second of media


def generate_media_cases(seed: int, count: int) -> list[MediaCase]:
    rng = random.Random(seed)
    cases = []
    for i in range(count):
        family = FAMILIES[i % len(FAMILIES)]
        if family == "audio_rate":
            cases.append(MediaCase(family, rate=rng.choice(RATES)))
        elif family == "audio_layout":
            cases.append(MediaCase(family, rate=rng.choice(RATES), layout=rng.choice(LAYOUTS)))
        elif family == "video_size":
            cases.append(MediaCase(family, sizes=(rng.choice(SIZES),)))
        elif family == "video_size_changes":
            cases.append(MediaCase(family, sizes=tuple(rng.sample(SIZES, 3))))
        else:
            cases.append(MediaCase(family, jump_s=rng.choice([-30.0, -1.0, 5.0, 3600.0])))
    return cases


class OddAudioTrack(MediaStreamTrack):
    """20-ms s16 frames of a tone at `rate` Hz in `layout`, paced in real time."""

    kind = "audio"

    def __init__(self, case: MediaCase) -> None:
        super().__init__()
        self.case = case
        self.sent = 0

    async def recv(self) -> AudioFrame:
        rate = self.case.rate
        n = max(1, rate // 50)
        await asyncio.sleep(0.02)
        t = (self.sent + np.arange(n)) / rate
        tone = (6000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        channels = AudioFrame(format="s16", layout=self.case.layout, samples=1).layout.channels
        frame = AudioFrame.from_ndarray(
            np.repeat(tone, len(channels))[None, :], format="s16", layout=self.case.layout
        )
        jump = int(self.case.jump_s * rate) if self.sent >= rate else 0
        frame.sample_rate, frame.pts, frame.time_base = (
            rate,
            max(0, self.sent + jump),
            fractions.Fraction(1, rate),
        )
        self.sent += n
        return frame


class OddVideoTrack(MediaStreamTrack):
    """10-fps frames cycling through `sizes`, their colour changing every second."""

    kind = "video"

    def __init__(self, case: MediaCase) -> None:
        super().__init__()
        self.case = case
        self.count = 0

    async def recv(self) -> VideoFrame:
        await asyncio.sleep(0.1)
        w, h = self.case.sizes[self.count % len(self.case.sizes)]
        rgb = np.zeros((h, w, 3), dtype=np.uint8)
        rgb[..., (self.count // 10) % 3] = 200
        frame = VideoFrame.from_ndarray(rgb, format="rgb24")
        jump = int(self.case.jump_s * 90_000) if self.count >= 10 else 0
        frame.pts, frame.time_base = max(0, self.count * 9000 + jump), fractions.Fraction(1, 90_000)
        self.count += 1
        return frame


async def run_media_case(url: str, api_key: str, case: MediaCase, seconds: float = 3.0) -> str:
    """'answered', 'error:<code>' (a clean refusal) or 'timeout' (a failure)."""
    try:
        async with EchoClient(url, api_key) as client:
            await client.stream_tracks([OddAudioTrack(case), OddVideoTrack(case)])
            await asyncio.sleep(seconds)
            await asyncio.wait_for(client.ask_text("what colour is the shape"), CASE_TIMEOUT_S)
            return "answered"
    except ClientError as exc:
        return f"error:{exc.code}"
    except TimeoutError:
        return "timeout"


def describe(case: MediaCase) -> dict[str, Any]:
    return {
        "family": case.family,
        "rate": case.rate,
        "layout": case.layout,
        "sizes": case.sizes,
        "jump_s": case.jump_s,
    }
