#!/usr/bin/env bash
# The main job. Until the live demo lands, it runs the upstream-equivalence benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. scripts/setup.sh
echo-bench equivalence --json benchmarks/results/equivalence.json
