"""espeak-ng synthesis and the spoken-question container."""

import numpy as np
import pytest

from echo_core.errors import InvalidMediaError
from echo_core.speech import SpokenQuestion
from echo_core.tts import Voice, synthesize

pytestmark = pytest.mark.unit


def test_synthesize_speaks_at_the_rate_asked_with_silence_trimmed() -> None:
    at16 = synthesize("what pitch was the first tone")
    at48 = synthesize("what pitch was the first tone", sample_rate=48000)
    assert at16.dtype == np.float32 and 1.0 < len(at16) / 16000 < 3.0
    assert abs(len(at48) / 48000 - len(at16) / 16000) < 0.01
    assert abs(at16[:10]).max() > 1e-3 and abs(at16[-10:]).max() > 1e-3  # trimmed both ends
    assert np.sqrt(np.mean(at16**2)) > 0.02


def test_voices_differ_and_slower_speech_lasts_longer() -> None:
    base = synthesize("how many tones were there", Voice("en-us", 175, 50))
    slow = synthesize("how many tones were there", Voice("en-us", 120, 50))
    other = synthesize("how many tones were there", Voice("en-gb+f3", 175, 50))
    assert len(slow) > 1.2 * len(base)
    assert len(other) != len(base) or not np.allclose(other, base)


def test_empty_text_and_bad_voices() -> None:
    assert len(synthesize("   ")) == 0
    with pytest.raises(ValueError):
        Voice("--evil")
    with pytest.raises(ValueError):
        Voice("en-us", rate_wpm=10)


def test_spoken_question_checks_its_samples() -> None:
    q = SpokenQuestion(np.zeros(8000, dtype=np.float64), 16000)
    assert q.samples.dtype == np.float32 and q.duration_s == 0.5 and str(q) == "(spoken, 0.5 s)"
    for bad in (np.zeros((2, 8000), np.float32), np.zeros(8000, np.int16), np.zeros(100, np.float32)):
        with pytest.raises(InvalidMediaError):
            SpokenQuestion(bad)
    with pytest.raises(InvalidMediaError):
        SpokenQuestion(np.full(8000, np.nan, np.float32))
