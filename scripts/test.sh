#!/usr/bin/env bash
# Install the test dependencies and run every check: ruff, mypy, pytest, Sphinx.
# This is the README's test command; .ci/run runs exactly this.
set -euo pipefail
PY="${PYTHON:-python3}"
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing redis-server (tests start their own throwaway server)"
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server is missing: install it (e.g. sudo apt-get install -y redis-server)" >&2
    exit 1
  fi
fi

# The browser tests (tests/test_browser.py) drive Debian's chromium through
# Playwright; Playwright never downloads a browser here. About 30 s with apt.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium (browser tests)"
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  elif [ "${CI:-}" = true ]; then
    echo "chromium is missing: the browser tests need /usr/bin/chromium" >&2
    exit 1
  else
    echo "== chromium is missing: the browser tests will be skipped" >&2
  fi
fi

# The http benchmark's smoke test (tests/test_benchmarks.py) loads gunicorn
# with wrk; without wrk it is skipped.
if ! command -v wrk >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing wrk (http benchmark smoke test)"
  apt-get install -y -qq wrk >/dev/null || echo "== wrk could not be installed: its smoke test will be skipped" >&2
fi

echo "== pip install -e '.[dev]'"
"$PY" -m pip install -q -e '.[dev]'

echo "== ruff"
"$PY" -m ruff check src tests examples benchmarks
echo "== mypy"
"$PY" -m mypy
echo "== sphinx-build -W"
"$PY" -m sphinx -W -q -b html docs docs/_build/html
echo "== pytest"
"$PY" -m pytest -q -p no:cacheprovider "$@"
