#!/usr/bin/env bash
# Quick start on the embedded default: needs nothing from outside the project.
# Sets up .venv/, synthesises a small multi-speaker corpus with eSpeak NG, mixes
# it, trains the tiny SpEx+ briefly, scores it next to the unprocessed mixture
# on unseen speakers and prints one table. Everything lands under
# data/quickstart and results/quickstart.
#   bash quickstart.sh [extra train.py overrides, e.g. --number_of_epochs 10]
set -euo pipefail
cd "$(dirname "$0")"

data=data/quickstart
results=results/quickstart
SECONDS=0
stage() { printf '\n== [%s/5] %s (%d:%02d elapsed)\n' "$1" "$2" $((SECONDS / 60)) $((SECONDS % 60)); }

echo "Quick start: about 6 minutes on 2 CPU cores (the first run adds a few minutes to"
echo "install the packages into .venv/). Results go to $results/."

stage 1 "Project environment (.venv/)"
source scripts/setup_venv.sh
export WANDB_MODE=${WANDB_MODE:-offline}

stage 2 "Synthesising 16 eSpeak NG speakers x 8 utterances"
python mixing/synth_corpus.py --out "$data/corpus" --num_speakers 16 --utterances_per_speaker 8 --seed 0

stage 3 "Mixing 24 validation and 24 test mixtures (unseen speakers; the other 10 train)"
python mixing/make_mixtures.py --corpus "$data/corpus" --out "$data/mixtures" --seed 0 \
    --num_train 0 --num_valid 24 --num_test 24 --num_valid_speakers 3 --num_test_speakers 3 \
    --min_target_seconds 1.0 --min_ref_seconds 1.0 --workers 2 --overwrite

# Online mixing: fresh 1 s training crops (2 s references) every epoch, batches of 4.
stage 4 "Training the tiny SpEx+ (6 epochs of 100 steps; a progress bar per epoch)"
python recipes/LibriMix-TSE/train.py recipes/LibriMix-TSE/hparams/tiny.yaml \
    --data_folder "$data/mixtures" --output_folder "$results/train" \
    --segment_seconds 1.0 --reference_seconds 2.0 --batch_size 4 --lr 0.002 \
    --number_of_epochs 6 --online_items_per_epoch 400 "$@"

stage 5 "Scoring the trained model and the unprocessed mixture on the test set"
report="$results/eval/report.txt"
mkdir -p "$results/eval"
python evaluate.py hparams/test.yaml --test_dir "$data/mixtures/test" \
    --model_dir "$results/train/model" --output_folder "$results/eval" \
    --compare_baselines "[mixture]" >"$report"

printf '\nDone in %d:%02d. Test set: 24 mixtures of 3 unseen speakers (full report: %s)\n\n' \
    $((SECONDS / 60)) $((SECONDS % 60)) "$report"
# The comparison table (one column per system) from the report; all of it if not found.
sed -n '/^metric /,/^items /p' "$report" | grep . || cat "$report"
