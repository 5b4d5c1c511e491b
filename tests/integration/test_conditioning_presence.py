"""bench/conditioning_presence.py end to end: a ci_tiny test split and a tiny random model.

With random weights the numbers say nothing about quality; the test checks that the
report has every field, finite numbers, references and third speakers drawn as
documented, the degenerate cases counted, and exit status 2 for missing inputs.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mixing.make_mixtures import main as make_mixtures
from mixing.online import load_speakers_json, save_speakers_json
from mixing.references import Segment
from modules.model_dir import write_model_dir
from modules.spex_plus import SpExPlus

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "bench/conditioning_presence.py"
N_TEST = 4

CONDITIONING_KEYS = (
    "si_sdr_outA_A", "si_sdr_outA_B", "si_sdr_outB_B", "si_sdr_outB_A", "si_sdri_outA_A",
    "si_sdri_outB_B", "si_sdr_outB_vs_outA", "frac_outA_closer_to_A", "frac_outB_closer_to_B",
    "frac_both_closer",
)  # fmt: skip
PRESENCE_KEYS = ("present_mean", "absent_mean", "auc", "best_threshold", "best_accuracy")
ITEM_KEYS = (
    "si_sdr_outA_A", "si_sdr_outA_B", "si_sdr_outB_B", "si_sdr_outB_A", "si_sdri_outA_A",
    "si_sdri_outB_B", "si_sdr_outB_vs_outA", "energy_db_present", "presence_present",
    "energy_db_absent", "presence_absent",
)  # fmt: skip


def run_script(*args, timeout=1800):
    return subprocess.run(
        [sys.executable, SCRIPT, "--threads", "1", *map(str, args)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def setup(ci_tiny, tmp_path_factory, tiny_args):
    """A make_mixtures test split of ci_tiny and a tiny random-weight model directory."""
    root = tmp_path_factory.mktemp("conditioning")
    status = make_mixtures([
        "--corpus", str(ci_tiny / "speech"), "--out", str(root / "mix"), "--seed", "0",
        "--num_valid_speakers", "2", "--num_test_speakers", "4", "--num_train", "0",
        "--num_valid", "2", "--num_test", str(N_TEST), "--min_target_seconds", "1.5",
        "--min_ref_seconds", "1.5", "--workers", "1",
    ])  # fmt: skip
    assert status == 0
    torch.manual_seed(0)
    write_model_dir(SpExPlus(**tiny_args), root / "model")
    return root


@pytest.fixture(scope="module")
def report(setup):
    out = setup / "report.json"
    result = run_script(
        "--data_folder",
        setup / "mix",
        "--split",
        "test",
        "--model_dir",
        setup / "model",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    assert "Conditioning: 4 items" in result.stdout and "ROC AUC" in result.stdout
    return json.loads(out.read_text()), setup


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def test_report_fields_are_finite(report):
    data, _ = report
    assert data["items"] == N_TEST and len(data["per_item"]) == N_TEST
    assert data["skipped"] == {"no_other_interferer_audio": 0, "no_third_speaker": 0}
    conditioning = data["summary"]["conditioning"]
    assert conditioning["items"] == N_TEST
    for key in CONDITIONING_KEYS:
        assert _finite(conditioning[key]), key
    for key in ("frac_outA_closer_to_A", "frac_outB_closer_to_B", "frac_both_closer"):
        assert 0.0 <= conditioning[key] <= 1.0
    presence = data["summary"]["presence"]
    assert presence["present_items"] == presence["absent_items"] == N_TEST
    for measure in ("energy_db", "presence"):
        for key in PRESENCE_KEYS:
            assert _finite(presence[measure][key]), (measure, key)
        assert 0.0 <= presence[measure]["auc"] <= 1.0
        assert 0.5 <= presence[measure]["best_accuracy"] <= 1.0
    for item in data["per_item"]:
        for key in ITEM_KEYS:
            assert _finite(item[key]), (item["id"], key)
        assert item["interferer_signal"] == "mix - target"
        # the reference of B reaches the model: the two outputs differ
        assert item["outputs_identical"] is False


def test_draws_follow_the_protocol(report):
    data, root = report
    rows = {row["ID"]: row for row in csv.DictReader((root / "mix" / "test.csv").open())}
    speakers = load_speakers_json(root / "mix" / "test" / "speakers.json")
    for item in data["per_item"]:
        row = rows[item["id"]]
        used = Segment(
            row["interferer_file"], int(row["interferer_start"]), int(row["interferer_stop"])
        )
        ref_b = Segment.from_dict(item["interferer_ref"])
        assert not ref_b.overlaps(used)
        assert any(
            s.path == ref_b.path and s.start <= ref_b.start and ref_b.stop <= s.stop
            for s in speakers[row["interferer_speaker"]]
        )
        assert item["third_speaker"] in speakers
        assert item["third_speaker"] not in (row["target_speaker"], row["interferer_speaker"])


def test_missing_audio_is_counted(report, tmp_path):
    """B with only the audio used in the mixture, no third speaker: both parts skipped."""
    data, root = report
    row = next(csv.DictReader((root / "mix" / "test.csv").open()))
    folder = tmp_path / "mix"
    (folder / "test").mkdir(parents=True)
    (folder / "test.csv").write_text((root / "mix" / "test.csv").read_text())
    used = Segment(
        row["interferer_file"], int(row["interferer_start"]), int(row["interferer_stop"])
    )
    save_speakers_json(folder / "test" / "speakers.json", {row["interferer_speaker"]: [used]})
    out = tmp_path / "report.json"
    result = run_script(
        "--data_folder", folder, "--model_dir", root / "model", "--max_items", 1, "--out", out
    )
    assert result.returncode == 0, result.stderr
    degenerate = json.loads(out.read_text())
    assert degenerate["skipped"] == {"no_other_interferer_audio": 1, "no_third_speaker": 1}
    assert degenerate["summary"]["conditioning"]["items"] == 0
    assert degenerate["summary"]["presence"]["presence"]["auc"] is None
    # the target-present numbers do not depend on the draws
    first = data["per_item"][0]
    assert degenerate["per_item"][0]["energy_db_present"] == first["energy_db_present"]


@pytest.mark.parametrize("missing", ["data_folder", "model_dir"])
def test_missing_inputs_exit_2(setup, tmp_path, missing):
    paths = {"data_folder": setup / "mix", "model_dir": setup / "model"}
    paths[missing] = tmp_path / "absent"
    result = run_script(
        "--data_folder",
        paths["data_folder"],
        "--model_dir",
        paths["model_dir"],
        "--out",
        tmp_path / "report.json",
    )
    assert result.returncode == 2
    assert "not found" in result.stderr and str(tmp_path / "absent") in result.stderr
    assert not (tmp_path / "report.json").exists()
