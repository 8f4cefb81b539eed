"""The service benchmarks' own machinery, on short runs (the committed figures come from long ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from echo_lab.service_bench.cli import main as bench_main
from echo_lab.service_bench.load import run_load
from echo_lab.service_bench.plots import plot_load, plot_soak
from echo_lab.service_bench.soak import run_soak
from echo_lab.service_bench.streams import percentile

pytestmark = pytest.mark.e2e


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 95) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0


@pytest.mark.asyncio
async def test_a_short_load_step_measures_a_real_session(tmp_path: Path) -> None:
    report = await run_load([1], seconds=4.0, ask_every_s=2.0)
    (row,) = report["rows"]
    assert row["sessions"] == 1 and row["errors"] == 0 and row["answers"] >= 2
    assert row["ttft_p50_ms"] > 0 and row["ingest_lag_p95_s"] is not None
    shed = report["shedding"]
    if report["keeps_up_sessions"]:  # one admitted, a second refused with a code
        assert shed["offered"] == 2 and shed["error_codes"] == {"server_busy": 1}
    plot_load(report, tmp_path / "load.png")
    assert (tmp_path / "load.png").stat().st_size > 10_000


@pytest.mark.asyncio
async def test_a_short_soak_fills_small_caches_and_never_exceeds_them(tmp_path: Path) -> None:
    report = await run_soak(0.5, concurrent=2, session_seconds=14.0, sample_s=2.0, cache_budget=24)
    assert report["sessions"] >= 2 and report["errors"] == 0, report["error_codes"]
    assert report["max_cache_tokens"] == 24  # filled: eviction ran
    assert report["cache_over_budget_samples"] == 0
    assert set(report["rss_growth_after_warmup_pct"]) == {"gateway", "w1", "w2"}
    plot_soak(report, tmp_path / "soak.png")
    assert (tmp_path / "soak.png").stat().st_size > 10_000


def test_echo_bench_passes_library_benchmarks_through(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_main(["--help"])
    assert exc.value.code == 0
    assert "fidelity" in capsys.readouterr().out  # the library's parser answered


@pytest.mark.parametrize("command", ["live-accuracy", "speech-latency"])
def test_echo_bench_runs_the_live_benchmarks_on_a_packaged_config(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"echo-bench {command}" in out and "--config" in out and "--json" in out
