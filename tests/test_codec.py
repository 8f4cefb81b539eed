"""The world's sound through Opus and back (echo_lab/world/codec.py), as a WebRTC microphone
carries it, and the training share that hears it so."""

from __future__ import annotations

import random

import numpy as np
import pytest

from echo_core.errors import ConfigError
from echo_lab.train.config import load_train_config
from echo_lab.train.trainer import training_clips
from echo_lab.world.codec import coded_clip, opus_roundtrip
from echo_lab.world.spec import SAMPLE_RATE

pytestmark = pytest.mark.unit


def best_delay(heard: np.ndarray, sent: np.ndarray, within: int = 800) -> tuple[int, float]:
    """The delay (samples) at which `heard` matches `sent` best, and their correlation there."""
    a, b = SAMPLE_RATE // 2, SAMPLE_RATE
    scores = [float(np.corrcoef(heard[a + d : b + d], sent[a:b])[0, 1]) for d in range(within)]
    d = int(np.argmax(scores))
    return d, scores[d]


def test_a_sweep_comes_back_delayed_a_little_and_silence_stays_silent() -> None:
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * (200 * t + 450 * t**2))).astype(np.float32)  # 200 → 2000 Hz
    heard = opus_roundtrip(tone)
    assert heard.dtype == np.float32 and heard.shape == tone.shape
    delay, match = best_delay(heard, tone)
    assert delay < 0.03 * SAMPLE_RATE and match > 0.99  # the codec's look-ahead, a faithful copy
    assert float(np.abs(heard).max()) > 0.15
    silent = opus_roundtrip(np.zeros(SAMPLE_RATE, np.float32))
    assert float(np.abs(silent).max()) < 1e-3
    noise = np.random.default_rng(0).uniform(-1, 1, SAMPLE_RATE).astype(np.float32)
    assert not np.allclose(opus_roundtrip(noise), noise, atol=0.05)  # lossy: not the samples sent


def test_opus_share_codes_that_share_of_the_training_clips_sound() -> None:
    whole = training_clips(0, 3, 0.0, random.Random(0))
    rng = random.Random(0)
    same = training_clips(0, 3, 0.0, rng, 0.0, 0.0)
    assert all(np.array_equal(c.audio, w.audio) for c, w in zip(same, whole, strict=True))
    assert rng.random() == random.Random(0).random()  # share 0: the trainer's draws are untouched
    coded = training_clips(0, 3, 0.0, random.Random(0), 0.0, 1.0)
    for c, w in zip(coded, whole, strict=True):
        assert c.spec == w.spec and np.array_equal(c.frames, w.frames)
        assert c.audio.shape == w.audio.shape and not np.array_equal(c.audio, w.audio)
    np.testing.assert_array_equal(coded_clip(whole[0]).audio, coded[0].audio)
    with pytest.raises(ConfigError, match="opus_share"):
        load_train_config(None, ["stage1.opus_share=1.5"])
