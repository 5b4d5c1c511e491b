"""Unit tests of modules/inference.py with a random tiny.yaml SpEx+ (fast, CPU)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from modules.audio import SAMPLE_RATE as SR
from modules.audio import AudioFileError, load_audio, save_audio
from modules.inference import TargetSpeakerExtractor
from modules.levels import level, loudness
from modules.metrics import si_sdr_graded
from modules.model_dir import write_model_dir
from modules.overlap_add import overlap_add
from modules.spex_plus import SpExPlus


@pytest.fixture(scope="module")
def tiny_model(tiny_args):
    torch.manual_seed(0)
    return SpExPlus(**tiny_args, num_speakers=3).eval()


@pytest.fixture(scope="module")
def tse(tiny_model):
    return TargetSpeakerExtractor.from_model(tiny_model, run_opts={"device": "cpu"})


@pytest.fixture(scope="module")
def speech(ci_tiny):
    """Two speakers' 4 s pieces: (target part0, target part1 as reference, interferer)."""
    def piece(speaker, part):
        path = next((ci_tiny / "speech" / speaker).glob(f"*-part{part}.flac"))
        return load_audio(path)[0]

    return piece("103", 0), piece("103", 1), piece("1040", 0)


def noise(length, seed=0, scale=0.1):
    return scale * torch.randn(length, generator=torch.Generator().manual_seed(seed))


def unit(wav):
    return wav / wav.norm()


class ScaleModel(torch.nn.Module):
    """A model with the SpEx+ interface whose estimate is ``mix * emb`` (a scalar)."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(0.5))

    def embed_reference(self, ref, ref_lens=None):
        return self.gain.expand(ref.shape[0], 1), None

    def extract(self, mix, emb):
        return {"est": mix * emb, "est_scales": (mix * emb)[:, None].repeat(1, 3, 1)}


# ---- tensors -------------------------------------------------------------------------


def test_extract_batch_shapes_and_padding(tse):
    mixes, refs = noise(2 * 9000, 1).reshape(2, 9000), noise(2 * 9000, 2).reshape(2, 9000)
    est = tse.extract(mixes, refs, torch.tensor([1.0, 0.5]), torch.tensor([1.0, 0.9]))
    assert est.shape == (2, 9000)
    assert torch.all(est[1, 4500:] == 0) and est[1, :4500].abs().sum() > 0
    # each item of a padded batch gets what it gets alone
    torch.testing.assert_close(est[1, :4500], tse.extract(mixes[1, :4500], refs[1, :8100]))
    with pytest.raises(ValueError, match="expected mix"):
        tse.extract(mixes, refs[:1])


def test_whole_chunk_equals_whole_utterance(tiny_model):
    mix, ref = noise(20000, 3), noise(9000, 4)
    whole = TargetSpeakerExtractor.from_model(tiny_model).extract(mix, ref)
    for chunk_seconds in (20000 / SR, 2.0):  # exactly the length, and longer
        chunked = TargetSpeakerExtractor.from_model(
            tiny_model, max_whole_seconds=1.0, chunk_seconds=chunk_seconds, hop_seconds=0.5
        )
        est, info = chunked.extract(mix, ref, return_info=True)
        assert info["chunked"]
        torch.testing.assert_close(est, whole, atol=1e-5, rtol=0)


def test_no_whole_length_limit(tiny_model):
    """max_whole_seconds = inf (bench_inference's whole-utterance reference) runs unchunked."""
    mix, ref = noise(20000, 3), noise(9000, 4)
    unlimited = TargetSpeakerExtractor.from_model(tiny_model, max_whole_seconds=math.inf)
    est, info = unlimited.extract(mix, ref, return_info=True)
    assert not info["chunked"]
    torch.testing.assert_close(est, TargetSpeakerExtractor.from_model(tiny_model).extract(mix, ref))


@pytest.mark.parametrize("length", [2400, 4000, 4001, 9999, 16000])
def test_chunked_runs_any_length(tiny_model, length):
    tse = TargetSpeakerExtractor.from_model(
        tiny_model, max_whole_seconds=0.1, chunk_seconds=0.25, hop_seconds=0.1
    )
    est = tse.extract(noise(length, 5), noise(8000, 6))
    assert est.shape == (length,) and torch.isfinite(est).all()


def test_generic_model_contract_chunked_is_exact():
    tse = TargetSpeakerExtractor.from_model(
        ScaleModel(), max_whole_seconds=1.0, chunk_seconds=0.5, hop_seconds=0.2,
        input_lufs=None, target_lufs=None,
    )
    mix = noise(50000, 8)
    est, info = tse.extract(mix, noise(8000, 9), return_info=True)
    assert info["chunked"] and info["gain_db"] == pytest.approx(20 * math.log10(2), abs=0.05)
    torch.testing.assert_close(unit(est), unit(mix), atol=1e-6, rtol=1e-6)


def test_streaming_equals_offline_overlap_add(tse):
    mix, ref = noise(23456, 10), noise(8000, 11)
    stream = tse.stream(ref, chunk_seconds=0.3, hop_seconds=0.1)
    offline = overlap_add(lambda segment: tse._run_model(segment, stream.emb), mix,
                          int(0.3 * SR), int(0.1 * SR))
    sizes = torch.randint(0, 3000, (40,), generator=torch.Generator().manual_seed(0)).tolist()
    pieces, position = [], 0
    for size in [0, 1, *sizes]:
        pieces.append(stream.push(mix[position : position + size]))
        position += size
        # bounded memory: at most one chunk of input and about chunk + hop of output state
        assert stream._ola._input.numel() <= stream.latency_samples
        assert stream._ola._num.numel() <= stream.latency_samples + int(0.1 * SR)
        if position >= mix.numel():
            break
    pieces.append(stream.push(mix[position:]))
    pieces.append(stream.flush())
    torch.testing.assert_close(torch.cat(pieces), offline, atol=1e-5, rtol=0)
    assert stream.latency_samples == int(0.3 * SR)


def test_stream_shorter_than_one_chunk_is_whole(tiny_model):
    # a stream takes the mixture at its level: compare without input normalisation,
    # and up to the output level (extract matches it to the mixture)
    tse = TargetSpeakerExtractor.from_model(tiny_model, input_lufs=None)
    mix, ref = noise(3000, 12), noise(8000, 13)
    stream = tse.stream(ref, chunk_seconds=1.0)
    assert stream.push(mix).numel() == 0
    torch.testing.assert_close(unit(stream.flush()), unit(tse.extract(mix, ref)), atol=1e-5, rtol=0)


def test_bad_chunk_settings(tse):
    with pytest.raises(ValueError, match="hop_seconds"):
        tse.stream(noise(8000), chunk_seconds=0.5, hop_seconds=0.6)
    with pytest.raises(ValueError, match="chunk_seconds"):
        tse.stream(noise(8000), chunk_seconds=0.01)


def test_bad_tensors(tse):
    with pytest.raises(ValueError, match="reference is 0.300 s long"):
        tse.extract(noise(8000), noise(4800))
    with pytest.raises(ValueError, match="mixture is 0.050 s long"):
        tse.extract(noise(800), noise(8000))
    with pytest.raises(ValueError, match="silent"):
        tse.extract(noise(8000), torch.zeros(8000))
    with pytest.raises(ValueError, match="NaN"):
        tse.extract(noise(8000), torch.full((8000,), math.nan))
    with pytest.raises(ValueError, match="mixture is"):
        tse.extract(torch.randn(1, 100), torch.randn(1, 8000))


def test_presence_score(tse):
    ref = noise(16000, 14)
    assert tse.presence_score(ref, ref) == pytest.approx(1.0, abs=1e-6)
    assert tse.presence_score(0.01 * ref, ref) == pytest.approx(1.0, abs=1e-5)  # level-free
    assert -1.0 <= tse.presence_score(noise(16000, 15), ref) <= 1.0
    assert math.isnan(tse.presence_score(torch.zeros(16000), ref))


class GateModel(torch.nn.Module):
    """A level-dependent model: keeps the samples above a fixed absolute threshold."""

    def embed_reference(self, ref, ref_lens=None):
        return torch.ones(ref.shape[0], 1), None

    def extract(self, mix, emb):
        return {"est": mix * (mix.abs() > 1e-3)}


@pytest.mark.parametrize("input_lufs", [-20.0, None])
def test_quiet_copy_scores_the_same(speech, input_lufs):
    """Issue 12: with the input level normalised, a x0.01 copy scores within 0.1 dB."""
    target, ref, other = speech
    mix = target + other
    tse = TargetSpeakerExtractor.from_model(GateModel(), input_lufs=input_lufs)
    score = si_sdr_graded(tse.extract(mix, ref), target)
    quiet = si_sdr_graded(tse.extract(0.01 * mix, 0.01 * ref), 0.01 * target)
    if input_lufs is None:  # the test can fail: without normalisation the gate shuts
        assert abs(quiet - score) > 1.0
    else:
        assert abs(quiet - score) < 0.1


def test_quiet_copy_same_estimate(tse, speech):
    """The real model gives a x0.01 copy the same estimate, x0.01, at the copy's loudness."""
    target, ref, other = speech
    mix = target + other
    est = tse.extract(mix, ref)
    quiet = tse.extract(0.01 * mix, 0.01 * ref)
    assert si_sdr_graded(100 * quiet, est) > 60
    assert level(quiet) == pytest.approx(level(0.01 * mix), abs=0.1)


# ---- files ---------------------------------------------------------------------------


def test_extract_file_resamples_and_downmixes(tse, speech, tmp_path, caplog):
    target, ref, other = speech
    mix = (target + other)[: 3 * SR].numpy()
    stereo = np.stack([mix, 0.5 * mix], axis=1)
    import torchaudio

    mix_44k = torchaudio.functional.resample(torch.from_numpy(stereo.T.copy()), SR, 44100)
    sf.write(tmp_path / "mix.wav", mix_44k.T.numpy(), 44100)
    sf.write(tmp_path / "ref.flac", ref.numpy(), SR)
    with caplog.at_level(logging.INFO, logger="modules.inference"):
        est, info = tse.extract_file(tmp_path / "mix.wav", tmp_path / "ref.flac", return_info=True)
    assert est.dim() == 1 and abs(est.numel() - 3 * SR) <= 1
    notes = " ".join(record.getMessage() for record in caplog.records)
    assert "44100 Hz -> 16000 Hz" in notes and "2 channels" in notes
    assert set(info) >= {"presence_cosine", "energy_db", "loudness_lufs", "gain_db", "chunked"}
    assert -1 <= info["presence_cosine"] <= 1 and math.isfinite(info["energy_db"])


def test_extract_file_is_extract(tse, speech, tmp_path):
    target, ref, other = speech
    save_audio(tmp_path / "mix.wav", 0.3 * (target + other), SR)
    save_audio(tmp_path / "ref.wav", ref, SR)
    from_files, info = tse.extract_file(tmp_path / "mix.wav", tmp_path / "ref.wav",
                                        return_info=True)
    mix, ref = load_audio(tmp_path / "mix.wav")[0], load_audio(tmp_path / "ref.wav")[0]
    from_tensors, tensor_info = tse.extract(mix, ref, return_info=True)
    assert torch.equal(from_files, from_tensors)
    assert info == tensor_info


def test_loudness_matched_and_never_clips(tse, speech, tmp_path):
    target, ref, other = speech
    mix = 0.3 * (target + other)
    save_audio(tmp_path / "mix.wav", mix, SR)
    save_audio(tmp_path / "ref.wav", ref, SR)
    est = tse.extract_file(tmp_path / "mix.wav", tmp_path / "ref.wav")
    mix_loudness = loudness(load_audio(tmp_path / "mix.wav")[0], SR)
    assert loudness(est, SR) == pytest.approx(mix_loudness, abs=0.5)
    est20 = tse.extract_file(tmp_path / "mix.wav", tmp_path / "ref.wav", lufs=-20)
    assert loudness(est20, SR) == pytest.approx(-20, abs=0.5)
    loud, info = tse.extract_file(
        tmp_path / "mix.wav", tmp_path / "ref.wav", lufs=0.0, return_info=True
    )
    assert info["peak_limited"] and float(loud.abs().max()) <= 0.99 + 1e-6
    assert any("clip" in note for note in info["notes"])


def test_long_file_is_chunked(speech, tiny_model, tmp_path):
    target, ref, other = speech
    tse = TargetSpeakerExtractor.from_model(
        tiny_model, run_opts={"device": "cpu"}, max_whole_seconds=2.0, chunk_seconds=1.0,
        hop_seconds=0.5,
    )
    save_audio(tmp_path / "mix.wav", target + other, SR)
    save_audio(tmp_path / "ref.wav", ref, SR)
    est, info = tse.extract_file(tmp_path / "mix.wav", tmp_path / "ref.wav", return_info=True)
    assert info["chunked"] and est.shape == target.shape


def test_bad_files(tse, tmp_path):
    good = tmp_path / "good.wav"
    save_audio(good, noise(16000), SR)
    (tmp_path / "text.wav").write_text("not audio")
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype="float32"), SR)
    save_audio(tmp_path / "silent.wav", torch.zeros(16000), SR)
    save_audio(tmp_path / "short_ref.wav", noise(4000), SR)
    save_audio(tmp_path / "short_mix.wav", noise(1000), SR)
    cases = [
        ("missing.wav", "ref", "file not found"),
        ("text.wav", "mix", "not a readable audio file"),
        ("empty.wav", "ref", "empty"),
        ("silent.wav", "ref", "silent"),
        ("short_ref.wav", "ref", "reference is 0.250 s long"),
        ("short_mix.wav", "mix", "mixture is 0.062 s long"),
    ]
    for name, role, problem in cases:
        bad = tmp_path / name
        mix, ref = (bad, good) if role == "mix" else (good, bad)
        with pytest.raises(AudioFileError, match=problem) as error:
            tse.extract_file(mix, ref)
        assert error.value.path == str(bad)


# ---- model directories ---------------------------------------------------------------


def test_model_dir_roundtrip(tiny_model, tse, tmp_path):
    model_dir = write_model_dir(tiny_model, tmp_path / "tiny", metrics={"si_sdr": 0.0})
    loaded = TargetSpeakerExtractor.from_hparams(source=model_dir, run_opts={"device": "cpu"})
    assert loaded.model.classifier is None and loaded.hparams.trained_args["num_speakers"] == 3
    assert loaded.min_mix_samples == tse.min_mix_samples
    mix, ref = noise(12000, 20), noise(9000, 21)
    torch.testing.assert_close(loaded.extract(mix, ref), tse.extract(mix, ref), atol=1e-6, rtol=0)
    # loading leaves nothing behind in the model directory (no links, no copies)
    assert len(list(model_dir.iterdir())) == 3
