"""Unit tests of the mixing package on synthetic signals (no shared data needed)."""

import csv
import logging
import math
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from mixing.corpus import CorpusError, Utterance, detect_layout, parse_corpus_spec, scan_corpora
from mixing.make_mixtures import COLUMNS, assign_speakers, main, make_id, safe_name
from mixing.mixers import LoudnessError, Mixer, NoiseBank, loudness
from mixing.online import OnlineMixer, load_speakers_json, save_speakers_json
from mixing.references import (
    Segment,
    build_speaker_segments,
    find_split_point,
    pick_target_and_reference,
    read_segment,
    split_utterance,
)
from modules.audio import SAMPLE_RATE as SR
from modules.audio import load_audio, save_audio


def speech_like(seconds, seed, level=0.1, pause=None):
    """Band-limited noise with a 4 Hz syllable envelope (peaks well below 1)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    noise = np.convolve(rng.standard_normal(n), np.hanning(9), mode="same")
    t = np.arange(n) / SR
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * (3.0 + seed % 3) * t + seed)
    wav = level * noise / np.std(noise) * envelope
    if pause is not None:
        a, b = (int(x * SR) for x in pause)
        wav[a:b] *= 0.001
    return wav


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """Two synthetic corpora: one with single long utterances, one with several clips."""
    base = tmp_path_factory.mktemp("corpora")
    for k in range(4):  # one long utterance each, with a pause near the middle
        path = base / "books" / f"spk_{k}" / f"utt-{k}.flac"
        path.parent.mkdir(parents=True)
        sf.write(path, speech_like(6.0 + k, k, pause=(3.0, 3.2)), SR, subtype="PCM_16")
    for k in range(3):  # three clips each
        for j in range(3):
            path = base / "clips" / f"c-{k}" / f"clip_{j}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, speech_like(3.0, 10 * k + j + 20), SR, subtype="PCM_16")
    noise = base / "noise"
    noise.mkdir()
    sf.write(noise / "hum.wav", speech_like(6.0, 99, level=0.05), SR, subtype="PCM_16")
    return base


@pytest.fixture
def noise_file(tmp_path):
    path = tmp_path / "noise.wav"
    sf.write(path, np.random.default_rng(5).standard_normal(3 * SR) * 0.05, SR)
    return path


# ----------------------------------------------------------------------------- mixer levels


def test_written_mixture_loudness_within_half_lu(tmp_path):
    mixer = Mixer(lufs=-20.0)
    out = mixer.mix_arrays(
        speech_like(3, 1), speech_like(4, 2, 0.3), speech_like(2, 3), np.random.default_rng(0)
    )
    save_audio(tmp_path / "m.wav", out.mix, SR)
    save_audio(tmp_path / "r.wav", out.reference, SR)
    for name in ("m.wav", "r.wav"):
        wav, _, _ = load_audio(tmp_path / name)
        assert abs(loudness(wav) - (-20.0)) < 0.5
    assert out.params["peak_gain_db"] == 0.0


@pytest.mark.parametrize("ratio", [0.0, -5.0, 7.5, (-5.0, 5.0)])
def test_target_to_interferer_ratio(ratio):
    mixer = Mixer(ratio_db=ratio)
    for seed in range(3):
        out = mixer.mix_arrays(
            speech_like(3, seed, 0.02), speech_like(3, seed + 7, 0.4), speech_like(2, seed + 3),
            np.random.default_rng(seed),
        )  # fmt: skip
        drawn = out.params["ratio_db"]
        lo, hi = (ratio, ratio) if isinstance(ratio, float) else ratio
        assert lo <= drawn <= hi
        assert abs(loudness(out.target) - loudness(out.interferer) - drawn) < 0.1
        assert abs(loudness(out.mix) - (-20.0)) < 0.05
        torch.testing.assert_close(out.mix, out.target + out.interferer, atol=1e-6, rtol=0)


def test_noise_snr(noise_file):
    mixer = Mixer(snr_db=(0.0, 10.0), noise_files=[noise_file], ratio_db=2.0)
    for seed in range(3):
        out = mixer.mix_arrays(
            speech_like(4, seed), speech_like(5, seed + 1), speech_like(2, 9),
            np.random.default_rng(seed),
        )  # fmt: skip
        snr = out.params["noise_snr_db"]
        assert 0.0 <= snr <= 10.0
        assert abs(loudness(out.target) - loudness(out.noise) - snr) < 0.1
        assert abs(loudness(out.target) - loudness(out.interferer) - 2.0) < 0.1
        assert abs(loudness(out.mix) - (-20.0)) < 0.05
        assert out.params["noise_file"] == str(noise_file.resolve())
        torch.testing.assert_close(
            out.mix, out.target + out.interferer + out.noise, atol=1e-6, rtol=0
        )


def test_noise_bank_loops_short_noise(noise_file):
    noise, path, start = NoiseBank([noise_file]).draw(10 * SR, np.random.default_rng(0))
    data = sf.read(noise_file)[0]
    assert noise.shape == (10 * SR,)
    np.testing.assert_allclose(noise[: len(data) - start], data[start:], atol=1e-6)
    np.testing.assert_allclose(noise[len(data) - start : 2 * len(data) - start], data, atol=1e-6)


def test_peak_protection_keeps_ratios(caplog):
    spiky = speech_like(3, 4)
    spiky[SR : SR + 40] = 40.0  # a click: far above full scale once normalised
    mixer = Mixer(ratio_db=3.0)
    with caplog.at_level(logging.DEBUG, logger="mixing.mixers"):
        out = mixer.mix_arrays(
            spiky, speech_like(3, 5), speech_like(2, 6), np.random.default_rng(1)
        )
    gain = out.params["peak_gain_db"]
    assert gain < 0
    assert "peak protection" in caplog.text
    for signal in (out.mix, out.target, out.interferer):
        assert signal.abs().max() <= 0.99 + 1e-6
    assert abs(loudness(out.target) - loudness(out.interferer) - 3.0) < 0.1
    assert abs(loudness(out.mix) - (-20.0 + gain)) < 0.05
    assert out.params["mix_lufs"] == pytest.approx(-20.0 + gain)


@pytest.mark.parametrize(
    "bad",
    [np.zeros(3 * SR), np.full(3 * SR, 1e-12) * 0, speech_like(0.2, 1)],
    ids=["silent", "zero", "too-short"],
)
def test_silent_or_short_sources_raise_clear_error(bad):
    with pytest.raises(LoudnessError, match="target"):
        Mixer().mix_arrays(bad, speech_like(3, 1), speech_like(2, 2), np.random.default_rng(0))


def test_loudness_never_nan():
    with pytest.raises(LoudnessError, match="silent"):
        loudness(np.zeros(SR))
    with pytest.raises(LoudnessError, match="NaN"):
        loudness(np.full(SR, np.nan))


# ---------------------------------------------------------------------------- lengths/offsets


def test_min_length_mode_cuts_to_shorter():
    out = Mixer(length_mode="min").mix_arrays(
        speech_like(5, 1), speech_like(2, 2), speech_like(3, 3), np.random.default_rng(0)
    )
    p = out.params
    assert out.mix.shape == out.target.shape == out.interferer.shape == (2 * SR,)
    assert p["target_stop"] - p["target_start"] == 2 * SR
    assert 0 <= p["target_start"] <= 3 * SR and p["interferer_start"] == 0
    assert out.reference.shape == (3 * SR,)


def test_max_length_mode_pads_at_random_offset():
    offsets = set()
    for seed in range(4):
        out = Mixer(length_mode="max").mix_arrays(
            speech_like(5, 1), speech_like(2, 2), speech_like(3, 3), np.random.default_rng(seed)
        )
        p = out.params
        assert out.mix.shape == (5 * SR,) and p["target_offset"] == 0
        start, stop = p["interferer_offset"], p["interferer_offset"] + 2 * SR
        assert torch.all(out.interferer[:start] == 0) and torch.all(out.interferer[stop:] == 0)
        assert out.interferer[start:stop].abs().max() > 0
        offsets.add(start)
    assert len(offsets) > 1


def test_max_seconds_and_ref_crop():
    mixer = Mixer(length_mode="max", max_seconds=1.5, max_ref_seconds=1.0)
    out = mixer.mix_arrays(
        speech_like(5, 1), speech_like(2, 2), speech_like(3, 3), np.random.default_rng(0)
    )
    assert out.mix.shape == (int(1.5 * SR),)
    assert out.reference.shape == (SR,)


def test_same_rng_same_output_and_replace():
    mixer = Mixer(ratio_db=(-5, 5))
    args = speech_like(3, 1), speech_like(3, 2), speech_like(2, 3)
    a = mixer.mix_arrays(*args, np.random.default_rng([7, 3]))
    b = mixer.replace().mix_arrays(*args, np.random.default_rng([7, 3]))
    c = mixer.mix_arrays(*args, np.random.default_rng([7, 4]))
    assert torch.equal(a.mix, b.mix) and a.params == b.params
    assert a.params["ratio_db"] != c.params["ratio_db"]


def test_mixer_rejects_bad_settings(noise_file):
    with pytest.raises(ValueError, match="length_mode"):
        Mixer(length_mode="longest")
    with pytest.raises(ValueError, match="snr_db"):
        Mixer(noise_files=[noise_file])
    with pytest.raises(ValueError, match="min > max"):
        Mixer(ratio_db=(5, -5))


# ----------------------------------------------------------------------- segments/references


def test_split_point_is_in_pause_and_region():
    wav = speech_like(10, 1, pause=(4.0, 4.3))
    cut = find_split_point(wav)
    assert 4.0 * SR <= cut <= 4.3 * SR
    wav = speech_like(10, 1, pause=(1.0, 2.0))  # pause outside the region: cut stays inside
    assert 3.5 * SR <= find_split_point(wav) <= 6.5 * SR


def test_split_utterance_never_overlaps(tmp_path):
    for seed in range(5):
        n = int((2 + seed) * SR) + seed * 37
        path = tmp_path / f"u{seed}.wav"
        sf.write(path, speech_like(n / SR, seed), SR)
        first, second = split_utterance(Utterance(str(path), n))
        assert first.start == 0 and first.stop == second.start and second.stop == n
        assert not first.overlaps(second)
        rng = np.random.default_rng(seed)
        target, ref = pick_target_and_reference([first, second], rng)
        assert not target.overlaps(ref)


def test_pick_respects_minimum_durations():
    segs = [Segment("a", 0, 5 * SR), Segment("a", 5 * SR, 6 * SR)]
    for seed in range(10):
        t, r = pick_target_and_reference(segs, np.random.default_rng(seed), 2 * SR, SR)
        assert (t, r) == (segs[0], segs[1])
    with pytest.raises(ValueError, match="no target/reference pair"):
        pick_target_and_reference(segs, np.random.default_rng(0), 2 * SR, 2 * SR)


def test_build_speaker_segments_skips_short_speakers(corpus_dir, caplog):
    corpus = scan_corpora([str(corpus_dir / "books"), str(corpus_dir / "clips")])
    with caplog.at_level(logging.INFO, logger="mixing.references"):
        segments = build_speaker_segments(corpus, min_target_seconds=3.4, min_ref_seconds=2.0)
    # books (6..9 s, pause at 3.0-3.2 s) are cut in the pause: the 6 s one gives 3.1 + 2.9 s,
    # too short for a 3.4 s target; the 3 s clips are all too short
    assert sorted(segments) == ["books:spk_1", "books:spk_2", "books:spk_3"]
    assert "skipped" in caplog.text
    for segs in segments.values():
        assert len(segs) == 2 and not segs[0].overlaps(segs[1])


def test_read_segment_partial(tmp_path):
    path = tmp_path / "ramp.wav"
    sf.write(path, np.arange(1000) / 2048.0, SR, subtype="FLOAT")
    np.testing.assert_allclose(read_segment(Segment(str(path), 100, 200), 10, 5) * 2048,
                               [110, 111, 112, 113, 114])  # fmt: skip
    with pytest.raises(ValueError):
        read_segment(Segment(str(path), 100, 200), 90, 20)


# ---------------------------------------------------------------------------------- corpora


def test_corpus_layouts_and_namespacing(tmp_path):
    libri = tmp_path / "LibriSpeech"
    for spk, chapter in (("19", "198"), ("26", "495")):
        (libri / spk / chapter).mkdir(parents=True)
        for k in range(2):
            sf.write(libri / spk / chapter / f"{spk}-{chapter}-{k:04d}.flac", np.zeros(SR), SR)
    flat = tmp_path / "flat"
    (flat / "19").mkdir(parents=True)
    sf.write(flat / "19" / "a.wav", np.zeros(SR // 2), SR)
    (flat / "19" / "notes.txt").write_text("not audio")
    assert detect_layout(libri) == "librispeech" and detect_layout(flat) == "generic"
    corpus = scan_corpora([str(libri), f"other={flat}"])
    assert sorted(corpus) == ["LibriSpeech:19", "LibriSpeech:26", "other:19"]
    assert len(corpus["LibriSpeech:19"]) == 2 and corpus["other:19"][0].duration == 0.5
    assert parse_corpus_spec(f"x.y-1={flat}") == ("x.y-1", flat)


def test_corpus_errors(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        scan_corpora([str(tmp_path / "missing")])
    (tmp_path / "empty" / "spk").mkdir(parents=True)
    with pytest.raises(CorpusError, match="no speaker folders"):
        scan_corpora([str(tmp_path / "empty")])


# ------------------------------------------------------------------------------ ids, splits


def test_ids_with_dashes_and_underscores_are_safe_and_unique():
    ids = {make_id(i, "cv_fa:a-b_c", "librispeech:103") for i in range(200)}
    assert len(ids) == 200
    for item_id in ids:
        assert re.fullmatch(r"[0-9]{5}_[A-Za-z0-9.-]+_[A-Za-z0-9.-]+", item_id)
    assert safe_name("a/b:c d") == "a-b-c-d"


def test_assign_speakers_disjoint_and_heldout():
    speakers = [f"a:{k}" for k in range(10)] + [f"b:{k}" for k in range(5)]
    split = assign_speakers(speakers, 3, 2, 3, heldout_from=["b"])
    assert all(s.startswith("b:") for s in split["valid"] + split["test"])
    assert len(split["valid"]) == 2 and len(split["test"]) == 3
    groups = [set(v) for v in split.values()]
    assert sum(len(g) for g in groups) == len(speakers) == len(set().union(*groups))
    assert split == assign_speakers(speakers, 3, 2, 3, heldout_from=["b"])


# ---------------------------------------------------------------------------------- CLI


def _cli_args(corpus_dir, out, workers):
    return [
        "--corpus", str(corpus_dir / "books"), "--corpus", f"cv_x={corpus_dir / 'clips'}",
        "--noise_dir", str(corpus_dir / "noise"), "--out", str(out), "--seed", "11",
        "--num_train", "5", "--num_valid", "2", "--num_test", "3",
        "--num_valid_speakers", "2", "--num_test_speakers", "2",
        "--ratio_range", "-3", "3", "--snr_range", "5", "10", "--min_target_seconds", "1.5",
        "--min_ref_seconds", "1.0", "--max_seconds", "4", "--workers", str(workers),
    ]  # fmt: skip


def test_cli_byte_identical_for_any_workers(corpus_dir, tmp_path):
    assert main(_cli_args(corpus_dir, tmp_path / "w1", 1)) == 0
    assert main(_cli_args(corpus_dir, tmp_path / "w2", 2)) == 0
    files1 = sorted(p.relative_to(tmp_path / "w1") for p in (tmp_path / "w1").rglob("*.wav"))
    files2 = sorted(p.relative_to(tmp_path / "w2") for p in (tmp_path / "w2").rglob("*.wav"))
    assert files1 == files2 and len(files1) == 3 * (5 + 2 + 3)
    for rel in files1:
        assert (tmp_path / "w1" / rel).read_bytes() == (tmp_path / "w2" / rel).read_bytes()
    for split in ("train", "valid", "test"):
        text1 = (tmp_path / "w1" / f"{split}.csv").read_text()
        assert text1.replace(str(tmp_path / "w1"), "") == (
            tmp_path / "w2" / f"{split}.csv"
        ).read_text().replace(str(tmp_path / "w2"), "")
    rows = list(csv.DictReader((tmp_path / "w1" / "test.csv").open()))
    assert list(rows[0]) == COLUMNS
    for row in rows:  # split-utterance or other clip: the reference never overlaps the target
        target = Segment(row["target_file"], int(row["target_start"]), int(row["target_stop"]))
        ref = Segment(row["ref_file"], int(row["ref_start"]), int(row["ref_stop"]))
        assert not target.overlaps(ref)
        assert row["target_speaker"] != row["interferer_speaker"]
    speakers = {
        split: set(load_speakers_json(tmp_path / "w1" / split / "speakers.json"))
        for split in ("train", "valid", "test")
    }
    assert not (speakers["train"] & speakers["test"]) and not (speakers["valid"] & speakers["test"])
    # a second run into the same folder needs --overwrite
    assert main(_cli_args(corpus_dir, tmp_path / "w1", 1)) == 2
    assert main([*_cli_args(corpus_dir, tmp_path / "w1", 1), "--overwrite"]) == 0


def test_manifest_reads_with_speechbrain(corpus_dir, tmp_path):
    from speechbrain.dataio.dataset import DynamicItemDataset

    args = _cli_args(corpus_dir, tmp_path, 1)
    args[args.index("--num_train") + 1] = "0"
    assert main(args) == 0
    data = DynamicItemDataset.from_csv(str(tmp_path / "test.csv"))
    data.set_output_keys(["id", "mix_wav", "duration"])
    item = data[0]
    assert item["id"].startswith("00000_") and isinstance(item["duration"], float)
    assert (tmp_path / "test" / "mix" / f"{item['id']}-mixed.wav").samefile(item["mix_wav"])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--num_test_speakers": "50"}, "not enough speakers"),
        ({"--corpus": "/nonexistent/corpus"}, "does not exist"),
        ({"--noise_dir": "/nonexistent/noise"}, "noise folder"),
    ],
)
def test_cli_usage_errors_exit_2(corpus_dir, tmp_path, capsys, change, message):
    args = _cli_args(corpus_dir, tmp_path / "out", 1)
    for key, value in change.items():
        args[args.index(key) + 1] = value
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("make_mixtures.py: error: ") and message in error
    assert not (tmp_path / "out" / "test.csv").exists()


# ---------------------------------------------------------------------------------- online


def test_online_mixer_deterministic_and_fresh(corpus_dir, tmp_path):
    corpus = scan_corpora([str(corpus_dir / "books"), str(corpus_dir / "clips")])
    segments = build_speaker_segments(corpus, 1.0, 1.0)
    save_speakers_json(tmp_path / "speakers.json", segments)
    speakers = load_speakers_json(tmp_path / "speakers.json")
    assert speakers == segments
    online = OnlineMixer(
        speakers, Mixer(snr_db=(5, 10)), segment_seconds=1.0, ref_seconds=2.0, seed=4,
        noise_files=[corpus_dir / "noise" / "hum.wav"],
    )  # fmt: skip
    item = online.mix(3, epoch=1)
    assert item["mix"].shape == item["target"].shape == (SR,)
    assert item["ref"].shape[0] <= 2 * SR and item["ref"].dtype == torch.float32
    assert item["target_speaker"] != item["interferer_speaker"]
    again = OnlineMixer(
        speakers,
        Mixer(snr_db=(5, 10)),
        segment_seconds=1.0,
        ref_seconds=2.0,
        seed=4,
        noise_files=[corpus_dir / "noise" / "hum.wav"],
    ).mix(3, epoch=1)
    assert torch.equal(item["mix"], again["mix"]) and torch.equal(item["ref"], again["ref"])
    assert not torch.equal(online.mix(3, epoch=2)["mix"], item["mix"])
    assert abs(loudness(item["mix"]) - (-20.0 + item["params"]["peak_gain_db"])) < 0.1
    for index in range(12):
        p = online.mix(index, epoch=0)["params"]
        target = Segment(p["target_file"], p["target_start"], p["target_stop"])
        ref = Segment(p["ref_file"], p["ref_start"], p["ref_stop"])
        assert not target.overlaps(ref)


def test_online_mixer_rejects_overlapping_or_too_few():
    with pytest.raises(ValueError, match="overlap"):
        OnlineMixer({"a": [Segment("f", 0, 9000), Segment("f", 8000, 20000)],
                     "b": [Segment("g", 0, 9000)]})  # fmt: skip
    with pytest.raises(ValueError, match="needs >= 2 speakers"):
        OnlineMixer({"a": [Segment("f", 0, 9000), Segment("f", 9000, 20000)]})


def test_reference_loudness_independent_of_mix():
    out = Mixer(lufs=-23.0).mix_arrays(
        speech_like(3, 1, 0.5), speech_like(3, 2), speech_like(2, 3, 0.001),
        np.random.default_rng(0),
    )  # fmt: skip
    assert math.isclose(loudness(out.reference), -23.0, abs_tol=0.05)


def test_mostly_silent_crops_are_refused_and_redrawn(tmp_path):
    """A crop that is mostly silence must not become a -20 LUFS training target."""
    import soundfile as sf

    from mixing.activity import active_fraction
    from mixing.mixers import InactiveCropError, Mixer
    from mixing.online import OnlineMixer
    from mixing.references import Segment

    rng = np.random.default_rng(0)
    speech = rng.standard_normal(16000) * 0.1
    silent_start = np.concatenate([np.zeros(12000), speech[:4000]])
    mixer = Mixer(min_active_fraction=0.5)
    with pytest.raises(InactiveCropError, match="target.*active frames"):
        mixer.mix_arrays(silent_start, speech, speech, np.random.default_rng(0))
    with pytest.raises(InactiveCropError, match="reference"):
        mixer.mix_arrays(speech, speech, silent_start, np.random.default_rng(0))
    assert Mixer().mix_arrays(silent_start, speech, speech, np.random.default_rng(0)) is not None

    # Speaker "a": two segments of speech, one that is 75 % silence.
    path = tmp_path / "a.wav"
    sf.write(path, np.concatenate([speech, silent_start, speech[::-1]]), 16000)
    other = tmp_path / "b.wav"
    sf.write(other, rng.standard_normal(32000) * 0.1, 16000)
    speakers = {
        "a": [Segment(str(path), start, start + 16000) for start in (0, 16000, 32000)],
        "b": [Segment(str(other), 0, 16000), Segment(str(other), 16000, 32000)],
    }
    online = OnlineMixer(speakers, mixer, segment_seconds=1.0, seed=0)
    items = [online.mix(index, epoch=0) for index in range(0, 40, 2)]  # "a" first
    assert sum(item["redraws"] for item in items) > 0
    for item in items:
        assert active_fraction(item["target"].numpy()) >= 0.5
        assert active_fraction(item["ref"].numpy()) >= 0.5


def test_noise_bank_decodes_a_bad_file_once(tmp_path, monkeypatch):
    """Online mixing redraws after a bad noise file: it must not be decoded again each time."""
    import mixing.mixers as mixers
    from modules.audio import AudioFileError

    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    calls = []
    real = mixers.load_audio
    monkeypatch.setattr(mixers, "load_audio", lambda *a, **k: calls.append(a) or real(*a, **k))
    bank = NoiseBank([bad])
    for _ in range(3):
        with pytest.raises(AudioFileError, match="bad.wav"):
            bank.draw(100, np.random.default_rng(0))
    assert len(calls) == 1
