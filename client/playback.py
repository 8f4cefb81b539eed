"""Spoken answers at the client: the server's answer track, decoded, into a sink.

`AnswerPlayer` drains the remote audio track (aiortc decodes the Opus), converts every frame to
48-kHz mono int16 and hands it to a sink: `SpeakerSink` plays it through sounddevice,
`RecordingSink` keeps it (with each frame's arrival time) for tests and measurements.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import av
import numpy as np

from .errors import ClientError

log = logging.getLogger(__name__)

RATE = 48000
FRAME = 960  # 20 ms
#: Decoded Opus silence is zeros; espeak-ng's speech frames sit at RMS 0.03–0.2 (full scale 1).
SILENCE_FLOOR = 0.01


class AudioSink(Protocol):
    """Where decoded answer audio goes: int16 mono samples at 48 kHz, one frame at a time, with
    the frame's place on the sender's timeline (`pts`, in samples; lost packets leave gaps) and
    when it arrived (`time.monotonic`)."""

    def write(self, samples: np.ndarray, pts: int, arrived: float) -> None: ...

    def close(self) -> None: ...


@dataclass
class RecordingSink:
    """Keeps every frame with its place on the sender's timeline and the time it arrived
    (unbounded: for tests and measurements of a few answers, not for a long session)."""

    frames: list[np.ndarray] = field(default_factory=list)
    pts: list[int] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    closed: bool = False

    def write(self, samples: np.ndarray, pts: int, arrived: float) -> None:
        self.frames.append(samples)
        self.pts.append(pts)
        self.arrivals.append(arrived)

    def close(self) -> None:
        self.closed = True

    def loud_frames(self, since: int = 0, floor: float = SILENCE_FLOOR) -> list[int]:
        """Indices (from `since`) of frames whose RMS exceeds `floor` (full scale = 1)."""
        return [i for i in range(since, len(self.frames)) if rms(self.frames[i]) > floor]

    async def wait_loud(self, since: int, timeout_s: float = 2.0) -> int | None:
        """The index of the first frame from `since` above the silence floor, waiting up to
        `timeout_s` for one to arrive; None if none did."""
        for _ in range(int(timeout_s / 0.02) + 1):
            loud = self.loud_frames(since)
            if loud:
                return loud[0]
            await asyncio.sleep(0.02)
        return None

    async def wait_quiet(self, since: int, frames: int = 15, timeout_s: float = 10.0) -> None:
        """Until `frames` silent frames in a row arrived after frame `since`: a spoken answer's
        tail is in (its `response.done` leaves the server as its last frame does)."""
        for _ in range(int(timeout_s / 0.02)):
            tail = self.frames[max(since, len(self.frames) - frames) :]
            if len(tail) == frames and all(rms(f) <= SILENCE_FLOOR for f in tail):
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"answer audio not quiet {timeout_s} s after frame {since}")


@dataclass
class EchoGate:
    """Half duplex for loudspeakers: the microphone is muted while an answer plays and `tail_s`
    after it. Without echo cancellation the microphone hears Echo speak, and the server's VAD
    would take that for the user: a question of its own, or a barge-in that cuts the answer."""

    tail_s: float = 0.3
    open_at: float = 0.0  # time.monotonic() from which the microphone is open again

    def heard(self, samples: np.ndarray, arrived: float, queued_s: float) -> None:
        """A frame reached the speaker's buffer `queued_s` of audio behind what is playing."""
        if rms(samples) > SILENCE_FLOOR:
            self.open_at = max(self.open_at, arrived + queued_s + len(samples) / RATE + self.tail_s)

    def muted(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) < self.open_at


def rms(samples: np.ndarray) -> float:
    """Root mean square of int16 samples, full scale = 1."""
    x = samples.astype(np.float64) / 32768.0
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


class SpeakerSink:
    """Plays answer audio on the default output device (sounddevice / PortAudio).

    The device pulls from a bounded buffer (`max_buffer_s`); when the network delivers faster
    than the device plays, the oldest audio is dropped and counted. `gate` learns when the
    speaker sounds (to mute the microphone meanwhile).
    """

    def __init__(self, *, max_buffer_s: float = 2.0, gate: EchoGate | None = None) -> None:
        self.gate = gate
        try:
            import sounddevice as sd
        except (ImportError, OSError) as exc:
            raise ClientError(
                "no_speaker",
                f"playing answers needs sounddevice and PortAudio ({exc}); install PortAudio "
                "(Debian/Ubuntu: apt-get install libportaudio2) or leave out --talk",
            ) from None
        self._blocks: deque[np.ndarray] = deque(maxlen=max(1, int(max_buffer_s * RATE / FRAME)))
        self._head = np.zeros(0, dtype=np.int16)
        self.dropped = 0

        def pull(out: Any, frames: int, time_info: Any, status: Any) -> None:
            filled = 0
            while filled < frames:
                if not len(self._head):
                    if not self._blocks:
                        break
                    self._head = self._blocks.popleft()
                n = min(frames - filled, len(self._head))
                out[filled : filled + n, 0] = self._head[:n]
                self._head = self._head[n:]
                filled += n
            out[filled:, 0] = 0

        try:
            self._stream = sd.OutputStream(samplerate=RATE, channels=1, dtype="int16", callback=pull)
            self._stream.start()
        except Exception as exc:  # PortAudio: no output device, or it cannot open 48 kHz mono
            raise ClientError(
                "no_speaker",
                f"no usable audio output device: {exc}; check `python -m sounddevice` lists one, "
                "or leave out --talk",
            ) from None

    def write(self, samples: np.ndarray, pts: int, arrived: float) -> None:
        if len(self._blocks) == self._blocks.maxlen:
            self.dropped += 1  # the deque drops the oldest block
        if self.gate is not None:
            self.gate.heard(samples, arrived, (len(self._blocks) * FRAME + len(self._head)) / RATE)
        self._blocks.append(samples)

    def close(self) -> None:
        if not self._stream.closed:
            self._stream.stop()
            self._stream.close()


class AnswerPlayer:
    """Drains one remote audio track into a sink, in a named task the owner stops (the sink stays open).

    Converting a decoded 20-ms frame to mono is microseconds of PyAV work: it runs on the loop.
    """

    def __init__(self, track: Any, sink: AudioSink) -> None:
        self.track = track
        self.sink = sink
        self.frames = 0
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="echo-client-answer-audio")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _drain(self) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                frame = await self.track.recv()
                arrived = time.monotonic()
                for piece in self._resampler.resample(frame):  # [1, n] packed s16 mono
                    pts = int(piece.pts) if piece.pts is not None else -1
                    self.sink.write(np.asarray(piece.to_ndarray()).reshape(-1), pts, arrived)
                self.frames += 1
        except MediaStreamError:
            log.info("the answer audio track ended")
