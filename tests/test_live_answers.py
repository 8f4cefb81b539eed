"""End to end against the ground truth: synthetic clips go through VP8 + Opus over real WebRTC to an
echo-server process running the bundled echo-tiny, and the cross-modal and recency answers are
checked against what the world says happened.

Ten fixed test clips (the first ones that ask such a question; chosen by the world, never by the
model's answers), streamed three at a time in real time. Chance is about 0.35 on this mix (four
colours, two orders, three shapes). `echo-bench live-accuracy` on 20 clips puts echo-tiny at 65 %
on av_binding, 80 % on av_order and 85 % on recency live (docs/results.md), so the guard asks for
at least half: far above chance, and a broken codec path, clock or cache falls well below it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from echo_lab.live.live_accuracy import run_live_accuracy

pytestmark = [pytest.mark.e2e, pytest.mark.quality]

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = frozenset({"av_binding", "av_order", "recency"})
MIN_ACCURACY = 0.5


def test_cross_modal_and_recency_answers_match_the_truth() -> None:
    report = asyncio.run(run_live_accuracy(ROOT / "configs" / "demo.yaml", 10, 3, FAMILIES))
    print(report)
    by_family = report["by_family"]
    assert isinstance(by_family, dict) and "recency" in by_family
    assert {"av_binding", "av_order"} & set(by_family)
    questions = report["questions"]
    assert isinstance(questions, int) and questions >= 10
    accuracy = report["accuracy"]
    assert isinstance(accuracy, float) and accuracy >= MIN_ACCURACY, report
