"""The outgoing audio track that carries spoken answers back on a session's peer connection.

aiortc's RTP sender pulls frames from a track as fast as `recv` returns them and sends each
one. The track hands it ready Opus packets (`RTCRtpSender` packs an `av.Packet` as it is, with
the packet's pts as RTP time): speech goes through aiortc's own `OpusEncoder` here, and digital
silence is Opus's own silent packet, so no encoder runs while nobody speaks. The track paces
itself on the wall clock, one 20-ms frame of 48-kHz mono per 20 ms (as aiortc's own
`AudioStreamTrack` does), and a frame's pts is its place on that clock.

While nobody speaks the track sends as Opus DTX does: after `HANGOVER_FRAMES` of silence that
follow speech (receivers' jitter buffers release an answer's last frames), one silent packet
per `IDLE_EVERY_FRAMES` (400 ms) and nothing in between, so an idle session costs the server's
event loop 2.5 packets a second, not 50. The RTP time of the next packet still follows the wall
clock; receivers treat the gap as DTX. An answer queued while the track idles wakes it at once.

Answers are `Playback`s queued in order: the head one is played as its synthesised segments
arrive (silence fills a frame when the next sentence is still being synthesised), then the
next. A playback whose answer is cancelled stops at the next frame, wherever it is in the
queue. The queue is bounded (`max_pending`); an answer that finds it full is not spoken.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import functools
import logging
import time
from collections import deque
from collections.abc import Callable

import numpy as np
from aiortc.codecs.opus import OpusEncoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import Packet

from .full_level import full_level_frame
from .protocol import ResponseAudioDone, ResponseAudioStarted, ServerEvent

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000  # Opus' native rate: aiortc's encoder does not resample it
FRAME_SAMPLES = 960  # 20 ms, one Opus frame
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
MAX_PENDING = 8
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
#: Silent 20-ms frames sent one by one after speech, before the track goes sparse.
HANGOVER_FRAMES = 25
#: While idle, one silent packet per this many frames (400 ms, Opus DTX's interval).
IDLE_EVERY_FRAMES = 20
#: One idle frame, shared (read-only).
SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)
SILENCE.flags.writeable = False


def encode_frame(encoder: OpusEncoder, samples: np.ndarray, pts: int) -> bytes:
    """One 20-ms frame [960] int16 mono at sample `pts` → its Opus payload (aiortc's encoder: 96
    kbit/s, voip, 48 kHz stereo, one packet per frame), at the samples' own level."""
    frame = full_level_frame(samples, SAMPLE_RATE, pts)
    payloads, _ = encoder.encode(frame)
    return payloads[0]


@functools.cache
def silent_payload() -> bytes:
    """What libopus makes of digital silence once its state has settled (3 bytes)."""
    encoder = OpusEncoder()
    return [encode_frame(encoder, SILENCE, k * FRAME_SAMPLES) for k in range(3)][-1]


def opus_packet(payload: bytes, pts: int) -> Packet:
    packet = Packet(payload)
    packet.pts, packet.time_base = pts, TIME_BASE
    return packet


class Playback:
    """One answer's speech: its synthesised segments in order, played by `AnswerAudioTrack`.

    `segments` holds futures of int16 mono 48-kHz samples, in the order they are spoken; a
    segment whose synthesis failed is skipped. `on_event` receives `response.output_audio.started`
    when the first frame carrying this answer's audio leaves the track and
    `response.output_audio.done` when it ends; then `None`, once, whatever happened (also when
    nothing was spoken).
    """

    def __init__(
        self,
        response_id: str,
        cancelled: Callable[[], bool],
        on_event: Callable[[ServerEvent | None], None],
    ) -> None:
        self.response_id = response_id
        self.segments: deque[asyncio.Future[np.ndarray]] = deque()
        self.ended = False  # no segment will be added
        self.played = 0  # samples of speech handed to the track
        self.started = False
        self.finished = False
        self._cancelled = cancelled
        self._stopped = False
        self._on_event = on_event
        self._head: np.ndarray | None = None  # [n] int16: the segment being played
        self._at = 0  # samples of `_head` already played

    @property
    def cancelled(self) -> bool:
        return self._stopped or self._cancelled()

    def add(self, segment: asyncio.Future[np.ndarray]) -> None:
        if not self.ended and not self.finished:
            self.segments.append(segment)

    def end(self) -> None:
        """No more segments: the playback finishes once the ones it has are played."""
        self.ended = True

    def stop(self) -> None:
        """Cut the speech short at the next frame."""
        self._stopped = True

    def read(self, out: np.ndarray) -> int:
        """Copy up to len(out) samples of speech into `out`; fewer when the next segment is not ready."""
        filled = 0
        while filled < len(out):
            if self._head is None or self._at >= len(self._head):
                if not self.segments or not self.segments[0].done():
                    break
                segment = self.segments.popleft()
                self._head, self._at = self._segment_samples(segment), 0
                continue
            n = min(len(out) - filled, len(self._head) - self._at)
            out[filled : filled + n] = self._head[self._at : self._at + n]
            filled += n
            self._at += n
        if filled and not self.started:
            self.started = True
            self._on_event(ResponseAudioStarted(response_id=self.response_id))
        self.played += filled
        return filled

    def _segment_samples(self, segment: asyncio.Future[np.ndarray]) -> np.ndarray:
        if segment.cancelled():
            return np.zeros(0, dtype=np.int16)
        error = segment.exception()
        if error is not None:
            log.warning("%s: a sentence of the answer could not be spoken: %s", self.response_id, error)
            return np.zeros(0, dtype=np.int16)
        return segment.result()

    @property
    def exhausted(self) -> bool:
        """Every segment was played and none will come."""
        return self.ended and not self.segments and (self._head is None or self._at >= len(self._head))

    def finish(self, status: str) -> None:
        """Report the end (`completed` or `cancelled`; `output_audio.done` only if speech started)."""
        if self.finished:
            return
        self.finished = True
        for segment in self.segments:
            segment.cancel()  # syntheses not yet run are skipped
        self.segments.clear()
        self._head = None
        if self.started:
            duration_ms = round(self.played * 1000 / SAMPLE_RATE)
            self._on_event(
                ResponseAudioDone(response_id=self.response_id, duration_ms=duration_ms, status=status)
            )
        self._on_event(None)


class AnswerAudioTrack(MediaStreamTrack):
    """Spoken answers as a paced 48-kHz mono track: 20-ms frames, silence between answers."""

    kind = "audio"

    def __init__(self, *, max_pending: int = MAX_PENDING) -> None:
        super().__init__()
        self.max_pending = max_pending
        self._queue: deque[Playback] = deque()
        self._start: float | None = None
        self._frame = -1  # index of the last frame taken (its pts is frame × FRAME_SAMPLES)
        self._sent = -IDLE_EVERY_FRAMES  # index of the last frame sent
        self._spoke = -HANGOVER_FRAMES - 1  # index of the last frame that carried speech
        self._wake = asyncio.Event()  # set when an answer is queued or the track ends
        self._opus = OpusEncoder()  # speech only
        self.refused = 0  # answers not spoken because `max_pending` were queued

    def enqueue(self, playback: Playback) -> bool:
        """Queue an answer's speech after those already queued; False (not spoken) when full or ended."""
        if self.readyState != "live" or len(self._queue) >= self.max_pending:
            self.refused += 1
            log.warning(
                "answer %s not spoken: %d answers queued (limit %d), track %s",
                playback.response_id,
                len(self._queue),
                self.max_pending,
                self.readyState,
            )
            return False
        self._queue.append(playback)
        self._wake.set()
        return True

    def discard(self, playback: Playback) -> None:
        """Forget an answer that ended before it was played (its slot frees at once)."""
        if playback in self._queue:
            self._queue.remove(playback)

    def stop_speaking(self) -> None:
        """Cut every queued answer's speech short at the next frame (barge-in)."""
        for playback in self._queue:
            playback.stop()

    @property
    def speaking(self) -> bool:
        return bool(self._queue) and self._queue[0].started

    async def recv(self) -> Packet:  # type: ignore[override]
        """The next packet: 20 ms of speech, or silence as `IDLE_EVERY_FRAMES` and
        `HANGOVER_FRAMES` say, paced to the wall clock (pts = the frame's place on it)."""
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            now = time.monotonic()
            if self._start is None:
                self._start = now
            self._frame += 1
            await asyncio.sleep(self._start + self._frame * FRAME_S - now)
            pts = self._frame * FRAME_SAMPLES
            samples = self._next_samples()  # [960] int16
            if samples.any():
                self._spoke = self._sent = self._frame
                loop = asyncio.get_running_loop()
                payload = await loop.run_in_executor(None, encode_frame, self._opus, samples, pts)
                return opus_packet(payload, pts)
            if self._frame - self._spoke <= HANGOVER_FRAMES or self._frame - self._sent >= IDLE_EVERY_FRAMES:
                self._sent = self._frame
                return opus_packet(silent_payload(), pts)
            if not self._queue:  # idle: sleep until the next idle packet, or until an answer comes
                await self._idle(self._sent + IDLE_EVERY_FRAMES)

    async def _idle(self, until_frame: int) -> None:
        """Wait until frame `until_frame` is due or `_wake` is set; the loop then takes
        `until_frame`, or, woken sooner, the frame due now (the frames passed send no packet).
        Like the pacing sleep, a late timer delays a packet but never moves its pts."""
        assert self._start is not None
        self._wake.clear()
        if self.readyState == "live":  # `stop` may have come during the pacing sleep
            timeout = self._start + until_frame * FRAME_S - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, timeout))
        due = int((time.monotonic() - self._start) / FRAME_S)
        self._frame = max(self._frame, min(due, until_frame) - 1)

    def _next_samples(self) -> np.ndarray:
        """The next frame: queued answers' speech in order, silence where there is none."""
        if not self._queue:  # idle, the common case
            return SILENCE
        out = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        for playback in [p for p in self._queue if p.cancelled or p.finished]:
            self._queue.remove(playback)
            playback.finish("cancelled")  # a no-op for one its answer finished already
        filled = 0
        while self._queue and filled < FRAME_SAMPLES:
            head = self._queue[0]
            filled += head.read(out[filled:])
            if not head.exhausted:
                break  # its next sentence is still being synthesised
            self._queue.popleft()
            head.finish("completed")
        return out

    def stop(self) -> None:
        """End the track (the peer connection closed): every queued answer ends `cancelled`."""
        super().stop()
        self._wake.set()
        while self._queue:
            self._queue.popleft().finish("cancelled")
