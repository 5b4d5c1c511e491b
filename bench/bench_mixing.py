"""Benchmark mixture generation on ci_tiny: static (CLI, 1 and N workers) and online.

Usage (from the repository root)::

    python bench/bench_mixing.py [CI_TINY] [--num 48] [--workers 2] \\
        [--out results/bench/mixing.json]

Static mixing runs :func:`mixing.make_mixtures.main` in-process (scan, mix,
write wav + manifest) into a temporary folder, with noise, ``--length_mode
min``; its time includes everything but the Python start-up. Online mixing
times :meth:`mixing.online.OnlineMixer.mix` (3 s crops, 4 s references, with
noise) in this process, with pyloudnorm's meter and with the vectorised one the
mixer uses (interleaved rounds), and the share of that time spent measuring
loudness. Prints a table and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mixing.corpus import find_noise_files, scan_corpora
from mixing.make_mixtures import main as make_mixtures
from mixing.mixers import Mixer
from mixing.online import OnlineMixer
from mixing.references import build_speaker_segments
from modules import levels
from modules.audio import SAMPLE_RATE

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_DATA = Path(os.environ.get("TSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def bench_static(data: Path, num: int, workers: int, seed: int) -> dict:
    """Time one ``make_mixtures`` run of ``num`` test mixtures."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            "--corpus", str(data / "speech"), "--noise_dir", str(data / "noise"),
            "--out", tmp, "--seed", str(seed), "--num_test", str(num),
            "--num_test_speakers", "6", "--workers", str(workers), "--length_mode", "min",
        ]  # fmt: skip
        start = time.perf_counter()
        code = make_mixtures(argv)
        seconds = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"make_mixtures failed with exit code {code}")
        with (Path(tmp) / "test.csv").open(newline="") as stream:
            audio = sum(float(row["duration"]) for row in csv.DictReader(stream))
    return {"mode": "static", "workers": workers, "mixtures": num, "seconds": seconds,
            "audio_seconds": audio}  # fmt: skip


def _pyloudnorm(data, sample_rate):
    with np.errstate(divide="ignore"):
        return float(levels._meter(sample_rate).integrated_loudness(data))


def bench_online(data: Path, num: int, seed: int, rounds: int = 3) -> list[dict]:
    """Time :meth:`OnlineMixer.mix` (3 s crops, 4 s references, noise) with each loudness meter.

    ``pyloudnorm`` (the reference meter) and ``vectorised``
    (:func:`modules.levels.integrated_loudness`, what the mixer uses) are timed
    in interleaved rounds of ``num`` items, the same items each time; the time
    spent inside the meter is measured too (``loudness_share``).
    """
    speakers = build_speaker_segments(scan_corpora([str(data / "speech")]), 1.0, 1.0)
    online = OnlineMixer(
        speakers, Mixer(snr_db=(5, 15)), segment_seconds=3.0, ref_seconds=4.0, seed=seed,
        noise_files=find_noise_files(data / "noise"),
    )  # fmt: skip
    vectorised = levels.integrated_loudness
    meters = {"pyloudnorm": _pyloudnorm, "vectorised": vectorised}
    spent = {"seconds": 0.0}

    def timed(meter):
        def measure(samples, sample_rate):
            start = time.perf_counter()
            try:
                return meter(samples, sample_rate)
            finally:
                spent["seconds"] += time.perf_counter() - start

        return measure

    online.mix(0, epoch=99)  # warm-up: noise cache, filters
    totals = {name: {"seconds": [], "loudness": []} for name in meters}
    try:
        for _ in range(rounds):
            for name, meter in meters.items():
                levels.integrated_loudness = timed(meter)
                spent["seconds"] = 0.0
                start = time.perf_counter()
                mixes = [online.mix(i, epoch=0)["mix"] for i in range(num)]
                totals[name]["seconds"].append(time.perf_counter() - start)
                audio = sum(mix.shape[0] for mix in mixes) / SAMPLE_RATE
                totals[name]["loudness"].append(spent["seconds"])
    finally:
        levels.integrated_loudness = vectorised
    rows = []
    for name, total in totals.items():
        seconds = statistics.median(total["seconds"])
        rows.append({"mode": f"online/{name}", "workers": 1, "mixtures": num,
                     "seconds": seconds, "audio_seconds": audio,
                     "ms_per_item": 1000 * seconds / num,
                     "loudness_share": statistics.median(total["loudness"]) / seconds})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code (2 when ci_tiny is missing)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA / "ci_tiny",
                        help="ci_tiny folder (speech/<spk>/*.flac, noise/*.flac)")  # fmt: skip
    parser.add_argument("--num", type=int, default=48, help="mixtures per measurement")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results/bench/mixing.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not (args.data / "speech").is_dir() or not (args.data / "noise").is_dir():
        print(
            f"error: {args.data} is not a ci_tiny folder (speech/ and noise/ needed); "
            "pass its path or set TSE_SHARED_DATA",
            file=sys.stderr,
        )
        return 2
    results = [
        bench_static(args.data, args.num, 1, args.seed),
        bench_static(args.data, args.num, args.workers, args.seed),
        *bench_online(args.data, args.num, args.seed),
    ]
    for row in results:
        row["mixtures_per_s"] = row["mixtures"] / row["seconds"]
        row["realtime_factor"] = row["audio_seconds"] / row["seconds"]
    print(f"{'mode':<18} {'workers':>7} {'mixtures':>8} {'seconds':>8} {'mix/s':>7} "
          f"{'x realtime':>10} {'loudness %':>10}")  # fmt: skip
    for row in results:
        share = f"{100 * row['loudness_share']:.0f}" if "loudness_share" in row else "-"
        print(f"{row['mode']:<18} {row['workers']:>7} {row['mixtures']:>8} "
              f"{row['seconds']:>8.2f} {row['mixtures_per_s']:>7.1f} "
              f"{row['realtime_factor']:>10.1f} {share:>10}")  # fmt: skip
    report = {
        "benchmark": "mixing",
        "data": str(args.data.resolve()),
        "command": " ".join([sys.executable, *sys.argv]),
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },  # fmt: skip
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
