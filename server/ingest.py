"""Draining WebRTC tracks into a streaming session.

Per track two named tasks run. The reader awaits `track.recv()` in a loop and does
nothing slow: it stamps each frame with its session-clock time (`clock.py`) and puts it
in a small bounded buffer (video keeps the newest frames, audio drops the oldest; drops
counted), so aiortc's own unbounded receive queue never grows. The converter takes
frames from that buffer and converts them off the event loop, in the owner's executor:
video to RGB arrays, audio through one `av.AudioResampler` per track to 16 kHz mono
(even when the rates already match), then pushes them into the session's bounded queues.
An `audio_tap` (turn detection, voice.py) sees the same 16 kHz packets in the executor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import av
import numpy as np

from echo_core.stream.frames import AudioPacket, VideoFrame
from echo_core.stream.session import StreamSession

from .clock import SessionClock, TrackClock

log = logging.getLogger(__name__)


class TrackIngest:
    """Reader + converter for one aiortc track of one session."""

    def __init__(
        self,
        track: Any,
        session: StreamSession,
        clock: SessionClock,
        executor: Executor | None,
        *,
        max_buffer: int = 8,
        audio_tap: Callable[[AudioPacket], None] | None = None,
    ) -> None:
        self.track = track
        self.kind = str(track.kind)
        self.session = session
        self.clock = TrackClock(clock)
        self.executor = executor
        self.max_buffer = max_buffer
        self.audio_tap = audio_tap  # sees every converted audio packet, in the executor, in order
        self._buffer: deque[tuple[float, Any]] = deque()
        self._ready = asyncio.Event()
        self._ended = asyncio.Event()
        self._resampler: av.AudioResampler | None = None
        self._audio_format: tuple[object, ...] | None = None
        self.frames_in = 0
        self.dropped = 0
        self.converted = 0
        self.errors = 0
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the reader and the converter (named, owned: `stop` cancels them)."""
        sid = self.session.session_id
        self.tasks = [
            asyncio.create_task(self._read(), name=f"ingest-read-{self.kind}-{sid}"),
            asyncio.create_task(self._convert_loop(), name=f"ingest-convert-{self.kind}-{sid}"),
        ]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    @property
    def ended(self) -> bool:
        """The track ended and every frame it delivered reached the session."""
        return self._ended.is_set() and not self._buffer and all(t.done() for t in self.tasks[1:])

    async def wait_ended(self) -> None:
        """Until the track ended and every buffered frame was converted."""
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _read(self) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                frame = await self.track.recv()
                self.frames_in += 1
                t = self.clock.stream_time(frame.pts, frame.time_base, time.monotonic())
                if len(self._buffer) >= self.max_buffer:
                    self._buffer.popleft()
                    self.dropped += 1
                self._buffer.append((t, frame))
                self._ready.set()
        except MediaStreamError:
            log.info("%s: %s track ended", self.session.session_id, self.kind)
        finally:
            self._ended.set()
            self._ready.set()

    async def _convert_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._buffer:
                if self._ended.is_set():
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            t, frame = self._buffer.popleft()
            try:
                items = await loop.run_in_executor(self.executor, self.convert, t, frame)
            except Exception:  # a frame PyAV cannot convert: log, count, keep going
                self.errors += 1
                log.exception("%s: dropped an unconvertible %s frame", self.session.session_id, self.kind)
                continue
            for item in items:
                if isinstance(item, VideoFrame):
                    self.session.push_video(item)
                else:
                    self.session.push_audio(item)
            self.converted += 1

    def convert(self, t: float, frame: Any) -> list[VideoFrame | AudioPacket]:
        """Decoded frame → the session's typed media (runs in the executor)."""
        if self.kind == "video":
            return [VideoFrame(t, frame.to_ndarray(format="rgb24"))]
        fmt = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._resampler is None or fmt != self._audio_format:
            if self._audio_format is not None:
                log.info("%s: audio format changed %s → %s", self.session.session_id, self._audio_format, fmt)
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
            self._audio_format = fmt
        packets: list[AudioPacket] = []
        for piece in self._resampler.resample(frame):
            pcm = np.asarray(piece.to_ndarray()).reshape(-1)  # packed s16 mono: [1, n] → [n]
            packets.append(AudioPacket(t, pcm, 16000))
            t += len(pcm) / 16000
        if self.audio_tap is not None:
            for packet in packets:
                self.audio_tap(packet)
        return [*packets]
