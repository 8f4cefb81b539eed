#!/usr/bin/env bash
# The main job: the live demo. Starts echo-server (configs/demo.yaml: bundled echo-tiny,
# CPU, in-process store), streams a synthetic clip over real WebRTC in real time from the
# Python client, asks three questions and prints the answers beside the correct ones.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. scripts/setup.sh
echo-demo "$@"
