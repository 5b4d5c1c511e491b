"""The pretrained GE2E d-vector: slicing, padding, freezing, and agreement with Resemblyzer."""

import math
import sys
import types

import numpy as np
import pytest
import torch

from modules.audio import SAMPLE_RATE
from modules.dvector import DVectorEncoder, DVectorUnavailable


def partial_count_reference(num_samples: int, rate: float = 1.3, min_coverage: float = 0.75) -> int:
    """Resemblyzer's own partial count (``VoiceEncoder.compute_partial_slices``), in Python."""
    frames = int(math.ceil((num_samples + 1) / 160))
    step = int(round((SAMPLE_RATE / rate) / 160))
    starts = list(range(0, max(1, frames - 160 + step + 1), step))
    coverage = (num_samples - starts[-1] * 160) / (160 * 160)
    if coverage < min_coverage and len(starts) > 1:
        starts = starts[:-1]
    return len(starts)


def test_partial_counts_match_resemblyzer_slicing():
    encoder = DVectorEncoder(pretrained=False)
    lengths = [1, 400, 8000, 25599, 25600, 33000, 37920, 40000, 64000, 160000, 160001]
    ours = encoder.num_partials(torch.tensor(lengths)).tolist()
    assert ours == [partial_count_reference(n) for n in lengths]


def test_padding_and_batching_leave_embeddings_unchanged():
    torch.manual_seed(0)
    encoder = DVectorEncoder(pretrained=False)
    short, long = torch.randn(9000) * 0.1, torch.randn(50000) * 0.1
    batch = torch.zeros(2, 50000)
    batch[0, :9000], batch[1] = short, long
    together = encoder(batch, torch.tensor([9000 / 50000, 1.0]))
    alone = torch.cat([encoder(short[None]), encoder(long[None])])
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(together.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_frozen_encoder_has_no_gradients_and_stays_in_eval():
    frozen = DVectorEncoder(pretrained=False, trainable=False)
    assert not any(p.requires_grad for p in frozen.parameters())
    frozen.train()
    assert not frozen.training
    tuned = DVectorEncoder(pretrained=False, trainable=True)
    out = tuned(torch.randn(1, 20000) * 0.1)
    out.sum().backward()
    assert tuned.lstm.weight_ih_l0.grad is not None


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(DVectorUnavailable, match="cannot load"):
        DVectorEncoder(pretrained=False).load_pretrained(tmp_path / "none.pt")


def _pretrained():
    try:
        return DVectorEncoder().eval()
    except DVectorUnavailable as error:
        pytest.skip(str(error))


def test_same_speaker_closer_than_other_speakers(ci_tiny):
    """Real speech: pieces of one speaker are closer to each other than to anyone else's."""
    import soundfile as sf

    encoder = _pretrained()
    speakers = sorted(p for p in (ci_tiny / "speech").iterdir() if p.is_dir())
    embeddings = {}
    for speaker in speakers:
        files = sorted(speaker.glob("*.flac"))[:2]
        if len(files) == 2:
            wavs = [torch.from_numpy(sf.read(f, dtype="float32")[0]) for f in files]
            embeddings[speaker.name] = [encoder(w[None])[0] for w in wavs]
    assert len(embeddings) >= 4, f"expected >= 4 speakers with 2 pieces in {ci_tiny}"
    same = [float(a @ b) for a, b in embeddings.values()]
    names = list(embeddings)
    other = [
        float(embeddings[x][0] @ embeddings[y][1]) for x in names for y in names if x != y
    ]
    assert np.mean(same) > np.mean(other) + 0.1
    assert np.mean(same) > 0.75


def test_matches_resemblyzer_voice_encoder(ci_tiny):
    """Exact agreement with the package's own VoiceEncoder (needs librosa; webrtcvad is stubbed)."""
    pytest.importorskip("librosa", reason="librosa (used by resemblyzer's mel front end) absent")
    import soundfile as sf

    sys.modules.setdefault("webrtcvad", types.ModuleType("webrtcvad"))
    resemblyzer = pytest.importorskip("resemblyzer")
    from resemblyzer.audio import normalize_volume

    reference = resemblyzer.VoiceEncoder("cpu", verbose=False)
    encoder = _pretrained()
    for path in sorted(ci_tiny.glob("speech/*/*.flac"))[:4]:
        wav = sf.read(path, dtype="float32")[0]
        expected = reference.embed_utterance(normalize_volume(wav, -30, increase_only=True))
        ours = encoder(torch.from_numpy(wav)[None])[0].numpy()
        assert np.abs(expected - ours).max() < 1e-4, path


def test_traced_encoder_holds_for_other_reference_lengths():
    """Partial counts are tensors, not Python ints baked into a trace at the traced length."""
    import warnings

    torch.manual_seed(0)
    encoder = DVectorEncoder(pretrained=False).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(encoder, (torch.randn(1, 30000) * 0.1,), check_trace=False)
    for length in (400, 30000, 90000):  # 1, 1 and 5 partials
        wav = torch.randn(1, length) * 0.1
        assert torch.allclose(traced(wav), encoder(wav), atol=1e-6), length
