"""scripts/gpu_bench.sh --dry-run: the GPU run's script, end to end on the CPU with the tiny preset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_bench_dry_run(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        ["bash", "scripts/gpu_bench.sh", "--dry-run", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    eff = json.loads((tmp_path / "efficiency-tiny.json").read_text())
    cap = json.loads((tmp_path / "capacity-tiny.json").read_text())
    modes = {r["mode"] for r in eff["rows"]}
    assert modes == {"full", "full_kv", "sieved", "sieved_kv"}
    assert all(r["floor_ms"] > 0 and r["ttft_over_floor"] > 0 for r in eff["rows"])
    assert cap["rows"][0]["streams"] == 1 and cap["rows"][0]["questions"] > 0
    table = (tmp_path / "summary.md").read_text()
    assert "| tiny | 8 | sieved_kv | 0.1 |" in table and table in done.stdout
