#!/usr/bin/env bash
# Sets up the project (idempotent) and runs lint + the whole test suite.
# Extra arguments go to pytest, e.g. `bash tests/run_tests.sh -k mixing`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -r requirements.txt
python3 -m pip install -q --disable-pip-version-check --no-deps -e .
python3 -m ruff check .
export WANDB_MODE=disabled
python3 -m pytest "$@"
