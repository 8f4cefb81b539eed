#!/usr/bin/env bash
# Sourced by demo.sh and test.sh: creates .venv and installs Echo on a fresh
# Debian/Ubuntu machine with Python 3.11: Echo with every extra (`.[dev]`), under the exact
# builds of scripts/constraints.txt. torch goes first so that pip takes the local CPU build and
# never pulls CUDA packages.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${ECHO_PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY=$cand; break; fi
  done
fi
[ -n "$PY" ] || { echo "setup: no python3 found; install Python 3.11" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    if command -v apt-get >/dev/null 2>&1; then
      echo "setup: installing python3-venv" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$PY" -m venv .venv
    else
      echo "setup: '$PY -m venv' failed and apt-get is unavailable" >&2; exit 1
    fi
  fi
fi
# espeak-ng speaks answers and renders the world's spoken questions.
if ! command -v espeak-ng >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing espeak-ng" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng >/dev/null
  else
    echo "setup: espeak-ng missing and apt-get unavailable; install espeak-ng" >&2; exit 1
  fi
fi
# shellcheck disable=SC1091
. .venv/bin/activate
TORCH=$(sed -n 's/^torch==\([^ #]*\).*/\1/p' scripts/constraints.txt)
if ! python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != sys.argv[1])" "$TORCH" 2>/dev/null; then
  python -m pip install -q --disable-pip-version-check -c scripts/constraints.txt torch
fi
python -m pip install -q --disable-pip-version-check -c scripts/constraints.txt -e ".[dev]"
