#!/usr/bin/env bash
# The mixtures of the CPU experiments (docs/report.md), made once: the real speech
# of SHARED_DATA (LibriSpeech train-clean-100 + Common Voice Persian), 20
# LibriSpeech speakers held out for the test set (100 mixtures), 8 for validation
# (40), the others for online training. Nothing is done if DATA/test.csv exists.
#
#   bash recipes/LibriMix-TSE/make_cpu_data.sh [SHARED_DATA] [DATA]
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=${1:-../shared/data}
data=${2:-data/real}
if [ -f "$data/test.csv" ]; then exit 0; fi
if [ -z "${VIRTUAL_ENV:-}" ]; then source scripts/setup_venv.sh; fi
python mixing/make_mixtures.py --corpus "librispeech=$shared/librispeech/train-clean-100" \
    --corpus "cv_fa=$shared/commonvoice_fa" --out "$data" --seed 0 \
    --heldout_from librispeech --num_valid_speakers 8 --num_test_speakers 20 \
    --num_train 0 --num_valid 40 --num_test 100 --ratio_db 0 --max_seconds 12 \
    --length_mode min --min_target_seconds 2 --min_ref_seconds 2 --workers 2
