"""extract.py run as a subprocess on real speech with a tiny random model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modules.audio import SAMPLE_RATE as SR
from modules.audio import load_audio, save_audio
from modules.model_dir import write_model_dir
from modules.spex_plus import SpExPlus

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]



@pytest.fixture(scope="module")
def files(ci_tiny, tmp_path_factory, tiny_args):
    """A model directory, a mixture and a reference, and bad inputs."""
    root = tmp_path_factory.mktemp("extract")
    torch.manual_seed(0)
    write_model_dir(SpExPlus(**tiny_args, num_speakers=2), root / "model")
    speech = ci_tiny / "speech"
    target = load_audio(next((speech / "103").glob("*-part0.flac")))[0]
    ref = load_audio(next((speech / "103").glob("*-part1.flac")))[0]
    other = load_audio(next((speech / "1040").glob("*-part0.flac")))[0]
    save_audio(root / "mix.wav", target + other, SR)
    save_audio(root / "ref.wav", ref, SR)
    save_audio(root / "short_ref.wav", ref[:3000], SR)
    save_audio(root / "silent.wav", torch.zeros(SR), SR)
    (root / "text.wav").write_text("this is not audio")
    test_dir = root / "test_dir"
    for item, (mix, enrol) in {"a-1": (target + other, ref), "b_2": (other[:SR], ref)}.items():
        save_audio(test_dir / "mix" / f"{item}-mixed.wav", mix, SR)
        save_audio(test_dir / "refs" / f"{item}-ref.wav", enrol, SR)
    return root


def run(*args):
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "extract.py"), *map(str, args)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=1800,
    )


def test_good_run_writes_file(files):
    out = files / "out" / "est.wav"
    result = run("--model_dir", files / "model", "--mix", files / "mix.wav",
                 "--ref", files / "ref.wav", "--out", out, "--lufs", "-20", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out}")
    est, rate, _ = load_audio(out)
    assert rate == SR and est.numel() == load_audio(files / "mix.wav")[0].numel()


@pytest.mark.parametrize(
    ("mix", "ref", "model", "problem"),
    [
        ("missing.wav", "ref.wav", "model", "missing.wav: file not found"),
        ("mix.wav", "text.wav", "model", "text.wav: not a readable audio file"),
        ("mix.wav", "silent.wav", "model", "silent.wav: all samples are zero"),
        ("mix.wav", "short_ref.wav", "model", "short_ref.wav: reference is 0.188 s long"),
        ("mix.wav", "ref.wav", "no_model", "no_model: model directory not found"),
    ],
)
def test_bad_input_one_line_no_output(files, mix, ref, model, problem):
    out = files / "bad" / "est.wav"
    result = run("--model_dir", files / model, "--mix", files / mix, "--ref", files / ref,
                 "--out", out)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("extract.py: error: ") and problem in lines[0]
    assert not out.exists()


def test_test_dir(files):
    out_dir = files / "out_dir"
    result = run("--model_dir", files / "model", "--test_dir", files / "test_dir",
                 "--out_dir", out_dir, "--quiet")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "a-1-est.wav", "b_2-est.wav", "extract_info.csv"
    ]
    assert "presence_cosine" in (out_dir / "extract_info.csv").read_text()
