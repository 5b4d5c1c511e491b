#!/usr/bin/env bash
# One CPU experiment of docs/report.md: mix the real speech of ../shared/data
# (LibriSpeech + Common Voice Persian; 20 LibriSpeech speakers held out for the
# test set, 8 for validation), train a reduced SpEx+ (1.8 M parameters) with
# online mixing, then evaluate on the held-out test set next to the do-nothing
# baseline. Restarted with the same command it resumes from the last checkpoint.
#
#   [NAME=cpu] [EPOCHS=100] [MINUTES=75] [MODEL=spex_plus] [PROCS=1] bash recipes/LibriMix-TSE/run_cpu_experiment.sh \
#       [SHARED_DATA] [extra train.py overrides, e.g. --reference_encoder dvector]
#
# Data loading runs in the training process by default (NUM_WORKERS=0): on 2 cores
# two compute threads with in-process mixing train 1.47x faster than one thread
# plus a loader worker (bench/bench_train.py, docs/report.md 5.5). PROCS=2 trains
# with DDP instead: two one-thread processes (torchrun, gloo), 4 items each per
# step, the same batch of 8 (BatchNorm synced; bench/bench_processes.sh).
# MINUTES is the wall-clock training budget (validation included); WANDB_MODE
# (offline by default) is passed to W&B, `disabled` saves its CPU; results go
# to results/cpu_experiment/NAME. MODEL=voicefilter trains hparams/voicefilter.yaml
# instead, on the same data and protocol; SIZES replaces the model's CPU sizes
# below, DATA and RESULTS the data and results folders (tests use all three).
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=${1:-../shared/data}
shift || true
name=${NAME:-cpu}
data=${DATA:-data/real}
out=${RESULTS:-results/cpu_experiment}/$name
model=${MODEL:-spex_plus}
case $model in
  spex_plus) sizes=(--n_filters 128 --bottleneck_channels 128 --hidden_channels 256
                    --num_stacks 2 --embedding_dim 128 --speaker_channels "[128, 256, 256]") ;;
  voicefilter) sizes=(--conv_channels 16 --lstm_units 256 --fc_units 300) ;;
  *) echo "run_cpu_experiment.sh: MODEL=$model: expected spex_plus or voicefilter" >&2; exit 2 ;;
esac
if [ -n "${SIZES+set}" ]; then read -r -a sizes <<< "$SIZES"; fi
if [ -z "${VIRTUAL_ENV:-}" ]; then source scripts/setup_venv.sh; fi
bash recipes/LibriMix-TSE/make_cpu_data.sh "$shared" "$data"
procs=${PROCS:-1}
case $procs in
  1) launch=(python) ;;
  2|4|8) launch=(env OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone
                 --nproc_per_node "$procs")
         set -- "$@" --distributed_backend=gloo ;;
  *) echo "run_cpu_experiment.sh: PROCS=$procs: expected 1, 2, 4 or 8 (batch 8 splits)" >&2
     exit 2 ;;
esac
if [ ! -f "$out/train/model/inference.yaml" ]; then
  "${launch[@]}" recipes/LibriMix-TSE/train.py "recipes/LibriMix-TSE/hparams/$model.yaml" \
      --data_folder "$data" --output_folder "$out/train" --experiment_name "${model}_$name" \
      "${sizes[@]}" --batch_size $((8 / procs)) --segment_seconds 3.0 --online_items_per_epoch 800 \
      --num_workers "${NUM_WORKERS:-0}" --reference_seconds 4.0 --valid_pesq_items 20 \
      --number_of_epochs "${EPOCHS:-100}" --max_train_minutes "${MINUTES:-75}" \
      --wandb_mode "${WANDB_MODE:-offline}" "$@"
fi
if [ ! -f "$out/eval_mixture/summary.json" ]; then
  python evaluate.py hparams/test.yaml --test_dir "$data/test" --baseline mixture \
      --output_folder "$out/eval_mixture"
fi
python evaluate.py hparams/test.yaml --test_dir "$data/test" --model_dir "$out/train/model" \
    --output_folder "$out/eval_model" --save_dir "$out/eval_model/estimates"
