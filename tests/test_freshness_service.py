"""`echo-bench freshness --service` on one short clip through a local echo-server over WebRTC:
the report has the in-process variant's shape plus `mode`, and every ask got an answer back
(accuracy is the long run's business)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from echo_lab.service_bench.cli import main
from echo_lab.service_bench.freshness import plan_asks
from echo_lab.world import make_clip

pytestmark = pytest.mark.e2e


def test_asks_are_the_shape_questions_at_onset_plus_delay() -> None:
    clip = make_clip("test", 0, duration_s=6.0)
    (ask,) = plan_asks(clip, 0.5)
    assert ask.question.text == "what colour was the circle"
    shape = next(s for s in clip.spec.shapes if s.kind == "circle")
    assert ask.at_s == pytest.approx(shape.t_on + 0.5)
    assert plan_asks(clip, 6.0) == []  # past the clip's end: nothing to ask


def test_a_one_clip_service_run_reports_answers_per_delay(tmp_path: Path) -> None:
    out = tmp_path / "fresh.json"
    argv = [
        "freshness",
        "--service",
        "--clips",
        "1",
        "--delays",
        "0.5,1",
        "--duration",
        "6",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "service"
    assert report["n_clips"] == 1 and report["clips"] == [0]
    assert [r["delay_s"] for r in report["rows"]] == [0.5, 1.0]
    for row in report["rows"]:
        assert set(row) >= {"delay_s", "accuracy", "ttft_ms", "n"}
        assert row["n"] == 1 and row["answers_with_text"] == 1, row
        assert row["accuracy"] in (0.0, 1.0)
        assert 0 < row["ttft_ms"] < 10_000, row
        assert row["ask_late_ms_max"] < 1000, row  # asked at its moment, not after a queue
    assert report["end_n"] == 1 and report["end_accuracy"] in (0.0, 1.0)
    assert report["end_ttft_ms"] is not None and report["end_ttft_ms"] > 0
