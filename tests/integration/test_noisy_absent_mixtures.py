"""``make_mixtures.py``: time-disjoint train/test noise, bad noise files, target-absent dirs."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def run_cli(*args, timeout=1800):
    return subprocess.run(
        [sys.executable, "mixing/make_mixtures.py", *map(str, args)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
    )


def rows(path):
    with open(path, newline="") as fin:
        return list(csv.DictReader(fin))


COMMON = ("--num_test_speakers", 3, "--min_target_seconds", 1, "--min_ref_seconds", 1,
          "--seed", 1)


@pytest.fixture(scope="module")
def noisy(ci_tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("noisy")
    result = run_cli("--corpus", ci_tiny / "speech", "--noise_dir", ci_tiny / "noise",
                     "--out", out, "--num_train", 6, "--num_test", 6, "--num_test_absent", 4,
                     *COMMON)
    assert result.returncode == 0, result.stderr
    return out, result


def test_train_and_test_noise_are_disjoint_in_time(noisy):
    out, result = noisy
    lengths = {}
    for split, (lo, hi) in (("train", (0.0, 0.8)), ("test", (0.8, 1.0))):
        for row in rows(out / f"{split}.csv"):
            path = row["noise_file"]
            lengths.setdefault(path, sf.info(path).frames)
            start = int(row["noise_start"])
            assert int(lengths[path] * lo) <= start < int(lengths[path] * hi), (split, row)
    params = yaml.safe_load((out / "mixing_params.yaml").read_text())
    assert params["noise_parts"]["train"] == [0.0, 0.8]
    test = params["splits"]["test"]
    assert 0 < test["noise_seconds_used"] <= test["noise_seconds_available"]
    assert test["noise_seconds_available"] == pytest.approx(0.2 * 2 * 6.0, abs=0.01)
    assert test["speakers_used"] == 3
    assert "noise: 2 file(s)" in result.stdout


def test_target_absent_split_has_no_targets_and_no_reference_speaker(noisy):
    out, _ = noisy
    absent = rows(out / "test_absent.csv")
    assert len(absent) == 4
    assert not (out / "test_absent" / "targets").exists()
    for row in absent:
        speakers = row["mix_speakers"].split("+")
        assert len(set(speakers)) == 2 and row["ref_speaker"] not in speakers
        assert Path(row["mix_wav"]).is_file() and Path(row["ref_wav"]).is_file()


def test_corrupt_and_too_short_noise_files_are_skipped_and_counted(ci_tiny, tmp_path):
    noise = tmp_path / "noise"
    noise.mkdir()
    for good in (ci_tiny / "noise").glob("*.flac"):
        (noise / good.name).write_bytes(good.read_bytes())
    (noise / "corrupt.wav").write_bytes(b"RIFF not really a wav file")
    sf.write(noise / "short.wav", [0.1, -0.1] * 4000, 16000)  # 0.5 s: its 20 % is 0.1 s
    out = tmp_path / "out"
    result = run_cli("--corpus", ci_tiny / "speech", "--noise_dir", noise, "--out", out,
                     "--num_test", 2, *COMMON)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "skipped 2 noise file(s)" in result.stdout
    skipped = yaml.safe_load((out / "mixing_params.yaml").read_text())["noise_skipped"]
    assert any("corrupt.wav" in s for s in skipped) and any("short.wav" in s for s in skipped)
    assert all(Path(r["noise_file"]).name != "short.wav" for r in rows(out / "test.csv"))


def test_noise_folder_without_a_usable_file_exits_2(ci_tiny, tmp_path):
    noise = tmp_path / "noise"
    noise.mkdir()
    (noise / "corrupt.flac").write_bytes(b"fLaC broken")
    result = run_cli("--corpus", ci_tiny / "speech", "--noise_dir", noise,
                     "--out", tmp_path / "o", "--num_test", 2, *COMMON)
    assert result.returncode == 2
    assert "no usable noise file" in result.stderr and "Traceback" not in result.stderr
