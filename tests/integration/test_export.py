"""export_model.py: TorchScript and ONNX graphs match the PyTorch model on real speech."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from modules.audio import load_audio
from modules.inference import TargetSpeakerExtractor
from modules.model_dir import write_model_dir
from modules.spex_plus import SpExPlus

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_args):
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    write_model_dir(SpExPlus(**tiny_args, num_speakers=2), root / "model")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "export_model.py"), "--model_dir", str(root / "model"),
         "--out", str(root / "export")],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=1800,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wrote ")
    return root


def test_exports_match_eager_on_speech(exported, ci_tiny):
    """Lengths differ from the traced ones (68111 / 50021 samples)."""
    speech = ci_tiny / "speech"
    mix = load_audio(next((speech / "1081").glob("*-part0.flac")))[0]  # 55146 samples
    mix = (mix + load_audio(next((speech / "1040").glob("*-part0.flac")))[0][: mix.numel()])
    ref = load_audio(next((speech / "1081").glob("*-part1.flac")))[0][:37_777]
    mix, ref = mix[None], ref[None]
    tse = TargetSpeakerExtractor.from_hparams(exported / "model", run_opts={"device": "cpu"})
    with torch.no_grad():
        emb = tse.model.embed_reference(ref)[0]
        expected = tse.model.extract(mix, emb)["est"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = torch.jit.load(str(exported / "export" / "tse.ts"))
        embed = torch.jit.load(str(exported / "export" / "embed.ts"))
        extract = torch.jit.load(str(exported / "export" / "extract.ts"))
    with torch.no_grad():
        torch.testing.assert_close(full(mix, ref), expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(extract(mix, embed(ref)), expected, atol=1e-4, rtol=0)

    import onnxruntime

    def session(name):
        return onnxruntime.InferenceSession(
            str(exported / "export" / name), providers=["CPUExecutionProvider"]
        )

    onnx_est = session("tse.onnx").run(None, {"mix": mix.numpy(), "ref": ref.numpy()})[0]
    np.testing.assert_allclose(onnx_est, expected.numpy(), atol=1e-4, rtol=0)
    onnx_emb = session("embed.onnx").run(None, {"ref": ref.numpy()})[0]
    np.testing.assert_allclose(onnx_emb, emb.numpy(), atol=1e-4, rtol=0)
    onnx_est2 = session("extract.onnx").run(None, {"mix": mix.numpy(), "emb": onnx_emb})[0]
    np.testing.assert_allclose(onnx_est2, expected.numpy(), atol=1e-4, rtol=0)


def test_export_bad_model_dir(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "export_model.py"), "--model_dir", str(tmp_path / "x"),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=1800,
    )
    assert result.returncode == 2
    assert "model directory not found" in result.stderr and not (tmp_path / "out").exists()
