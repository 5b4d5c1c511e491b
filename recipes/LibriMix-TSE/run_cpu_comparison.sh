#!/usr/bin/env bash
# The equal-budget comparisons of docs/report.md: variants trained for the same
# wall-clock budget (MINUTES, default 30) on the same data, seed and test set,
# PARALLEL at a time (default 2; one compute thread each, data loading
# in-process, so they share the 2-core machine evenly; PARALLEL=4 runs four
# variants under exactly the same conditions at half a core each), then
# evaluated and tabulated. Resumable like run_cpu_experiment.sh.
#
#   [MINUTES=30] [PARALLEL=2] bash recipes/LibriMix-TSE/run_cpu_comparison.sh [SHARED_DATA] [VARIANT ...]
#
# VARIANT is one of the names below (default: the SpEx+ ones, in pairs);
# native_noise adds the real noise of SHARED_DATA/noise to training mixtures; vf_*
# variants are VoiceFilter (MODEL=voicefilter; run_voicefilter_comparison.sh runs
# all four). DATA, RESULTS and SIZES pass through to run_cpu_experiment.sh.
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
  [native_noise]="--reference_encoder native --noise_folder $shared/noise"
  [vf_linear_spectral]="--scale linear --loss_type spectral"
  [vf_linear_sisnr]="--scale linear --loss_type si_snr"
  [vf_mel_spectral]="--scale mel --loss_type spectral"
  [vf_mel_sisnr]="--scale mel --loss_type si_snr"
)
variants=("$@")
if [ ${#variants[@]} -eq 0 ]; then
  variants=(native dvector native_dvector native_ce0)
fi
for variant in "${variants[@]}"; do
  if [ -z "${overrides[$variant]+set}" ]; then
    echo "$(basename "$0"): unknown variant $variant (known: ${!overrides[*]})" >&2
    exit 2
  fi
done
if [ -z "${VIRTUAL_ENV:-}" ]; then source scripts/setup_venv.sh; fi
results=${RESULTS:-results/cpu_experiment}
mkdir -p "$results"
# The mixtures first, once, so that the two runs of a pair do not both start mixing.
bash recipes/LibriMix-TSE/make_cpu_data.sh "$shared" "${DATA:-data/real}"
run() {
  local model=spex_plus
  if [[ $1 == vf_* ]]; then model=voicefilter; fi
  # shellcheck disable=SC2086
  NAME=$1 MODEL=$model MINUTES=${MINUTES:-30} NUM_WORKERS=0 OMP_NUM_THREADS=1 \
    bash recipes/LibriMix-TSE/run_cpu_experiment.sh "$shared" ${overrides[$1]} \
    > "$results/$1.log" 2>&1 || { echo "$1 failed: see $results/$1.log" >&2; return 1; }
}
status=0
parallel=${PARALLEL:-2}
for ((i = 0; i < ${#variants[@]}; i += parallel)); do
  pids=()
  for ((j = i; j < i + parallel && j < ${#variants[@]}; j++)); do
    run "${variants[j]}" & pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
done
python recipes/LibriMix-TSE/compare_results.py "$results" "${variants[@]}"
exit $status
