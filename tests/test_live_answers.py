"""End to end against the ground truth: synthetic clips go through VP8 + Opus over real WebRTC to an
echo-server process running the bundled echo-tiny, and the cross-modal and recency answers are
checked against what the world says happened.

Six fixed test clips (the first ones that ask such a question; chosen by the world, never by the
model's answers), streamed three at a time in real time. Chance is about 0.35 on this mix (four
colours, two orders, three shapes); the guard asks for a clear majority right.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from client.live_accuracy import run_live_accuracy

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = frozenset({"av_binding", "av_order", "recency"})
MIN_ACCURACY = 0.6


def test_cross_modal_and_recency_answers_match_the_truth() -> None:
    report = asyncio.run(run_live_accuracy(ROOT / "configs" / "demo.yaml", 6, 3, FAMILIES))
    print(report)
    by_family = report["by_family"]
    assert isinstance(by_family, dict) and "recency" in by_family
    assert {"av_binding", "av_order"} & set(by_family)
    questions = report["questions"]
    assert isinstance(questions, int) and questions >= 6
    accuracy = report["accuracy"]
    assert isinstance(accuracy, float) and accuracy >= MIN_ACCURACY, report
