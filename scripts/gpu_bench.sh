#!/usr/bin/env bash
# The GPU run: efficiency and capacity at Qwen2.5-Omni 3B and 7B dimensions (random weights,
# bf16, 448² at 2 fps + audio), JSON reports and summary.md under OUT_DIR (default: $OUT, else
# ./gpu_bench_out). Needs a CUDA machine with this repo installed (bash scripts/setup.sh makes
# .venv; it is run here when neither .venv nor an active environment has Echo). Budget: ≤ 8 minutes on one H100/H200.
#   scripts/gpu_bench.sh [OUT_DIR]            the GPU run
#   scripts/gpu_bench.sh --dry-run [OUT_DIR]  tiny preset on the CPU in a few seconds (CI)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DRY=()
if [ "${1:-}" = "--dry-run" ]; then DRY=(--dry-run); shift; fi
DEST=${1:-${OUT:-gpu_bench_out}}
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
elif python3 -c "import echo_core" 2>/dev/null; then
  PY=python3  # an environment with Echo installed is already active
else
  bash scripts/setup.sh
  PY=.venv/bin/python
fi
if [ ${#DRY[@]} -eq 0 ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PY" -m echo_lab.bench.suite "$DEST" "${DRY[@]}"
cat "$DEST/summary.md"
