"""Synthetic aiortc tracks for loopback WebRTC tests."""

from __future__ import annotations

import asyncio
import fractions

import numpy as np
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from av import AudioFrame
from av import VideoFrame as AvVideoFrame


class ColourTrack(VideoStreamTrack):
    """112² frames whose colour changes every second (30 fps, as a webcam)."""

    async def recv(self) -> AvVideoFrame:
        pts, time_base = await self.next_timestamp()
        second = int(pts * time_base)
        rgb = np.zeros((112, 112, 3), dtype=np.uint8)
        rgb[..., second % 3] = 200
        frame = AvVideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class ToneTrack(AudioStreamTrack):
    """48-kHz stereo 440-Hz tone in 20-ms frames."""

    async def recv(self) -> AudioFrame:
        frame = await super().recv()  # paced silence with the right pts
        n = frame.samples
        t = (frame.pts + np.arange(n)) / 48000
        tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        out = AudioFrame.from_ndarray(np.repeat(tone, 2)[None, :], format="s16", layout="stereo")
        out.sample_rate, out.pts, out.time_base = 48000, frame.pts, fractions.Fraction(1, 48000)
        return out


class LateStartColourTrack(ColourTrack):
    """`ColourTrack` whose first frame leaves `delay_s` late (a video encoder starting up); the
    frames after it keep their schedule."""

    def __init__(self, delay_s: float = 0.15) -> None:
        super().__init__()
        self.delay_s = delay_s
        self._first = True

    async def recv(self) -> AvVideoFrame:
        frame = await super().recv()
        if self._first:
            self._first = False
            await asyncio.sleep(self.delay_s)
        return frame
