"""Everything ``evaluate.py`` reports beyond the graded metrics, for one run.

:class:`ExtraEvaluation` collects, item by item:

* **wrong speaker** (test dirs with targets): ``wrong_speaker``,
  ``si_sdr_interferer`` (:mod:`modules.failures`); always on;
* **target absent** (``absent: True``, a test dir without targets whose mixtures do
  not contain the reference speaker, e.g. ``make_mixtures.py --num_test_absent``):
  ``energy_db`` (raw output energy relative to the mixture), ``near_silent``
  (``energy_db <= silence_db``), ``presence`` (the extractor's presence score);
* **ASR** (``asr: pocketsphinx`` or a local speechbrain model folder): WER/CER of the
  target, mixture and estimate (:mod:`modules.asr`), with the test dir's
  ``transcripts.tsv`` where it has them;
* **breakdowns** (test dirs with targets): ``gender``, ``tir``, ``mix_length``, and
  with ``ref_lengths: [0.5, 1, 2, 4, 8]`` the ``ref_length`` table (the model runs
  again on each shortened reference) (:mod:`modules.breakdowns`);

and writes the listening page (``html: N``, :mod:`modules.listening_page`).
Per-item columns go to ``per_utterance.csv``; :meth:`ExtraEvaluation.summary` to
``summary.json`` (non-finite numbers as ``null``); :meth:`ExtraEvaluation.format_table`
under the printed table.

Example
-------
>>> import torch
>>> extras = ExtraEvaluation({"absent": False}, "/nonexistent", has_targets=True)
>>> target, other = torch.randn(8000), torch.randn(8000)
>>> item = {"id": "a", "mix": target + other, "target": target, "ref": target}
>>> row = extras.add(item, other, {}, {"si_sdr": -20.0, "si_sdri": -20.0})
>>> row["wrong_speaker"], extras.summary()["failures"]["wrong_speaker"]["rate"]
(True, 1.0)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from modules.asr import AsrScorer, load_transcripts, make_recognizer
from modules.breakdowns import Breakdowns, cut_reference, item_groups, load_item_info
from modules.cli import BadInput
from modules.failures import SILENCE_DB, FailureCounter, absent_scores, wrong_speaker_scores
from modules.listening_page import write_listening_page
from modules.metrics import compute_metrics

logger = logging.getLogger(__name__)

BREAKDOWN_METRICS = ("si_sdr", "si_sdri", "wrong_speaker")


def json_safe(value):
    """``value`` with non-finite floats as ``None`` (strict JSON), recursively.

    Example
    -------
    >>> json_safe({"a": [1.0, float("nan")], "b": float("-inf")})
    {'a': [1.0, None], 'b': None}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


class ExtraEvaluation:
    """Failure measures, ASR, breakdowns and the listening page of one evaluation run.

    Arguments
    ---------
    hparams : dict
        The evaluation settings: ``absent``, ``silence_db``, ``asr``, ``ref_lengths``,
        ``device`` (missing keys take their defaults).
    test_dir : str or Path
        Where ``transcripts.tsv`` and the manifest (for genders) are looked for.
    has_targets : bool
        Whether the test dir has targets (wrong-speaker, ASR and breakdowns need them).
    refused : tuple of exception types
        What the estimator raises for an input it cannot take (counted per reference
        length, not fatal).
    """

    def __init__(self, hparams: Mapping, test_dir, has_targets: bool,
                 refused: tuple[type[BaseException], ...] = ()):
        self.absent = bool(hparams.get("absent", False))
        self.silence_db = float(hparams.get("silence_db", SILENCE_DB))
        self.has_targets = has_targets
        self.refused = refused
        self.ref_lengths = [float(v) for v in hparams.get("ref_lengths") or []]
        self.asr = None
        self.transcripts: dict[str, str] = {}
        if hparams.get("asr"):
            if not has_targets:
                raise BadInput(f"{test_dir}: --asr needs targets/ (the clean target is "
                               "transcribed too, and is the reference where no transcript is)")
            self.asr = AsrScorer(make_recognizer(hparams["asr"], str(hparams.get("device",
                                                                               "cpu"))))
            self.transcripts = load_transcripts(test_dir)
            logger.info("ASR with %s; %d transcript(s) in %s", self.asr.recognizer.name,
                        len(self.transcripts), test_dir)
        self.info = load_item_info(test_dir) if has_targets else {}
        flags = (["wrong_speaker"] if has_targets else []) + (["near_silent"] if self.absent
                                                               else [])
        self.failures = FailureCounter(flags)
        self.breakdowns = Breakdowns(BREAKDOWN_METRICS)
        self.ref_length_gaps = {f"{length:g} s": {"shorter": 0, "refused": 0}
                                for length in self.ref_lengths}
        self.rows: dict[str, dict] = {}

    @property
    def columns(self) -> list[str]:
        """The per-item columns, in order (for ``per_utterance.csv``)."""
        seen: dict[str, None] = {}
        for row in self.rows.values():
            seen.update(dict.fromkeys(row))
        return list(seen)

    def add(self, item: Mapping, est: torch.Tensor, info: Mapping | None,
            scores: Mapping | None, estimate: Callable | None = None) -> dict:
        """Measure one item; returns its extra columns.

        Arguments
        ---------
        item : dict
            ``id``, ``mix`` and ``ref`` ``[T]`` (and ``target`` with targets).
        est : torch.Tensor
            ``[T]`` estimate as scored.
        info : dict or None
            The extractor's info for the item (``energy_db`` before level matching,
            ``presence_cosine``); ``None`` or ``{}`` for a baseline.
        scores : dict or None
            The item's graded scores (``si_sdr``, ``si_sdri``) for the breakdowns.
        estimate : callable, optional
            ``item -> (est, info)``, to rerun the system on shortened references.
        """
        info = info or {}
        item_id = str(item["id"])
        row: dict = {}
        if self.has_targets:
            row.update(wrong_speaker_scores(est, item["target"], item["mix"]))
        if "presence_cosine" in info:
            row["presence"] = float(info["presence_cosine"])
        if self.absent:
            row.update(absent_scores(est, item["mix"], info.get("presence_cosine", math.nan),
                                     self.silence_db, info.get("energy_db")))
        self.failures.add(row)
        if self.has_targets:
            graded = {**(scores or {}), "wrong_speaker": row.get("wrong_speaker")}
            for breakdown, group in item_groups(item["mix"], item["target"],
                                                self.info.get(item_id)).items():
                self.breakdowns.add(breakdown, group, graded)
            if self.ref_lengths and estimate is not None:
                self._ref_lengths(item, graded, estimate)
        if self.asr is not None:
            asr_row = self.asr.add(item_id, item["target"], item["mix"], est,
                                   self.transcripts.get(item_id))
            row.update({k: v for k, v in asr_row.items() if k != "ID"})
        self.rows[item_id] = row
        return row

    def _ref_lengths(self, item: Mapping, whole: Mapping, estimate: Callable) -> None:
        for index, length in enumerate(self.ref_lengths):
            label = f"{length:g} s"
            ref = cut_reference(item["ref"], length)
            if ref is None:
                self.ref_length_gaps[label]["shorter"] += 1
                continue
            try:
                est, _ = estimate({**item, "ref": ref})
            except self.refused as error:
                logger.warning("%s: reference cut to %s refused (%s)", item["id"], label, error)
                self.ref_length_gaps[label]["refused"] += 1
                continue
            scores = dict(compute_metrics(est, item["target"], item["mix"],
                                          ("si_sdr", "si_sdri"), utt_id=item["id"]))
            scores.update(wrong_speaker=wrong_speaker_scores(est, item["target"],
                                                             item["mix"])["wrong_speaker"])
            self.breakdowns.add("ref_length", (index, label), scores)
        self.breakdowns.add("ref_length", (len(self.ref_lengths), "whole"), whole)

    def summary(self) -> dict:
        """``failures``, ``asr``, ``breakdowns`` (and gaps) for ``summary.json``."""
        out: dict = {"failures": self.failures.summary()}
        if self.asr is not None:
            asr = self.asr.summary()
            unused = sorted(set(self.transcripts) - self.rows.keys())
            asr["transcripts_without_item"] = len(unused)
            out["asr"] = asr
        if self.has_targets:
            out["breakdowns"] = self.breakdowns.tables()
            out["genders_known"] = sum(1 for i in self.rows
                                       if self.info.get(i, {}).get("gender", "unknown")
                                       != "unknown")
        if self.ref_lengths:
            out["ref_length_gaps"] = self.ref_length_gaps
        if self.absent:
            out["absent"] = {"silence_db": self.silence_db}
        return json_safe(out)

    def format_table(self) -> str:
        """Failure rates, ASR and breakdown tables as plain text ("" when none)."""
        blocks = []
        if self.failures.names:
            head = "Failures"
            if self.absent:
                head += f" (near_silent: output energy <= {self.silence_db:g} dB re mixture)"
            blocks.append(f"{head}\n{self.failures.format_table()}")
            if self.absent:
                values = [r["presence"] for r in self.rows.values()
                          if math.isfinite(r.get("presence", math.nan))]
                energies = [r["energy_db"] for r in self.rows.values()
                            if math.isfinite(r.get("energy_db", math.nan))]
                blocks[-1] += (
                    f"\nmean output energy re mixture: "
                    f"{sum(energies) / len(energies) if energies else math.nan:.2f} dB "
                    f"({len(energies)} finite); mean presence score: "
                    f"{sum(values) / len(values) if values else math.nan:.3f} "
                    f"({len(values)} defined)")
        if self.asr is not None:
            text = self.asr.format_table()
            unused = len(set(self.transcripts) - self.rows.keys())
            if unused:
                text += f"\n{unused} transcript(s) name IDs that were not scored"
            blocks.append(text)
        if self.has_targets and self.breakdowns.tables():
            blocks.append(self.breakdowns.format_tables())
            gaps = [f"{label}: {g['shorter']} shorter, {g['refused']} refused"
                    for label, g in self.ref_length_gaps.items() if g["shorter"] or g["refused"]]
            if gaps:
                blocks.append("references not in a ref_length group: " + "; ".join(gaps))
        return "\n\n".join(blocks)

    def write_page(self, folder, metric_rows: list[Mapping],
                   get_signals: Callable[[str], Mapping], n: int, summary: Mapping) -> Path:
        """The listening page (see :mod:`modules.listening_page`); returns ``index.html``."""
        rows = [{**row, **self.rows.get(str(row["ID"]), {})} for row in metric_rows]
        if not rows:
            rows = [{"ID": item_id, **extra} for item_id, extra in self.rows.items()]
        rows = [{k: v for k, v in row.items() if not k.startswith(("hyp_", "asr_ref"))}
                for row in rows]
        key, lower = ("energy_db", True) if self.absent else ("si_sdri", False)
        tables = {}
        text = self.format_table()
        if text:
            tables["Failures, ASR and breakdowns"] = text
        return write_listening_page(folder, rows, get_signals, n=n, key=key,
                                    lower_is_better=lower, summary=summary,
                                    extra_tables=tables)
