"""modules/failures.py: wrong-speaker and target-absent measures, rates with counts."""

import math

import pytest
import torch

from modules.failures import (
    FailureCounter,
    absent_scores,
    energy_ratio_db,
    wrong_speaker_scores,
)


@pytest.fixture
def sources():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(16000, generator=gen), torch.randn(16000, generator=gen)


def test_extracting_the_interferer_is_the_wrong_speaker(sources):
    target, other = sources
    mix = target + other
    assert wrong_speaker_scores(other + 0.1 * target, target, mix)["wrong_speaker"] is True
    right = wrong_speaker_scores(target + 0.1 * other, target, mix)
    assert right["wrong_speaker"] is False and right["si_sdr_interferer"] < -10


def test_wrong_speaker_is_scale_invariant_and_length_matched(sources):
    target, other = sources
    scores = wrong_speaker_scores(5.0 * other[:15000], target, target + other)
    assert scores["wrong_speaker"] is True


def test_wrong_speaker_undefined_cases_are_none(sources):
    target, other = sources
    assert wrong_speaker_scores(torch.zeros(16000), target, target + other)["wrong_speaker"] \
        is None
    assert wrong_speaker_scores(target, target, target)["wrong_speaker"] is None  # no interferer
    nan = torch.full((16000,), math.nan)
    assert wrong_speaker_scores(nan, target, target + other)["wrong_speaker"] is None
    with pytest.raises(ValueError, match="samples"):
        wrong_speaker_scores(target, target, (target + other)[:100])


def test_absent_scores(sources):
    _, other = sources
    quiet = absent_scores(0.05 * other, other, presence=0.2)
    assert quiet["energy_db"] == pytest.approx(20 * math.log10(0.05), abs=1e-4)
    assert quiet["near_silent"] is True and quiet["presence"] == 0.2
    loud = absent_scores(0.5 * other, other)
    assert loud["near_silent"] is False and math.isnan(loud["presence"])
    assert absent_scores(0.5 * other, other, silence_db=-3.0)["near_silent"] is True
    assert absent_scores(other, torch.zeros(16000))["near_silent"] is None
    assert energy_ratio_db(torch.zeros(5), torch.ones(5)) == -math.inf


def test_counter_rates_and_undefined():
    counter = FailureCounter(["wrong_speaker", "near_silent"])
    counter.add({"wrong_speaker": True, "near_silent": None})
    counter.add({"wrong_speaker": False})
    summary = counter.summary()
    assert summary["wrong_speaker"] == {"rate": 0.5, "count": 1, "items": 2, "undefined": 0}
    assert math.isnan(summary["near_silent"]["rate"]) and summary["near_silent"]["undefined"] == 2
    assert "wrong_speaker" in counter.format_table()
