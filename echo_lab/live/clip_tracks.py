"""Live tracks of the world for the voice benchmark and tests, paced in real time.

`SpeakingTrack` is a microphone that says what it is given: the world's room tone (hum and
noise floor) except where queued audio (16 kHz float32: a clip's sound, a spoken question)
plays, in 20 ms frames of 48 kHz s16 (mono samples in both channels: `full_level_frame`). `say` returns the
16 kHz sample index at which the audio will start, so a caller knows the truth in the track's
own time: sample k plays k / 16000 s after the first frame (`started_at`, wall clock).
`FramesTrack` shows frames at their times and holds the last one after the end; frame time t
is on screen at `started_at + t` (wall clock). `camera` films a clip's scene: its frames are the
scene rendered at 30 fps, each at its own time, as a camera pointed at the world would see it
(the clip's own 2 fps frames, each held for half a second, would show every change up to
0.5 s late).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack, VideoStreamTrack
from av import AudioFrame
from av import VideoFrame as AvVideoFrame
from scipy.signal import resample_poly

from echo_lab.world import Clip
from echo_lab.world.render import FLOOR_STD, HUM_AMP, HUM_HZ, render_frames
from echo_lab.world.spec import FPS
from server.full_level import full_level_frame

RATE = 48000
FRAME = 960  # 20 ms
UP = 3  # 16 kHz → 48 kHz
CAMERA_FPS = 30  # the rate `FramesTrack` sends at


class SpeakingTrack(MediaStreamTrack):
    """Room tone with queued utterances, in real time."""

    kind = "audio"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self._queue: deque[np.ndarray] = deque()  # 48 kHz float32 pieces still to play
        self._sent = 0  # 48 kHz samples sent
        self._queued = 0  # 48 kHz samples queued but not yet sent
        self._start: float | None = None
        self.started_at: float | None = None  # time.time() of the first frame
        self._rng = np.random.default_rng(seed)
        self.started = asyncio.Event()  # the first frame went out

    def say(self, samples: np.ndarray, sample_rate: int = 16000) -> int:
        """Queue `samples` (float32 mono at 16 kHz) after whatever is queued; the 16 kHz index where
        they start in the track."""
        if sample_rate != 16000:
            raise ValueError(f"say takes 16 kHz audio, got {sample_rate} Hz")
        start = self._sent + self._queued
        up = resample_poly(np.asarray(samples, np.float64), UP, 1).astype(np.float32)
        self._queue.append(up)
        self._queued += len(up)
        return start // UP

    @property
    def busy(self) -> bool:
        """Queued audio is still playing."""
        return self._queued > 0

    def _room_tone(self, n: int) -> np.ndarray:
        t = (self._sent + np.arange(n)) / RATE
        return (HUM_AMP * np.sin(2 * np.pi * HUM_HZ * t) + FLOOR_STD * self._rng.standard_normal(n)).astype(
            np.float32
        )

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = self.started_at = time.time()
        else:
            await asyncio.sleep(max(0.0, self._start + self._sent / RATE - time.time()))
        out = self._room_tone(FRAME)
        at = 0
        while at < FRAME and self._queue:
            piece = self._queue[0]
            take = min(FRAME - at, len(piece))
            out[at : at + take] = piece[:take]
            if take == len(piece):
                self._queue.popleft()
            else:
                self._queue[0] = piece[take:]
            self._queued -= take
            at += take
        pcm = (np.clip(out, -1.0, 1.0) * 32767).astype(np.int16)
        frame = full_level_frame(pcm, RATE, self._sent)  # as a browser's microphone: not 3 dB down
        self._sent += FRAME
        self.started.set()
        return frame


class FramesTrack(VideoStreamTrack):
    """Frames [T, H, W, 3] uint8 (frame i at i / `fps`), sent at 30 fps; the last one held."""

    def __init__(self, frames: np.ndarray, fps: float = FPS) -> None:
        super().__init__()
        self.frames = frames
        self.fps = fps
        self.started_at: float | None = None  # time.time() of the first frame
        self.started = asyncio.Event()  # the first frame went out

    async def recv(self) -> AvVideoFrame:
        pts, time_base = await self.next_timestamp()
        if self.started_at is None:  # the first timestamp is pts 0, returned at once
            self.started_at = time.time()
            self.started.set()
        t = float(pts * time_base)
        image = self.frames[min(int(t * self.fps + 1e-6), len(self.frames) - 1)]
        frame = AvVideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


def camera(clip: Clip) -> FramesTrack:
    """A camera filming `clip`'s scene: the scene rendered at each sent frame's time (30 fps)."""
    frames, _ = render_frames(clip.spec, int(clip.frames.shape[1]), fps=CAMERA_FPS)
    return FramesTrack(frames, fps=CAMERA_FPS)
