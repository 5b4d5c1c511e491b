#!/usr/bin/env bash
# A GPU run of the paper configuration, prepared on the CPU machine and run as one
# device call: install the wheels, make the mixtures, measure training steps
# (eager vs torch.compile, with and without the loader), train for a fixed time
# (bf16, torch.compile, loader workers), evaluate on held-out speakers, print a table.
#
#   bash bench/gpu_run.sh prepare [SHARED_DATA]   # CPU machine, once: .whl/ and .gpu_data/
#   bash bench/gpu_run.sh                         # device machine, e.g. run(carry=[".whl", ".gpu_data"])
#
# prepare copies ../shared/wheels/*.whl to .whl/ and the LibriSpeech speakers of
# SHARED_DATA (default ../shared/data) re-encoded to OGG Vorbis (about 3x smaller)
# to .gpu_data/ (both git-ignored via .git/info/exclude; together under the 64 MiB a
# device call carries). On the device the OGG files are decoded to FLAC once and
# mixed by recipes/LibriMix-TSE/make_cpu_data.sh's protocol (held-out test and
# validation speakers, online mixing for training).
#
# Settings (environment): DEVICE (cuda), PRECISION (bf16), MINUTES (6: training
# budget), BATCH (16), WORKERS (8), COMPILE (True), SIZES (model-size overrides,
# e.g. the tiny ones for a CPU check), STEPS (10: timed steps per benchmark round),
# BENCH_CONFIG (paper: bench_train.py's configuration), NUM_TEST (100), OUT ($OUT or
# results/gpu_run). A CPU check at tiny sizes (about 5 minutes on a busy 2-core machine):
#
#   DEVICE=cpu PRECISION=fp32 COMPILE=False MINUTES=0.3 BATCH=2 WORKERS=0 STEPS=1 NUM_TEST=4 \
#     BENCH_CONFIG=tiny OUT=/tmp/gpu_check \
#     SIZES="--n_filters 16 --bottleneck_channels 16 --hidden_channels 32 --num_stacks 1 \
#     --blocks_per_stack 2 --embedding_dim 16 --speaker_channels [16,32]" bash bench/gpu_run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "prepare" ]; then
  shared=${2:-../shared/data}
  grep -qx "/.gpu_data/" .git/info/exclude 2>/dev/null || echo /.gpu_data/ >> .git/info/exclude
  grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  mkdir -p .whl && cp "$(dirname "$shared")"/wheels/*.whl .whl/
  python - "$shared/librispeech/train-clean-100" .gpu_data/librispeech <<'EOF'
import sys
from pathlib import Path

import soundfile as sf

source, dest = Path(sys.argv[1]), Path(sys.argv[2])
for path in sorted(source.rglob("*.flac")):
    out = dest / path.relative_to(source).with_suffix(".ogg")
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        data, rate = sf.read(path)
        sf.write(out, data, rate, format="OGG", subtype="VORBIS")
EOF
  du -sh .whl .gpu_data
  exit 0
fi

device=${DEVICE:-cuda}
precision=${PRECISION:-bf16}
minutes=${MINUTES:-6}
batch=${BATCH:-16}
workers=${WORKERS:-8}
compile=${COMPILE:-True}
steps=${STEPS:-10}
out=${OUT:-results/gpu_run}
read -r -a sizes <<< "${SIZES:-}"
mkdir -p "$out"
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
py=python3
if ! $py -c "import speechbrain, hyperpyyaml, pyloudnorm, soundfile" 2>/dev/null; then
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
$py -c "import torch; print('torch', torch.__version__, 'device', \
  torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"

# Source speech: the carried OGG files decoded to FLAC (the corpus scanner reads FLAC/WAV).
speech=/tmp/gpu_speech/librispeech
data=/tmp/gpu_mixtures
if [ ! -f "$data/test.csv" ]; then
  $py - .gpu_data/librispeech "$speech" <<'EOF'
import sys
from pathlib import Path

import soundfile as sf

source, dest = Path(sys.argv[1]), Path(sys.argv[2])
files = sorted(source.rglob("*.ogg"))
if not files:
    sys.exit(f"{source}: no OGG files (run: bash bench/gpu_run.sh prepare)")
for path in files:
    out = dest / path.relative_to(source).with_suffix(".flac")
    out.parent.mkdir(parents=True, exist_ok=True)
    data, rate = sf.read(path)
    sf.write(out, data, rate)
EOF
  $py mixing/make_mixtures.py --corpus "librispeech=$speech" --out "$data" --seed 0 \
      --heldout_from librispeech --num_valid_speakers 8 --num_test_speakers 20 \
      --num_train 0 --num_valid 40 --num_test "${NUM_TEST:-100}" --ratio_db 0 \
      --max_seconds 12 --length_mode min --min_target_seconds 2 --min_ref_seconds 2 \
      --workers "$(( workers > 0 ? workers : 1 ))"
fi

# 1. Training step time: eager vs compiled (pre-mixed batches), compiled with the loader.
bench_cases=(premixed:1+0:vectorised:off "pipeline:1+$workers:vectorised:off")
if [ "$compile" = "True" ]; then
  bench_cases+=(premixed:1+0:vectorised:on "pipeline:1+$workers:vectorised:on")
fi
$py bench/bench_train.py --data "$data" --configs "${BENCH_CONFIG:-paper}" --batch_size "$batch" \
    --device "$device" --precision "$precision" --cases "${bench_cases[@]}" \
    --rounds 2 --warmup 3 --steps "$steps" --out "$out/bench_train.json" | tee "$out/bench_train.txt"

# 2. Training for a fixed time, then evaluation on the held-out test speakers.
if [ ! -f "$out/train/model/inference.yaml" ]; then
  $py recipes/LibriMix-TSE/train.py recipes/LibriMix-TSE/hparams/spex_plus.yaml \
      --data_folder "$data" --output_folder "$out/train" --experiment_name spex_plus_gpu \
      "${sizes[@]}" --batch_size "$batch" --segment_seconds 3.0 --reference_seconds 4.0 \
      --online_items_per_epoch "$(( batch * 250 ))" --num_workers "$workers" \
      --valid_pesq_items 20 --number_of_epochs 1000 --max_train_minutes "$minutes" \
      --wandb_mode disabled --device "$device" --precision "$precision" --compile "$compile"
fi
$py evaluate.py hparams/test.yaml --test_dir "$data/test" --model_dir "$out/train/model" \
    --output_folder "$out/eval" --device "$device"

# 3. The table.
$py - "$out" <<'EOF'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
print((out / "bench_train.txt").read_text().strip())
summary = json.loads((out / "eval" / "summary.json").read_text())
log = [line for line in (out / "train" / "train_log.txt").read_text().splitlines()
       if line.startswith("epoch:")]
print(f"\ntraining: {len(log)} epoch(s); last: {log[-1] if log else '-'}")
print(f"test, {summary['scored']} mixtures of held-out speakers: " + ", ".join(
    f"{name} {value:.2f}" for name, value in summary["means"].items()))
EOF
