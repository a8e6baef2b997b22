#!/usr/bin/env bash
# `make test`: start a throwaway local stack, run ruff, mypy and pytest, stop the stack whatever
# happens. The test stack lives in its own folder and starts from empty data every run, so test
# topics never pile up in (or slow down) the `make run` stack.
# Exits with the first failing step's status (lint/type errors fail the run like a test failure).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export TORGHUT_STACK_DIR="${TORGHUT_STACK_DIR:-$PWD/.cache/test-stack}"

cleanup() { "$PY" stack/stack.py down || true; }
trap cleanup EXIT INT TERM

"$PY" stack/stack.py up --fresh || exit 1
# The operator tools the observability tests run (Debian packages; installed only when missing).
"$PY" stack/tools.py ensure prometheus burrow chromium zookeeper >/dev/null || exit 1
# shellcheck disable=SC1091
set -a; . "$TORGHUT_STACK_DIR/env"; set +a

rc=0
echo "== ruff";   .venv/bin/ruff check . && .venv/bin/ruff format --check . || rc=$?
echo "== mypy";   .venv/bin/mypy || { r=$?; [ $rc -eq 0 ] && rc=$r; }
echo "== pytest"; .venv/bin/pytest "$@"; r=$?
[ $r -ne 0 ] && rc=$r
exit $rc
