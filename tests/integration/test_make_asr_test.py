"""mixing/make_asr_test.py on a few real Common Voice English clips."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from modules.asr import load_transcripts
from modules.dataio import CustomDirDataset

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def run_cli(*args):
    return subprocess.run([sys.executable, "mixing/make_asr_test.py", *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)


def test_english_test_set_with_transcripts(shared_data, tmp_path):
    corpus = shared_data / "commonvoice_rsample"
    if not (corpus / "utterances.tsv").is_file():
        pytest.skip(f"{corpus} not found")
    out = tmp_path / "asr" / "test"
    result = run_cli("--corpus", corpus, "--out", out, "--num_items", 4, "--seed", 1)
    assert result.returncode == 0, result.stderr
    dataset = CustomDirDataset(out)
    assert dataset.check() == [] and len(dataset) + result.stdout.count("skipped") >= 1
    with open(out.parent / "test.csv", newline="") as fin:
        rows = list(csv.DictReader(fin))
    transcripts = load_transcripts(out)
    sentences = {}
    with open(corpus / "utterances.tsv", newline="") as fin:
        for row in csv.DictReader(fin, delimiter="\t"):
            sentences[row["utterance"]] = row["sentence"].lower()
    for row in rows:
        assert row["target_speaker"] != row["interferer_speaker"]
        if row["cut"] == "words":  # the target's words are a run of the clip's sentence
            words = transcripts[row["ID"]]
            assert words and words.split()[0] in sentences[Path(row["target_file"]).stem]
        else:
            assert row["ID"] not in transcripts
    assert "with a transcript" in result.stdout
    again = run_cli("--corpus", corpus, "--out", out, "--num_items", 1)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_missing_corpus_exits_2(tmp_path):
    result = run_cli("--corpus", tmp_path, "--out", tmp_path / "o")
    assert result.returncode == 2 and "utterances.tsv" in result.stderr
    assert "Traceback" not in result.stderr
