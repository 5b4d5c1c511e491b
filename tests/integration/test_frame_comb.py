"""bench/frame_comb.py: a folder with a frame-rate comb against one without; an empty folder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]


def _run(*args):
    return subprocess.run([sys.executable, "bench/frame_comb.py", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True)  # fmt: skip


def test_comb_is_detected_and_plain_noise_is_not(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    comb = sum(0.05 * np.sin(2 * np.pi * 800 * k * t) for k in range(1, 10))
    for name, extra in (("comb", comb), ("plain", 0.0)):
        (tmp_path / name).mkdir()
        for i in range(2):
            sf.write(tmp_path / name / f"{i}.wav", rng.normal(0, 0.1, 32000) + extra, 16000)
    result = _run(tmp_path / "comb", tmp_path / "plain")
    assert result.returncode == 0, result.stderr
    means = [float(m) for m in re.findall(r"mean (-?[\d.]+) dB", result.stdout)]
    assert len(means) == 2
    assert means[0] > 10 and abs(means[1]) < 1.5


def test_empty_folder_is_refused(tmp_path):
    result = _run(tmp_path)
    assert result.returncode != 0
    assert "no .wav files" in result.stderr and str(tmp_path) in result.stderr


def test_mixed_sample_rates_are_refused(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(16000), 16000)
    sf.write(tmp_path / "b.wav", np.zeros(8000), 8000)
    result = _run(tmp_path)
    assert result.returncode != 0
    assert "b.wav" in result.stderr and "8000 Hz" in result.stderr
    assert "Traceback" not in result.stderr
