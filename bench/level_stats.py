#!/usr/bin/env python3
"""Loudness and peak statistics of the wav files of one or more folders.

Used for the listening notes of docs/report.md: are estimates as loud as the
mixtures, and do any of them clip?

    python bench/level_stats.py data/real/test/mix results/cpu_experiment/extract

Prints, per folder: file count, mean/min/max integrated loudness (LUFS,
ITU-R BS.1770 via pyloudnorm), mean and max sample peak, and how many files
reach full scale (|x| >= 0.999).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pyloudnorm as pyln
import soundfile as sf


def folder_stats(folder: Path) -> dict:
    """Loudness and peak summary of every ``*.wav`` in ``folder``."""
    loudness, peaks = [], []
    for path in sorted(folder.glob("*.wav")):
        wav, rate = sf.read(path, dtype="float64")
        level = pyln.Meter(rate).integrated_loudness(wav)
        if math.isfinite(level):
            loudness.append(level)
        peaks.append(float(np.max(np.abs(wav))) if wav.size else 0.0)
    if not peaks:
        raise SystemExit(f"{folder}: no .wav files")
    return {
        "files": len(peaks),
        "lufs_mean": float(np.mean(loudness)),
        "lufs_min": float(np.min(loudness)),
        "lufs_max": float(np.max(loudness)),
        "peak_mean": float(np.mean(peaks)),
        "peak_max": float(np.max(peaks)),
        "full_scale": int(sum(p >= 0.999 for p in peaks)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args(argv)
    header = f"{'folder':<48} {'files':>5} {'LUFS mean':>9} {'min':>7} {'max':>7} "
    header += f"{'peak mean':>9} {'max':>6} {'clipped':>7}"
    print(header)
    for folder in args.folders:
        if not folder.is_dir():
            print(f"{folder}: not a folder", file=sys.stderr)
            return 2
        s = folder_stats(folder)
        print(
            f"{str(folder)[-48:]:<48} {s['files']:>5} {s['lufs_mean']:>9.2f} {s['lufs_min']:>7.2f} "
            f"{s['lufs_max']:>7.2f} {s['peak_mean']:>9.3f} {s['peak_max']:>6.3f} "
            f"{s['full_scale']:>7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
