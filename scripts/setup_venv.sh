#!/usr/bin/env bash
# The project's virtual environment: created once in .venv/ (or $TSE_VENV),
# packages installed once, then reused. Sourced by quickstart.sh and
# tests/run_tests.sh from the repository root, so everything they run uses the
# venv's python. Run it directly (`bash scripts/setup_venv.sh`) to only set up.
#
# Packages are installed again only when requirements.txt, pyproject.toml or
# this file change (a stamp file in the venv holds their hash), so a second
# run takes a second. Needs Python >= 3.10 with its venv module (on Debian and
# Ubuntu: the python3-venv package) and gcc (pesq builds from source).
# Exit status 2: something the machine must provide is missing (the message says what).
set -euo pipefail

_tse_venv=${TSE_VENV:-.venv}
_tse_python=${PYTHON:-python3}

_tse_missing() {
    echo "error: $*" >&2
    exit 2
}

if [ ! -x "$_tse_venv/bin/python" ]; then
    command -v "$_tse_python" >/dev/null 2>&1 ||
        _tse_missing "$_tse_python not found: install Python 3.10 or newer (or set PYTHON=/path/to/python3)"
    "$_tse_python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
        _tse_missing "$("$_tse_python" --version 2>&1) is too old: Python 3.10 or newer is needed (set PYTHON=/path/to/python3)"
    # Debian/Ubuntu ship venv without ensurepip unless python3-venv is installed;
    # `python3 -m venv` would then leave a venv without pip behind.
    if ! "$_tse_python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        _version=$("$_tse_python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        _tse_missing "$_tse_python has no venv module with pip (ensurepip). On Debian/Ubuntu: sudo apt install python3-venv (or python$_version-venv), then rerun"
    fi
    echo "Creating the project virtual environment in $_tse_venv ($("$_tse_python" --version 2>&1))"
    "$_tse_python" -m venv "$_tse_venv"
fi
"$_tse_venv/bin/python" -m pip --version >/dev/null 2>&1 ||
    _tse_missing "$_tse_venv has no pip (made without ensurepip?): remove $_tse_venv and rerun"

# What activate does, without its shell-specific parts.
VIRTUAL_ENV=$(cd "$_tse_venv" && pwd)
export VIRTUAL_ENV
export PATH="$VIRTUAL_ENV/bin:$PATH"
hash -r
# PyTorch's CPU threads spin while they wait for each other; on a machine busy with
# other work that made a training step 4-12x slower with 2 threads than with 1.
# Passive waiting keeps the cost of a busy machine small (measured: 1.4x).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

_tse_stamp="$_tse_venv/.tse-setup.sha256"
_tse_hash=$(cat requirements.txt pyproject.toml scripts/setup_venv.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$_tse_stamp" 2>/dev/null)" != "$_tse_hash" ]; then
    echo "Installing packages into $_tse_venv (first run: a few minutes; later runs skip this)"
    _pip=(python -m pip install -q --disable-pip-version-check)
    "${_pip[@]}" -r requirements.txt
    # The d-vector encoder's package: its webrtcvad dependency needs a compiler
    # and is not used (the weights are loaded with torch), hence --no-deps.
    "${_pip[@]}" --no-deps resemblyzer==0.1.4
    "${_pip[@]}" --no-deps -e .
    echo "$_tse_hash" >"$_tse_stamp"
    echo "Packages installed ($_tse_venv)"
fi
unset _tse_venv _tse_python _tse_stamp _tse_hash _pip _version
unset -f _tse_missing
