#!/usr/bin/env python3
"""How strong the encoder's frame-rate comb is in a folder of estimates.

A learned encoder/decoder can leave tones at multiples of ``sample_rate / L``
in what it outputs, ``L`` its window in samples (SpEx+'s short window, 20
samples at 16 kHz: multiples of 800 Hz). This averages the
Welch power spectrum (10 Hz bins) of every wav in each folder and prints, for
each multiple ``k * f0`` below Nyquist, how far the bin rises above the median
of its neighbours (30-80 Hz away), in dB: about 0 dB for speech, several dB for
a comb. Folders to compare: the model's estimates, the targets, the mixtures.

::

    python bench/frame_comb.py results/cpu_experiment/best/eval_model/estimates \\
        data/real/test/targets data/real/test/mix [--f0 800]

Example
-------
>>> import numpy as np, soundfile as sf, tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> t = np.arange(32000) / 16000
>>> comb = sum(0.05 * np.sin(2 * np.pi * 800 * k * t) for k in range(1, 10))
>>> sf.write(folder / "a.wav", np.random.default_rng(0).normal(0, 0.1, 32000) + comb, 16000)
>>> bool(comb_prominence(sorted(folder.glob("*.wav")), 800.0).mean() > 10)
True
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.signal

from modules.audio import AudioFileError, load_audio
from modules.cli import BadInput, run_main


def comb_prominence(files: list[Path], f0: float) -> np.ndarray:
    """``[K]`` dB by which the summed spectrum at ``k * f0`` exceeds its neighbours."""
    total, sample_rate = None, None
    for path in files:
        # the project's checked reader (mono, finite, readable), at the file's own rate
        wav, rate, _ = load_audio(path, sample_rate=None, allow_silent=True)
        sample_rate = sample_rate or rate
        if rate != sample_rate or len(wav) < rate // 10:
            expected = f"at least 0.1 s at {sample_rate} Hz like the first file"
            raise AudioFileError(path, f"{len(wav)} samples at {rate} Hz: expected {expected}")
        # 10 Hz bins
        freqs, power = scipy.signal.welch(wav.double().numpy(), rate, nperseg=rate // 10)
        total = power if total is None else total + power
    decibels = 10 * np.log10(total + 1e-30)
    step = freqs[1] - freqs[0]
    prominence = []
    for k in range(1, int(sample_rate / 2 // f0) + 1):
        index = int(round(k * f0 / step))
        if index + 9 > len(decibels):
            break
        neighbours = np.r_[decibels[index - 8 : index - 2], decibels[index + 3 : index + 9]]
        prominence.append(decibels[index] - np.median(neighbours))
    return np.array(prominence)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders of wav files")
    parser.add_argument("--f0", type=float, default=800.0, help="comb spacing in Hz")
    args = parser.parse_args(argv)
    for folder in args.folders:
        files = sorted(folder.glob("*.wav"))
        if not files:
            raise BadInput(f"no .wav files in {folder}")
        values = comb_prominence(files, args.f0)
        per_k = " ".join(f"{v:.1f}" for v in values)
        print(f"{folder} ({len(files)} files): mean {values.mean():.2f} dB; k = 1..: {per_k}")


if __name__ == "__main__":
    sys.exit(run_main(main))
