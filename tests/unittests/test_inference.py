"""Unit tests of modules/inference.py with a tiny random SpEx+ (fast, CPU)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from modules.audio import AudioFileError, load_audio, save_audio
from modules.inference import (
    INFERENCE_DEFAULTS,
    TEMPLATE_PATH,
    TINY_ARCHITECTURE,
    ModelDirError,
    TargetSpeakerExtractor,
    _ChunkedOverlapAdd,
    measure_loudness,
    write_model_dir,
)
from modules.spex_plus import SpExPlus

SR = 16000


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return SpExPlus(**dict(TINY_ARCHITECTURE, num_speakers=3)).eval()


@pytest.fixture(scope="module")
def tse(tiny_model):
    return TargetSpeakerExtractor.from_model(tiny_model, run_opts={"device": "cpu"})


@pytest.fixture(scope="module")
def model_dir(tiny_model, tmp_path_factory):
    arch = dict(TINY_ARCHITECTURE, num_speakers=3)
    dest = tmp_path_factory.mktemp("models") / "tiny"
    return write_model_dir(tiny_model, dest, arch, metrics={"si_sdr": 0.0})


@pytest.fixture(scope="module")
def speech(ci_tiny):
    """Two speakers' 4 s pieces: (target part0, target part1 as reference, interferer)."""
    def piece(speaker, part):
        path = next((ci_tiny / "speech" / speaker).glob(f"*-part{part}.flac"))
        return load_audio(path)[0]

    return piece("103", 0), piece("103", 1), piece("1040", 0)


def noise(length, seed=0, scale=0.1):
    return scale * torch.randn(length, generator=torch.Generator().manual_seed(seed))


class ScaleModel(torch.nn.Module):
    """A model with the SpEx+ interface whose estimate is ``mix * emb`` (a scalar)."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(0.5))

    def embed_reference(self, ref, ref_lens=None):
        return self.gain.expand(ref.shape[0], 1), None

    def extract(self, mix, emb):
        return {"est": mix * emb, "est_scales": (mix * emb)[:, None].repeat(1, 3, 1)}

    def forward(self, mix, ref, ref_lens=None):
        emb, logits = self.embed_reference(ref, ref_lens)
        return {**self.extract(mix, emb), "spk_logits": logits, "spk_emb": emb}


# ---- tensors -------------------------------------------------------------------------


def test_extract_batch_shapes_and_padding(tse):
    mixes, refs = noise(2 * 9000, 1).reshape(2, 9000), noise(2 * 8000, 2).reshape(2, 8000)
    est = tse.extract_batch(mixes, torch.tensor([1.0, 0.5]), refs, torch.tensor([1.0, 0.75]))
    assert est.shape == (2, 9000)
    assert torch.all(est[1, 4500:] == 0) and est[1, :4500].abs().sum() > 0
    assert est[0, -100:].abs().sum() > 0


def test_whole_chunk_equals_whole_utterance(tse):
    mix, ref = noise(20000, 3), noise(9000, 4)
    whole = tse.extract_batch(mix[None], None, ref[None])[0]
    for chunk_seconds in (20000 / SR, 2.0):  # exactly the length, and longer
        chunked = tse.extract_long(mix, ref, chunk_seconds=chunk_seconds, hop_seconds=0.5)
        torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("length", [2400, 4000, 4001, 9999, 16000])
def test_chunked_runs_any_length(tse, length):
    est = tse.extract_long(noise(length, 5), noise(8000, 6), chunk_seconds=0.25, hop_seconds=0.1)
    assert est.shape == (length,) and torch.isfinite(est).all()


@pytest.mark.parametrize(("chunk", "hop"), [(1000, 500), (1000, 1000), (1000, 333), (997, 1)])
def test_overlap_add_reconstructs_exactly(chunk, hop):
    """A chunk function that returns its input must give back the signal."""
    signal = noise(5432, 7)
    ola = _ChunkedOverlapAdd(lambda x: x.clone(), chunk, hop, min_samples=1)
    out = torch.cat([ola.push(signal), ola.flush()])
    torch.testing.assert_close(out, signal, atol=1e-6, rtol=1e-6)


def test_generic_model_contract_chunked_is_exact():
    tse = TargetSpeakerExtractor.from_model(ScaleModel(), run_opts={"device": "cpu"})
    mix = noise(50000, 8)
    est = tse.extract_long(mix, noise(8000, 9), chunk_seconds=0.5, hop_seconds=0.2)
    torch.testing.assert_close(est, 0.5 * mix, atol=1e-6, rtol=1e-6)


def test_streaming_equals_offline(tse):
    mix, ref = noise(23456, 10), noise(8000, 11)
    offline = tse.extract_long(mix, ref, chunk_seconds=0.3, hop_seconds=0.1)
    stream = tse.stream(ref, chunk_seconds=0.3, hop_seconds=0.1)
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


def test_stream_shorter_than_one_chunk_is_whole(tse):
    mix, ref = noise(3000, 12), noise(8000, 13)
    stream = tse.stream(ref, chunk_seconds=1.0)
    assert stream.push(mix).numel() == 0
    whole = tse.extract_batch(mix[None], None, ref[None])[0]
    torch.testing.assert_close(stream.flush(), whole, atol=1e-5, rtol=0)


def test_bad_chunk_settings(tse):
    with pytest.raises(ValueError, match="hop_seconds"):
        tse.extract_long(noise(20000), noise(8000), chunk_seconds=0.5, hop_seconds=0.6)
    with pytest.raises(ValueError, match="chunk_seconds"):
        tse.extract_long(noise(20000), noise(8000), chunk_seconds=0.01)


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
        tse.extract_batch(torch.randn(1, 100), None, torch.randn(1, 8000))


def test_presence_score(tse):
    ref = noise(16000, 14)
    assert tse.presence_score(ref, ref) == pytest.approx(1.0, abs=1e-6)
    assert -1.0 <= tse.presence_score(noise(16000, 15), ref) <= 1.0
    assert math.isnan(tse.presence_score(torch.zeros(16000), ref))


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


def test_loudness_matched_and_never_clips(tse, speech, tmp_path):
    target, ref, other = speech
    mix = 0.3 * (target + other)
    save_audio(tmp_path / "mix.wav", mix, SR)
    save_audio(tmp_path / "ref.wav", ref, SR)
    est = tse.extract_file(tmp_path / "mix.wav", tmp_path / "ref.wav")
    mix_loudness = measure_loudness(load_audio(tmp_path / "mix.wav")[0], SR)
    assert measure_loudness(est, SR) == pytest.approx(mix_loudness, abs=0.5)
    est20 = tse.extract_file(tmp_path / "mix.wav", tmp_path / "ref.wav", lufs=-20)
    assert measure_loudness(est20, SR) == pytest.approx(-20, abs=0.5)
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


def test_model_dir_roundtrip(model_dir, tiny_model, tse):
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "inference.yaml", "metrics.json", "model.ckpt"
    ]
    loaded = TargetSpeakerExtractor.from_hparams(source=model_dir, run_opts={"device": "cpu"})
    assert loaded.model.classifier is None and loaded.hparams.trained_num_speakers == 3
    mix, ref = noise(12000, 20), noise(9000, 21)
    torch.testing.assert_close(
        loaded.extract_batch(mix[None], None, ref[None]),
        tse.extract_batch(mix[None], None, ref[None]),
        atol=1e-6, rtol=0,
    )
    # loading leaves nothing behind in the model directory (no links, no copies)
    assert len(list(model_dir.iterdir())) == 3


def test_template_defaults_match_code():
    template = yaml.load(TEMPLATE_PATH.read_text(), Loader=yaml.BaseLoader)
    for key, value in INFERENCE_DEFAULTS.items():
        parsed = yaml.safe_load(template[key]) if template[key] != "null" else None
        assert parsed == value, key


def test_model_dir_errors(model_dir, tmp_path):
    with pytest.raises(ModelDirError, match="model directory not found"):
        TargetSpeakerExtractor.from_hparams(source=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelDirError, match="inference.yaml and model.ckpt missing"):
        TargetSpeakerExtractor.from_hparams(source=tmp_path / "empty")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "model.ckpt").write_bytes((model_dir / "model.ckpt").read_bytes())
    text = (model_dir / "inference.yaml").read_text().replace("n_filters: 16", "n_filters: 24")
    (wrong / "inference.yaml").write_text(text)
    with pytest.raises(ModelDirError, match="does not match the model built from inference.yaml"):
        TargetSpeakerExtractor.from_hparams(source=wrong, run_opts={"device": "cpu"})


def test_write_model_dir_is_atomic(tiny_model, tmp_path):
    dest = tmp_path / "model"
    arch = dict(TINY_ARCHITECTURE, num_speakers=3)
    write_model_dir(tiny_model, dest, arch)
    before = (dest / "model.ckpt").read_bytes()
    bad_arch = dict(arch, hidden_channels=64)  # does not match the weights: verify fails
    with pytest.raises(ModelDirError):
        write_model_dir(tiny_model, dest, bad_arch)
    assert (dest / "model.ckpt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary dirs left
    with pytest.raises(ValueError, match="clash"):
        write_model_dir(tiny_model, tmp_path / "other", dict(arch, chunk_seconds=1.0))
    assert not (tmp_path / "other").exists()


def test_write_model_dir_replaces_and_copies_hparams(tiny_model, tmp_path):
    hparams = tmp_path / "train.yaml"
    hparams.write_text("lr: 0.001\n")
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    write_model_dir(tiny_model, dest, dict(TINY_ARCHITECTURE, num_speakers=3), hparams)
    assert (dest / "train_hparams.yaml").read_text() == "lr: 0.001\n"
    assert not (dest / "stale.txt").exists()
    assert Path(dest / "inference.yaml").read_text().count("!new:modules.spex_plus.SpExPlus") == 1
