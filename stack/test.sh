#!/usr/bin/env bash
# `make test`: start the local stack, run ruff, mypy and pytest, stop the stack whatever happens.
# Exits with the first failing step's status (lint/type errors fail the run like a test failure).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

cleanup() { "$PY" stack/stack.py down || true; }
trap cleanup EXIT INT TERM

"$PY" stack/stack.py up || exit 1
# shellcheck disable=SC1091
set -a; . .cache/stack/env; set +a

rc=0
echo "== ruff";   .venv/bin/ruff check . && .venv/bin/ruff format --check . || rc=$?
echo "== mypy";   .venv/bin/mypy || { r=$?; [ $rc -eq 0 ] && rc=$r; }
echo "== pytest"; .venv/bin/pytest "$@"; r=$?
[ $r -ne 0 ] && rc=$r
exit $rc
