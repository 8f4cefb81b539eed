"""`echo-bench capacity --service` on N ∈ {1, 2} short steps through a local echo-server over
WebRTC: the report's fields, answers per step, and the sampled server's split by stage."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from types import FrameType

import pytest

from echo_lab.launch.sampled_server import stage_of
from echo_lab.service_bench.cli import main

pytestmark = pytest.mark.e2e


def encode_chunks() -> FrameType:  # named as the engine's encoder call
    return sys._getframe()


def test_a_waiting_thread_is_idle_and_a_busy_one_is_charged_to_its_stage() -> None:
    assert stage_of(encode_chunks(), main_thread=False) == "encoders"
    assert stage_of(sys._getframe(), main_thread=True) == "event_loop"
    assert stage_of(sys._getframe(), main_thread=False) == "other"
    stop = threading.Event()
    waiter = threading.Thread(target=stop.wait, name="waiter")
    waiter.start()
    try:
        while waiter.ident not in sys._current_frames():
            pass
        frame = sys._current_frames()[waiter.ident]
        assert stage_of(frame, main_thread=False) == "idle"
    finally:
        stop.set()
        waiter.join()


def test_a_two_step_service_run_reports_lag_ttft_and_the_server_profile(tmp_path: Path) -> None:
    out = tmp_path / "capacity.json"
    argv = [
        "capacity",
        "--service",
        "--streams",
        "1,2",
        "--seconds",
        "6",
        "--ask-every",
        "2",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "service"
    assert {"max_streams", "first_behind", "baseline_lag_p95_s", "profile", "profile_at"} <= set(report)
    rows = report["rows"]
    assert [r["streams"] for r in rows][:1] == [1] and len(rows) in (1, 2)
    for row in rows:
        assert row["answers"] >= row["streams"], row  # every stream's questions were answered
        assert row["ingest_lag_p95_s"] is not None and row["ttft_p95_ms"] is not None, row
        assert isinstance(row["keeps_up"], bool)
        profile = row["server_profile"]
        assert profile["samples"] > 100 and profile["wall_s"] > 6, profile
        assert {"encoders", "decoding", "event_loop"} <= set(profile["busy_s"]), profile
        # idle executor workers (blocked in C under `_worker`) are not charged as busy
        assert profile["busy_s"].get("other", 0.0) < 0.5 * profile["wall_s"], profile
    assert report["baseline_lag_p95_s"] == rows[0]["ingest_lag_p95_s"]
    assert (
        report["profile"] == next(r for r in rows if r["streams"] == report["profile_at"])["server_profile"]
    )
