#!/usr/bin/env bash
# The whole test suite: installs what it needs, then ruff, mypy and pytest.
# With no arguments it runs every test (what CI runs). Arguments go to pytest, so one tier
# runs with `bash scripts/test.sh -m unit` (or integration, e2e, quality; combine them as
# `-m "unit or integration"`), one file with `bash scripts/test.sh tests/test_positions.py`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. scripts/setup.sh
# System services the end-to-end tests start on loopback ports.
if ! command -v redis-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "test: installing redis-server" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  else
    echo "test: redis-server missing and apt-get unavailable; install Redis" >&2; exit 1
  fi
fi
# The browser test drives Debian's Chromium through Playwright (no browser download).
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "test: installing chromium" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  else
    echo "test: /usr/bin/chromium missing and apt-get unavailable; install Chromium" >&2; exit 1
  fi
fi
echo "== ruff"; ruff check .
echo "== mypy"; mypy
echo "== pytest"
set +e
python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
