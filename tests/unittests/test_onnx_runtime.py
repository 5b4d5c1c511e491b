"""modules/onnx_runtime.py: ``runtime: onnxruntime`` computes what the PyTorch model does."""

from __future__ import annotations

import pytest
import torch

from modules.audio import load_audio
from modules.inference import TargetSpeakerExtractor
from modules.metrics import si_sdr_graded
from modules.spex_plus import SpExPlus

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny_model(tiny_args):
    torch.manual_seed(0)
    return SpExPlus(**tiny_args).eval()


def _speech(ci_tiny):
    speakers = sorted(p for p in (ci_tiny / "speech").iterdir() if p.is_dir())[:2]
    target, ref = (load_audio(p)[0] for p in sorted(speakers[0].glob("*.flac"))[:2])
    other = load_audio(sorted(speakers[1].glob("*.flac"))[0])[0]
    length = min(target.numel(), other.numel())
    return target[:length] + other[:length], ref, target[:length]


def test_onnxruntime_extracts_what_torch_extracts(tiny_model, ci_tiny):
    mix, ref, target = _speech(ci_tiny)
    plain = TargetSpeakerExtractor.from_model(tiny_model, run_opts={"device": "cpu"})
    fast = TargetSpeakerExtractor.from_model(
        tiny_model, run_opts={"device": "cpu"}, runtime="onnxruntime"
    )
    for chunked in (False, True):  # the whole mixture, and chunks of another length
        for tse in (plain, fast):
            tse.max_whole_seconds, tse.chunk_seconds, tse.hop_seconds = (
                (0.0, 1.3, 0.65) if chunked else (30.0, 4.0, 2.0)
            )
        expected, got = plain.extract(mix, ref), fast.extract(mix, ref)
        assert got.shape == expected.shape == mix.shape
        assert float((got - expected).abs().max()) <= 1e-3 * float(expected.abs().max())
        assert abs(si_sdr_graded(got, target) - si_sdr_graded(expected, target)) < 0.01


def test_runtime_is_checked(tiny_model):
    with pytest.raises(ValueError, match="runtime must be one of"):
        TargetSpeakerExtractor.from_model(tiny_model, runtime="tensorrt")
