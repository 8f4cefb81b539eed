"""The README's main job: echo-demo runs end to end (server process, real WebRTC, three answers)."""

from __future__ import annotations

import pytest

from echo_lab.live.demo import main

pytestmark = pytest.mark.e2e


def test_demo_runs_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.count("\nQ") == 3 or out.count("Q1 ") + out.count("Q2 ") + out.count("Q3 ") == 3
    assert "correct:" in out and "TTFT" in out and "answers correct" in out
    assert any(f in out for f in ("[av_binding]", "[av_order]"))
