"""Mono audio through aiortc's Opus encoder at its own level (`server/full_level.py`)."""

from __future__ import annotations

import fractions

import numpy as np
import pytest
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame

from server.full_level import FullLevelAudio, full_level_frame

pytestmark = pytest.mark.unit

RATE = 48000
TONE = (0.4 * 32767 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)).astype(np.int16)  # 1 s


def level_after_opus(frames: list[AudioFrame]) -> float:
    """RMS of the decoded left channel over the RMS of the tone (the codec's first 100 ms left out)."""
    encoder, decoder = OpusEncoder(), OpusDecoder()
    decoded = []
    for k, frame in enumerate(frames):
        for payload in encoder.encode(frame)[0]:
            for out in decoder.decode(JitterFrame(data=payload, timestamp=k * 960)):
                decoded.append(out.to_ndarray().reshape(-1, 2)[:, 0])  # type: ignore[union-attr]
    left = np.concatenate(decoded)[4800:].astype(np.float64)
    return float(np.sqrt((left**2).mean()) / np.sqrt((TONE.astype(np.float64) ** 2).mean()))


def mono_frame(samples: np.ndarray, pts: int) -> AudioFrame:
    frame = AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = RATE, pts, fractions.Fraction(1, RATE)
    return frame


def test_mono_frames_lose_3_db_in_aiortc_and_full_level_frames_do_not() -> None:
    chunks = [(TONE[k : k + 960], k) for k in range(0, RATE, 960)]
    assert level_after_opus([mono_frame(s, k) for s, k in chunks]) == pytest.approx(2**-0.5, abs=0.03)
    assert level_after_opus([full_level_frame(s, RATE, k) for s, k in chunks]) == pytest.approx(1.0, abs=0.03)


class FloatMono(MediaStreamTrack):
    """A source of mono float frames (as a file's decoder gives them), then one stereo frame."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    async def recv(self) -> AudioFrame:
        self.sent += 1
        if self.sent == 3:
            frame = AudioFrame.from_ndarray(np.zeros((1, 1920), np.int16), format="s16", layout="stereo")
        else:
            samples = (TONE[:960] / 32768).astype(np.float32)
            frame = AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, 960 * self.sent, fractions.Fraction(1, RATE)
        return frame


@pytest.mark.asyncio
async def test_full_level_audio_passes_a_files_mono_frames_on_in_both_channels() -> None:
    track = FullLevelAudio(FloatMono())
    first = await track.recv()
    assert first.layout.name == "stereo" and first.format.name == "s16" and first.pts == 960
    both = first.to_ndarray().reshape(-1, 2)
    np.testing.assert_array_equal(both[:, 0], both[:, 1])
    np.testing.assert_allclose(both[:, 0], TONE[:960], atol=2)
    assert (await track.recv()).pts == 1920
    third = await track.recv()  # already stereo: as it came
    assert third.layout.name == "stereo" and third.pts == 2880
    track.stop()
    assert track.source.readyState == "ended"
