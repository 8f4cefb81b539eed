"""`echo-bench voice` on one short clip: the machinery works (the committed figures come from long runs)."""

from __future__ import annotations

import pytest

from client.service_bench.voice import run_voice
from echo_core.tts import espeak_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed"),
]


@pytest.mark.asyncio
async def test_a_short_voice_run_times_a_spoken_question() -> None:
    report = await run_voice(1, duration_s=6.0)
    assert report["questions"] == 1
    (row,) = report["rows"]
    # speech_stopped comes after the 500 ms silence window, never before it
    assert row["to_stopped_ms"] >= 500 - 100  # the VAD's lag correction reports the end earlier
    assert row["to_stopped_ms"] <= row["to_created_ms"] <= row["to_done_ms"]
    assert report["speech_end_to_stopped_p95_ms"] == round(row["to_stopped_ms"], 1)
    assert report["typed_accuracy"] in (0.0, 1.0) and report["spoken_accuracy"] in (0.0, 1.0)
    assert report["speech_end_to_audio_p95_ms"] is None  # no spoken answers in this build
    assert set(report["families"]) == {row["family"]}


@pytest.mark.asyncio
@pytest.mark.skip(reason="needs echo-tiny trained on spoken questions")
async def test_spoken_answers_match_the_clip_as_typed_ones_do() -> None:
    """The bundled echo-tiny over the live service: a clip's question spoken in a held-out
    voice (server VAD) is answered as well as the same question typed (issue target: ≥ 90 %)."""
    report = await run_voice(12, duration_s=8.0)
    assert report["typed_accuracy"] > 0.5, report
    assert report["spoken_accuracy"] >= 0.9 * report["typed_accuracy"], report
