"""The equivalence benchmark: our composed path reproduces upstream logits (fp32)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from echo_lab.bench.cli import TOLERANCE, main
from echo_lab.bench.equivalence import run_equivalence

pytestmark = pytest.mark.integration


def test_equivalence_within_tolerance() -> None:
    report = run_equivalence("tiny", seed=1)
    assert float(str(report["max_abs_logit_diff"])) <= TOLERANCE
    assert float(str(report["max_abs_logit_diff_sync_zero"])) <= TOLERANCE
    assert report["audio_tokens"] == 100 and report["video_tokens"] == 64


def test_cli_writes_schema(tmp_path: Path) -> None:
    out = tmp_path / "eq.json"
    assert main(["equivalence", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert isinstance(data["max_abs_logit_diff"], float)
    assert isinstance(data["max_abs_logit_diff_sync_zero"], float)


def test_cli_reports_typed_errors(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["equivalence", "--preset", "huge"]) == 2
    assert "unknown model preset 'huge'" in capsys.readouterr().err
