#!/usr/bin/env python3
"""Does a trained model follow its reference, and can it tell when the target is absent?

Runs on a test split written by ``mixing/make_mixtures.py`` (``OUT/<split>.csv`` and
``OUT/<split>/speakers.json``) with a model directory::

    python bench/conditioning_presence.py --data_folder OUT --split test \\
        --model_dir MODEL_DIR [--max_items N] [--out results/bench/conditioning.json]

Each manifest row is a mixture of a target speaker A and an interferer B.

1. **Conditioning.** The mixture is extracted twice: with A's reference (the
   manifest's ``ref_wav``) -> ``out_A``, and with a reference of B -> ``out_B``. B's
   reference is a piece of B's audio from ``speakers.json`` that does not overlap
   the interferer crop used in the mixture (``interferer_file``,
   ``interferer_start``/``interferer_stop``): a whole other segment of B, or the part
   of a segment outside the crop, drawn at random, cut to the length of A's
   reference (random window) and loudness-normalised to ``--lufs`` like the mixer's
   references. An item whose interferer has no such piece (of at least the model's
   shortest reference and 0.4 s) is counted in ``skipped.no_other_interferer_audio``
   and left out of this part. The clean signals in the mixture are A = the
   ``target_wav`` file (the scaled target as mixed) and B = ``mix - target`` (exact
   up to PCM16 rounding when there is no noise; for a noisy split B is rebuilt from
   ``interferer_file`` with ``interferer_gain_db`` at ``interferer_offset``).
   Per item: SI-SDR of ``out_A`` against A and against B, of ``out_B`` against B and
   against A, SI-SDRi of ``out_A`` for A and of ``out_B`` for B (improvement over the
   mixture, :func:`modules.metrics.si_sdri`), whether ``out_A`` is closer (higher
   SI-SDR) to A than to B and ``out_B`` closer to B than to A, and
   ``SI-SDR(out_B, out_A)`` (``out_A`` as the reference signal): a model that ignores
   its reference gives the same output for both references (very high value).
   All SI-SDRs are the graded ``zero_mean=False`` definition of
   :mod:`modules.metrics`.
2. **Target presence.** B's signal in the mixture is mixed with a segment of a third
   speaker C of the split (neither A nor B) by the project's
   :class:`mixing.mixers.Mixer` (0 dB, ``--lufs``, ``length_mode="min"``) and
   extracted with A's reference: A is absent. Compared with the target-present case
   (``out_A`` of part 1, every item): the output energy relative to the mixture in dB
   (:func:`modules.levels.energy_ratio_db`) and the presence score
   (:meth:`TargetSpeakerExtractor.presence_score`: cosine similarity of the speaker
   embeddings of the estimate and of A's reference). Each score's ROC AUC for
   separating present (positive) from absent is computed by ranking (Mann-Whitney U
   with tied ranks averaged; an undefined score, e.g. the presence of a silent
   estimate, ranks lowest), with the accuracy of the best threshold ("present"
   when score >= threshold; the threshold is reported halfway between neighbouring
   scores). Noise of a noisy split is not added to the absent mixtures.
   Items for which the split has no third speaker count in
   ``skipped.no_third_speaker``.

Every draw (B's piece and window, C, C's segment, the mixer's crops) comes from
``np.random.default_rng([seed, row_index, part])``, so a row gives the same numbers
whatever ``--max_items``. Per-item values and the summary are written as JSON to
``--out`` (undefined values as ``null``); a short table is printed. Exit status 2
with one message when the data folder, manifest, ``speakers.json`` or model
directory is missing or unusable.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mixing.mixers import LoudnessError, Mixer, db_to_gain, loudness
from mixing.online import load_speakers_json
from mixing.references import MIN_SEGMENT_SAMPLES, Segment, read_segment
from modules.audio import SAMPLE_RATE, AudioFileError, load_audio
from modules.files import FileError
from modules.metrics import si_sdr_graded

REPO_ROOT = Path(__file__).resolve().parent.parent

logger = logging.getLogger("conditioning_presence")

EXIT_BAD_INPUT = 2
REQUIRED_COLUMNS = (
    "ID", "mix_wav", "ref_wav", "target_wav", "target_speaker", "interferer_speaker",
    "interferer_file", "interferer_start", "interferer_stop", "interferer_offset",
)  # fmt: skip
PART_B_REF, PART_ABSENT = 0, 1


class UsageError(ValueError):
    """Missing or unusable inputs: one message, exit status 2."""


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


def read_manifest(data_folder: Path, split: str) -> list[dict]:
    """Rows of ``data_folder/<split>.csv`` (checked for the columns used here)."""
    if not data_folder.is_dir():
        raise UsageError(f"{data_folder}: data folder not found (run mixing/make_mixtures.py)")
    path = data_folder / f"{split}.csv"
    if not path.is_file():
        raise UsageError(f"{path}: manifest not found (is --split {split} in this folder?)")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UsageError(f"{path}: columns {missing} missing: not a make_mixtures manifest")
        rows = list(reader)
    if not rows:
        raise UsageError(f"{path}: no mixtures")
    return rows


def load_extractor(model_dir: Path, device: str = "cpu"):
    """The :class:`TargetSpeakerExtractor` of ``model_dir`` (UsageError if unusable)."""
    from modules.inference import ModelDirError, TargetSpeakerExtractor, check_model_dir

    try:
        check_model_dir(model_dir)
        tse = TargetSpeakerExtractor.from_hparams(source=model_dir, run_opts={"device": device})
    except ModelDirError as error:
        raise UsageError(str(error)) from None
    if tse.sample_rate != SAMPLE_RATE:
        raise UsageError(f"{model_dir}: model rate {tse.sample_rate} Hz, mixtures are 16 kHz")
    return tse


def _is_noisy(row: dict) -> bool:
    noise = (row.get("noise_file") or "").strip()
    return bool(noise) and noise.lower() != "nan"


def interferer_in_mix(row: dict, mix: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """B's signal as heard in the mixture, ``[T]``.

    ``mix - target`` without noise; with noise the interferer crop is read again and
    scaled and placed as the mixer did (``interferer_gain_db``, ``interferer_offset``).
    """
    if not _is_noisy(row):
        return mix - target
    segment = Segment(
        row["interferer_file"], int(row["interferer_start"]), int(row["interferer_stop"])
    )
    raw = read_segment(segment) * db_to_gain(float(row["interferer_gain_db"]))
    out = np.zeros(mix.shape[-1])
    offset = int(row["interferer_offset"])
    piece = raw[: max(0, mix.shape[-1] - offset)]
    out[offset : offset + len(piece)] = piece
    return torch.from_numpy(out.astype(np.float32))


def free_pieces(segments: list[Segment], used: Segment, min_samples: int) -> list[Segment]:
    """Pieces of ``segments`` that share no audio with ``used`` (at least ``min_samples``).

    A segment that overlaps ``used`` contributes its parts before and after it.

    Example
    -------
    >>> segs = [Segment("a", 0, 100), Segment("b", 0, 50)]
    >>> [(p.path, p.start, p.stop) for p in free_pieces(segs, Segment("a", 30, 60), 20)]
    [('a', 0, 30), ('a', 60, 100), ('b', 0, 50)]
    >>> free_pieces([Segment("a", 0, 100)], Segment("a", 10, 95), 20)
    []
    """
    pieces = []
    for seg in segments:
        if not _same_file_overlap(seg, used):
            candidates = [seg]
        else:
            candidates = [
                (seg.start, min(seg.stop, used.start)),
                (max(seg.start, used.stop), seg.stop),
            ]
            candidates = [Segment(seg.path, a, b) for a, b in candidates if b > a]
        pieces += [c for c in candidates if c.num_samples >= min_samples]
    return pieces


def _same_file_overlap(a: Segment, b: Segment) -> bool:
    """Overlap test that also matches the same file written as different path strings."""
    if a.path == b.path:
        return a.overlaps(b)
    try:
        same = Path(a.path).resolve() == Path(b.path).resolve()
    except OSError:
        same = False
    return same and a.start < b.stop and b.start < a.stop


def normalise(wav: np.ndarray, lufs: float, peak_limit: float = 0.99) -> torch.Tensor:
    """Loudness-normalise a reference to ``lufs`` then peak-protect it (as the mixer does)."""
    gain = db_to_gain(lufs - loudness(wav, SAMPLE_RATE, "reference"))
    peak = float(np.max(np.abs(wav))) * gain
    if peak > peak_limit:
        gain *= peak_limit / peak
    return torch.from_numpy((wav * gain).astype(np.float32))


def draw_interferer_reference(
    segments: list[Segment],
    used: Segment,
    length: int,
    min_samples: int,
    rng: np.random.Generator,
    lufs: float,
) -> tuple[torch.Tensor, Segment] | None:
    """A reference of B from audio not in the mixture, ``length`` samples at most."""
    pieces = free_pieces(segments, used, max(min_samples, MIN_SEGMENT_SAMPLES))
    if not pieces:
        return None
    piece = pieces[int(rng.integers(len(pieces)))]
    crop = min(length, piece.num_samples)
    start = int(rng.integers(piece.num_samples - crop + 1))
    chosen = Segment(piece.path, piece.start + start, piece.start + start + crop)
    return normalise(read_segment(chosen), lufs), chosen


def draw_absent_mixture(
    speakers: dict[str, list[Segment]],
    row: dict,
    interferer: torch.Tensor,
    rng: np.random.Generator,
    mixer: Mixer,
) -> tuple[torch.Tensor, str, Segment] | None:
    """B's signal + a third speaker C (Mixer, 0 dB): ``(mix, C, C's segment)`` or None."""
    excluded = {row["target_speaker"], row["interferer_speaker"]}
    others = sorted(s for s in speakers if s not in excluded)
    others = [
        s for s in others if any(seg.num_samples >= MIN_SEGMENT_SAMPLES for seg in speakers[s])
    ]
    if not others:
        return None
    third = others[int(rng.integers(len(others)))]
    usable = [s for s in speakers[third] if s.num_samples >= MIN_SEGMENT_SAMPLES]
    long_enough = [s for s in usable if s.num_samples >= interferer.shape[-1]]
    candidates = long_enough or usable
    segment = candidates[int(rng.integers(len(candidates)))]
    other = read_segment(segment)
    result = mixer.mix_arrays(interferer, other, other, rng)
    return result.mix, third, segment


# --------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _ranking_scores(values) -> np.ndarray:
    """Scores for ranking: undefined (None/NaN) -> -inf (ranked as 'absent')."""
    return np.array([-math.inf if v is None or math.isnan(v) else float(v) for v in values])


def roc_auc(positive, negative) -> float | None:
    """ROC AUC of scores separating ``positive`` from ``negative`` (rank statistic).

    Ties count one half; undefined scores rank lowest. None if a class is empty.

    Example
    -------
    >>> roc_auc([0.9, 0.8, 0.4], [0.1, 0.4])
    0.9166666666666666
    >>> roc_auc([1.0], [float("nan")]), roc_auc([], [1.0])
    (1.0, None)
    """
    pos, neg = _ranking_scores(positive), _ranking_scores(negative)
    if not len(pos) or not len(neg):
        return None
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):  # average ranks (1-based) over runs of equal scores
        stop = start
        while stop + 1 < len(scores) and sorted_scores[stop + 1] == sorted_scores[start]:
            stop += 1
        ranks[order[start : stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    n_pos, n_neg = len(pos), len(neg)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def best_threshold(positive, negative) -> tuple[float | None, float | None]:
    """``(threshold, accuracy)`` of the best rule "positive if score >= threshold".

    The threshold is halfway between the neighbouring scores on either side of it.

    Example
    -------
    >>> best_threshold([0.9, 0.8, 0.6], [0.1, 0.5])
    (0.55, 1.0)
    """
    pos, neg = _ranking_scores(positive), _ranking_scores(negative)
    if not len(pos) or not len(neg):
        return None, None
    values = np.unique(np.concatenate([pos, neg]))
    cuts = [*values, math.inf]
    accuracies = [((pos >= t).sum() + (neg < t).sum()) / (len(pos) + len(neg)) for t in cuts]
    best = int(np.argmax(accuracies))
    below = values[best - 1] if best > 0 else -math.inf
    cut = cuts[best]
    if math.isfinite(below) and math.isfinite(cut):
        threshold = (below + cut) / 2
    else:
        threshold = cut if math.isfinite(cut) else below
    threshold = float(threshold) if math.isfinite(threshold) else None
    return threshold, float(accuracies[best])


def _mean(values) -> float | None:
    kept = _finite(values)
    return float(np.mean(kept)) if kept else None


def _fraction(flags) -> float | None:
    kept = [bool(f) for f in flags if f is not None]
    return sum(kept) / len(kept) if kept else None


def _json_safe(value):
    """Non-finite floats -> None (strict JSON), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------


def extract(tse, mix: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """One extraction ``[T]`` as users get it, with its info (energy, presence score)."""
    return tse.extract(mix, ref, return_info=True)


def evaluate_item(tse, row: dict, index: int, speakers, args, mixer: Mixer) -> dict:
    """Both parts for one manifest row; the per-item record."""
    mix, target, ref_a = (
        load_audio(row[key], SAMPLE_RATE)[0] for key in ("mix_wav", "target_wav", "ref_wav")
    )
    if target.shape[-1] != mix.shape[-1]:
        raise AudioFileError(
            row["target_wav"],
            f"{target.shape[-1]} samples, mixture {mix.shape[-1]}: not the target of this mixture",
        )
    interferer = interferer_in_mix(row, mix, target)
    record = {
        "id": row["ID"],
        "target_speaker": row["target_speaker"],
        "interferer_speaker": row["interferer_speaker"],
        "duration_s": mix.shape[-1] / SAMPLE_RATE,
        "interferer_signal": "rebuilt from interferer_file" if _is_noisy(row) else "mix - target",
    }

    out_a, info_a = extract(tse, mix, ref_a)
    record["energy_db_present"] = info_a["energy_db"]
    record["presence_present"] = info_a["presence_cosine"]

    # 1. conditioning: the same mixture with a reference of the interferer
    used = Segment(
        row["interferer_file"], int(row["interferer_start"]), int(row["interferer_stop"])
    )
    drawn = draw_interferer_reference(
        speakers.get(row["interferer_speaker"], []),
        used,
        ref_a.shape[-1],
        tse.min_ref_samples,
        np.random.default_rng([args.seed, index, PART_B_REF]),
        args.lufs,
    )
    if drawn is None:
        record["interferer_ref"] = None
    else:
        ref_b, piece = drawn
        out_b = extract(tse, mix, ref_b)[0]
        mix_vs_a, mix_vs_b = si_sdr_graded(mix, target), si_sdr_graded(mix, interferer)
        scores = {
            "si_sdr_outA_A": si_sdr_graded(out_a, target),
            "si_sdr_outA_B": si_sdr_graded(out_a, interferer),
            "si_sdr_outB_B": si_sdr_graded(out_b, interferer),
            "si_sdr_outB_A": si_sdr_graded(out_b, target),
        }
        record.update(
            interferer_ref=piece.to_dict(),
            **scores,
            si_sdri_outA_A=scores["si_sdr_outA_A"] - mix_vs_a,
            si_sdri_outB_B=scores["si_sdr_outB_B"] - mix_vs_b,
            outA_closer_to_A=scores["si_sdr_outA_A"] > scores["si_sdr_outA_B"],
            outB_closer_to_B=scores["si_sdr_outB_B"] > scores["si_sdr_outB_A"],
            si_sdr_outB_vs_outA=si_sdr_graded(out_b, out_a),
            outputs_identical=bool(torch.equal(out_a, out_b)),
        )

    # 2. target absent: interferer + a third speaker, extracted with A's reference
    try:
        absent = draw_absent_mixture(
            speakers,
            row,
            interferer,
            np.random.default_rng([args.seed, index, PART_ABSENT]),
            mixer,
        )
    except (LoudnessError, AudioFileError) as error:
        logger.warning("%s: no target-absent mixture (%s)", row["ID"], error)
        absent, record["absent_error"] = None, str(error)
    if absent is None:
        record["third_speaker"] = None
    else:
        absent_mix, third, segment = absent
        info_absent = extract(tse, absent_mix, ref_a)[1]
        record.update(
            third_speaker=third,
            third_segment=segment.to_dict(),
            absent_duration_s=absent_mix.shape[-1] / SAMPLE_RATE,
            energy_db_absent=info_absent["energy_db"],
            presence_absent=info_absent["presence_cosine"],
        )
    return record


def summarise(items: list[dict]) -> dict:
    """Means, fractions, AUCs and best thresholds over the per-item records."""
    cond = [r for r in items if r.get("interferer_ref")]

    def column(rows, key):
        return [r.get(key) for r in rows]

    conditioning = {"items": len(cond)}
    for key in (
        "si_sdr_outA_A",
        "si_sdr_outA_B",
        "si_sdr_outB_B",
        "si_sdr_outB_A",
        "si_sdri_outA_A",
        "si_sdri_outB_B",
        "si_sdr_outB_vs_outA",
    ):
        conditioning[key] = _mean(column(cond, key))
    conditioning["frac_outA_closer_to_A"] = _fraction(column(cond, "outA_closer_to_A"))
    conditioning["frac_outB_closer_to_B"] = _fraction(column(cond, "outB_closer_to_B"))
    conditioning["frac_both_closer"] = _fraction(
        [r["outA_closer_to_A"] and r["outB_closer_to_B"] for r in cond]
    )
    conditioning["outputs_identical"] = sum(bool(r.get("outputs_identical")) for r in cond)

    absent = [r for r in items if r.get("third_speaker")]
    presence = {"present_items": len(items), "absent_items": len(absent)}
    for measure, present_key, absent_key in (
        ("energy_db", "energy_db_present", "energy_db_absent"),
        ("presence", "presence_present", "presence_absent"),
    ):
        pos, neg = column(items, present_key), column(absent, absent_key)
        threshold, accuracy = best_threshold(pos, neg)
        presence[measure] = {
            "present_mean": _mean(pos),
            "absent_mean": _mean(neg),
            "present_undefined": len(pos) - len(_finite(pos)),
            "absent_undefined": len(neg) - len(_finite(neg)),
            "auc": roc_auc(pos, neg),
            "best_threshold": threshold,
            "best_accuracy": accuracy,
        }
    return {"conditioning": conditioning, "presence": presence}


def format_table(report: dict) -> str:
    """The short plain-text summary printed at the end."""
    s, skipped = report["summary"], report["skipped"]
    c, p = s["conditioning"], s["presence"]

    def num(value, fmt="{:7.2f}"):
        return f"{'-':>7}" if value is None else fmt.format(value)

    def pct(value):
        return "-" if value is None else f"{100 * value:.0f} %"

    lines = [
        f"Conditioning: {c['items']} items ({skipped['no_other_interferer_audio']} skipped: no "
        "other audio of the interferer); SI-SDR in dB",
        f"{'':22} {'vs A':>7} {'vs B':>7} {'SI-SDRi':>8}",
        f"{'out_A (ref of A)':22} {num(c['si_sdr_outA_A'])} {num(c['si_sdr_outA_B'])} "
        f"{num(c['si_sdri_outA_A'])}",
        f"{'out_B (ref of B)':22} {num(c['si_sdr_outB_A'])} {num(c['si_sdr_outB_B'])} "
        f"{num(c['si_sdri_outB_B'])}",
        f"out_A closer to A: {pct(c['frac_outA_closer_to_A'])}, out_B closer to B: "
        f"{pct(c['frac_outB_closer_to_B'])}, both: {pct(c['frac_both_closer'])}",
        f"SI-SDR(out_B vs out_A): {num(c['si_sdr_outB_vs_outA'], '{:.2f}')} dB "
        f"(identical outputs: {c['outputs_identical']})",
        "",
        f"Target presence: {p['present_items']} present, {p['absent_items']} absent "
        f"({skipped['no_third_speaker']} without a third speaker)",
        f"{'':20} {'energy vs mix (dB)':>19} {'presence cosine':>16}",
    ]
    e, q = p["energy_db"], p["presence"]
    for label, key, fmt in (
        ("present (mean)", "present_mean", "{:.2f}"),
        ("absent (mean)", "absent_mean", "{:.2f}"),
        ("ROC AUC", "auc", "{:.3f}"),
    ):
        lines.append(f"{label:20} {num(e[key], fmt):>19} {num(q[key], fmt):>16}")
    best = [
        f"{pct(m['best_accuracy'])} @ {num(m['best_threshold'], '{:.3g}').strip()}" for m in (e, q)
    ]
    lines.append(f"{'best threshold acc.':20} {best[0]:>19} {best[1]:>16}")
    return "\n".join(lines)


def run(args) -> dict:
    """Check the inputs, evaluate every item, return the report."""
    data_folder = Path(args.data_folder).expanduser()
    rows = read_manifest(data_folder, args.split)
    speakers = load_speakers_json(data_folder / args.split / "speakers.json")
    model_dir = Path(args.model_dir).expanduser()
    if not model_dir.exists():
        raise UsageError(f"{model_dir}: model directory not found")
    tse = load_extractor(model_dir, args.device)
    if args.max_items is not None:
        rows = rows[: args.max_items]
    mixer = Mixer(lufs=args.lufs, ratio_db=0.0, length_mode="min")

    items = []
    for index, row in enumerate(tqdm(rows, desc="items", unit="item", mininterval=1.0)):
        items.append(evaluate_item(tse, row, index, speakers, args, mixer))
    report = {
        "data_folder": str(data_folder.resolve()),
        "split": args.split,
        "model_dir": str(model_dir.resolve()),
        "seed": args.seed,
        "lufs": args.lufs,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "items": len(items),
        "skipped": {
            "no_other_interferer_audio": sum(r["interferer_ref"] is None for r in items),
            "no_third_speaker": sum(r["third_speaker"] is None for r in items),
        },
        "summary": summarise(items),
        "per_item": items,
    }
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_folder", required=True, help="make_mixtures.py output folder")
    parser.add_argument("--split", default="test", help="split to use (default: test)")
    parser.add_argument("--model_dir", required=True, help="trained model directory")
    parser.add_argument("--max_items", type=int, default=None, help="first N mixtures only")
    parser.add_argument("--out", default="results/bench/conditioning.json", help="JSON report")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws")
    parser.add_argument(
        "--lufs",
        type=float,
        default=-20.0,
        help="loudness of B's reference and of the absent mixtures",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    os.environ.setdefault("SB_LOG_LEVEL", "WARNING")  # speechbrain's own loggers
    for name in ("speechbrain", "mixing", "modules"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.max_items is not None and args.max_items < 1:
        parser.error("--max_items must be >= 1")
    torch.set_num_threads(max(1, args.threads))
    torch.set_flush_denormal(True)
    try:
        report = run(args)
    except (UsageError, FileError) as error:
        logger.error("%s", error)
        return EXIT_BAD_INPUT
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    print(format_table(report))
    logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
