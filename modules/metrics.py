"""Evaluation metrics for target speaker extraction, computed exactly as graded.

Every number here is the number a user of the toolkit is graded with:

* ``si_sdr``: :class:`torchmetrics.audio.ScaleInvariantSignalDistortionRatio` with its
  defaults (``zero_mean=False``), in dB.
* ``si_sdr_zero_mean``: the same with ``zero_mean=True`` (the convention of most papers).
* ``si_sdri``: SI-SDR improvement, ``si_sdr_graded(est, target) - si_sdr_graded(mix, target)``, both
  with the graded (``zero_mean=False``) definition.
* ``pesq``: :class:`torchmetrics.audio.PerceptualEvaluationSpeechQuality` at 16 kHz,
  wide band (range about -0.5 to 4.64).
* ``stoi``: :class:`torchmetrics.audio.ShortTimeObjectiveIntelligibility` at 16 kHz
  (pystoi backend, range 0 to 1).

The functional torchmetrics forms are used; for one utterance they return exactly what
the module forms return from ``update`` + ``compute``. All inputs are 16 kHz ``[T]``
waveforms.

Failed estimates count as failures
----------------------------------
An estimate that is all zero or has NaN/infinite samples has no defined score (an
all-zero estimate even gets SI-SDR 0 dB from torchmetrics, better than most
mixtures), and PESQ or STOI can be undefined for a degenerate estimate. Leaving such
items out of a mean would make a system that fails often look better. So
:func:`compute_metrics` scores them at the documented floors :data:`FLOORS`
(SI-SDR -50 dB, below random noise on a second of speech; wideband PESQ 1.0, below
its lowest value 1.04; STOI 0; SI-SDRi the SI-SDR floor minus the mixture's SI-SDR),
with a logged warning, and :class:`MetricSummary` counts the failed items and the
values set at a floor (``failed``, ``at_floor``).

Example
-------
>>> import torch
>>> torch.manual_seed(0) and None
>>> target = torch.randn(16000)
>>> mix = target + torch.randn(16000)
>>> scores = compute_metrics(0.5 * target, target, mix, metrics=("si_sdr", "si_sdri"))
>>> scores["si_sdr"] > 100, round(scores["si_sdri"] - scores["si_sdr"], 1)
(True, 0.0)
>>> failed = compute_metrics(torch.zeros(16000), target, mix, metrics=("si_sdr", "pesq"))
>>> failed, failed.failure
({'si_sdr': -50.0, 'pesq': 1.0}, 'all samples are zero')
>>> summary = MetricSummary()
>>> summary.add(scores, utt_id="utt1")
>>> summary.add(failed, utt_id="utt2")
>>> summary.failed_count(), summary.mean("si_sdr") == (scores["si_sdr"] - 50.0) / 2
(1, True)
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

from modules.audio import SAMPLE_RATE

logger = logging.getLogger(__name__)

METRICS = ("si_sdr", "si_sdr_zero_mean", "si_sdri", "pesq", "stoi")
UNITS = {"si_sdr": "dB", "si_sdr_zero_mean": "dB", "si_sdri": "dB", "pesq": "", "stoi": ""}
#: The score of a failed estimate (see "Failed estimates count as failures" above);
#: ``si_sdri`` is ``FLOORS["si_sdr"]`` minus the mixture's SI-SDR.
FLOORS = {"si_sdr": -50.0, "si_sdr_zero_mean": -50.0, "pesq": 1.0, "stoi": 0.0}


class Scores(dict):
    """``{metric: value}`` of one estimate, and how it failed.

    Attributes
    ----------
    failure : str or None
        Why the whole estimate failed (all zero, non-finite), or None.
    floored : list of str
        The metrics set at their floor (all of them for a failed estimate).
    """

    def __init__(self, values=(), failure: str | None = None, floored=()):
        super().__init__(values)
        self.failure = failure
        self.floored = list(floored)


def estimate_failure(est: torch.Tensor) -> str | None:
    """Why an estimate cannot be scored at all (non-finite, all zero), or None.

    Example
    -------
    >>> estimate_failure(torch.zeros(4)), estimate_failure(torch.ones(4))
    ('all samples are zero', None)
    """
    if not torch.isfinite(est).all():
        return "NaN or infinite samples"
    if not bool(est.any()):
        return "all samples are zero"
    return None


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


def si_sdr_graded(est: torch.Tensor, target: torch.Tensor, zero_mean: bool = False) -> float:
    """SI-SDR in dB of a ``[T]`` estimate against a ``[T]`` target, as graded (torchmetrics).

    ``zero_mean=False`` (no mean removed) is the torchmetrics default and the graded
    number. Not the training loss's SI-SDR: :func:`modules.losses.batch_si_sdr` is
    zero-mean by default, batched and padding-aware.

    Example
    -------
    >>> t = torch.sin(torch.arange(8000) / 5.0)
    >>> round(si_sdr_graded(t + 0.1 * torch.cos(torch.arange(8000) / 3.0), t), 1)
    20.0
    """
    return float(scale_invariant_signal_distortion_ratio(est, target, zero_mean=zero_mean))


def si_sdri(est: torch.Tensor, target: torch.Tensor, mix: torch.Tensor) -> float:
    """SI-SDR improvement in dB: ``si_sdr_graded(est, target) - si_sdr_graded(mix, target)``.

    Example
    -------
    >>> t = torch.sin(torch.arange(8000) / 5.0)
    >>> si_sdri(t, t, t)
    0.0
    """
    return si_sdr_graded(est, target) - si_sdr_graded(mix, target)


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
    Scores
        A dict with one value per requested metric; a failed estimate (all zero,
        non-finite) or an undefined metric is scored at its floor (:data:`FLOORS`),
        named in ``failure`` / ``floored``. Never raises for such signals.

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
    where = f" for {utt_id}" if utt_id else ""
    failure = estimate_failure(est)
    if failure is not None:
        logger.warning("estimate%s failed (%s): every metric scored at its floor", where,
                       failure)
        floors = {name: FLOORS.get(name) for name in metrics}
        if "si_sdri" in metrics:
            floors["si_sdri"] = FLOORS["si_sdr"] - si_sdr_graded(mix, target)
        return Scores(floors, failure=failure, floored=metrics)

    scores = Scores()
    for name in metrics:
        if name == "si_sdr":
            scores[name] = si_sdr_graded(est, target)
        elif name == "si_sdr_zero_mean":
            scores[name] = si_sdr_graded(est, target, zero_mean=True)
        elif name == "si_sdri":
            est_si_sdr = scores["si_sdr"] if "si_sdr" in scores else si_sdr_graded(est, target)
            scores[name] = est_si_sdr - si_sdr_graded(mix, target)
        elif name == "pesq":
            scores[name] = pesq(est, target, utt_id)
        elif name == "stoi":
            scores[name] = stoi(est, target, utt_id)
        if not math.isfinite(scores[name]):
            floor = (FLOORS["si_sdr"] - si_sdr_graded(mix, target)) if name == "si_sdri" \
                else FLOORS[name]
            logger.warning("%s undefined%s: scored at its floor %.2f", name, where, floor)
            scores[name] = floor
            scores.floored.append(name)
    return scores


class MetricSummary:
    """Per-utterance scores and their means; failed estimates and floored values counted.

    Values at a floor (see :func:`compute_metrics`) are part of the means; a NaN added
    by a caller is left out of the mean and counted (``nan_excluded``).

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
    {'mean': 3.0, 'count': 1, 'nan_excluded': 1, 'at_floor': 0}
    """

    def __init__(self, metrics: Iterable[str] | None = None):
        self._metrics = list(metrics) if metrics is not None else None
        self.rows: list[dict] = []
        self.failed: list[str] = []
        self._floored: dict[str, int] = {}

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
        if getattr(scores, "failure", None):
            self.failed.append(row["ID"])
        for name in getattr(scores, "floored", ()):
            self._floored[name] = self._floored.get(name, 0) + 1

    def failed_count(self) -> int:
        """How many estimates failed (all zero or non-finite), scored at the floors."""
        return len(self.failed)

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
        """``{metric: {"mean", "count" (finite values), "nan_excluded", "at_floor"}}``."""
        return {
            name: {
                "mean": self.mean(name),
                "count": len(self.values(name)),
                "nan_excluded": self.nan_count(name),
                "at_floor": self._floored.get(name, 0),
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
        metric                       mean      n  at floor
        si_sdr (dB)                10.000      1         0
        """
        stats_by_metric = self.summarize()
        nan_column = any(stats["nan_excluded"] for stats in stats_by_metric.values())
        header = f"{'metric':<22} {'mean':>10} {'n':>6} {'at floor':>9}"
        lines = [header + (f" {'NaN excluded':>13}" if nan_column else "")]
        for name, stats in stats_by_metric.items():
            label = f"{name} ({UNITS[name]})" if UNITS.get(name) else name
            lines.append(
                f"{label:<22} {stats['mean']:>10.3f} {stats['count']:>6} "
                f"{stats['at_floor']:>9}"
                + (f" {stats['nan_excluded']:>13}" if nan_column else "")
            )
        if self.failed:
            lines.append(f"{len(self.failed)} failed estimate(s) (all zero or non-finite), "
                         "every metric scored at its floor")
        return "\n".join(lines)


def format_comparison(summaries: Mapping[str, MetricSummary]) -> str:
    """Means of several systems scored on the same items: one column per system.

    Arguments
    ---------
    summaries : mapping of str to MetricSummary
        System name -> its scores, in column order (e.g. the mixture, then a model).

    Example
    -------
    >>> mixture, model = MetricSummary(["si_sdr", "pesq"]), MetricSummary(["si_sdr", "pesq"])
    >>> mixture.add({"si_sdr": 0.5, "pesq": 1.2}, utt_id="a")
    >>> model.add({"si_sdr": 7.25, "pesq": 1.5}, utt_id="a")
    >>> print(format_comparison({"mixture": mixture, "spex_tiny": model}))
    metric                     mixture   spex_tiny
    si_sdr (dB)                  0.500       7.250
    pesq                         1.200       1.500
    items                            1           1
    """
    columns = [(name, max(10, len(name)) + 1) for name in summaries]
    metrics = list(dict.fromkeys(m for summary in summaries.values() for m in summary.metrics))
    lines = [f"{'metric':<22}" + "".join(f" {name:>{width}}" for name, width in columns)]
    for metric in metrics:
        label = f"{metric} ({UNITS[metric]})" if UNITS.get(metric) else metric
        lines.append(f"{label:<22}" + "".join(
            f" {summaries[name].mean(metric):>{width}.3f}" for name, width in columns))
    lines.append(f"{'items':<22}" + "".join(
        f" {len(summaries[name]):>{width}}" for name, width in columns))
    return "\n".join(lines)
