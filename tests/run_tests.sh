#!/usr/bin/env bash
# Sets up the project venv (.venv/, once; see scripts/setup_venv.sh) and runs
# lint + the whole test suite inside it. CI runs exactly this (.ci/run).
# Extra arguments go to pytest, e.g. `bash tests/run_tests.sh -k mixing`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_venv.sh
python -m ruff check .
export WANDB_MODE=disabled
python -m pytest "$@"
