"""Raw frames and PCM -> the exact inputs of the Qwen2.5-Omni thinker's vision and audio encoders.

Only numpy, torch and scipy are used, so the server needs neither PIL, torchvision nor transformers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import resample_poly

from echo_core.errors import InvalidMediaError

logger = logging.getLogger(__name__)

VIDEO_FPS: float = 2.0
AUDIO_RATE: int = 16000
MEL_BINS: int = 128
HOP_LENGTH: int = 160
N_FFT: int = 400
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
_MAX_ASPECT = 200.0  # smart_resize refuses more extreme aspect ratios


# eq=False: field-wise == on arrays/tensors is ambiguous, so compare by identity.
@dataclass(frozen=True, eq=False)
class VideoPatches:
    """Flat video patches for the vision encoder.

    pixel_values: [grid_t*grid_h*grid_w, 3*temporal_patch*patch*patch] float32.
    grid_thw: (grid_t, grid_h, grid_w) in patches, before the merge (HF convention).
    patch_times_s: [grid_t] float64, time (s) of the first frame of each temporal patch.
    frame_size: (H, W) of the frames after resizing.
    """

    pixel_values: torch.Tensor
    grid_thw: tuple[int, int, int]
    patch_times_s: np.ndarray
    frame_size: tuple[int, int]
    merge_size: int = 2

    @property
    def n_tokens(self) -> int:
        """Number of LLM tokens after the merge_size x merge_size spatial merge."""
        t, h, w = self.grid_thw
        return t * h * w // self.merge_size**2


def grid_size(
    height: int, width: int, *, factor: int = 28, min_pixels: int = 56 * 56, max_pixels: int = 448 * 448
) -> tuple[int, int]:
    """Target (H, W) for a height x width frame, like Qwen's smart_resize.

    Each side is rounded to the nearest multiple of factor (at least factor); then, keeping the
    aspect ratio, the area is scaled into [min_pixels, max_pixels].
    """
    if height <= 0 or width <= 0:
        raise InvalidMediaError(f"frame size ({height}, {width}) must be positive")
    aspect = max(height, width) / min(height, width)
    if aspect > _MAX_ASPECT:
        raise InvalidMediaError(
            f"frame size ({height}, {width}) has aspect ratio {aspect:.1f}; need <= {_MAX_ASPECT}"
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _as_torch(a: np.ndarray) -> torch.Tensor:
    # from_numpy rejects negative strides (e.g. a BGR->RGB view) and warns on read-only buffers
    # (e.g. np.frombuffer); copy only in those cases.
    if not (a.flags.writeable and a.flags.c_contiguous):
        a = np.array(a, order="C", copy=True)
    return torch.from_numpy(a)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic, antialiased resize of [T, H, W, 3] uint8 frames to [T, h, w, 3] uint8.

    Returns `frames` itself (no copy) when (H, W) already equals size.
    """
    h, w = size
    if h <= 0 or w <= 0:
        raise InvalidMediaError(f"target size ({h}, {w}) must be positive")
    if frames.shape[1:3] == (h, w):
        return frames
    x = _as_torch(frames).permute(0, 3, 1, 2).to(torch.float32)
    y = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    # Bicubic overshoots near edges; clamp before the cast or values wrap around in uint8.
    y = y.round_().clamp_(0.0, 255.0).to(torch.uint8)
    return y.permute(0, 2, 3, 1).contiguous().numpy()


def _check_frames(frames: np.ndarray, min_side: int) -> None:
    if frames.ndim != 4:
        raise InvalidMediaError(f"frames have shape {frames.shape} (ndim {frames.ndim}); need [T, H, W, 3]")
    t, h, w, c = frames.shape
    if c != 3:
        raise InvalidMediaError(f"frames have shape {frames.shape} with {c} channels; need 3 (RGB)")
    if frames.dtype != np.uint8:
        raise InvalidMediaError(f"frames have dtype {frames.dtype}; need uint8")
    if t < 1:
        raise InvalidMediaError(f"frames have shape {frames.shape}; need T >= 1")
    if h < min_side or w < min_side:
        raise InvalidMediaError(f"frames have shape {frames.shape}; need H, W >= {min_side}")


def _check_times(times_s: np.ndarray, n_frames: int) -> np.ndarray:
    times = np.asarray(times_s, dtype=np.float64)
    if times.shape != (n_frames,):
        raise InvalidMediaError(f"times_s has shape {times.shape}; need ({n_frames},), one per frame")
    if not np.isfinite(times).all():
        raise InvalidMediaError(f"times_s has {int((~np.isfinite(times)).sum())} non-finite values")
    drops = np.flatnonzero(np.diff(times) < 0)
    if drops.size:
        i = int(drops[0])
        raise InvalidMediaError(f"times_s decreases at index {i + 1}: {times[i]} -> {times[i + 1]}")
    return times


def patchify_video(
    frames: np.ndarray,
    times_s: np.ndarray | None = None,
    *,
    patch_size: int = 14,
    temporal_patch_size: int = 2,
    merge_size: int = 2,
    min_pixels: int = 56 * 56,
    max_pixels: int = 448 * 448,
) -> VideoPatches:
    """Frames [T, H, W, 3] uint8 RGB, sampled at VIDEO_FPS -> VideoPatches for the vision encoder.

    times_s: [T] seconds, non-decreasing; defaults to arange(T) / VIDEO_FPS. Frames are resized to
    grid_size(H, W), T is padded up to a multiple of temporal_patch_size by repeating the last
    frame, pixels are scaled by 1/255 and CLIP-normalised, and patches are laid out as in
    transformers' Qwen2-VL processors (temporal patch, merge block row, merge block column,
    row in block, column in block; each patch flattened as channel, time, y, x).
    """
    factor = patch_size * merge_size
    _check_frames(frames, factor)
    n_frames = frames.shape[0]
    default_times = np.arange(n_frames, dtype=np.float64) / VIDEO_FPS
    times = default_times if times_s is None else _check_times(times_s, n_frames)
    size = grid_size(
        frames.shape[1], frames.shape[2], factor=factor, min_pixels=min_pixels, max_pixels=max_pixels
    )
    if size != frames.shape[1:3]:
        logger.debug("resizing %d frames from %s to %s", n_frames, frames.shape[1:3], size)
    resized = resize_frames(frames, size)

    x = _as_torch(resized).permute(0, 3, 1, 2).to(torch.float32)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(1, 3, 1, 1)
    x = (x / 255.0 - mean) / std
    if pad := -n_frames % temporal_patch_size:
        x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)], dim=0)

    grid_t = x.shape[0] // temporal_patch_size
    grid_h, grid_w = size[0] // patch_size, size[1] // patch_size
    m, ps, tp = merge_size, patch_size, temporal_patch_size
    x = x.reshape(grid_t, tp, 3, grid_h // m, m, ps, grid_w // m, m, ps)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    pixel_values = x.reshape(grid_t * grid_h * grid_w, 3 * tp * ps * ps).contiguous()
    return VideoPatches(
        pixel_values=pixel_values,
        grid_thw=(grid_t, grid_h, grid_w),
        patch_times_s=times[::tp].copy(),
        frame_size=size,
        merge_size=m,
    )


def to_mono_16k(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """PCM [N] or [N, C] (channels last) at any rate -> [M] float32 mono at AUDIO_RATE.

    Integer samples are scaled to [-1, 1] (unsigned ones are centred first); channels are
    averaged; resampling uses scipy.signal.resample_poly with the reduced up/down ratio, so
    M = ceil(N * AUDIO_RATE / sample_rate). Float32 mono input at AUDIO_RATE is returned as is.
    """
    if sample_rate <= 0:
        raise InvalidMediaError(f"sample_rate is {sample_rate}; need > 0")
    if pcm.ndim not in (1, 2):
        raise InvalidMediaError(f"audio has shape {pcm.shape} (ndim {pcm.ndim}); need [N] or [N, C]")
    if pcm.ndim == 2 and pcm.shape[1] == 0:
        raise InvalidMediaError(f"audio has shape {pcm.shape}: 0 channels")
    kind = pcm.dtype.kind
    if kind in "iu":
        info = np.iinfo(pcm.dtype)
        half = (int(info.max) - int(info.min) + 1) / 2.0
        # Unsigned PCM (e.g. 8-bit WAV) is centred on half its range, signed PCM on zero.
        offset = half if kind == "u" else 0.0
        wave = (pcm.astype(np.float64) - offset) / half
    elif kind == "f":
        n_bad = int(np.count_nonzero(~np.isfinite(pcm)))
        if n_bad:
            raise InvalidMediaError(f"audio has {n_bad} non-finite samples out of {pcm.size}")
        wave = pcm
    else:
        raise InvalidMediaError(f"audio has dtype {pcm.dtype}; need an integer or float dtype")
    if wave.ndim == 2:
        wave = wave.mean(axis=1, dtype=np.float64)
    wave = np.asarray(wave, dtype=np.float32)
    if sample_rate == AUDIO_RATE or wave.size == 0:
        return wave
    g = math.gcd(AUDIO_RATE, sample_rate)
    return resample_poly(wave, AUDIO_RATE // g, sample_rate // g).astype(np.float32, copy=False)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
    mel = 3.0 * hz / 200.0
    log_region = hz >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(hz, 1000.0) / 1000.0) * 27.0 / np.log(6.4), mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    hz = 200.0 * mel / 3.0
    log_region = mel >= 15.0
    return np.where(log_region, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0)), hz)


@lru_cache(maxsize=4)
def _mel_filters(n_mels: int = MEL_BINS, n_fft: int = N_FFT, sample_rate: int = AUDIO_RATE) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] float64 Slaney mel filter bank over 0..8000 Hz, read-only (cached)."""
    mel_edges = np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(8000.0)), n_mels + 2)
    hz_edges = _mel_to_hz(mel_edges)
    fft_hz = np.linspace(0.0, sample_rate // 2, n_fft // 2 + 1)
    slopes = hz_edges[None, :] - fft_hz[:, None]
    widths = np.diff(hz_edges)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    # Slaney normalisation: each triangle has unit area, so bands carry comparable energy.
    filters *= 2.0 / (hz_edges[2:] - hz_edges[:-2])[None, :]
    out = np.ascontiguousarray(filters.T)
    out.flags.writeable = False
    return out


def log_mel(wave: np.ndarray) -> torch.Tensor:
    """[N] float mono at AUDIO_RATE -> [MEL_BINS, N // HOP_LENGTH] float32 Whisper log-mel.

    Recipe (as WhisperFeatureExtractor): centred STFT with reflect padding, n_fft 400, hop 160,
    periodic Hann window; power spectrum with the last frame dropped; Slaney mel filters;
    log10 clamped at 1e-10; floor at max - 8; then (x + 4) / 4.
    """
    if wave.ndim != 1:
        raise InvalidMediaError(f"audio has shape {wave.shape}; need [N] mono")
    if wave.dtype.kind != "f":
        raise InvalidMediaError(f"audio has dtype {wave.dtype}; need float (see to_mono_16k)")
    if wave.shape[0] < N_FFT:
        raise InvalidMediaError(f"audio has {wave.shape[0]} samples; need >= {N_FFT} (one STFT window)")
    x = _as_torch(wave.astype(np.float32, copy=False))
    n_bad = int((~torch.isfinite(x)).sum())
    if n_bad:
        raise InvalidMediaError(f"audio has {n_bad} non-finite samples out of {x.numel()}")
    window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float32)
    stft = torch.stft(
        x, N_FFT, HOP_LENGTH, window=window, center=True, pad_mode="reflect", return_complex=True
    )
    power = stft[:, :-1].abs() ** 2
    filters = torch.from_numpy(np.asarray(_mel_filters(), dtype=np.float32))
    log_spec = torch.clamp(filters @ power, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0
