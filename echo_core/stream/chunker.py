"""Live media → aligned `MediaChunk`s: video resampled to 2 fps, audio as 16 kHz mono.

`ChunkAssembler` is pure and synchronous. It never raises on bad per-frame or per-packet
input: such input is logged (throttled: at the 1st, 2nd, 4th, 8th … occurrence of each
kind), counted in `stats` and dropped. It raises `ConfigError` only from its constructor.
S is `seconds_per_chunk`, F = round(S · fps) frames per chunk, N = S · 16000 samples.
Times beyond ±1e10 s and sample rates above 768 kHz count as invalid input.

1. Chunks. Stream time t lies in chunk floor(t / S + 1e-9); chunk c covers [c·S, (c+1)·S).
   Chunks are emitted in strictly increasing index order; a chunk with no media at all is
   never emitted. Open chunks live in a dict keyed by index, so a timestamp jump of hours
   costs O(1) (nothing is done for the skipped indices).
2. Video. A frame must be a [H, W, 3] uint8 numpy array with H, W ≥ 2, aspect ratio ≤ 200
   (`media.grid_size` refuses more) and a finite time. Its slot is k = floor(t · fps + 1e-6)
   and the slot's time k / fps is the frame's time, so a 30-fps source yields the times of a
   clip sampled at fps from 0; slot k belongs to chunk k // F. The first frame of a slot is
   used; later ones in the same slot (including a stalled, repeated time) are
   `frames_skipped`. A frame in a slot before the last used one is `frames_backwards`, one
   whose slot lies in an emitted chunk is `frames_late` (both dropped). Frames with a
   side under 28 px (the vision encoder's factor) are scaled up, aspect kept, to a min side
   of 28. A chunk takes the size of its first used frame; its other frames are resized to it.
   A chunk with video has exactly F frames at times c·S + j / fps: a missing slot holds the
   previous frame of the chunk, slots before its first frame repeat that first frame. The last
   chunk emitted by `flush` stops at its highest received slot, held to an even count (a
   temporal patch is 2 frames) but never past F.
3. Audio. Each packet goes through `media.to_mono_16k`. A write cursor w (absolute 16-kHz
   sample index) follows the stream; a packet's position is p = round(t · 16000). The first
   packet is written at p. Later: |p − w| ≤ jitter_s · 16000 → written at w (jitter ignored,
   audio stays contiguous); p beyond that after w → a gap, [w, p) stays silent and the packet
   is written at p; p beyond that before w → its first w − p samples overlap written audio and
   are dropped (`audio_samples_late`), the rest is written at w. Samples landing in an emitted
   chunk are dropped as late too. `audio_samples_gap_filled` counts the silence of a gap that
   lies inside the chunk holding the audio before the gap and the chunk of the packet after
   it (the chunks emitted with that silence); the chunks in between get no audio from the
   gap, and silence before a stream's first packet is not counted. A chunk's `audio` is its
   [N] float32 buffer if any sample was written into it (never-written parts are silence),
   else None; the last chunk of `flush` is cut after its last written sample.
4. Closing. The watermark is the larger of the latest valid (offset-corrected) video time and
   the audio cursor time w / 16000. Open chunk c closes once watermark ≥ (c+1)·S + lateness_s;
   `advance(now_s)` closes open chunks whose end ≤ now_s − lateness_s without moving the
   watermark (media arriving later for a chunk not yet emitted is still taken); `flush` closes
   all. Emitting a chunk also emits every open chunk of a lower index.
5. Realignment (a source restarting its clock). Each modality has an offset (s) added to its
   timestamps. An item more than `realign_s` behind that modality's latest time (video: last
   used slot time; audio: cursor time) moves the offset so that the item lands just after that
   time (video: the next slot; audio: the cursor), or at the start of the first chunk not yet
   emitted if that is later, so a restart is not dropped as late; it counts in `realignments`
   and is then processed. Forward jumps are never realigned: they are gaps.
6. Output. `MediaChunk(index=c, start_s=c·S, duration_s=S, frames [T, H, W, 3] uint8,
   frame_times [T] float64, audio [n] float32)`; duration_s stays S for the shorter last chunk.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import ConfigError, InvalidMediaError
from ..model.media import _MAX_ASPECT, AUDIO_RATE, VIDEO_FPS, resize_frames, to_mono_16k
from .frames import AudioPacket, MediaChunk, VideoFrame

logger = logging.getLogger(__name__)

#: Smallest frame side the vision encoder takes (patch 14 × merge 2); smaller frames are scaled up.
MIN_SIDE = 28
#: Times beyond this magnitude (~317 years) are invalid: slot and sample indices stop being exact.
MAX_ABS_TIME_S = 1e10
#: Highest accepted input sample rate; resampling from absurd rates would need huge filters.
MAX_SAMPLE_RATE = 768_000
_SLOT_EPS = 1e-6  # a timestamp a hair under a slot boundary (k / fps in float) still lands in slot k
_CHUNK_EPS = 1e-9


@dataclass
class ChunkerStats:
    """Counters of one `ChunkAssembler` (cumulative)."""

    frames_in: int = 0  # every push_video call
    frames_used: int = 0
    frames_skipped: int = 0  # extra frames in an already filled slot (not an error)
    frames_late: int = 0  # slot in an already emitted chunk
    frames_backwards: int = 0  # slot before the last used slot (stale or backwards time)
    frames_invalid: int = 0
    audio_packets_in: int = 0  # every push_audio call
    audio_invalid: int = 0
    audio_samples_late: int = 0  # 16-kHz samples in emitted chunks or over written audio
    audio_samples_gap_filled: int = 0  # 16-kHz silence inserted for gaps (see module docstring)
    resolution_changes: int = 0
    rate_changes: int = 0
    channel_changes: int = 0
    realignments: int = 0
    chunks_out: int = 0

    def to_dict(self) -> dict[str, int]:
        """The counters by name (for snapshots and JSON)."""
        return asdict(self)


@dataclass
class _OpenChunk:
    """Media gathered so far for one chunk that has not been emitted."""

    index: int
    frames: dict[int, np.ndarray] = field(default_factory=dict)  # slot in chunk -> [H, W, 3] uint8
    size: tuple[int, int] | None = None  # (H, W) of every frame of this chunk
    audio: np.ndarray | None = None  # [N] float32, allocated on the first written sample
    audio_end: int = 0  # one past the last written sample, in chunk samples


def _time(value: object) -> float | None:
    """`value` as a finite float of sane magnitude, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    t = float(value)
    return t if math.isfinite(t) and abs(t) <= MAX_ABS_TIME_S else None


def _check_frame(frame: object) -> tuple[float, np.ndarray] | str:
    """(t_s, rgb [H, W, 3] uint8) of a usable frame, else why it is not usable."""
    t = _time(getattr(frame, "t_s", None))
    rgb = getattr(frame, "rgb", None)
    if t is None:
        return f"t_s is {getattr(frame, 't_s', None)!r}; need a finite time within ±{MAX_ABS_TIME_S:g} s"
    if not isinstance(rgb, np.ndarray):
        return f"rgb is a {type(rgb).__name__}; need a numpy array"
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        return f"rgb has shape {rgb.shape}; need [H, W, 3]"
    if rgb.dtype != np.uint8:
        return f"rgb has dtype {rgb.dtype}; need uint8"
    h, w = int(rgb.shape[0]), int(rgb.shape[1])
    if h < 2 or w < 2:
        return f"rgb has shape {rgb.shape}; need H, W >= 2"
    if max(h, w) / min(h, w) > _MAX_ASPECT:
        return f"rgb has shape {rgb.shape}, aspect ratio {max(h, w) / min(h, w):.1f}; need <= {_MAX_ASPECT}"
    return t, rgb


def _check_packet(packet: object) -> tuple[float, np.ndarray, int, int] | str:
    """(t_s, [M] float32 16-kHz mono, input rate, input channels) of a usable packet, else why not."""
    t = _time(getattr(packet, "t_s", None))
    pcm = getattr(packet, "pcm", None)
    rate = getattr(packet, "sample_rate", None)
    if t is None:
        return f"t_s is {getattr(packet, 't_s', None)!r}; need a finite time within ±{MAX_ABS_TIME_S:g} s"
    if not isinstance(pcm, np.ndarray):
        return f"pcm is a {type(pcm).__name__}; need a numpy array"
    if isinstance(rate, float | np.floating) and float(rate).is_integer():
        rate = int(rate)
    if isinstance(rate, bool) or not isinstance(rate, int | np.integer) or not 0 < rate <= MAX_SAMPLE_RATE:
        return f"sample_rate is {rate!r}; need a whole number in (0, {MAX_SAMPLE_RATE}] Hz"
    try:
        wave = to_mono_16k(pcm, int(rate))
    except (InvalidMediaError, ValueError, TypeError) as e:
        return str(e)
    return t, wave, int(rate), 1 if pcm.ndim == 1 else int(pcm.shape[1])


def _upscaled_size(h: int, w: int) -> tuple[int, int]:
    """(H, W) with the smaller side raised to MIN_SIDE, aspect kept; unchanged if already large enough."""
    if min(h, w) >= MIN_SIDE:
        return h, w
    if h <= w:
        return MIN_SIDE, max(MIN_SIDE, round(w * MIN_SIDE / h))
    return max(MIN_SIDE, round(h * MIN_SIDE / w)), MIN_SIDE


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class ChunkAssembler:
    """Timestamped frames and PCM packets in, aligned `MediaChunk`s out (see the module docstring).

    seconds_per_chunk: S, chunk length; S · fps and S · 16000 must be whole numbers.
    fps: output video rate. lateness_s: how long after its end (in watermark time) a chunk
    waits for stragglers. jitter_s: audio timing error that is ignored. realign_s: how far
    back a timestamp must jump to count as a restarted clock.
    """

    def __init__(
        self,
        seconds_per_chunk: float = 2.0,
        fps: float = VIDEO_FPS,
        lateness_s: float = 0.5,
        jitter_s: float = 0.02,
        realign_s: float = 2.0,
    ) -> None:
        for name, value in (
            ("seconds_per_chunk", seconds_per_chunk),
            ("fps", fps),
            ("lateness_s", lateness_s),
            ("jitter_s", jitter_s),
            ("realign_s", realign_s),
        ):
            if _time(value) is None:
                raise ConfigError(f"chunker {name} must be a finite number, got {value!r}")
        if seconds_per_chunk <= 0 or fps <= 0 or realign_s <= 0:
            raise ConfigError(
                f"chunker seconds_per_chunk ({seconds_per_chunk}), fps ({fps}) and realign_s "
                f"({realign_s}) must be > 0"
            )
        if lateness_s < 0 or jitter_s < 0:
            raise ConfigError(f"chunker lateness_s ({lateness_s}) and jitter_s ({jitter_s}) must be >= 0")
        per_chunk = seconds_per_chunk * fps
        # Slots must tile chunks exactly, or a slot would straddle two chunks.
        if round(per_chunk) < 1 or abs(per_chunk - round(per_chunk)) > 1e-6:
            raise ConfigError(
                f"seconds_per_chunk × fps = {seconds_per_chunk} × {fps} = {per_chunk}; "
                "need a whole number >= 1"
            )
        samples = seconds_per_chunk * AUDIO_RATE
        if abs(samples - round(samples)) > 1e-6:
            raise ConfigError(
                f"seconds_per_chunk × {AUDIO_RATE} = {samples}; need a whole number of audio samples"
            )
        self.seconds_per_chunk = float(seconds_per_chunk)
        self.fps = float(fps)
        self.lateness_s = float(lateness_s)
        self.jitter_s = float(jitter_s)
        self.realign_s = float(realign_s)
        self.frames_per_chunk = round(per_chunk)
        self.samples_per_chunk = round(samples)
        self.stats = ChunkerStats()

        self._open: dict[int, _OpenChunk] = {}
        self._last_emitted: int | None = None  # chunks <= this index are closed for good
        self._watermark = -math.inf
        self._video_offset = 0.0
        self._last_slot: int | None = None
        self._last_size: tuple[int, int] | None = None  # input (H, W) of the last used frame
        self._audio_offset = 0.0
        self._cursor: int | None = None  # next 16-kHz sample index to write
        self._last_rate: int | None = None
        self._last_channels: int | None = None
        self._warnings: dict[str, int] = {}  # occurrences per kind of dropped input, to throttle logs

    # ------------------------------------------------------------------ public
    @property
    def open_chunks(self) -> int:
        """Chunks holding media that have not been emitted yet."""
        return len(self._open)

    def push_video(self, frame: VideoFrame) -> list[MediaChunk]:
        """Ingest one frame (rgb [H, W, 3] uint8); returns the chunks it completed, by index."""
        s = self.stats
        s.frames_in += 1
        checked = _check_frame(frame)
        if isinstance(checked, str):
            s.frames_invalid += 1
            self._warn("frames_invalid", "dropped invalid video frame: %s", checked)
            return []
        t_in, rgb = checked
        t = t_in + self._video_offset
        slot = math.floor(t * self.fps + _SLOT_EPS)
        last = self._last_slot
        if last is not None and slot <= last and last / self.fps - t > self.realign_s:
            target = last + 1
            if self._last_emitted is not None:
                target = max(target, (self._last_emitted + 1) * self.frames_per_chunk)
            self._video_offset = target / self.fps - t_in
            s.realignments += 1
            logger.warning(
                "video clock jumped back %.3f s (t=%s, last slot time %s); realigned to %s s",
                last / self.fps - t,
                t_in,
                last / self.fps,
                target / self.fps,
            )
            t, slot = target / self.fps, target
        self._watermark = max(self._watermark, t)
        chunk = slot // self.frames_per_chunk
        if self._last_emitted is not None and chunk <= self._last_emitted:
            s.frames_late += 1
            self._warn("frames_late", "dropped late video frame at %s s: chunk %s already emitted", t, chunk)
        elif last is not None and slot == last:
            s.frames_skipped += 1
        elif last is not None and slot < last:
            s.frames_backwards += 1
            self._warn(
                "frames_backwards",
                "dropped stale video frame at %s s: slot %s <= last used slot %s",
                t,
                slot,
                last,
            )
        else:
            self._use_frame(slot, rgb)
        return self._close_ready()

    def push_audio(self, packet: AudioPacket) -> list[MediaChunk]:
        """Ingest one packet (pcm [N] or [N, C], any rate); returns the chunks it completed, by index."""
        s = self.stats
        s.audio_packets_in += 1
        checked = _check_packet(packet)
        if isinstance(checked, str):
            s.audio_invalid += 1
            self._warn("audio_invalid", "dropped invalid audio packet: %s", checked)
            return []
        t_in, wave, rate, channels = checked
        self._note_format(rate, channels)
        if wave.size == 0:
            return []
        n = self.samples_per_chunk
        t = t_in + self._audio_offset
        p = round(t * AUDIO_RATE)
        w = self._cursor
        tol = self.jitter_s * AUDIO_RATE
        if w is None:
            start = p
        elif abs(p - w) <= tol:
            start = w
        elif p > w:
            s.audio_samples_gap_filled += self._gap_silence(w, p)
            start = p
        elif w - p > self.realign_s * AUDIO_RATE:
            first_open = (self._last_emitted + 1) * n if self._last_emitted is not None else w
            start = max(w, first_open)
            self._audio_offset = start / AUDIO_RATE - t_in
            s.realignments += 1
            logger.warning(
                "audio clock jumped back %.3f s (t=%s, cursor at %s s); realigned to %s s",
                (w - p) / AUDIO_RATE,
                t_in,
                w / AUDIO_RATE,
                start / AUDIO_RATE,
            )
        else:
            overlap = min(w - p, wave.size)
            s.audio_samples_late += overlap
            self._warn(
                "audio_overlap",
                "dropped %s audio samples at %s s overlapping audio written up to %s s",
                overlap,
                t,
                w / AUDIO_RATE,
            )
            wave = wave[overlap:]
            start = w
        self._write_audio(start, wave)
        return self._close_ready()

    def advance(self, now_s: float) -> list[MediaChunk]:
        """Stream time has reached `now_s`: emit open chunks whose end ≤ now_s − lateness_s.

        The watermark does not move, so media still arriving for later chunks is taken.
        """
        now = _time(now_s)
        if now is None:
            logger.warning("advance ignored: now_s=%s is not a finite time", now_s)
            return []
        return self._close_through(now - self.lateness_s)

    def flush(self) -> list[MediaChunk]:
        """End of stream: emit every open chunk; the last one is cut after its last media."""
        out: list[MediaChunk] = []
        keys = sorted(self._open)
        for c in keys:
            out.append(self._emit(c, last=c == keys[-1]))
        return out

    def peek(self) -> list[MediaChunk]:
        """The open chunks as `flush` would emit them, without closing anything (copies).

        For answering from media newer than the last closed chunk: the chunker's state, and
        so every chunk it emits later, is unchanged.
        """
        keys = sorted(self._open)
        return [self._snapshot(self._open[c], last=c == keys[-1], copy=True) for c in keys]

    # ------------------------------------------------------------------ video
    def _use_frame(self, slot: int, rgb: np.ndarray) -> None:
        s = self.stats
        s.frames_used += 1
        self._last_slot = slot
        native = (int(rgb.shape[0]), int(rgb.shape[1]))
        if self._last_size is not None and native != self._last_size:
            s.resolution_changes += 1
            logger.info("video resolution changed from %s to %s at slot %s", self._last_size, native, slot)
        self._last_size = native
        # Copy: decoders often reuse their output buffer, and the chunk keeps this frame a while.
        img = rgb[None].copy()  # [1, H, W, 3] uint8
        img = resize_frames(img, _upscaled_size(*native))
        c, j = divmod(slot, self.frames_per_chunk)
        chunk = self._chunk(c)
        if chunk.size is None:
            chunk.size = (int(img.shape[1]), int(img.shape[2]))
        img = resize_frames(img, chunk.size)
        chunk.frames[j] = img[0]

    # ------------------------------------------------------------------ audio
    def _note_format(self, rate: int, channels: int) -> None:
        s = self.stats
        if self._last_rate is not None and rate != self._last_rate:
            s.rate_changes += 1
            logger.info("audio sample rate changed from %s to %s Hz", self._last_rate, rate)
        if self._last_channels is not None and channels != self._last_channels:
            s.channel_changes += 1
            logger.info("audio channels changed from %s to %s", self._last_channels, channels)
        self._last_rate, self._last_channels = rate, channels

    def _gap_silence(self, w: int, p: int) -> int:
        """Silent samples of the gap [w, p) inside the chunks on either side of it, not yet emitted."""
        n = self.samples_per_chunk
        before, after = (w - 1) // n, p // n
        spans = [(w, p)] if before == after else [(w, (before + 1) * n), (after * n, p)]
        floor = (self._last_emitted + 1) * n if self._last_emitted is not None else w
        return sum(max(0, b - max(a, floor)) for a, b in spans)

    def _write_audio(self, start: int, wave: np.ndarray) -> None:
        """Write [M] float32 samples from absolute sample `start`, split over chunks; moves the cursor."""
        n = self.samples_per_chunk
        end = start + int(wave.size)
        self._cursor = end
        self._watermark = max(self._watermark, end / AUDIO_RATE)
        pos = start
        if self._last_emitted is not None and pos < (self._last_emitted + 1) * n:
            late = min(end, (self._last_emitted + 1) * n) - pos
            self.stats.audio_samples_late += late
            self._warn(
                "audio_late",
                "dropped %s late audio samples at %s s: chunk %s already emitted",
                late,
                pos / AUDIO_RATE,
                self._last_emitted,
            )
            pos += late
        while pos < end:
            c, off = divmod(pos, n)
            take = min(n - off, end - pos)
            chunk = self._chunk(c)
            if chunk.audio is None:
                chunk.audio = np.zeros(n, dtype=np.float32)
            chunk.audio[off : off + take] = wave[pos - start : pos - start + take]
            chunk.audio_end = max(chunk.audio_end, off + take)
            pos += take

    # ------------------------------------------------------------------ chunks
    def _chunk(self, c: int) -> _OpenChunk:
        chunk = self._open.get(c)
        if chunk is None:
            chunk = self._open[c] = _OpenChunk(c)
        return chunk

    def _close_ready(self) -> list[MediaChunk]:
        return self._close_through(self._watermark - self.lateness_s)

    def _close_through(self, end_s: float) -> list[MediaChunk]:
        """Emit, in order, every open chunk up to the last one that ends at or before `end_s`."""
        s_per = self.seconds_per_chunk
        ready = [c for c in self._open if (c + 1) * s_per <= end_s + _CHUNK_EPS]
        if not ready:
            return []
        top = max(ready)
        return [self._emit(c) for c in sorted(c for c in self._open if c <= top)]

    def _emit(self, c: int, *, last: bool = False) -> MediaChunk:
        chunk = self._open.pop(c)
        self._last_emitted = c
        self.stats.chunks_out += 1
        return self._snapshot(chunk, last=last)

    def _snapshot(self, chunk: _OpenChunk, *, last: bool, copy: bool = False) -> MediaChunk:
        """`chunk` as a MediaChunk; `copy` when it stays open (its audio buffer is still written)."""
        c = chunk.index
        frames = frame_times = audio = None
        if chunk.frames:
            count = self.frames_per_chunk
            if last:
                count = max(chunk.frames) + 1
                count = min(self.frames_per_chunk, count + count % 2)
            held = chunk.frames[min(chunk.frames)]  # back-fills slots before the first frame
            picked = []
            for j in range(count):
                held = chunk.frames.get(j, held)
                picked.append(held)
            frames = np.stack(picked)  # [T, H, W, 3] uint8
            first_slot = c * self.frames_per_chunk
            frame_times = (np.arange(count, dtype=np.float64) + first_slot) / self.fps  # [T]
        if chunk.audio is not None:
            audio = chunk.audio[: chunk.audio_end] if last else chunk.audio  # [n] float32
            if copy:
                audio = audio.copy()
        return MediaChunk(
            index=c,
            start_s=c * self.seconds_per_chunk,
            duration_s=self.seconds_per_chunk,
            frames=frames,
            frame_times=frame_times,
            audio=audio,
        )

    def _warn(self, kind: str, msg: str, *args: object) -> None:
        # Bad input tends to repeat at frame rate; log the 1st, 2nd, 4th, 8th … occurrence of a kind.
        count = self._warnings[kind] = self._warnings.get(kind, 0) + 1
        if _is_power_of_two(count):
            logger.warning(msg + " (occurrence %s)", *args, count)
