"""modules.metrics: the graded numbers, checked against torchmetrics and known values."""

import logging
import math

import pytest
import torch
from torchmetrics.audio import (
    PerceptualEvaluationSpeechQuality,
    ScaleInvariantSignalDistortionRatio,
    ShortTimeObjectiveIntelligibility,
)

from modules.audio import load_audio
from modules.metrics import (
    FLOORS,
    METRICS,
    MetricSummary,
    compute_metrics,
    match_length,
    pesq,
    si_sdr_graded,
    stoi,
)

N = 8000


@pytest.fixture
def signals():
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(N, generator=generator)
    noise = torch.randn(N, generator=generator)
    return target, noise


@pytest.fixture(scope="module")
def speech(ci_tiny):
    """Two real 4 s utterances of different speakers (PESQ needs speech)."""
    first, second = sorted((ci_tiny / "speech").iterdir())[:2]
    a = load_audio(sorted(first.glob("*-part0.flac"))[0])[0]
    b = load_audio(sorted(second.glob("*-part0.flac"))[0])[0]
    length = min(len(a), len(b))  # pieces are up to 4 s long
    return a[:length], b[:length]


def test_si_sdr_matches_torchmetrics_module_defaults(signals):
    target, noise = signals
    est = target + 0.3 * noise + 0.2  # with a DC offset, so zero_mean matters
    expected = ScaleInvariantSignalDistortionRatio()(est, target).item()
    expected_zm = ScaleInvariantSignalDistortionRatio(zero_mean=True)(est, target).item()
    scores = compute_metrics(est, target, target + noise,
                             metrics=("si_sdr", "si_sdr_zero_mean"))
    assert scores["si_sdr"] == pytest.approx(expected, abs=1e-5)
    assert scores["si_sdr_zero_mean"] == pytest.approx(expected_zm, abs=1e-5)
    assert scores["si_sdr_zero_mean"] > scores["si_sdr"]  # the offset only hurts without


def test_si_sdr_known_values(signals):
    target, _ = signals
    assert si_sdr_graded(target.clone(), target) > 100
    t = torch.sin(torch.arange(N) / 5.0)
    orthogonal = torch.cos(torch.arange(N) / 3.0)
    assert si_sdr_graded(t + 0.1 * orthogonal, t) == pytest.approx(20.0, abs=0.05)
    assert si_sdr_graded(t + orthogonal, t) == pytest.approx(0.0, abs=0.05)


def test_si_sdr_is_scale_invariant(signals):
    target, noise = signals
    est = target + 0.5 * noise
    assert si_sdr_graded(0.5 * est, target) == pytest.approx(si_sdr_graded(est, target), abs=1e-4)
    assert si_sdr_graded(0.5 * target, target) > 100


def test_si_sdri_is_est_minus_mix(signals):
    target, noise = signals
    mix = target + noise
    est = target + 0.1 * noise
    scores = compute_metrics(est, target, mix, metrics=("si_sdri",))
    expected = si_sdr_graded(est, target) - si_sdr_graded(mix, target)
    assert scores["si_sdri"] == pytest.approx(expected)
    assert compute_metrics(mix, target, mix, metrics=("si_sdri",))["si_sdri"] == 0.0


def test_estimate_length_is_matched_to_target(signals):
    target, noise = signals
    est = target + 0.1 * noise
    longer = torch.cat([est, torch.ones(500)])
    assert compute_metrics(longer, target, metrics=("si_sdr",))["si_sdr"] == pytest.approx(
        si_sdr_graded(est, target))
    shorter = est[:7000]
    assert compute_metrics(shorter, target, metrics=("si_sdr",))["si_sdr"] == pytest.approx(
        si_sdr_graded(match_length(shorter, N), target))
    assert match_length(shorter, N).shape == (N,)


def test_pesq_and_stoi_match_torchmetrics_on_speech(speech):
    a, b = speech
    mix = a + 0.5 * b
    scores = compute_metrics(mix, a, mix)
    assert list(scores) == list(METRICS)
    expected_pesq = PerceptualEvaluationSpeechQuality(16000, "wb")(mix, a).item()
    expected_stoi = ShortTimeObjectiveIntelligibility(16000)(mix, a).item()
    assert scores["pesq"] == pytest.approx(expected_pesq, abs=1e-6)
    assert scores["stoi"] == pytest.approx(expected_stoi, abs=1e-6)
    perfect = compute_metrics(a.clone(), a, mix, metrics=("pesq", "stoi"))
    assert perfect["pesq"] > 4.4 and perfect["stoi"] > 0.99


def test_pesq_on_silence_is_nan_with_warning(caplog):
    silence = torch.zeros(16000)
    with caplog.at_level(logging.WARNING, logger="modules.metrics"):
        value = pesq(silence, silence, utt_id="u7")
    assert math.isnan(value)
    assert "PESQ undefined for u7" in caplog.text and "No utterances" in caplog.text


def test_undefined_metric_of_a_real_estimate_is_scored_at_its_floor(signals, caplog):
    target, noise = signals
    short = slice(0, 1000)  # PESQ needs more than this: undefined
    with caplog.at_level(logging.WARNING, logger="modules.metrics"):
        scores = compute_metrics(target[short] + noise[short], target[short], metrics=("pesq",))
    assert scores == {"pesq": FLOORS["pesq"]} and scores.floored == ["pesq"]
    assert scores.failure is None and "scored at its floor" in caplog.text


def test_too_short_signal_gives_nan_not_crash():
    short = torch.sin(torch.arange(100) / 3.0)
    assert math.isnan(pesq(short, short))
    assert math.isnan(stoi(short, short))


@pytest.mark.parametrize("defect", ["nan", "inf", "zero"])
def test_failed_estimate_is_scored_at_the_floors_not_left_out(signals, defect):
    target, noise = signals
    mix = target + noise
    est = torch.zeros_like(target) if defect == "zero" else target.clone()
    if defect != "zero":
        est[10] = float(defect)
    metrics = ("si_sdr", "si_sdr_zero_mean", "si_sdri", "pesq", "stoi")
    scores = compute_metrics(est, target, mix, metrics=metrics)
    assert scores.failure is not None and scores.floored == list(metrics)
    assert scores["si_sdr"] == FLOORS["si_sdr"] and scores["pesq"] == FLOORS["pesq"]
    assert scores["stoi"] == FLOORS["stoi"]
    assert scores["si_sdri"] == pytest.approx(FLOORS["si_sdr"] - si_sdr_graded(mix, target))
    summary = MetricSummary(metrics)
    summary.add(compute_metrics(mix, target, mix, metrics=metrics), utt_id="ok")
    summary.add(scores, utt_id="failed")
    # the failed item pulls every mean down instead of being left out
    assert summary.failed == ["failed"] and summary.summarize()["pesq"]["at_floor"] == 1
    assert summary.mean("si_sdr") < si_sdr_graded(mix, target) and summary.values("pesq") != []
    assert "1 failed estimate(s)" in summary.format_table()


def test_caller_mistakes_raise(signals):
    target, _ = signals
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(target, target, target, metrics=("sdr",))
    with pytest.raises(ValueError, match="mix has 100 samples"):
        compute_metrics(target, target, target[:100], metrics=("si_sdri",))
    with pytest.raises(ValueError, match="needs the mixture"):
        compute_metrics(target, target, None, metrics=("si_sdri",))
    with pytest.raises(ValueError, match=r"\[T\] waveform"):
        compute_metrics(torch.zeros(2, N), target, metrics=("si_sdr",))


def test_batch_of_one_is_accepted(signals):
    target, noise = signals
    scores = compute_metrics((target + noise)[None], target[None], metrics=("si_sdr",))
    assert scores["si_sdr"] == pytest.approx(si_sdr_graded(target + noise, target))


def test_metric_summary_excludes_and_counts_nan():
    summary = MetricSummary(["si_sdr", "pesq"])
    summary.add({"si_sdr": 10.0, "pesq": 2.0}, utt_id="a")
    summary.add({"si_sdr": 20.0, "pesq": float("nan")}, utt_id="b")
    summary.add({"si_sdr": 0.0, "stoi": 0.5}, utt_id="c")  # not scored on pesq; stoi unlisted
    assert len(summary) == 3
    assert summary.means() == {"si_sdr": pytest.approx(10.0), "pesq": 2.0}
    assert summary.summarize()["pesq"] == {"mean": 2.0, "count": 1, "nan_excluded": 1,
                                           "at_floor": 0}
    assert [row["ID"] for row in summary.rows] == ["a", "b", "c"]
    table = summary.format_table()
    assert "si_sdr (dB)" in table and "pesq" in table and "stoi" not in table


def test_metric_summary_discovers_metrics_as_the_recipe_uses_it(signals):
    target, noise = signals
    summary = MetricSummary()
    for scale in (0.1, 0.2):
        summary.add(compute_metrics(target + scale * noise, target, target + noise,
                                    metrics=("si_sdr", "si_sdri")))
    assert summary.metrics == ["si_sdr", "si_sdri"]
    assert [row["ID"] for row in summary.rows] == ["0", "1"]
    assert summary.means()["si_sdri"] > 0


def test_metric_summary_all_nan_mean_is_nan():
    summary = MetricSummary(["pesq"])
    summary.add({"pesq": float("nan")})
    assert math.isnan(summary.mean("pesq"))
    assert MetricSummary(["pesq"]).summarize()["pesq"]["count"] == 0
    assert MetricSummary().means() == {}
