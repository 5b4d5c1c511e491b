"""modules/asr.py: normalisation, rates, references with and without transcripts, failures."""

import csv
import math

import pytest
import torch

from modules.asr import (
    AsrError,
    AsrScorer,
    FixedRecognizer,
    PocketSphinxRecognizer,
    error_rates,
    load_transcripts,
    normalize_text,
)
from modules.cli import BadInput


def signals():
    return {name: torch.full((1600,), float(i + 1)) for i, name in enumerate("tme")}


@pytest.mark.parametrize("text, expected", [
    ("Hello, World!", "hello world"),
    ("don't  stop\tNOW", "don't stop now"),
    ("nerve-wracking", "nerve wracking"),
    ("<s> the(2) cat <sil> [noise]", "the cat"),
    ("'quoted'", "quoted"),
    ("Caf\u00e9 \u2019til", "caf\u00e9 til"),
    ("...", ""),
])
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected


def test_error_rates_match_hand_counts():
    assert error_rates("a b c d", "a x c") == {"word_edits": 2, "words": 4, "char_edits": 3,
                                               "chars": 7}
    assert error_rates("a b", "")["word_edits"] == 2  # empty hypothesis: all deleted


def test_transcripts_for_some_items_and_not_others():
    scorer = AsrScorer(FixedRecognizer({"t": "a b c", "m": "a", "e": "a b"}))
    with_ref = scorer.add("u1", *signals().values(), transcript="A B C D")
    without = scorer.add("u2", *signals().values(), transcript=None)
    assert with_ref["asr_ref_source"] == "transcript" and with_ref["wer_target"] == 0.25
    assert without["asr_ref_source"] == "asr_on_target"
    assert math.isnan(without["wer_target"])  # its own reference: not a rate
    assert without["wer_mixture"] == pytest.approx(2 / 3)
    summary = scorer.summary()
    assert summary["ref_transcript"] == 1 and summary["ref_asr_on_target"] == 1
    corpus = summary["corpus"]
    assert corpus["transcript"]["estimate"]["wer"] == 0.5
    assert corpus["asr_on_target"]["estimate"]["wer"] == pytest.approx(1 / 3)
    assert corpus["all"]["estimate"]["wer"] == pytest.approx((2 + 1) / (4 + 3))
    assert "target" not in corpus["asr_on_target"]
    table = scorer.format_table()
    assert "1 transcript(s), 1 recognised on the clean target" in table


def test_empty_estimate_is_not_given_to_the_recogniser_and_counts_as_all_deleted():
    class Failing(FixedRecognizer):
        def transcribe(self, wav):
            if not wav.any():
                raise AssertionError("the recogniser must not see an empty signal")
            return super().transcribe(wav)

    scorer = AsrScorer(Failing({"t": "a b", "m": "a b"}))
    t, m, _ = signals().values()
    row = scorer.add("u", t, m, torch.zeros(1600), transcript="a b")
    assert row["hyp_estimate"] == "" and row["wer_estimate"] == 1.0
    row = scorer.add("v", t, m, torch.zeros(0), transcript="a b")
    assert row["wer_estimate"] == 1.0


def test_recogniser_failure_is_counted_and_left_out():
    scorer = AsrScorer(FixedRecognizer({"t": "a b", "m": "a b"}))  # fails on the estimate
    row = scorer.add("u", *signals().values(), transcript="a b")
    assert math.isnan(row["wer_estimate"]) and row["wer_mixture"] == 0.0
    summary = scorer.summary()
    assert summary["asr_failed"] == 1 and "u (estimate)" in summary["failures"][0]
    assert "estimate" not in summary["corpus"]["all"]
    assert "1 failed recognition(s)" in scorer.format_table()


def test_empty_reference_is_counted():
    scorer = AsrScorer(FixedRecognizer({"t": "", "m": "a", "e": "b"}))
    row = scorer.add("u", *signals().values(), transcript=None)
    assert math.isnan(row["wer_estimate"])
    assert scorer.summary()["asr_empty_reference"] == 1


def test_load_transcripts(tmp_path):
    assert load_transcripts(tmp_path) == {}
    with open(tmp_path / "transcripts.tsv", "w", newline="") as fout:
        writer = csv.writer(fout, delimiter="\t")
        writer.writerows([["ID", "transcript", "extra"], ["a", "Hello there", "x"], ["b", "", ""]])
    assert load_transcripts(tmp_path) == {"a": "Hello there", "b": ""}
    (tmp_path / "transcripts.tsv").write_text("ID\ttext\na\thi\n")
    with pytest.raises(BadInput, match="columns ID and transcript"):
        load_transcripts(tmp_path)
    (tmp_path / "transcripts.tsv").write_text("ID\ttranscript\na\thi\na\tho\n")
    with pytest.raises(BadInput, match="given twice"):
        load_transcripts(tmp_path)


def test_speechbrain_path_without_model_is_refused(tmp_path):
    from modules.asr import make_recognizer

    with pytest.raises(BadInput, match="not 'pocketsphinx' and not a local speechbrain"):
        make_recognizer(str(tmp_path))


def _cv_english(shared_data, count):
    table = shared_data / "commonvoice_rsample" / "utterances.tsv"
    if not table.is_file():
        pytest.skip(f"{table} not found")
    with open(table, newline="") as fin:
        rows = [r for r in csv.DictReader(fin, delimiter="\t") if r["lang"] == "en"]
    rows.sort(key=lambda r: float(r["duration_s"]))
    return rows[:count]


def test_pocketsphinx_on_real_english_clips(shared_data):
    from modules.audio import load_audio

    asr = PocketSphinxRecognizer()
    scorer = AsrScorer(asr)
    for row in _cv_english(shared_data, 2):
        path = shared_data / "commonvoice_rsample" / "en" / row["speaker"] / \
            f"{row['utterance']}.flac"
        wav, _, _ = load_audio(path)
        scorer.add(row["utterance"], wav, wav, 0.01 * torch.randn_like(wav),
                   transcript=row["sentence"])
    corpus = scorer.summary()["corpus"]["transcript"]
    assert corpus["target"]["wer"] < 0.9  # a real recogniser, not noise
    assert corpus["estimate"]["wer"] > corpus["target"]["wer"]  # noise is worse than speech


def test_pocketsphinx_alignment_covers_every_word(shared_data):
    from modules.audio import load_audio

    asr = PocketSphinxRecognizer()
    row = _cv_english(shared_data, 1)[0]
    wav, _, _ = load_audio(shared_data / "commonvoice_rsample" / "en" / row["speaker"]
                           / f"{row['utterance']}.flac")
    try:
        words = asr.align(wav, row["sentence"])
    except AsrError as error:
        pytest.skip(f"this clip does not align: {error}")
    assert [w for w, _, _ in words] == normalize_text(row["sentence"]).split()
    assert all(0 <= start < end <= wav.shape[0] / 16000 + 0.02 for _, start, end in words)


def test_pocketsphinx_transcript_does_not_depend_on_the_previous_one(shared_data):
    """Without the front-end reset, the mixture here is heard differently after each clip."""
    from modules.audio import load_audio

    clips = _cv_english(shared_data, 2)
    first, second = (load_audio(shared_data / "commonvoice_rsample" / "en" / row["speaker"]
                                / f"{row['utterance']}.flac")[0] for row in clips)
    length = min(first.shape[0], second.shape[0])
    mix = first[:length] + second[:length]
    asr = PocketSphinxRecognizer()
    asr.transcribe(first)
    after_first = asr.transcribe(mix)
    asr.transcribe(second)
    assert asr.transcribe(mix) == after_first


def test_baseline_estimates_reuse_the_transcript_of_the_same_signal():
    calls = []

    class Counting(FixedRecognizer):
        def transcribe(self, wav):
            calls.append(float(wav[0]))
            return super().transcribe(wav)

    scorer = AsrScorer(Counting({"t": "a b", "m": "a"}))
    t, m, _ = signals().values()
    row = scorer.add("u", t, m, m.clone(), transcript="a b")
    assert calls == [1.0, 2.0] and row["hyp_estimate"] == row["hyp_mixture"] == "a"
    scorer.add("v", t, m, t.clone(), transcript="a b")
    assert calls == [1.0, 2.0, 1.0, 2.0]
