"""`echo-bench voice` on short clips through the live service: the machinery times a spoken
question and its spoken answer, and the bundled echo-tiny answers spoken questions right
(the committed figures come from long runs)."""

from __future__ import annotations

import pytest

from echo_lab.service_bench.voice import VoiceRow, run_voice

pytestmark = pytest.mark.e2e


@pytest.mark.asyncio
async def test_a_short_voice_run_times_a_spoken_question_and_its_spoken_answer() -> None:
    report = await run_voice(1, duration_s=6.0)
    assert report["questions"] == 1
    (row,) = report["rows"]
    # speech_stopped comes after the 500 ms silence window, never before it
    assert row["to_stopped_ms"] >= 500 - 100  # the VAD's lag correction reports the end earlier
    assert row["to_stopped_ms"] <= row["to_created_ms"] <= row["to_done_ms"]
    assert report["speech_end_to_stopped_p95_ms"] == round(row["to_stopped_ms"], 1)
    assert report["typed_accuracy"] in (0.0, 1.0) and report["spoken_accuracy"] in (0.0, 1.0)
    assert row["spoken_answer"], row  # something to say, so something spoken to time
    # the answer's voice follows its first words: text deltas go out before the sentence is spoken
    assert row["to_text_ms"] is not None and row["to_audio_ms"] is not None, row
    assert row["to_created_ms"] <= row["to_text_ms"] < row["to_audio_ms"], row
    assert report["answers_with_audio"] == 1
    assert report["speech_end_to_audio_p95_ms"] == round(row["to_audio_ms"], 1)
    assert set(report["families"]) == {row["family"]}


@pytest.mark.asyncio
async def test_spoken_audio_pitch_questions_are_answered_right() -> None:
    """The bundled echo-tiny over the live service: a clip whose audio ends with its pitch
    question spoken in a held-out voice (server VAD) gets the clip's true answer, spoken back;
    the same question typed afterwards on the same session too."""
    report = await run_voice(3, duration_s=7.0, families=("audio_pitch",))
    rows = report["rows"]
    assert [r["family"] for r in rows] == ["audio_pitch"] * 3
    assert all(VoiceRow.correct(r["spoken_answer"], r["truth"]) for r in rows), rows
    assert all(VoiceRow.correct(r["typed_answer"], r["truth"]) for r in rows), rows
    assert all(r["spoken_s"] > 0 and r["to_audio_ms"] is not None for r in rows), rows
    assert report["spoken_accuracy"] == report["typed_accuracy"] == 1.0
