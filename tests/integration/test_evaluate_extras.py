"""evaluate.py beyond the graded metrics, end to end on ci_tiny: ASR with transcripts for
some items only, failure rates, breakdowns, the listening page, a target-absent test dir."""

import csv
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from test_evaluate import (  # tests/integration/ is on sys.path
    _StubExtractor,
    build_test_dir,
    run_evaluate,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def read_rows(path):
    with open(path, newline="") as fin:
        return list(csv.DictReader(fin))


def test_asr_failures_breakdowns_and_page(ci_tiny, tmp_path):
    test_dir = tmp_path / "test"
    ids = build_test_dir(ci_tiny, test_dir, n_items=2)
    (test_dir / "transcripts.tsv").write_text(f"ID\ttranscript\n{ids[0]}\tsome words here\n")
    out = tmp_path / "out"
    result = run_evaluate("--test_dir", test_dir, "--baseline", "mixture", "--output_folder",
                          out, "--metrics", "[si_sdr, si_sdri]", "--asr", "--html", 1)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    asr = summary["asr"]
    assert asr["recognizer"] == "pocketsphinx" and asr["items"] == 2
    assert asr["ref_transcript"] == 1 and asr["ref_asr_on_target"] == 1
    # the estimate is the mixture: the same words, the same rates
    for source in ("transcript", "asr_on_target"):
        rates = asr["corpus"][source]
        assert rates["estimate"]["wer"] == rates["mixture"]["wer"]
    assert "1 transcript(s), 1 recognised on the clean target" in result.stdout
    assert summary["failures"]["wrong_speaker"]["items"] == 2
    assert {row["group"] for row in summary["breakdowns"]["gender"]} == {"unknown"}
    assert sum(row["count"] for row in summary["breakdowns"]["tir"]) == 2
    rows = read_rows(out / "per_utterance.csv")
    assert {row["asr_ref_source"] for row in rows} == {"transcript", "asr_on_target"}
    assert all(row["wrong_speaker"] in ("0", "1") for row in rows)
    page = Path(summary["listening_page"])
    links = re.findall(r"src='([^']+)'", page.read_text())
    assert len(links) >= 2 * 8 and all((page.parent / link).is_file() for link in links)


class _SilentExtractor(_StubExtractor):
    """A model that outputs silence: a failed estimate the recogniser must not crash on."""

    def extract(self, mix, ref, return_info=False):
        est = torch.zeros_like(mix)
        return (est, {"energy_db": float("-inf"), "presence_cosine": float("nan")}) \
            if return_info else est


def test_silent_estimate_with_asr_is_counted_not_a_traceback(ci_tiny, tmp_path, monkeypatch):
    import evaluate

    test_dir = tmp_path / "test"
    build_test_dir(ci_tiny, test_dir, n_items=1)
    stub = types.ModuleType("modules.inference")
    stub.TargetSpeakerExtractor = _SilentExtractor
    monkeypatch.setitem(sys.modules, "modules.inference", stub)
    (tmp_path / "model").mkdir()
    out = tmp_path / "out"
    status = evaluate.main(["hparams/test.yaml", "--test_dir", str(test_dir), "--model_dir",
                            str(tmp_path / "model"), "--output_folder", str(out),
                            "--metrics", "[si_sdri]", "--asr"])
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failures"]["wrong_speaker"]["undefined"] == 1
    row = read_rows(out / "per_utterance.csv")[0]
    assert row["hyp_estimate"] == "" and float(row["wer_estimate"]) == 1.0


@pytest.fixture(scope="module")
def absent_dir(ci_tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("absent")
    result = subprocess.run(
        [sys.executable, "mixing/make_mixtures.py", "--corpus", str(ci_tiny / "speech"),
         "--out", str(out), "--num_test_speakers", "4", "--num_test_absent", "3",
         "--min_target_seconds", "1", "--min_ref_seconds", "1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr
    return out / "test_absent"


def test_target_absent_dir(absent_dir, tmp_path, tiny_args):
    from modules.model_dir import write_model_dir
    from modules.spex_plus import SpExPlus

    torch.manual_seed(0)
    model_dir = write_model_dir(SpExPlus(**tiny_args), tmp_path / "tiny")
    result = run_evaluate("--test_dir", absent_dir, "--model_dir", model_dir,
                          "--output_folder", tmp_path / "no")
    assert result.returncode == 2 and "add --absent" in result.stderr
    assert "Traceback" not in result.stderr
    out = tmp_path / "out"
    result = run_evaluate("--test_dir", absent_dir, "--model_dir", model_dir,
                          "--output_folder", out, "--absent", "--html", 1)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    near_silent = summary["failures"]["near_silent"]
    assert near_silent["items"] + near_silent["undefined"] == 3
    rows = read_rows(out / "per_utterance.csv")
    assert len(rows) == 3 and all(row["energy_db"] and row["near_silent"] in ("0", "1")
                                  for row in rows)
    assert "mean presence score" in result.stdout
    assert Path(summary["listening_page"]).is_file()
