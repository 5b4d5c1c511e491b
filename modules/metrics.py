"""Evaluation metrics for target speaker extraction, computed exactly as graded.

Every number here is the number a user of the toolkit is graded with:

* ``si_sdr``: :class:`torchmetrics.audio.ScaleInvariantSignalDistortionRatio` with its
  defaults (``zero_mean=False``), in dB.
* ``si_sdr_zero_mean``: the same with ``zero_mean=True`` (the convention of most papers).
* ``si_sdri``: SI-SDR improvement, ``si_sdr(est, target) - si_sdr(mix, target)``, both
  with the graded (``zero_mean=False``) definition.
* ``pesq``: :class:`torchmetrics.audio.PerceptualEvaluationSpeechQuality` at 16 kHz,
  wide band (range about -0.5 to 4.64).
* ``stoi``: :class:`torchmetrics.audio.ShortTimeObjectiveIntelligibility` at 16 kHz
  (pystoi backend, range 0 to 1).

The functional torchmetrics forms are used; for one utterance they return exactly what
the module forms return from ``update`` + ``compute``. All inputs are 16 kHz ``[T]``
waveforms. PESQ and STOI can fail on degenerate signals (no speech detected, a signal
shorter than a quarter second): that metric is then NaN, with a logged warning, and
:class:`MetricSummary` leaves NaNs out of the means while counting them.

Example
-------
>>> import torch
>>> torch.manual_seed(0) and None
>>> target = torch.randn(16000)
>>> mix = target + torch.randn(16000)
>>> scores = compute_metrics(0.5 * target, target, mix, metrics=("si_sdr", "si_sdri"))
>>> scores["si_sdr"] > 100, round(scores["si_sdri"] - scores["si_sdr"], 1)
(True, 0.0)
>>> summary = MetricSummary()
>>> summary.add({"si_sdr": 10.0}, utt_id="utt1")
>>> summary.add({"si_sdr": float("nan")}, utt_id="utt2")
>>> summary.mean("si_sdr"), summary.nan_count("si_sdr")
(10.0, 1)
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torchmetrics.functional.audio import (
    perceptual_evaluation_speech_quality,
    scale_invariant_signal_distortion_ratio,
    short_time_objective_intelligibility,
)

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
METRICS = ("si_sdr", "si_sdr_zero_mean", "si_sdri", "pesq", "stoi")
UNITS = {"si_sdr": "dB", "si_sdr_zero_mean": "dB", "si_sdri": "dB", "pesq": "", "stoi": ""}


def _as_1d(wav, name: str) -> torch.Tensor:
    wav = torch.as_tensor(wav).detach().cpu()
    while wav.dim() > 1 and wav.shape[0] == 1:
        wav = wav[0]
    if wav.dim() != 1:
        raise ValueError(f"{name} must be a [T] waveform, got shape {tuple(wav.shape)}")
    if not wav.is_floating_point():
        wav = wav.to(torch.float32)
    return wav


def match_length(est: torch.Tensor, length: int) -> torch.Tensor:
    """Trim or zero-pad ``est`` (``[T]``) at the end to ``length`` samples.

    Example
    -------
    >>> match_length(torch.ones(3), 5).tolist(), match_length(torch.ones(3), 2).tolist()
    ([1.0, 1.0, 1.0, 0.0, 0.0], [1.0, 1.0])
    """
    if est.shape[-1] >= length:
        return est[..., :length]
    return F.pad(est, (0, length - est.shape[-1]))


def si_sdr(est: torch.Tensor, target: torch.Tensor, zero_mean: bool = False) -> float:
    """SI-SDR in dB of a ``[T]`` estimate against a ``[T]`` target (torchmetrics).

    ``zero_mean=False`` is the torchmetrics default and the graded number.

    Example
    -------
    >>> t = torch.sin(torch.arange(8000) / 5.0)
    >>> round(si_sdr(t + 0.1 * torch.cos(torch.arange(8000) / 3.0), t), 1)
    20.0
    """
    return float(scale_invariant_signal_distortion_ratio(est, target, zero_mean=zero_mean))


def si_sdri(est: torch.Tensor, target: torch.Tensor, mix: torch.Tensor) -> float:
    """SI-SDR improvement in dB: ``si_sdr(est, target) - si_sdr(mix, target)``.

    Example
    -------
    >>> t = torch.sin(torch.arange(8000) / 5.0)
    >>> si_sdri(t, t, t)
    0.0
    """
    return si_sdr(est, target) - si_sdr(mix, target)


def _guarded(name: str, function, utt_id: str | None) -> float:
    """Run a metric that may legitimately fail on a degenerate signal; NaN if it does."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(function())
    except Exception as error:  # pesq raises cypesq.PesqError subclasses, pystoi various
        where = f" for {utt_id}" if utt_id else ""
        reason = error.args[0] if error.args else error
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        logger.warning("%s undefined%s (%s: %s): counted as NaN", name, where,
                       type(error).__name__, reason)
        return math.nan


def pesq(est: torch.Tensor, target: torch.Tensor, utt_id: str | None = None) -> float:
    """Wide-band PESQ at 16 kHz (torchmetrics); NaN with a warning when undefined.

    Example
    -------
    >>> pesq(torch.zeros(16000), torch.zeros(16000))  # no speech: undefined
    nan
    """
    return _guarded(
        "PESQ",
        lambda: perceptual_evaluation_speech_quality(est, target, SAMPLE_RATE, "wb"),
        utt_id,
    )


def stoi(est: torch.Tensor, target: torch.Tensor, utt_id: str | None = None) -> float:
    """STOI at 16 kHz (torchmetrics, pystoi backend); NaN with a warning when undefined.

    Example
    -------
    >>> t = torch.sin(torch.arange(16000) / 5.0) * torch.rand(16000)
    >>> round(stoi(t, t), 3)
    1.0
    """
    return _guarded(
        "STOI", lambda: short_time_objective_intelligibility(est, target, SAMPLE_RATE), utt_id
    )


def compute_metrics(
    est: torch.Tensor,
    target: torch.Tensor,
    mix: torch.Tensor | None = None,
    metrics: Sequence[str] = METRICS,
    utt_id: str | None = None,
) -> dict[str, float]:
    """Score one 16 kHz estimate against its target, as graded.

    Arguments
    ---------
    est : torch.Tensor
        ``[T']`` estimate; trimmed or zero-padded at the end to the target's length.
    target : torch.Tensor
        ``[T]`` clean target speech.
    mix : torch.Tensor, optional
        ``[T]`` mixture, needed only for ``si_sdri``; must have the target's length.
    metrics : sequence of str
        Any of :data:`METRICS`, in the order wanted in the result.
    utt_id : str, optional
        Named in the warning when a metric is undefined.

    Returns
    -------
    dict of str to float
        One value per requested metric; NaN where a metric is undefined (PESQ finding
        no utterance, a non-finite estimate, ...). Never raises for such signals.

    Raises
    ------
    ValueError
        An unknown metric name, a non-``[T]`` input, ``si_sdri`` without a mixture, or a
        mixture whose length differs from the target's (a caller bug, not a bad signal).

    Example
    -------
    >>> target = torch.sin(torch.arange(8000) / 5.0)
    >>> compute_metrics(target.clone(), target, target, metrics=("si_sdri",))
    {'si_sdri': 0.0}
    >>> scores = compute_metrics(target[:7000], target, metrics=("si_sdr",))
    >>> round(scores["si_sdr"], 1)  # the missing tail counts as error: 10 log10(7)
    8.5
    """
    unknown = [name for name in metrics if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    target = _as_1d(target, "target")
    est = match_length(_as_1d(est, "est").to(target.dtype), target.shape[0])
    if "si_sdri" in metrics:
        if mix is None:
            raise ValueError("si_sdri needs the mixture")
        mix = _as_1d(mix, "mix").to(target.dtype)
        if mix.shape[0] != target.shape[0]:
            raise ValueError(
                f"mix has {mix.shape[0]} samples, target {target.shape[0]}: they must match"
            )
    if not torch.isfinite(est).all():
        where = f" for {utt_id}" if utt_id else ""
        logger.warning("estimate%s has NaN or infinite samples: all metrics NaN", where)
        return {name: math.nan for name in metrics}

    scores = {}
    for name in metrics:
        if name == "si_sdr":
            scores[name] = si_sdr(est, target)
        elif name == "si_sdr_zero_mean":
            scores[name] = si_sdr(est, target, zero_mean=True)
        elif name == "si_sdri":
            est_si_sdr = scores["si_sdr"] if "si_sdr" in scores else si_sdr(est, target)
            scores[name] = est_si_sdr - si_sdr(mix, target)
        elif name == "pesq":
            scores[name] = pesq(est, target, utt_id)
        elif name == "stoi":
            scores[name] = stoi(est, target, utt_id)
    return scores


class MetricSummary:
    """Per-utterance scores and their means, with NaNs left out of the means and counted.

    Arguments
    ---------
    metrics : iterable of str, optional
        The metrics to report, in order. ``None`` (default): every metric seen in the
        added scores, in order of first appearance. A metric an utterance was not scored
        on (e.g. PESQ computed on a few validation items only) is neither averaged nor
        counted as NaN for it.

    Example
    -------
    >>> summary = MetricSummary()
    >>> summary.add({"si_sdr": 10.0, "pesq": 3.0}, utt_id="a")
    >>> summary.add({"si_sdr": 12.0, "pesq": float("nan")}, utt_id="b")
    >>> summary.add({"si_sdr": 14.0})
    >>> len(summary), summary.means()
    (3, {'si_sdr': 12.0, 'pesq': 3.0})
    >>> summary.summarize()["pesq"]
    {'mean': 3.0, 'count': 1, 'nan_excluded': 1}
    """

    def __init__(self, metrics: Iterable[str] | None = None):
        self._metrics = list(metrics) if metrics is not None else None
        self.rows: list[dict] = []

    @property
    def metrics(self) -> list[str]:
        """The metric names reported."""
        if self._metrics is not None:
            return list(self._metrics)
        seen: dict[str, None] = {}
        for row in self.rows:
            seen.update((key, None) for key in row if key != "ID")
        return list(seen)

    def add(self, scores: Mapping[str, float], utt_id: str | None = None) -> None:
        """Record one utterance's scores (as returned by :func:`compute_metrics`)."""
        row = {"ID": utt_id if utt_id is not None else str(len(self.rows))}
        row.update({name: float(value) for name, value in scores.items()})
        self.rows.append(row)

    def __len__(self) -> int:
        return len(self.rows)

    def values(self, name: str) -> list[float]:
        """The finite values of one metric, in insertion order."""
        return [row[name] for row in self.rows if math.isfinite(row.get(name, math.nan))]

    def nan_count(self, name: str) -> int:
        """How many utterances scored on ``name`` got no finite value."""
        return sum(1 for row in self.rows if name in row) - len(self.values(name))

    def mean(self, name: str) -> float:
        """Mean over finite values (NaN when there are none)."""
        values = self.values(name)
        return sum(values) / len(values) if values else math.nan

    def means(self) -> dict[str, float]:
        """``{metric: mean}`` over finite values, for every reported metric."""
        return {name: self.mean(name) for name in self.metrics}

    def summarize(self) -> dict[str, dict[str, float | int]]:
        """``{metric: {"mean", "count" (finite values), "nan_excluded"}}``."""
        return {
            name: {
                "mean": self.mean(name),
                "count": len(self.values(name)),
                "nan_excluded": self.nan_count(name),
            }
            for name in self.metrics
        }

    def format_table(self) -> str:
        """A plain-text table of the means, one metric per line.

        Example
        -------
        >>> summary = MetricSummary(["si_sdr"])
        >>> summary.add({"si_sdr": 10.0}, utt_id="a")
        >>> print(summary.format_table())
        metric                       mean      n  NaN excluded
        si_sdr (dB)                10.000      1             0
        """
        lines = [f"{'metric':<22} {'mean':>10} {'n':>6} {'NaN excluded':>13}"]
        for name, stats in self.summarize().items():
            label = f"{name} ({UNITS[name]})" if UNITS.get(name) else name
            lines.append(
                f"{label:<22} {stats['mean']:>10.3f} {stats['count']:>6} "
                f"{stats['nan_excluded']:>13}"
            )
        return "\n".join(lines)
