#!/usr/bin/env bash
# The equal-budget comparison of docs/report.md: SpEx+ variants trained for the
# same wall-clock budget (MINUTES, default 30) on the same data, seed and test
# set, two at a time (one compute thread each, data loading in-process, so both
# share the 2-core machine evenly), then evaluated. Resumable like
# run_cpu_experiment.sh.
#
#   [MINUTES=30] bash recipes/LibriMix-TSE/run_cpu_comparison.sh [SHARED_DATA] [VARIANT ...]
#
# VARIANT is one of the names below (default: all, in pairs).
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=${1:-../shared/data}
shift || true
declare -A overrides=(
  [native]="--reference_encoder native"
  [dvector]="--reference_encoder dvector"
  [native_dvector]="--reference_encoder native+dvector"
  [dvector_finetune]="--reference_encoder dvector_finetune"
  [native_ce0]="--reference_encoder native --ce_weight 0.0"
)
variants=("$@")
if [ ${#variants[@]} -eq 0 ]; then
  variants=(native dvector native_dvector native_ce0)
fi
if [ -z "${VIRTUAL_ENV:-}" ]; then source scripts/setup_venv.sh; fi
mkdir -p results/cpu_experiment
run() {
  # shellcheck disable=SC2086
  NAME=$1 MINUTES=${MINUTES:-30} NUM_WORKERS=0 OMP_NUM_THREADS=1 \
    bash recipes/LibriMix-TSE/run_cpu_experiment.sh "$shared" ${overrides[$1]} \
    > "results/cpu_experiment/$1.log" 2>&1
}
for ((i = 0; i < ${#variants[@]}; i += 2)); do
  run "${variants[i]}" &
  if [ $((i + 1)) -lt ${#variants[@]} ]; then run "${variants[i + 1]}" & fi
  wait
done
python recipes/LibriMix-TSE/compare_results.py results/cpu_experiment "${variants[@]}"
