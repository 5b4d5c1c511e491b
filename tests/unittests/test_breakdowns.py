"""modules/breakdowns.py: bins, measured TIR, reference cuts, genders from the metadata."""

import csv
import math

import pytest
import torch

from modules.breakdowns import (
    MIX_LENGTH_EDGES,
    TIR_EDGES,
    Breakdowns,
    bin_label,
    cut_reference,
    item_groups,
    load_item_info,
    measured_tir_db,
)


def test_bins_cover_the_real_line():
    labels = [bin_label(v, TIR_EDGES, " dB")[1] for v in (-9, -5, 0, 2, 5, 30)]
    assert labels == ["< -5 dB", "[-5, -2) dB", "[-2, 2) dB", "[2, 5) dB", ">= 5 dB",
                      ">= 5 dB"]
    assert bin_label(math.nan, MIX_LENGTH_EDGES) == (-1, "unknown")


def test_measured_tir():
    target = torch.randn(8000)
    assert measured_tir_db(target, 2 * target) == pytest.approx(0.0, abs=1e-6)
    assert measured_tir_db(target, target) == math.inf


def test_cut_reference_is_central_and_refuses_short():
    ref = torch.arange(16000.0)
    cut = cut_reference(ref, 0.5)
    assert cut.shape == (8000,) and cut[0] == 4000
    assert cut_reference(ref, 2.0) is None


def test_tables_count_and_average_ignoring_undefined():
    tables = Breakdowns(["si_sdri", "wrong_speaker"])
    tables.add("tir", bin_label(6.0, TIR_EDGES), {"si_sdri": 10.0, "wrong_speaker": False})
    tables.add("tir", bin_label(-6.0, TIR_EDGES), {"si_sdri": 2.0, "wrong_speaker": True})
    tables.add("tir", bin_label(-7.0, TIR_EDGES), {"si_sdri": math.nan, "wrong_speaker": None})
    rows = tables.tables()["tir"]
    assert [r["group"] for r in rows] == ["< -5", ">= 5"]  # in bin order
    assert rows[0] == {"group": "< -5", "count": 2, "si_sdri": 2.0, "wrong_speaker": 1.0}
    assert "Breakdown by tir" in tables.format_tables()


def write_manifest(path, rows):
    with open(path, "w", newline="") as fout:
        writer = csv.DictWriter(fout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_genders_from_metadata_above_the_source_files(tmp_path):
    corpus = tmp_path / "libri" / "train"
    for spk in ("1", "2", "3", "4"):
        (corpus / spk).mkdir(parents=True)
    (tmp_path / "libri" / "speakers.tsv").write_text(
        "subset\tspeaker\tgender\tname\nt\t1\tF\ta\nt\t2\tF\tb\nt\t3\tM\tc\n")
    test_dir = tmp_path / "mix" / "test"
    test_dir.mkdir(parents=True)
    write_manifest(tmp_path / "mix" / "test.csv", [
        {"ID": "a", "target_speaker": "libri:1", "interferer_speaker": "libri:2",
         "target_file": corpus / "1" / "x.flac", "interferer_file": corpus / "2" / "y.flac"},
        {"ID": "b", "target_speaker": "libri:1", "interferer_speaker": "libri:3",
         "target_file": corpus / "1" / "x.flac", "interferer_file": corpus / "3" / "y.flac"},
        {"ID": "c", "target_speaker": "libri:4", "interferer_speaker": "libri:3",
         "target_file": corpus / "4" / "x.flac", "interferer_file": corpus / "3" / "y.flac"},
    ])
    info = load_item_info(test_dir)
    assert {k: v["gender"] for k, v in info.items()} == {"a": "same", "b": "different",
                                                          "c": "unknown"}
    assert info["b"]["interferer_gender"] == "M"
    assert item_groups(torch.ones(48000), None, info["a"])["gender"] == (0, "same")
    assert "tir" not in item_groups(torch.ones(48000), None, None)
    assert load_item_info(tmp_path / "nothing") == {}
