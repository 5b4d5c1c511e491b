#!/usr/bin/env bash
# The CPU experiment of docs/report.md: mix the real speech of ../shared/data
# (LibriSpeech + Common Voice Persian, 20 LibriSpeech speakers held out for the
# test set, 8 for validation), train a reduced SpEx+ with online mixing, then
# evaluate on the held-out test set next to the do-nothing baseline.
#   [EPOCHS=10] bash recipes/LibriMix-TSE/run_cpu_experiment.sh [SHARED_DATA] [extra train.py overrides]
# Restarted with the same command it resumes from the last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=${1:-../shared/data}
shift || true
data=data/real
out=results/cpu_experiment
if [ ! -f "$data/test.csv" ]; then
  python3 mixing/make_mixtures.py --corpus "librispeech=$shared/librispeech/train-clean-100" \
      --corpus "cv_fa=$shared/commonvoice_fa" --out "$data" --seed 0 \
      --heldout_from librispeech --num_valid_speakers 8 --num_test_speakers 20 \
      --num_train 0 --num_valid 40 --num_test 100 --ratio_db 0 --max_seconds 12 \
      --length_mode min --min_target_seconds 2 --min_ref_seconds 2 --workers 2
fi
python3 recipes/LibriMix-TSE/train.py recipes/LibriMix-TSE/hparams/spex_plus.yaml \
    --data_folder "$data" --output_folder "$out/train" --experiment_name spex_plus_cpu \
    --n_filters 128 --bottleneck_channels 128 --hidden_channels 256 --num_stacks 2 \
    --embedding_dim 128 --speaker_channels "[128, 256, 256]" \
    --batch_size 8 --segment_seconds 3.0 --online_items_per_epoch 1600 --num_workers 1 \
    --reference_seconds 4.0 --valid_pesq_items 20 --number_of_epochs "${EPOCHS:-10}" --lr_patience 2 "$@"
python3 evaluate.py hparams/test.yaml --test_dir "$data/test" --baseline mixture \
    --output_folder "$out/eval_mixture"
python3 evaluate.py hparams/test.yaml --test_dir "$data/test" --model_dir "$out/train/model" \
    --output_folder "$out/eval_model" --save_dir "$out/eval_model/estimates"
