"""VoiceFilter through the whole toolkit on real speech (ci_tiny), at tiny sizes.

A tiny VoiceFilter model directory goes through ``evaluate.py``, ``extract.py``,
chunked and streaming inference and ``export_model.py`` (TorchScript and ONNX);
``run_voicefilter_comparison.sh`` trains and evaluates two variants end to end
for a few seconds each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modules.audio import SAMPLE_RATE as SR
from modules.audio import load_audio, save_audio
from modules.inference import TargetSpeakerExtractor
from modules.model_dir import write_model_dir
from modules.voicefilter import VoiceFilter

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TINY_SIZES = {"conv_channels": 4, "conv_out_channels": 2, "time_dilations": [1, 2],
              "lstm_units": 8, "fc_units": 8}  # fmt: skip


def run(*args, env=None, timeout=1800):
    return subprocess.run(
        [*map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=timeout,
        env={**os.environ, "WANDB_MODE": "disabled", **(env or {})},
    )  # fmt: skip


@pytest.fixture(scope="module")
def setup(ci_tiny, tmp_path_factory):
    """A tiny Mel-scale VoiceFilter model directory and a two-item test directory."""
    root = tmp_path_factory.mktemp("voicefilter")
    torch.manual_seed(0)
    model = VoiceFilter(scale="mel", n_mels=40, pretrained_dvector=False, **TINY_SIZES)
    with torch.no_grad():  # a mask that passes about half of the mixture
        model.fc2.bias.fill_(0.0)
    write_model_dir(model.eval(), root / "model")
    speech = sorted((ci_tiny / "speech").iterdir())
    for index, (target_speaker, other) in enumerate(
        [(speech[0], speech[1]), (speech[2], speech[3])]
    ):
        target = load_audio(next(target_speaker.glob("*-part0.flac")))[0]
        interferer = load_audio(next(other.glob("*-part0.flac")))[0][: target.numel()]
        mix = target.clone()
        mix[: interferer.numel()] += interferer
        mix = mix * (0.9 / float(mix.abs().max()))
        ref = load_audio(next(target_speaker.glob("*-part1.flac")))[0]
        save_audio(root / "test" / "mix" / f"item{index}-mixed.wav", mix, SR)
        save_audio(root / "test" / "refs" / f"item{index}-ref.wav", ref, SR)
        save_audio(root / "test" / "targets" / f"item{index}-target.wav", target, SR)
    return root


def test_evaluate_and_extract_a_voicefilter_model_dir(setup):
    result = run(sys.executable, "evaluate.py", "hparams/test.yaml", "--test_dir", setup / "test",
                 "--model_dir", setup / "model", "--output_folder", setup / "eval")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((setup / "eval" / "summary.json").read_text())
    assert summary["items"] == 2 and summary["failed"] == 0
    assert summary["means"]["si_sdr"] is not None

    out = setup / "est.wav"
    result = run(sys.executable, "extract.py", "--model_dir", setup / "model",
                 "--mix", setup / "test" / "mix" / "item0-mixed.wav",
                 "--ref", setup / "test" / "refs" / "item0-ref.wav", "--out", out)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    est = load_audio(out)[0]
    assert est.numel() == load_audio(setup / "test" / "mix" / "item0-mixed.wav")[0].numel()
    assert float(est.abs().max()) > 0


def test_chunked_and_streaming_inference(setup):
    tse = TargetSpeakerExtractor.from_hparams(setup / "model", run_opts={"device": "cpu"})
    assert type(tse.model).__name__ == "VoiceFilter" and tse.model.scale == "mel"
    mix = load_audio(setup / "test" / "mix" / "item0-mixed.wav")[0]
    ref = load_audio(setup / "test" / "refs" / "item0-ref.wav")[0]
    # a stream whose one chunk covers the mixture is one pass of the model
    whole = tse.stream(ref, chunk_seconds=mix.numel() / SR + 1.0)
    out = torch.cat([whole.push(mix), whole.flush()])
    with torch.no_grad():
        expected = tse.model.extract(mix[None], whole.emb[None])["est"][0]
    assert torch.allclose(out, expected, atol=1e-5)
    # chunked: the same output however the mixture arrives
    outputs = []
    for piece in (777, 5000):
        stream = tse.stream(ref, chunk_seconds=1.0, hop_seconds=0.5)
        outputs.append(torch.cat([stream.push(p) for p in mix.split(piece)] + [stream.flush()]))
    assert outputs[0].shape == mix.shape and torch.isfinite(outputs[0]).all()
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6)
    tse.max_whole_seconds, tse.chunk_seconds, tse.hop_seconds = 1.0, 1.0, 0.5
    est, info = tse.extract(mix, ref, return_info=True)
    assert info["chunked"] and est.shape == mix.shape and float(est.abs().max()) > 0


def test_export_torchscript_and_onnx(setup):
    result = run(sys.executable, "export_model.py", "--model_dir", setup / "model",
                 "--out", setup / "export",
                 "--check_mix", setup / "test" / "mix" / "item1-mixed.wav",
                 "--check_ref", setup / "test" / "refs" / "item1-ref.wav")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    info = json.loads((setup / "export" / "export_info.json").read_text())
    assert {"tse.ts", "embed.ts", "extract.ts", "tse.onnx", "embed.onnx", "extract.onnx"} <= set(
        info["files"]
    )
    assert max(info["max_relative_error"].values()) < 1e-4


def test_mask_statistics_script(setup):
    result = run(sys.executable, "bench/voicefilter_masks.py", setup / "test", setup / "model",
                 "--items", "2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "FC1 fired" in result.stdout and str(setup / "model") in result.stdout


def test_comparison_script_trains_and_evaluates_variants(ci_tiny, tmp_path):
    """run_voicefilter_comparison.sh at tiny sizes and a few seconds of training each."""
    data, corpus = tmp_path / "mixtures", f"citiny={ci_tiny / 'speech'}"
    result = run(sys.executable, "mixing/make_mixtures.py", "--corpus", corpus,
                 "--out", data, "--seed", "0", "--num_train", "0", "--num_valid_speakers", "2",
                 "--num_test_speakers", "2", "--num_valid", "2", "--num_test", "2",
                 "--min_target_seconds", "1.0", "--min_ref_seconds", "1.0")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    sizes = " ".join(
        f"--{key} {json.dumps(value).replace(' ', '')}" for key, value in TINY_SIZES.items()
    )
    results = tmp_path / "results"
    env = {"MINUTES": "0.25", "SIZES": sizes, "DATA": str(data), "RESULTS": str(results)}
    result = run("bash", "recipes/LibriMix-TSE/run_voicefilter_comparison.sh", ci_tiny,
                 "vf_linear_spectral", "vf_mel_sisnr", env=env, timeout=1800)  # fmt: skip
    logs = "".join(p.read_text()[-1500:] for p in results.glob("*.log"))
    assert result.returncode == 0, result.stderr[-2000:] + logs
    rows = {row["name"]: row for row in json.loads((results / "comparison.json").read_text())}
    assert set(rows) == {"vf_linear_spectral", "vf_mel_sisnr"}
    for name, row in rows.items():
        assert row["steps"] >= 1, name
        assert row["si_sdr"] is not None, name
        inference = (results / name / "train" / "model" / "inference.yaml").read_text()
        assert "VoiceFilter" in inference
    assert "| vf_mel_sisnr |" in result.stdout
    png = tmp_path / "item.png"
    result = run(sys.executable, "recipes/LibriMix-TSE/plot_estimates.py", results,
                 "vf_linear_spectral", "vf_mel_sisnr", "--test_dir", data / "test",
                 "--out", png)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert png.stat().st_size > 10_000 and "(item " in result.stdout
    result = run("bash", "recipes/LibriMix-TSE/run_voicefilter_comparison.sh", ci_tiny, "vf_x",
                 env=env)  # fmt: skip
    assert result.returncode == 2 and "unknown variant vf_x" in result.stderr
