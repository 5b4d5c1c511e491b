"""Tests for the offline eSpeak NG corpus synthesiser (mixing/synth_corpus.py)."""

import random

import numpy as np
import pytest
import soundfile as sf

from mixing.synth_corpus import (
    EspeakUnavailableError,
    find_espeak,
    main,
    make_sentence,
    make_speakers,
    synth_corpus,
)


def _median_f0(wav: np.ndarray, sample_rate: int) -> float:
    """Median autocorrelation pitch (Hz) over the loud, clearly voiced frames."""
    frame, hop = 640, 320
    lo, hi = sample_rate // 450, sample_rate // 60
    estimates = []
    for start in range(0, len(wav) - frame, hop):
        chunk = wav[start : start + frame]
        if np.sqrt(np.mean(chunk**2)) < 0.03:
            continue
        corr = np.correlate(chunk, chunk, "full")[frame - 1 :]
        lag = lo + int(np.argmax(corr[lo:hi]))
        if corr[lag] > 0.5 * corr[0]:
            estimates.append(sample_rate / lag)
    assert estimates, "no voiced frame found"
    return float(np.median(estimates))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "corpus"
    records = synth_corpus(out, num_speakers=2, utterances_per_speaker=2, seed=0, progress=False)
    return out, records


def test_layout_and_format(corpus):
    out, records = corpus
    wavs = sorted(out.glob("*/*.wav"))
    assert [p.relative_to(out).as_posix() for p in wavs] == [
        "spk00/spk00_000.wav",
        "spk00/spk00_001.wav",
        "spk01/spk01_000.wav",
        "spk01/spk01_001.wav",
    ]
    assert [r["path"] for r in records] == [p.relative_to(out).as_posix() for p in wavs]
    for path in wavs:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 2.0 <= info.duration <= 5.0, f"{path}: {info.duration:.2f} s"
        wav, _ = sf.read(str(path))
        assert np.sqrt(np.mean(wav**2)) > 0.01, f"{path} is (nearly) silent"
        assert np.abs(wav).max() < 1.0
    lines = (out / "speakers.tsv").read_text().splitlines()
    assert lines[0].split("\t")[:4] == ["speaker", "voice", "pitch", "rate"]
    assert [line.split("\t")[0] for line in lines[1:]] == ["spk00", "spk01"]
    utterances = (out / "utterances.tsv").read_text().splitlines()
    assert len(utterances) == 1 + len(records)
    texts = [r["text"] for r in records]
    assert len(set(texts)) == len(texts), "utterances should say different sentences"


def test_same_seed_same_bytes(corpus, tmp_path):
    out, _ = corpus
    again = tmp_path / "again"
    synth_corpus(again, num_speakers=2, utterances_per_speaker=2, seed=0, progress=False)
    for path in sorted(out.rglob("*.*")):
        assert path.read_bytes() == (again / path.relative_to(out)).read_bytes(), path.name


def test_speakers_differ(corpus):
    out, _ = corpus
    pitch = {}
    for speaker in ("spk00", "spk01"):
        wav, sample_rate = sf.read(str(out / speaker / f"{speaker}_000.wav"))
        pitch[speaker] = _median_f0(wav, sample_rate)
    # seed 0 alternates a female and a male voice: clearly different pitch
    assert pitch["spk00"] > 1.3 * pitch["spk01"], pitch


def test_make_speakers_distinct_and_prefix_stable():
    speakers = make_speakers(16, seed=3)
    assert len({s.voice for s in speakers}) == 16
    assert all(30 <= s.pitch <= 80 and 140 <= s.rate <= 190 for s in speakers)
    assert make_speakers(5, seed=3) == speakers[:5]
    assert make_speakers(5, seed=4) != speakers[:5]
    with pytest.raises(ValueError):
        make_speakers(0)


def test_make_sentence_length():
    rng = random.Random(0)
    for num_words in range(3, 20):
        words = make_sentence(rng, num_words).split()
        assert num_words - 2 <= len(words) <= num_words + 4, (num_words, words)


def test_main_cli(tmp_path):
    out = tmp_path / "cli"
    args = ["--out", str(out), "--num_speakers", "1", "--utterances_per_speaker", "1"]
    assert main([*args, "--no_progress"]) == 0
    assert (out / "spk00" / "spk00_000.wav").is_file()
    assert (out / "speakers.tsv").is_file()


def test_missing_library_is_a_clear_error(monkeypatch, tmp_path, capsys):
    espeakng_loader = pytest.importorskip("espeakng_loader")
    missing = str(tmp_path / "libespeak-ng.so")
    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: missing)
    find_espeak.cache_clear()
    try:
        with pytest.raises(EspeakUnavailableError, match="espeakng-loader"):
            find_espeak()
        assert main(["--out", str(tmp_path / "x"), "--no_progress"]) == 2
        error = capsys.readouterr().err
        assert error.startswith("synth_corpus.py: error: cannot load the eSpeak NG library")
        assert not (tmp_path / "x").exists()
    finally:
        find_espeak.cache_clear()
