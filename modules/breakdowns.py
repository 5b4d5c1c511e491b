"""Where does a system fail? Scores broken down by condition, a table per breakdown.

Breakdowns (every table has a count per group, and the mean of each metric over
the items of the group where the metric is defined; a boolean column such as
``wrong_speaker`` gives the rate):

* ``gender``: ``same`` or ``different`` gender of target and interferer, ``unknown``
  where either is not known. Genders come from the corpus metadata next to the
  source files named in the test directory's manifest (:func:`load_item_info`).
* ``tir``: target-to-interferer ratio in dB *measured on the signals*,
  ``10 log10(|target|^2 / |mixture - target|^2)`` (the interferer includes any
  noise), in bins :data:`TIR_EDGES`.
* ``mix_length``: mixture duration in seconds, bins :data:`MIX_LENGTH_EDGES`.
* ``ref_length``: the same items scored again with their references cut to
  0.5, 1, 2, 4 and 8 s (:data:`REF_LENGTHS`, the central part of each reference,
  :func:`cut_reference`); an item whose reference is shorter than a length is not
  in that group (the count says how many are). Needs a model (a baseline ignores
  the reference).

Example
-------
>>> tables = Breakdowns(["si_sdri", "wrong_speaker"])
>>> tables.add("gender", "same", {"si_sdri": 4.0, "wrong_speaker": False})
>>> tables.add("gender", "different", {"si_sdri": 8.0, "wrong_speaker": False})
>>> tables.add("gender", "same", {"si_sdri": 2.0, "wrong_speaker": True})
>>> print(tables.format_tables())
Breakdown by gender
group            n   si_sdri wrong_speaker
same             2     3.000         0.500
different        1     8.000         0.000
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from modules.audio import SAMPLE_RATE

logger = logging.getLogger(__name__)

TIR_EDGES = (-math.inf, -5.0, -2.0, 2.0, 5.0, math.inf)
MIX_LENGTH_EDGES = (0.0, 2.0, 4.0, 8.0, 16.0, math.inf)
REF_LENGTHS = (0.5, 1.0, 2.0, 4.0, 8.0)
METADATA_FILES = ("speakers.tsv", "utterances.tsv", "manifest.tsv")
GENDERS = {"f": "F", "female": "F", "woman": "F", "m": "M", "male": "M", "man": "M"}


def bin_label(value: float, edges: Sequence[float], unit: str = "") -> tuple[int, str]:
    """The bin ``[lo, hi)`` of ``edges`` holding ``value``: (index, label); NaN: (-1, ``unknown``).

    Example
    -------
    >>> bin_label(3.0, (0, 2, 4, math.inf), " s")
    (1, '[2, 4) s')
    >>> bin_label(9.0, (0, 2, 4, math.inf), " s")
    (2, '>= 4 s')
    >>> bin_label(-7.0, (-math.inf, -5, 5, math.inf), " dB")
    (0, '< -5 dB')
    """
    if math.isnan(value):
        return -1, "unknown"
    for index, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        if lo <= value < hi:
            if math.isinf(lo):
                return index, f"< {hi:g}{unit}"
            if math.isinf(hi):
                return index, f">= {lo:g}{unit}"
            return index, f"[{lo:g}, {hi:g}){unit}"
    return len(edges) - 1, "out of range"


def measured_tir_db(target: torch.Tensor, mix: torch.Tensor) -> float:
    """``10 log10(|target|^2 / |mix - target|^2)`` in dB (``inf`` without interferer).

    Example
    -------
    >>> t = torch.ones(100)
    >>> round(measured_tir_db(t, t + 0.1 * t), 1)
    20.0
    """
    target, mix = target.double().reshape(-1), mix.double().reshape(-1)
    rest = float((mix - target).pow(2).sum())
    energy = float(target.pow(2).sum())
    if rest <= 0:
        return math.inf
    return 10.0 * math.log10(energy / rest) if energy > 0 else -math.inf


def cut_reference(ref: torch.Tensor, seconds: float, sample_rate: int = SAMPLE_RATE):
    """The central ``seconds`` of a ``[T]`` reference, or ``None`` if it is shorter.

    Example
    -------
    >>> cut_reference(torch.arange(10.0), 0.25, sample_rate=16).tolist()
    [3.0, 4.0, 5.0, 6.0]
    >>> cut_reference(torch.arange(10.0), 1.0, sample_rate=16) is None
    True
    """
    length = int(round(seconds * sample_rate))
    if ref.shape[-1] < length:
        return None
    start = (ref.shape[-1] - length) // 2
    return ref[..., start : start + length]


def _normal_gender(value: str | None) -> str | None:
    return GENDERS.get((value or "").strip().lower())


def read_genders(folder: Path) -> dict[str, str]:
    """``{speaker: "F"|"M"}`` from the metadata files of one folder (see :data:`METADATA_FILES`).

    Any tab-separated file there with ``speaker`` and ``gender`` columns counts; the
    values ``F``/``female``/``M``/``male`` (any case) are understood, others ignored.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "speakers.tsv").write_text("speaker\\tgender\\n103\\tF\\n7\\tmale\\n8\\t\\n")
    >>> read_genders(folder)
    {'103': 'F', '7': 'M'}
    """
    genders: dict[str, str] = {}
    for name in METADATA_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            with open(path, newline="", encoding="utf-8") as fin:
                reader = csv.DictReader(fin, delimiter="\t", quoting=csv.QUOTE_NONE)
                if not reader.fieldnames or not {"speaker", "gender"} <= set(reader.fieldnames):
                    continue
                for row in reader:
                    gender = _normal_gender(row.get("gender"))
                    if gender and row.get("speaker"):
                        genders.setdefault(row["speaker"], gender)
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            logger.warning("cannot read speaker genders from %s (%s)", path, error)
    return genders


class GenderLookup:
    """Speaker genders found in the metadata files above a source file (cached per folder).

    The metadata of a corpus sits in its root or one level above (the shared data
    layout: ``librispeech/speakers.tsv`` above ``train-clean-100/<spk>/...``), so the
    folders from the file's up to ``levels`` ancestors are searched, nearest first.

    Example
    -------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "speakers.tsv").write_text("speaker\\tgender\\n103\\tF\\n")
    >>> GenderLookup().gender("librispeech:103", root / "corpus" / "103" / "a.flac")
    'F'
    """

    def __init__(self, levels: int = 4):
        self.levels = levels
        self._folders: dict[Path, dict[str, str]] = {}

    def gender(self, speaker: str, source_file) -> str | None:
        """``"F"``, ``"M"`` or ``None``; ``speaker`` may be namespaced (``corpus:id``)."""
        local_id = speaker.split(":", 1)[-1]
        for folder in list(Path(source_file).parents)[: self.levels]:
            if folder not in self._folders:
                self._folders[folder] = read_genders(folder)
            if local_id in self._folders[folder]:
                return self._folders[folder][local_id]
        return None


def load_item_info(test_dir) -> dict[str, dict]:
    """Speakers and genders of each item, from the manifest ``make_mixtures.py`` wrote.

    The manifest of ``OUT/<split>/`` is ``OUT/<split>.csv`` (columns ``ID``,
    ``target_speaker``, ``interferer_speaker``, ``target_file``, ``interferer_file``).
    Returns ``{ID: {"target_speaker", "interferer_speaker", "target_gender",
    "interferer_gender", "gender"}}`` where ``gender`` is ``same``/``different``/
    ``unknown``; ``{}`` when there is no manifest (every item is then ``unknown``).

    Example
    -------
    >>> load_item_info("/nonexistent/test")
    {}
    """
    test_dir = Path(test_dir)
    manifest = test_dir.parent / f"{test_dir.name}.csv"
    if not manifest.is_file():
        return {}
    lookup = GenderLookup()
    info = {}
    try:
        with open(manifest, newline="", encoding="utf-8") as fin:
            for row in csv.DictReader(fin):
                if "ID" not in row or "target_speaker" not in row:
                    return {}
                genders = [
                    lookup.gender(row.get(f"{who}_speaker") or "", row.get(f"{who}_file") or "")
                    if row.get(f"{who}_file") else None
                    for who in ("target", "interferer")
                ]
                relation = "unknown" if None in genders else (
                    "same" if genders[0] == genders[1] else "different")
                info[row["ID"]] = {
                    "target_speaker": row.get("target_speaker"),
                    "interferer_speaker": row.get("interferer_speaker"),
                    "target_gender": genders[0],
                    "interferer_gender": genders[1],
                    "gender": relation,
                }
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        logger.warning("cannot read %s (%s): genders unknown", manifest, error)
        return {}
    return info


def item_groups(mix: torch.Tensor, target: torch.Tensor | None, info: Mapping | None,
                sample_rate: int = SAMPLE_RATE) -> dict[str, tuple[int, str]]:
    """The (order, label) of one item in the ``gender``, ``tir`` and ``mix_length`` breakdowns.

    Example
    -------
    >>> t = torch.ones(32000)
    >>> groups = item_groups(t + 0.5 * t, t, {"gender": "same"})
    >>> groups["gender"], groups["tir"], groups["mix_length"]
    ((0, 'same'), (4, '>= 5 dB'), (1, '[2, 4) s'))
    """
    relation = (info or {}).get("gender", "unknown")
    groups = {
        "gender": ({"same": 0, "different": 1}.get(relation, 2), relation),
        "mix_length": bin_label(mix.shape[-1] / sample_rate, MIX_LENGTH_EDGES, " s"),
    }
    if target is not None:
        groups["tir"] = bin_label(measured_tir_db(target, mix), TIR_EDGES, " dB")
    return groups


class Breakdowns:
    """Per-group means and counts for several breakdowns.

    Arguments
    ---------
    metrics : iterable of str
        Columns averaged in each group (booleans give rates; NaN/None values are left
        out of that column's mean).
    """

    def __init__(self, metrics: Iterable[str]):
        self.metrics = list(metrics)
        self._groups: dict[str, dict[tuple[int, str], list[Mapping]]] = {}

    def add(self, breakdown: str, group, scores: Mapping) -> None:
        """Add one item's scores to ``group`` (a label, or an ``(order, label)`` pair)."""
        key = group if isinstance(group, tuple) else (len(self._groups.get(breakdown, {})),
                                                      str(group))
        groups = self._groups.setdefault(breakdown, {})
        for existing in groups:  # a plain label added again keeps its first order
            if existing[1] == key[1]:
                key = existing
                break
        groups.setdefault(key, []).append(dict(scores))

    def tables(self) -> dict[str, list[dict]]:
        """``{breakdown: [{"group", "count", metric: mean or None, ...}, ...]}`` in group order."""
        out = {}
        for breakdown, groups in self._groups.items():
            rows = []
            for (_, label), items in sorted(groups.items()):
                row = {"group": label, "count": len(items)}
                for metric in self.metrics:
                    values = [float(item[metric]) for item in items
                              if item.get(metric) is not None
                              and math.isfinite(float(item[metric]))]
                    row[metric] = sum(values) / len(values) if values else None
                rows.append(row)
            out[breakdown] = rows
        return out

    def format_tables(self) -> str:
        """Plain-text tables, one per breakdown."""
        blocks = []
        for breakdown, rows in self.tables().items():
            lines = [f"Breakdown by {breakdown}",
                     f"{'group':<12} {'n':>5} "
                     + " ".join(f"{m:>{max(9, len(m))}}" for m in self.metrics)]
            for row in rows:
                cells = " ".join(
                    f"{row[m]:>{max(9, len(m))}.3f}" if row[m] is not None
                    else f"{'-':>{max(9, len(m))}}"
                    for m in self.metrics
                )
                lines.append(f"{row['group']:<12} {row['count']:>5} {cells}")
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)
