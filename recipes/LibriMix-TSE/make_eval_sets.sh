#!/usr/bin/env bash
# The evaluation sets beyond the clean test set (docs/report.md, "Evaluation beyond
# clean SI-SDR"), made once each:
#   DATA/real_noisy/test         1000 mixtures of the same 20 held-out LibriSpeech
#                                speakers as data/real/test (same seed and split), with
#                                real noise (SHARED_DATA/noise, last 20 % of each file) at
#                                a target-to-noise ratio drawn in 5-15 dB; valid: 40
#   DATA/real_noisy/test_absent  200 target-absent mixtures (two test speakers, a third
#                                one's reference), with the same noise
#   DATA/asr_en/test             Common Voice English clips with transcripts of the
#                                target part (mixing/make_asr_test.py), clean
# Train a noise-augmented model with the recipe's noise_folder=SHARED_DATA/noise (the
# first 80 % of each noise file: disjoint in time from the test noise).
#
#   bash recipes/LibriMix-TSE/make_eval_sets.sh [SHARED_DATA] [DATA]
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=${1:-../shared/data}
data=${2:-data}
if [ -z "${VIRTUAL_ENV:-}" ]; then source scripts/setup_venv.sh; fi
if [ ! -f "$data/real_noisy/test.csv" ]; then
  python mixing/make_mixtures.py --corpus "librispeech=$shared/librispeech/train-clean-100" \
      --corpus "cv_fa=$shared/commonvoice_fa" --out "$data/real_noisy" --seed 0 \
      --heldout_from librispeech --num_valid_speakers 8 --num_test_speakers 20 \
      --num_train 0 --num_valid 40 --num_test 1000 --num_test_absent 200 --ratio_db 0 \
      --max_seconds 12 --length_mode min --min_target_seconds 2 --min_ref_seconds 2 \
      --noise_dir "$shared/noise" --snr_range 5 15 --noise_train_fraction 0.8 --workers 2
fi
if [ ! -f "$data/asr_en/test.csv" ]; then
  python mixing/make_asr_test.py --corpus "$shared/commonvoice_rsample" --lang en \
      --out "$data/asr_en/test" --seed 0
fi
