#!/usr/bin/env bash
# Quick start on the embedded default: needs nothing from outside the project.
# Sets up, synthesises a small multi-speaker corpus with eSpeak NG, mixes it,
# trains the tiny SpEx+ briefly, evaluates it next to the do-nothing baseline
# and prints the table. Everything lands under data/quickstart and results/quickstart.
#   bash quickstart.sh [extra train.py overrides, e.g. --number_of_epochs 10]
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_venv.sh  # .venv/, created and filled once
export WANDB_MODE=${WANDB_MODE:-offline}

data=data/quickstart
results=results/quickstart
python mixing/synth_corpus.py --out "$data/corpus" --num_speakers 16 --utterances_per_speaker 8 --seed 0
python mixing/make_mixtures.py --corpus "$data/corpus" --out "$data/mixtures" --seed 0 \
    --num_train 0 --num_valid 24 --num_test 24 --num_valid_speakers 3 --num_test_speakers 3 \
    --min_target_seconds 1.0 --min_ref_seconds 1.0 --workers 2
python recipes/LibriMix-TSE/train.py recipes/LibriMix-TSE/hparams/tiny.yaml \
    --data_folder "$data/mixtures" --output_folder "$results/train" "$@"
python evaluate.py hparams/test.yaml --test_dir "$data/mixtures/test" \
    --baseline mixture --output_folder "$results/eval_mixture"
python evaluate.py hparams/test.yaml --test_dir "$data/mixtures/test" \
    --model_dir "$results/train/model" --output_folder "$results/eval_tiny"
