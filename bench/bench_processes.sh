#!/usr/bin/env bash
# Training throughput on 2 cores: one process with two compute threads (and the
# older split, one thread plus one loader process) against DDP over two
# one-thread processes, each with half the batch (bench/bench_train.py under
# torchrun), each eager and with the TCN blocks compiled (`--compile`, cases
# ending in :on; the untimed warm-up steps compile). The layouts cannot share
# one process, so the invocations alternate (A, B, A, B, ...) and the table
# gives each case's median over all of them.
#
#   [ALTERNATIONS=2] [CONFIG=cpu] bash bench/bench_processes.sh [DATA] [OUT_DIR]
#
# DATA is a make_mixtures.py output (default data/real); JSON goes to OUT_DIR
# (default results/bench/processes).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-data/real}
out=${2:-results/bench/processes}
config=${CONFIG:-cpu}
mkdir -p "$out"
export WANDB_MODE=disabled
# 3 warm-up steps: compiling meets padded and unpadded batches (two graphs per block)
common=(--data "$data" --configs "$config" --rounds 1 --warmup 3 --steps "${STEPS:-3}")
for i in $(seq "${ALTERNATIONS:-2}"); do
  python bench/bench_train.py "${common[@]}" --out "$out/one_process_$i.json" \
      --cases pipeline:1+1:vectorised:off pipeline:2+0:vectorised:off premixed:2+0:vectorised:off \
              pipeline:2+0:vectorised:on
  OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc_per_node=2 \
      bench/bench_train.py "${common[@]}" --out "$out/two_processes_$i.json" \
      --cases pipeline:1+0:vectorised:off premixed:1+0:vectorised:off \
              pipeline:1+0:vectorised:on premixed:1+0:vectorised:on
done
python - "$out" <<'EOF'
import json, statistics, sys
from pathlib import Path

steps = {}
for path in sorted(Path(sys.argv[1]).glob("*_process*_*.json")):
    for row in json.loads(path.read_text())["results"]:
        walls = [s + w for s, w in zip(row["step_times_s"], row["wait_times_s"])]
        steps.setdefault(row["case"], (row["batch_size"] * row["segment_seconds"], []))[1].extend(walls)
base = None
print(f"{'case':<44} {'wall s':>7} {'audio/s':>8} {'ratio':>6}")
for case, (audio, walls) in steps.items():
    wall = statistics.median(walls)
    base = base or audio / wall
    print(f"{case:<44} {wall:>7.3f} {audio / wall:>8.2f} {audio / wall / base:>6.2f}")
EOF
