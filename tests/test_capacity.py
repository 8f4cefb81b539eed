"""`echo-bench capacity` on a tiny random thinker: report shape and the stopping rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from echo_lab.bench.capacity import PARTS
from echo_lab.bench.cli import main, parser

pytestmark = pytest.mark.integration


def test_capacity_report(tmp_path: Path) -> None:
    out = tmp_path / "capacity.json"
    args = ["capacity", "--preset", "tiny", "--image", "56", "--streams", "1,2", "--seconds", "3"]
    assert main([*args, "--ask-every", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [r["streams"] for r in rows][:1] == [1] and len(rows) <= 2
    for r in rows:
        assert r["chunks_ingested"] >= r["streams"] and r["questions"] >= r["streams"]
        assert r["lag_p95_s"] >= r["lag_p50_s"] >= 0 and r["ttft_p95_ms"] >= r["ttft_p50_ms"] > 0
        assert set(r["time_share"]) == set(PARTS) and 0 < sum(r["time_share"].values()) <= 1.01
    kept_up = [r["streams"] for r in rows if r["keeps_up"]]
    assert report["max_streams"] == (max(kept_up) if kept_up else None)
    assert report["baseline_lag_p95_s"] == rows[0]["lag_p95_s"]
    assert set(report["profile"]) == set(PARTS)
    assert report["tail_warm_s"] == 0.5  # the default: tails encoded ahead in spare time


def test_tail_warm_takes_seconds_or_off() -> None:
    args = parser().parse_args(["capacity", "--tail-warm", "off"])
    assert args.tail_warm is None
    assert parser().parse_args(["capacity", "--tail-warm", "0.25"]).tail_warm == 0.25
    for bad in ("0", "-1", "soon"):
        with pytest.raises(SystemExit):
            parser().parse_args(["capacity", "--tail-warm", bad])
