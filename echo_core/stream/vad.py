"""Voice activity detectors: the speech probability of each short frame of 16 kHz mono audio.

Two implementations of one `VoiceActivity` protocol, compared on the world's audio by
`benchmarks/vad_choice.py` (results in `benchmarks/results/vad_choice.json`):

- `SileroVad` (PyPI `silero-vad`, its TorchScript model read from the installed package, no
  download): a small recurrent network over 32 ms frames, a probability in [0, 1].
- `WebRtcVad` (PyPI `webrtcvad-wheels`, the WebRTC project's GMM detector): 30 ms frames, a
  yes/no per frame at a fixed aggressiveness (0–3).

Silero is the one turn detection uses (`make_vad("silero")`). Measured on 59 streams (world
clips followed by a question in 11 voices, 11.5 min of scene audio): silero at threshold 0.5
misses 2.0 % of speech frames and fires on 0.25 % of scene frames; through `TurnDetector`
(onsets need 160 ms of speech) it finds every question with its onset within 54 ms (p95) and
no false utterance in the scene audio. WebRTC's detector takes the world's 100 Hz mains hum
for speech on every frame (false-alarm rate 1.0, so no question is ever delimited); even
after a 200 Hz high-pass it fires on 12–23 % of scene frames (tones, noise bursts), 8–11
false utterances a minute, each of which would interrupt an answer. Silero's cost, 0.012 s
of one core per second of audio (about 0.4 ms per 32 ms frame), is small next to the model's
and is paid off the event loop; WebRTC's (0.0002–0.0014 s/s) does not buy back its errors.

The silero model is loaded with `torch.jit.load` from the package's data folder, not through
`silero_vad.load_silero_vad`: importing that module sets torch's global thread count to 1,
which would slow the engine's own inference.
"""

from __future__ import annotations

import importlib.metadata
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import ConfigError

SAMPLE_RATE = 16000
VAD_KINDS = ("silero", "webrtc")


class VoiceActivity(Protocol):
    """A streaming detector: feed consecutive frames of `frame_samples` samples.

    `lag_s`: how far its decisions trail the audio (the median onset/end delay on the world's
    speech, benchmarks/vad_choice.py); turn detection reports times that much earlier.
    """

    frame_samples: int
    lag_s: float

    def probability(self, frame: np.ndarray) -> float:
        """Speech probability of one frame: [frame_samples] float32 in [-1, 1] at 16 kHz."""
        ...

    def reset(self) -> None:
        """Forget the state carried between frames (a new, unrelated stream follows)."""
        ...


_SILERO_LOCK = threading.Lock()
_SILERO_BYTES: bytes | None = None


def _silero_model_bytes() -> bytes:
    """The TorchScript file shipped in the `silero-vad` wheel (read once per process)."""
    global _SILERO_BYTES
    with _SILERO_LOCK:
        if _SILERO_BYTES is None:
            try:
                dist = importlib.metadata.distribution("silero-vad")
            except importlib.metadata.PackageNotFoundError:
                raise ConfigError(
                    "the silero VAD needs the `silero-vad` package: pip install silero-vad"
                ) from None
            path = Path(str(dist.locate_file("silero_vad/data/silero_vad.jit")))
            _SILERO_BYTES = path.read_bytes()
        return _SILERO_BYTES


class SileroVad:
    """Silero VAD v5 on 32 ms frames (512 samples at 16 kHz); one instance per stream (it has state)."""

    frame_samples = 512
    lag_s = 0.064  # two frames: the measured median delay of onsets (+58 ms) and ends (+71 ms) without it

    def __init__(self) -> None:
        import io

        import torch

        self._torch = torch
        self._model = torch.jit.load(io.BytesIO(_silero_model_bytes()), map_location="cpu")
        self._model.eval()
        self.reset()

    def probability(self, frame: np.ndarray) -> float:
        if frame.shape != (self.frame_samples,):
            raise ValueError(f"silero VAD frames are {self.frame_samples} samples, got {frame.shape}")
        with self._torch.inference_mode():
            x = self._torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32))
            return float(self._model(x, SAMPLE_RATE))

    def reset(self) -> None:
        self._model.reset_states()


class WebRtcVad:
    """The WebRTC VAD on 30 ms frames (480 samples): 1.0 for speech, 0.0 otherwise.

    `highpass_hz` filters the audio first (the world's 100 Hz mains hum is speech to it otherwise).
    """

    frame_samples = 480
    lag_s = 0.0

    def __init__(self, aggressiveness: int = 3, highpass_hz: float | None = None) -> None:
        try:
            import webrtcvad
        except ImportError:
            raise ConfigError(
                "the webrtc VAD needs `webrtcvad-wheels`: pip install webrtcvad-wheels"
            ) from None
        if not 0 <= aggressiveness <= 3:
            raise ConfigError(f"webrtc VAD aggressiveness must be 0–3, got {aggressiveness}")
        self.aggressiveness = aggressiveness
        self._vad = webrtcvad.Vad(aggressiveness)
        self._sos: np.ndarray | None = None
        self._zi: np.ndarray | None = None
        if highpass_hz is not None:  # a 4th-order Butterworth high-pass, its state kept across frames
            from scipy.signal import butter

            self._sos = np.asarray(butter(4, highpass_hz, "highpass", fs=SAMPLE_RATE, output="sos"))
        self.reset()

    def probability(self, frame: np.ndarray) -> float:
        if frame.shape != (self.frame_samples,):
            raise ValueError(f"webrtc VAD frames are {self.frame_samples} samples, got {frame.shape}")
        if self._sos is not None:
            from scipy.signal import sosfilt

            frame, self._zi = sosfilt(self._sos, frame, zi=self._zi)
        pcm = (np.clip(frame, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        return 1.0 if self._vad.is_speech(pcm, SAMPLE_RATE) else 0.0

    def reset(self) -> None:
        self._zi = np.zeros((len(self._sos), 2)) if self._sos is not None else None


def make_vad(kind: str = "silero") -> VoiceActivity:
    """A fresh detector of `kind` (one of VAD_KINDS)."""
    if kind == "silero":
        return SileroVad()
    if kind == "webrtc":
        return WebRtcVad()
    raise ConfigError(f"VAD kind must be one of {VAD_KINDS}, got {kind!r}")
