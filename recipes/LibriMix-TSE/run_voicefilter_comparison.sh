#!/usr/bin/env bash
# The VoiceFilter comparison of docs/report.md: the four variants (linear or Mel
# mask x spectral or SI-SNR loss) trained with hparams/voicefilter.yaml at its CPU
# sizes on the data, seed, protocol and test set of the SpEx+ runs, for the same
# wall-clock budget each (MINUTES, default 30), two at a time, then evaluated and
# tabulated (run_cpu_comparison.sh does the work). Resumable.
#
#   [MINUTES=30] bash recipes/LibriMix-TSE/run_voicefilter_comparison.sh [SHARED_DATA] [VARIANT ...]
#
# VARIANT: vf_linear_spectral vf_linear_sisnr vf_mel_spectral vf_mel_sisnr (default:
# all four). Results: results/cpu_experiment/VARIANT and comparison.json. SpEx+ at
# the same budget, for the same table: bash recipes/LibriMix-TSE/run_cpu_comparison.sh
# ../shared/data native.
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=${1:-../shared/data}
shift || true
if [ $# -eq 0 ]; then set -- vf_linear_spectral vf_linear_sisnr vf_mel_spectral vf_mel_sisnr; fi
exec bash recipes/LibriMix-TSE/run_cpu_comparison.sh "$shared" "$@"
