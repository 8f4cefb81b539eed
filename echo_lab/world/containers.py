"""A rendered `Clip` as real media files: MP4, WebM (PyAV), Y4M (numpy) and WAV (stdlib `wave`).

MP4 and WebM exercise the same decode path as user uploads; Y4M feeds Chromium's fake webcam
(`--use-file-for-fake-video-capture`), WAV its fake microphone (`--use-file-for-fake-audio-capture`).
"""

from __future__ import annotations

import logging
import os
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

from echo_core.errors import ConfigError, InvalidMediaError

from .render import Clip
from .spec import FPS, SAMPLE_RATE

logger = logging.getLogger(__name__)

#: Encoder settings: near-lossless for the tiny 112 px frames, so solid colours survive the codec.
_X264_OPTIONS = {"crf": "12", "preset": "veryfast"}
_VIDEO_BIT_RATE = 2_000_000  # mpeg4 / VP8: far above what 112 px at 2 fps needs
_OPUS_RATE = 48000  # Opus' native rate; PyAV resamples the 16 kHz track on the way in


def _check_clip(clip: Clip, *, even: bool) -> None:
    f, a = clip.frames, clip.audio
    if f.ndim != 4 or f.shape[3] != 3 or f.dtype != np.uint8 or f.shape[0] < 1:
        raise InvalidMediaError(
            f"frames have shape {f.shape} and dtype {f.dtype}; need [T >= 1, H, W, 3] uint8"
        )
    if even and (f.shape[1] % 2 or f.shape[2] % 2):
        raise InvalidMediaError(
            f"frames are {f.shape[1]}x{f.shape[2]}; yuv420p video needs even height and width"
        )
    if a.ndim != 1 or a.dtype != np.float32:
        raise InvalidMediaError(f"audio has shape {a.shape} and dtype {a.dtype}; need [N] float32")


def _target(path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _encode(clip: Clip, path: Path, fmt: str, vcodec: str, acodec: str, arate: int) -> Path:
    """Mux the clip's frames (at FPS) and audio through PyAV encoders `vcodec` and `acodec`."""
    _check_clip(clip, even=True)
    t, h, w, _ = clip.frames.shape
    with av.open(str(path), mode="w", format=fmt) as out:
        video = out.add_stream(vcodec, rate=Fraction(FPS).limit_denominator())
        if not isinstance(video, VideoStream):
            raise InvalidMediaError(f"codec {vcodec!r} is not a video encoder")
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        if vcodec == "libx264":
            video.options = dict(_X264_OPTIONS)
        else:
            video.bit_rate = _VIDEO_BIT_RATE
        audio = out.add_stream(acodec, rate=arate)
        if not isinstance(audio, AudioStream):
            raise InvalidMediaError(f"codec {acodec!r} is not an audio encoder")
        audio.layout = "mono"
        frame_tb = Fraction(1) / Fraction(FPS).limit_denominator()
        for i, rgb in enumerate(clip.frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = i, frame_tb
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        # One frame holding the whole track: PyAV's encoder resamples it to the codec's sample format
        # and rate and re-chunks it into the codec's frame size.
        pcm = av.AudioFrame.from_ndarray(clip.audio[None, :], format="flt", layout="mono")
        pcm.sample_rate, pcm.pts, pcm.time_base = SAMPLE_RATE, 0, Fraction(1, SAMPLE_RATE)
        out.mux(audio.encode(pcm))
        out.mux(audio.encode(None))
    logger.debug(
        "wrote %s: %d frames %dx%d (%s), %d samples (%s)", path, t, w, h, vcodec, clip.audio.size, acodec
    )
    return path


def write_mp4(clip: Clip, path: str | os.PathLike[str]) -> Path:
    """MP4 with H.264 (libx264; mpeg4 if this PyAV build lacks it) at FPS and AAC mono at 16 kHz."""
    vcodec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    return _encode(clip, _target(path), "mp4", vcodec, "aac", SAMPLE_RATE)


def write_webm(clip: Clip, path: str | os.PathLike[str]) -> Path:
    """WebM with VP8 (libvpx) at FPS and Opus mono at 48 kHz."""
    return _encode(clip, _target(path), "webm", "libvpx", "libopus", _OPUS_RATE)


def rgb_to_yuv420(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BT.601 limited-range ("TV", Y in 16..235) planes of one [H, W, 3] uint8 RGB frame.

    Returns Y [H, W], U and V [ceil(H/2), ceil(W/2)] uint8; chroma is the mean of each 2x2 block
    (centred siting, "C420jpeg"). Limited range is what I420 consumers (libyuv, ffmpeg) assume.
    """
    x = rgb.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    h, w = y.shape
    # pad odd sides by repeating the edge, so the 2x2 means cover every pixel
    x = np.pad(x, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    m = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2, 3).mean(axis=(1, 3))
    r, g, b = m[..., 0], m[..., 1], m[..., 2]
    u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0
    y8, u8, v8 = (np.clip(np.round(p), 0, 255).astype(np.uint8) for p in (y, u, v))
    return y8, u8, v8


def write_y4m(clip: Clip, path: str | os.PathLike[str], *, fps: int = 2) -> Path:
    """YUV4MPEG2 (4:2:0, C420jpeg, BT.601 limited range) at `fps`, for Chromium's fake webcam.

    At an fps above the clip's FPS each frame is held (repeated) for its 1 / FPS seconds, so the file
    lasts duration_s and has round(duration_s * fps) frames.
    """
    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise ConfigError(f"y4m fps must be an integer >= 1, got {fps!r}")
    _check_clip(clip, even=False)
    t, h, w, _ = clip.frames.shape
    n_out = round(t / FPS * fps)
    out = _target(path)
    with out.open("wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg XYSCSS=420JPEG\n".encode("ascii"))
        planes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        last = -1
        for j in range(n_out):
            i = min(int(j * FPS / fps + 1e-9), t - 1)  # sample and hold: the clip frame shown at j / fps
            if i != last:
                planes, last = rgb_to_yuv420(clip.frames[i]), i
            assert planes is not None
            f.write(b"FRAME\n")
            for p in planes:
                f.write(p.tobytes())
    logger.debug("wrote %s: %d frames %dx%d at %d fps", out, n_out, w, h, fps)
    return out


def write_wav(clip: Clip, path: str | os.PathLike[str]) -> Path:
    """16-bit PCM mono WAV at SAMPLE_RATE."""
    _check_clip(clip, even=False)
    pcm = np.round(np.clip(clip.audio, -1.0, 1.0) * 32767.0).astype("<i2")
    out = _target(path)
    with wave.open(str(out), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes(pcm.tobytes())
    logger.debug("wrote %s: %d samples at %d Hz", out, pcm.size, SAMPLE_RATE)
    return out
