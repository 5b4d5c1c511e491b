#!/usr/bin/env python3
"""Where a training step's time goes: ``torch.profiler`` over a few recipe steps.

Builds the same objects as :mod:`bench_train` (the recipe's yaml, online-mixing
dataset and ``ExtractionBrain``), mixes a few batches beforehand (``premixed``:
compute only), runs one untimed step, then profiles ``--steps`` training steps
and prints the operators by self CPU time, each with its share of the total.
The profiler slows every step (about 2x here), so read the shares, not the times.

::

    python bench/profile_step.py --data data/real [--config cpu] [--threads 2] [--steps 2] \
        [--compile --warmup 4]

DATA is a ``mixing/make_mixtures.py`` output, e.g. ``make_cpu_data.sh``'s ``data/real``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--config", default="cpu", choices=sorted(bench_train.CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=12, help="operators to print")
    parser.add_argument("--compile", action="store_true",
                        help="the recipe's --compile (compiled graphs count as one operator)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed steps first (compiling needs about 4)")
    args = parser.parse_args(argv)
    case_args = bench_train.fixed_case_args(args.data)
    with tempfile.TemporaryDirectory() as workdir:
        split = f"{args.threads}+0"
        case = bench_train.Case(bench_train.load_recipe(), case_args, args.config, "premixed",
                                split, "vectorised", args.compile, Path(workdir))  # fmt: skip
        case.round(warmup=args.warmup, steps=0)
        batches = case._batches()
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            start = time.perf_counter()
            for _ in range(args.steps):
                case.brain.fit_batch(next(batches))
            seconds = (time.perf_counter() - start) / args.steps
    events = profiler.key_averages()
    # each compiled graph has its own name: one row for all of them
    compiled = [event for event in events if "CompiledFxGraph" in event.key]
    events = [event for event in events if "CompiledFxGraph" not in event.key]
    if compiled:
        self_time = sum(event.self_cpu_time_total for event in compiled)
        events.append(SimpleNamespace(key="compiled graphs (TorchInductor)",
                                      self_cpu_time_total=self_time,
                                      count=sum(event.count for event in compiled)))  # fmt: skip
    total = sum(event.self_cpu_time_total for event in events)
    rows = [
        {"op": e.key, "share_percent": 100 * e.self_cpu_time_total / total,
         "self_s": e.self_cpu_time_total / 1e6 / args.steps, "calls": e.count}
        for e in sorted(events, key=lambda event: -event.self_cpu_time_total)[: args.top]
    ]  # fmt: skip
    print(f"{args.config}, {args.threads} thread(s): {seconds:.2f} s per profiled step")
    print(f"{'operator':40s} {'share':>6s} {'s/step':>7s} {'calls':>6s}")
    for row in rows:
        print(f"{row['op'][:40]:40s} {row['share_percent']:5.1f}% {row['self_s']:7.3f} "
              f"{row['calls']:6d}")  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
