"""modules.levels: the vectorised loudness is pyloudnorm's, on real speech and edge cases."""

import math

import numpy as np
import pyloudnorm
import pytest

from modules.audio import load_audio
from modules.levels import LoudnessError, integrated_loudness, loudness

SR = 16000


def reference(data):
    with np.errstate(divide="ignore"):
        return pyloudnorm.Meter(SR).integrated_loudness(data)


def speech_signals(ci_tiny):
    files = sorted((ci_tiny / "speech").rglob("*.flac"))[:12] + sorted(
        (ci_tiny / "noise").glob("*.flac")
    )[:2]
    assert files, f"no audio under {ci_tiny}"
    signals = [load_audio(path, SR)[0].double().numpy() for path in files]
    joined = np.concatenate(signals)
    rng = np.random.default_rng(0)
    # lengths that do and do not fall on block edges, speech with silence around it,
    # a very quiet copy (the absolute gate acts), and a long signal
    extra = [
        joined[:6400], joined[:6401], joined[:48000], joined[:64123],
        np.concatenate([np.zeros(20000), signals[0], np.zeros(30000)]),
        signals[1] * 0.02, joined,
        rng.standard_normal(48000) * np.linspace(0, 1, 48000) ** 6,
    ]  # fmt: skip
    return signals + extra


def test_integrated_loudness_is_pyloudnorm_on_real_speech(ci_tiny):
    for data in speech_signals(ci_tiny):
        expected = reference(data)
        assert math.isfinite(expected)
        assert abs(integrated_loudness(data, SR) - expected) < 0.01
        # in practice the two agree to rounding
        assert abs(integrated_loudness(data, SR) - expected) < 1e-6


def test_integrated_loudness_in_chunks_and_float32_is_the_same(ci_tiny):
    # chunk sizes that split blocks anywhere, and float32 input (converted chunk by chunk)
    for data in speech_signals(ci_tiny)[-4:]:
        expected = reference(data.astype(np.float32).astype(np.float64))
        for chunk in (997, 6400, 1 << 20):
            assert abs(integrated_loudness(data, SR, chunk) - reference(data)) < 1e-6
            assert abs(integrated_loudness(data.astype(np.float32), SR, chunk) - expected) < 1e-6


def test_integrated_loudness_silence_and_gates():
    assert integrated_loudness(np.zeros(16000), SR) == -math.inf
    assert reference(np.zeros(16000)) == -math.inf
    # below the absolute gate everywhere
    tiny = np.random.default_rng(1).standard_normal(16000) * 1e-6
    assert integrated_loudness(tiny, SR) == reference(tiny) == -math.inf
    # one loud block among silent ones: only it counts
    burst = np.zeros(48000)
    burst[20000:26400] = np.random.default_rng(2).standard_normal(6400) * 0.1
    assert integrated_loudness(burst, SR) == pytest.approx(reference(burst), abs=1e-9)


def test_loudness_uses_it_and_still_refuses_silence():
    data = np.random.default_rng(3).standard_normal(20000) * 0.05
    assert loudness(data) == integrated_loudness(data, SR)
    with pytest.raises(LoudnessError):
        loudness(np.zeros(16000))
