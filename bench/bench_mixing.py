"""Benchmark mixture generation on ci_tiny: static (CLI, 1 and N workers) and online.

Usage (from the repository root)::

    python bench/bench_mixing.py [CI_TINY] [--num 48] [--workers 2] \\
        [--out results/bench/mixing.json]

Static mixing runs :func:`mixing.make_mixtures.main` in-process (scan, mix,
write wav + manifest) into a temporary folder, with noise, ``--length_mode
min``; its time includes everything but the Python start-up. Online mixing
times :meth:`mixing.online.OnlineMixer.mix` (3 s crops, with noise) in this
process. Prints a table and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from mixing.corpus import find_noise_files, scan_corpora
from mixing.make_mixtures import main as make_mixtures
from mixing.mixers import Mixer
from mixing.online import OnlineMixer
from mixing.references import build_speaker_segments
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


def bench_online(data: Path, num: int, seed: int) -> dict:
    """Time ``num`` calls of :meth:`OnlineMixer.mix` (3 s crops, noise), one process."""
    speakers = build_speaker_segments(scan_corpora([str(data / "speech")]), 1.0, 1.0)
    online = OnlineMixer(
        speakers, Mixer(snr_db=(5, 15)), segment_seconds=3.0, seed=seed,
        noise_files=find_noise_files(data / "noise"),
    )  # fmt: skip
    online.mix(0, epoch=99)  # warm-up: noise cache, filters
    start = time.perf_counter()
    audio = sum(online.mix(i, epoch=0)["mix"].shape[0] / SAMPLE_RATE for i in range(num))
    seconds = time.perf_counter() - start
    return {"mode": "online", "workers": 1, "mixtures": num, "seconds": seconds,
            "audio_seconds": audio}  # fmt: skip


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
        bench_online(args.data, args.num, args.seed),
    ]
    for row in results:
        row["mixtures_per_s"] = row["mixtures"] / row["seconds"]
        row["realtime_factor"] = row["audio_seconds"] / row["seconds"]
    print(
        f"{'mode':<7} {'workers':>7} {'mixtures':>8} {'seconds':>8} {'mix/s':>7} {'x realtime':>10}"
    )
    for row in results:
        print(
            f"{row['mode']:<7} {row['workers']:>7} {row['mixtures']:>8} {row['seconds']:>8.2f} "
            f"{row['mixtures_per_s']:>7.1f} {row['realtime_factor']:>10.1f}"
        )
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
