#!/usr/bin/env bash
# `make run`: see stack/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python stack/run.py
