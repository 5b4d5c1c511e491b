#!/usr/bin/env bash
# Analyses of a model trained by run_cpu_experiment.sh (numbers of docs/report.md 5.3-5.4):
# conditioning on the reference (mixture with A's vs B's reference), target-absent
# behaviour, chunked inference and memory, output levels.
#   [NAME=cpu] bash recipes/LibriMix-TSE/analyse_cpu_experiment.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${VIRTUAL_ENV:-}" ]; then source scripts/setup_venv.sh; fi
data=${DATA:-data/real}
out=${RESULTS:-results/cpu_experiment}/${NAME:-cpu}
model=$out/train/model
python bench/conditioning_presence.py --data_folder "$data" --split test --model_dir "$model" \
    --out "$out/conditioning.json" --threads 1
python bench/bench_inference.py --model_dir "$model" --test_dir "$data/test" --limit 40 \
    --chunks 1 2 3 4 --memory_minutes 1 10 --memory_modes long stream --skip speed --threads 1 \
    --out "$out/bench_inference.json"
python extract.py --model_dir "$model" --test_dir "$data/test" --out_dir "$out/extract"
python bench/level_stats.py "$data/test/mix" "$out/eval_model/estimates" "$out/extract"
