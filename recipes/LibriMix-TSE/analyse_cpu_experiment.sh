#!/usr/bin/env bash
# Analyses of the model trained by run_cpu_experiment.sh (numbers of docs/report.md 5.3-5.4):
# conditioning on the reference, target-absent behaviour, chunked inference, output levels.
#   bash recipes/LibriMix-TSE/analyse_cpu_experiment.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
data=data/real
out=results/cpu_experiment
model=$out/train/model
python3 bench/conditioning_presence.py --data_folder "$data" --split test --model_dir "$model" \
    --out "$out/conditioning.json" --threads 1
python3 bench/bench_inference.py --model_dir "$model" --test_dir "$data/test" --limit 40 \
    --chunks 1 2 3 4 --memory_minutes 1 10 --memory_modes long stream --threads 1 \
    --out "$out/bench_inference.json"
python3 extract.py --model_dir "$model" --test_dir "$data/test" --out_dir "$out/extract"
python3 bench/level_stats.py "$data/test/mix" "$out/eval_model/estimates" "$out/extract"
