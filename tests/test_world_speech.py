"""The world's questions spoken: deterministic voices, held-out voices outside train, the hum under it."""

import numpy as np
import pytest

from echo_core.tts import Voice, synthesize
from echo_lab.world import SAMPLE_RATE, make_clip
from echo_lab.world.speech import HELD_OUT, PAD_S, TRAINING_POOLS, WIDE, question_voice, spoken_question

pytestmark = pytest.mark.unit


def accent_and_variant(name: str) -> tuple[str, str]:
    accent, _, variant = name.partition("+")
    return accent, variant


@pytest.mark.parametrize("training", sorted(TRAINING_POOLS))
def test_voices_are_held_out_outside_train_and_deterministic(training: str) -> None:
    held_accents, held_variants = zip(*map(accent_and_variant, HELD_OUT.names), strict=True)
    train_pool = TRAINING_POOLS[training]
    for name in train_pool.names:  # neither the accent nor the variant of a held-out voice
        accent, variant = accent_and_variant(name)
        assert accent not in held_accents and variant not in held_variants, name
    for split, pool in (("train", train_pool), ("val", HELD_OUT), ("test", HELD_OUT)):
        for i in range(4):
            clip = make_clip(split, i)
            for q in clip.questions:
                voice = question_voice(clip.spec, q, training)
                assert voice.name in pool.names and voice == question_voice(clip.spec, q, training)
                assert pool.rate_wpm[0] <= voice.rate_wpm < pool.rate_wpm[1]
                assert pool.pitch[0] <= voice.pitch < pool.pitch[1]
    # the benchmarks' rates and pitches lie inside the training range
    assert train_pool.rate_wpm[0] <= HELD_OUT.rate_wpm[0] and HELD_OUT.rate_wpm[1] <= train_pool.rate_wpm[1]
    assert train_pool.pitch[0] <= HELD_OUT.pitch[0] and HELD_OUT.pitch[1] <= train_pool.pitch[1]


def test_every_wide_voice_is_its_own_speaker() -> None:
    """espeak-ng falls back to the plain accent for a variant it lacks: each name must sound
    different from every other."""
    sounds = {synthesize("what colour was it", Voice(name), SAMPLE_RATE).tobytes() for name in WIDE.names}
    assert len(sounds) == len(WIDE.names)


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
