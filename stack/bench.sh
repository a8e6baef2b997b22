#!/usr/bin/env bash
# `make bench` (full) / `make bench-quick` (quick, < 5 min): the benchmarks on a dedicated local
# stack, stopped and removed whatever happens.
#
# The benchmarks get their own fresh Kafka and Postgres (TORGHUT_STACK_DIR=.cache/bench-stack):
# no topics, databases or consumer groups left by tests, and the shared test stack is never
# stopped under someone else. Extra arguments go to `python -m bench` (e.g. --only B1,B2).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
profile="${1:-quick}"
shift || true

export TORGHUT_STACK_DIR="${TORGHUT_STACK_DIR:-$PWD/.cache/bench-stack}"
cleanup() {
    "$PY" stack/stack.py down || true
    rm -rf "$TORGHUT_STACK_DIR"  # B5 alone leaves up to ~2 GB of changelog behind
}
trap cleanup EXIT INT TERM

"$PY" stack/stack.py down >/dev/null 2>&1 || true  # a run killed hard may have left it up
"$PY" stack/stack.py up --fresh || exit 1
# shellcheck disable=SC1091
set -a; . "$TORGHUT_STACK_DIR/env"; set +a

"$PY" -m bench "--$profile" "$@"
