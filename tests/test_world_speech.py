"""The world's questions spoken: deterministic voices, held-out voices outside train, the hum under it."""

import numpy as np
import pytest

from echo_lab.world import SAMPLE_RATE, make_clip
from echo_lab.world.speech import HELD_OUT_VOICES, PAD_S, TRAIN_VOICES, question_voice, spoken_question

pytestmark = pytest.mark.unit


def test_voices_are_held_out_outside_train_and_deterministic() -> None:
    assert not set(TRAIN_VOICES) & set(HELD_OUT_VOICES)
    for split, pool in (("train", TRAIN_VOICES), ("val", HELD_OUT_VOICES), ("test", HELD_OUT_VOICES)):
        for i in range(4):
            clip = make_clip(split, i)
            for q in clip.questions:
                voice = question_voice(clip.spec, q)
                assert voice.name in pool and voice == question_voice(clip.spec, q)


def test_spoken_question_has_padding_hum_and_words() -> None:
    clip = next(c for c in (make_clip("test", i) for i in range(10)) if c.questions)
    q = clip.questions[0]
    wave = spoken_question(clip.spec, q)
    assert np.array_equal(wave, spoken_question(clip.spec, q))
    pad = round(PAD_S * SAMPLE_RATE)
    edge, body = wave[: pad - 10], wave[pad + 10 : -pad - 10]
    assert 0.015 < float(np.sqrt(np.mean(edge**2))) < 0.03  # the world's 100-Hz hum (0.03 peak) and floor
    assert float(np.abs(body).max()) > 0.4
    assert 0.8 < len(wave) / SAMPLE_RATE < 6.0
