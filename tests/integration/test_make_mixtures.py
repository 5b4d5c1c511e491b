"""Run ``mixing/make_mixtures.py`` as a script on ci_tiny (real LibriSpeech speech)."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mixing.make_mixtures import COLUMNS
from mixing.mixers import loudness
from modules.audio import load_audio

REPO_ROOT = Path(__file__).resolve().parents[2]
SPLITS = {"train": 6, "valid": 3, "test": 4}

pytestmark = pytest.mark.slow


def run_cli(*args, timeout=1800):
    return subprocess.run(
        [sys.executable, "mixing/make_mixtures.py", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def mixtures(ci_tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("mixtures")
    result = run_cli(
        "--corpus", ci_tiny / "speech", "--noise_dir", ci_tiny / "noise", "--out", out,
        "--seed", 3, "--num_train", SPLITS["train"], "--num_valid", SPLITS["valid"],
        "--num_test", SPLITS["test"], "--num_valid_speakers", 2, "--num_test_speakers", 2,
        "--snr_range", 10, 20, "--length_mode", "min", "--workers", 2,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out, result


def test_folders_and_names(mixtures):
    out, result = mixtures
    assert "wrote mixtures" in result.stdout
    for split, count in SPLITS.items():
        rows = list(csv.DictReader((out / f"{split}.csv").open(newline="")))
        assert len(rows) == count and list(rows[0]) == COLUMNS
        for row in rows:
            item = row["ID"]
            assert re.fullmatch(r"\d{5}_speech-\d+_speech-\d+", item)
            for column, sub, suffix in (
                ("mix_wav", "mix", "mixed"),
                ("ref_wav", "refs", "ref"),
                ("target_wav", "targets", "target"),
            ):
                path = Path(row[column])
                assert path.is_absolute() and path == out / split / sub / f"{item}-{suffix}.wav"
                assert path.is_file()
        for sub in ("mix", "refs", "targets"):
            assert len(list((out / split / sub).glob("*.wav"))) == count
        assert not list((out / split).rglob(".*"))  # no temporary files left behind
    params = yaml.safe_load((out / "mixing_params.yaml").read_text())
    assert params["args"]["seed"] == 3 and "make_mixtures.py" in params["command"]


def test_levels_of_written_files(mixtures):
    out, _ = mixtures
    for row in csv.DictReader((out / "test.csv").open(newline="")):
        mix, rate, _ = load_audio(row["mix_wav"])
        target, _, _ = load_audio(row["target_wav"])
        ref, _, _ = load_audio(row["ref_wav"])
        assert rate == 16000 and mix.shape == target.shape
        assert abs(mix.shape[0] / 16000 - float(row["duration"])) < 1e-3
        expected = float(row["mix_lufs"])  # -20 unless peak protection lowered it
        assert abs(loudness(mix) - expected) < 0.5 and expected <= -20.0
        assert abs(loudness(mix) + 20.0) < 0.5 or float(row["peak_gain_db"]) < 0
        assert abs(loudness(ref) + 20.0) < 0.5
        assert float(row["ratio_db"]) == 0.0 and 10 <= float(row["noise_snr_db"]) <= 20


def test_speakers_disjoint_across_splits(mixtures):
    out, _ = mixtures
    seen = {}
    for split in SPLITS:
        rows = list(csv.DictReader((out / f"{split}.csv").open(newline="")))
        seen[split] = {r["target_speaker"] for r in rows} | {r["interferer_speaker"] for r in rows}
        listed = set(json.loads((out / split / "speakers.json").read_text()))
        assert seen[split] <= listed
        seen[split] |= listed
    assert not seen["train"] & seen["valid"]
    assert not seen["train"] & seen["test"]
    assert not seen["valid"] & seen["test"]


def test_missing_corpus_exits_2(tmp_path):
    result = run_cli("--corpus", tmp_path / "nope", "--out", tmp_path / "o", "--num_test", 2)
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_not_enough_speakers_exits_2(ci_tiny, tmp_path):
    result = run_cli(
        "--corpus", ci_tiny / "speech", "--out", tmp_path / "o", "--num_test", 2,
        "--num_test_speakers", 40,
    )  # fmt: skip
    assert result.returncode == 2
    assert "not enough speakers" in result.stderr and "Traceback" not in result.stderr
