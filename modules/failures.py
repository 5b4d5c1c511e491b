"""The two failures users of target speaker extraction report most, per item and as rates.

**Wrong speaker** (needs the clean target): the estimate is closer to the
*interferer* than to the target, by SI-SDR (the graded definition, torchmetrics,
``zero_mean=False``)::

    interferer   = mixture - target          (the other talker, plus any noise)
    wrong_speaker = si_sdr_graded(est, interferer) > si_sdr_graded(est, target)

A do-nothing system (the mixture itself) at 0 dB target-to-interferer ratio sits on
the boundary and is flagged about half the time: the rate means something for an
extractor, and compared with that baseline.

**Target absent** (no target needed): a mixture that does not contain the reference
speaker should give a (near-)silent output. Per item:

* ``energy_db``: energy of the *raw* model output relative to the mixture, in dB
  (before any level matching; ``-inf`` for an all-zero output);
* ``near_silent``: ``energy_db <= silence_db`` (default -20 dB: the output carries at
  most 1 % of the mixture's energy);
* ``presence``: the extractor's presence score (cosine similarity of the speaker
  embeddings of output and reference, :meth:`TargetSpeakerExtractor.presence_score`;
  NaN where undefined, e.g. a silent output).

:class:`FailureCounter` turns the per-item flags into rates with their counts;
undefined items (NaN) are counted, never silently dropped.

Example
-------
>>> import torch
>>> _ = torch.manual_seed(0)
>>> target, other = torch.randn(16000), torch.randn(16000)
>>> wrong_speaker_scores(other, target, target + other)["wrong_speaker"]
True
>>> absent_scores(0.01 * other, target + other)["near_silent"]
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

from modules.levels import energy, energy_ratio_db
from modules.metrics import _as_1d, match_length, si_sdr_graded

#: Default threshold of ``near_silent``: output energy at most 20 dB below the mixture.
SILENCE_DB = -20.0


def wrong_speaker_scores(est, target, mix) -> dict:
    """``si_sdr_interferer`` (dB) and ``wrong_speaker`` (bool, ``None`` if undefined).

    Arguments
    ---------
    est : torch.Tensor
        ``[T']`` estimate (trimmed or zero-padded to the target's length).
    target, mix : torch.Tensor
        ``[T]`` clean target and mixture of the same length.

    Example
    -------
    >>> t = torch.sin(torch.arange(8000) / 5.0)
    >>> i = torch.sin(torch.arange(8000) / 2.0)
    >>> scores = wrong_speaker_scores(t + 0.1 * i, t, t + i)
    >>> scores["wrong_speaker"], scores["si_sdr_interferer"] < -10
    (False, True)
    """
    target = _as_1d(target, "target")
    mix = _as_1d(mix, "mix").to(target.dtype)
    if mix.shape[0] != target.shape[0]:
        raise ValueError(f"mix has {mix.shape[0]} samples, target {target.shape[0]}")
    est = match_length(_as_1d(est, "est").to(target.dtype), target.shape[0])
    interferer = mix - target
    if not torch.isfinite(est).all() or energy(interferer) <= 0 or energy(est) <= 0:
        return {"si_sdr_interferer": math.nan, "wrong_speaker": None}
    to_interferer, to_target = si_sdr_graded(est, interferer), si_sdr_graded(est, target)
    return {"si_sdr_interferer": to_interferer, "wrong_speaker": to_interferer > to_target}


def absent_scores(est_raw, mix, presence: float = math.nan,
                  silence_db: float = SILENCE_DB, energy_db: float | None = None) -> dict:
    """``energy_db``, ``near_silent`` and ``presence`` of one target-absent item.

    Arguments
    ---------
    est_raw : torch.Tensor
        ``[T']`` model output *before* level matching.
    mix : torch.Tensor
        ``[T]`` mixture.
    presence : float
        Presence score of the output (NaN where there is none).
    silence_db : float
        ``near_silent`` threshold on ``energy_db``.
    energy_db : float, optional
        The output energy relative to the mixture when the caller measured it already
        (e.g. the extractor's ``info["energy_db"]``, before its level matching);
        ``est_raw`` is then not used.

    Example
    -------
    >>> absent_scores(torch.zeros(100), torch.ones(100))
    {'energy_db': -inf, 'near_silent': True, 'presence': nan}
    """
    if energy_db is None:
        energy_db = energy_ratio_db(_as_1d(est_raw, "est"), _as_1d(mix, "mix"))
    energy_db = float(energy_db)
    near_silent = None if math.isnan(energy_db) else energy_db <= silence_db
    return {"energy_db": energy_db, "near_silent": near_silent, "presence": float(presence)}


class FailureCounter:
    """Rates of boolean per-item flags, with the number of items each rate is over.

    Example
    -------
    >>> counter = FailureCounter(["wrong_speaker"])
    >>> for flag in (True, False, False, None):
    ...     counter.add({"wrong_speaker": flag})
    >>> counter.summary()
    {'wrong_speaker': {'rate': 0.3333333333333333, 'count': 1, 'items': 3, 'undefined': 1}}
    """

    def __init__(self, names: Iterable[str]):
        self.names = list(names)
        self._flags: dict[str, list] = {name: [] for name in self.names}

    def add(self, row: Mapping) -> None:
        """Record the flags of one item (``True``/``False``/``None`` = undefined)."""
        for name in self.names:
            value = row.get(name)
            self._flags[name].append(None if value is None else bool(value))

    def summary(self) -> dict:
        """``{flag: {"rate", "count" (True), "items" (defined), "undefined"}}``."""
        out = {}
        for name, flags in self._flags.items():
            defined = [flag for flag in flags if flag is not None]
            out[name] = {
                "rate": sum(defined) / len(defined) if defined else math.nan,
                "count": sum(defined),
                "items": len(defined),
                "undefined": len(flags) - len(defined),
            }
        return out

    def format_table(self) -> str:
        """One line per flag: rate in percent, count of items, undefined.

        Example
        -------
        >>> counter = FailureCounter(["near_silent"])
        >>> counter.add({"near_silent": True})
        >>> print(counter.format_table())
        failure                  rate %  count  items  undefined
        near_silent              100.00      1      1          0
        """
        lines = [f"{'failure':<22} {'rate %':>8} {'count':>6} {'items':>6} {'undefined':>10}"]
        for name, stats in self.summary().items():
            lines.append(
                f"{name:<22} {100 * stats['rate']:>8.2f} {stats['count']:>6} "
                f"{stats['items']:>6} {stats['undefined']:>10}"
            )
        return "\n".join(lines)
