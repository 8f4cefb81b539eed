"""Typed media in and out of a streaming session.

Inputs carry their own stream time (seconds since the session's clock origin, already
mapped from RTP/pts by the caller). The chunker turns them into `MediaChunk`s: two
seconds of stream time, video at 2 fps and audio as 16 kHz mono, ready for the encoders.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class VideoFrame:
    """One decoded picture at stream time `t_s`."""

    t_s: float
    rgb: np.ndarray  # [H, W, 3] uint8


@dataclass(frozen=True)
class AudioPacket:
    """PCM whose first sample plays at stream time `t_s`."""

    t_s: float
    pcm: np.ndarray  # [N] or [N, C], integer or float samples
    sample_rate: int


@dataclass(frozen=True)
class MediaChunk:
    """Media of one aligned chunk [index × seconds, (index + 1) × seconds) of stream time."""

    index: int
    start_s: float
    duration_s: float
    frames: np.ndarray | None  # [T, H, W, 3] uint8 at 2 fps, one size per chunk; None without video
    frame_times: np.ndarray | None  # [T] float64 stream seconds, increasing
    audio: np.ndarray | None  # [N] float32, 16 kHz mono, sample 0 at start_s; None without audio

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    @property
    def media_end_s(self) -> float:
        """Stream time up to which this chunk holds media (before end_s for a stream's last, short chunk)."""
        ends = [self.start_s]
        if self.frame_times is not None and len(self.frame_times):
            ends.append(float(self.frame_times[-1]) + 1.0 / 2.0)  # a frame at 2 fps covers 0.5 s
        if self.audio is not None:
            ends.append(self.start_s + len(self.audio) / 16000)
        return min(self.end_s, max(ends))

    @property
    def signature(self) -> tuple[object, ...]:
        """Equal for chunks the encoders and the ingest sieve can batch (same token layout)."""
        video = None if self.frames is None else tuple(self.frames.shape)
        audio = None if self.audio is None else int(self.audio.shape[0])
        return (video, audio)


def newest_frame_alone(chunk: MediaChunk) -> MediaChunk:
    """`chunk` with its newest frame in a temporal patch of its own (a copy; the same chunk when
    it already is: an odd frame count, whose last frame the encoder pairs with itself).

    The video encoder merges frames in pairs, so a frame that is the second of a pair shares its
    tokens with the frame half a second older. For the tail of a live ask, where the newest
    frame may be the only one that shows what just appeared, the older frame of that pair is
    replaced by the newest: on echo-tiny this took `echo-bench freshness` at δ = 0.5 s on `val`
    from 38 to 69 % (docs/results-latency.md). Ingest never does this; the chunk is encoded with
    its own frames when it closes.
    """
    frames = chunk.frames
    if frames is None or len(frames) < 2 or len(frames) % 2:
        return chunk
    alone = frames.copy()
    alone[-2] = alone[-1]
    return replace(chunk, frames=alone)
