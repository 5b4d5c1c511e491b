"""modules/evaluation_extras.py: what evaluate.py adds per item and to the summary."""

import json
import math

import pytest
import torch

from modules.asr import FixedRecognizer
from modules.cli import BadInput
from modules.evaluation_extras import ExtraEvaluation


@pytest.fixture
def item():
    gen = torch.Generator().manual_seed(0)
    target, other = torch.randn(32000, generator=gen), torch.randn(32000, generator=gen)
    return {"id": "a", "mix": target + other, "target": target, "ref": target[:20000]}


def test_absent_mode_uses_the_extractor_energy_and_presence(tmp_path, item):
    extras = ExtraEvaluation({"absent": True, "silence_db": -20.0}, tmp_path, has_targets=False)
    extras.add({**item, "id": "q"}, item["mix"], {"energy_db": -30.0, "presence_cosine": 0.1},
               None)
    extras.add({**item, "id": "l"}, item["mix"], {}, None)  # a baseline: measured, 0 dB
    assert extras.rows["q"] == {"presence": 0.1, "energy_db": -30.0, "near_silent": True}
    assert extras.rows["l"]["near_silent"] is False and math.isnan(extras.rows["l"]["presence"])
    summary = extras.summary()
    assert summary["failures"] == {"near_silent": {"rate": 0.5, "count": 1, "items": 2,
                                                   "undefined": 0}}
    json.dumps(summary, allow_nan=False)  # strict JSON: NaN became null
    assert "near_silent" in extras.format_table() and "mean presence score" in \
        extras.format_table()


def test_ref_lengths_rerun_the_system_and_count_gaps(tmp_path, item):
    calls = []

    class Refused(Exception):
        pass

    def estimate(shorter):
        calls.append(shorter["ref"].shape[0])
        if shorter["ref"].shape[0] < 16000:
            raise Refused("reference too short")
        return shorter["target"], {}

    extras = ExtraEvaluation({"ref_lengths": [0.5, 1.0, 2.0]}, tmp_path, has_targets=True,
                             refused=(Refused,))
    extras.add(item, item["target"], {}, {"si_sdr": 50.0, "si_sdri": 50.0}, estimate)
    assert calls == [8000, 16000]  # 2 s is longer than the 1.25 s reference
    table = {row["group"]: row for row in extras.summary()["breakdowns"]["ref_length"]}
    assert list(table) == ["1 s", "whole"] and table["1 s"]["wrong_speaker"] == 0.0
    assert extras.summary()["ref_length_gaps"] == {"0.5 s": {"shorter": 0, "refused": 1},
                                                   "1 s": {"shorter": 0, "refused": 0},
                                                   "2 s": {"shorter": 1, "refused": 0}}
    assert "2 s: 1 shorter" in extras.format_table()


def test_asr_needs_targets_and_counts_transcript_gaps(tmp_path, item):
    with pytest.raises(BadInput, match="--asr needs targets"):
        ExtraEvaluation({"asr": "pocketsphinx"}, tmp_path, has_targets=False)
    (tmp_path / "transcripts.tsv").write_text("ID\ttranscript\na\thello world\nzz\tgone\n")
    extras = ExtraEvaluation({"asr": "pocketsphinx"}, tmp_path, has_targets=True)
    extras.asr.recognizer = FixedRecognizer({})  # fails on every signal: counted
    extras.add(item, 0.5 * item["mix"], {}, {"si_sdr": 0.0, "si_sdri": 0.0})
    summary = extras.summary()["asr"]
    assert summary["asr_failed"] == 3 and summary["ref_transcript"] == 1
    assert summary["transcripts_without_item"] == 1
    assert "1 transcript(s) name IDs that were not scored" in extras.format_table()


def test_page_ranks_absent_items_by_energy(tmp_path, item):
    extras = ExtraEvaluation({"absent": True}, tmp_path, has_targets=False)
    for index, energy in enumerate((-40.0, -3.0, -25.0)):
        extras.add({**item, "id": f"i{index}"}, item["mix"], {"energy_db": energy}, None)
    page = extras.write_page(tmp_path / "page", [], lambda i: {"mixture": item["mix"]}, 1,
                             {"items": 3})
    text = page.read_text()
    assert text.index("<h3>i0</h3>") < text.index("<h3>i2</h3>") < text.index("<h3>i1</h3>")
