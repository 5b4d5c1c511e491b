#!/usr/bin/env python3
"""Score a target speaker extractor, or a baseline, on a directory of test triplets.

Usage::

    python evaluate.py hparams/test.yaml --test_dir DIR --model_dir MODEL [--device cuda]
    python evaluate.py hparams/test.yaml --test_dir DIR --baseline mixture|target
    python evaluate.py hparams/test.yaml --test_dir DIR --model_dir MODEL --save_dir EST

Options (any key of the yaml file can be overridden as ``--key value``): ``--save_dir``
writes the estimates as ``<ID>-est.wav``; ``--skip_bad`` scores the usable triplets and
reports the bad ones as skipped; ``--output_folder`` is where ``per_utterance.csv`` and
``summary.json`` go; ``--metrics "[si_sdr, pesq]"`` picks metrics;
``--compare_baselines "[mixture]"`` scores the mixture on the same items and prints one
table with a column per system.

Beyond the graded metrics (``modules/evaluation_extras.py``): every run with targets
reports the **wrong-speaker** rate (the estimate closer by SI-SDR to mixture minus
target than to the target) and **breakdowns** by gender pair, target-to-interferer
ratio and mixture length (``--ref_lengths "[0.5, 1, 2, 4, 8]"`` adds the same items
with their references cut shorter); ``--asr`` (PocketSphinx, or ``--asr MODEL_DIR``
for a local speechbrain ASR model) adds WER/CER of target, mixture and estimate
against ``TEST_DIR/transcripts.tsv`` or, where an item has none, the recogniser's
output on the target; ``--absent`` scores a target-absent test dir (no targets; e.g.
``make_mixtures.py --num_test_absent``): output energy re mixture, near-silent rate
(``--silence_db``), presence score; ``--html N`` writes a listening page
(``OUTPUT_FOLDER/listening/index.html``) with the N best, median and worst items.

The whole test directory is checked before anything is scored, with the checks of
``extract.py`` (missing counterparts; unreadable, stereo, empty or silent files; a
mixture or reference shorter than the model takes; a target not at 16 kHz or of
another length than its mixture): a bad file stops the run with one message listing
every bad file, nothing written, unless ``--skip_bad`` is given, which skips them and
anything the model refuses later. ``--save_dir`` and ``--output_folder`` are checked
for writability before the first item. ``summary.json`` is written last, atomically,
and only for a complete run; an interrupted run leaves none (a previous one is removed
at the start).

A failed estimate (all zero or non-finite) is not left out of the means: every
metric of that item is scored at its floor (``modules.metrics.FLOORS``), and the
table and ``summary.json`` say how many items failed.

Exit status (every command-line tool of the project): 0 done, 2 bad input or usage
(one line ``evaluate.py: error: FILE: problem``; a list of problems follows it for a
bad test directory), 1 internal failure, 130 interrupted.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import sys
from pathlib import Path

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from modules.audio import SAMPLE_RATE, AudioFileError, save_audio
from modules.cli import (
    EXIT_BAD_INPUT,  # noqa: F401 - the status evaluate.main returns for bad input
    EXIT_INTERRUPTED,
    BadInput,
    check_device,
    check_writable_dir,
    entry_point,
    is_inside,
    load_hparams,
    parse_hparams_args,
)
from modules.dataio import MIX_DIR, REF_DIR, TARGET_DIR, CustomDirDataset, InputLimits, Problem
from modules.evaluation_extras import ExtraEvaluation
from modules.files import atomic_write_text
from modules.metrics import METRICS, MetricSummary, compute_metrics, format_comparison

logger = logging.getLogger("evaluate")

BASELINES = ("mixture", "target")
BASELINE_SIGNALS = {"mixture": "mix", "target": "target"}
PATH_KEYS = ("test_dir", "save_dir", "model_dir", "output_folder")


class ItemRefused(Exception):
    """The model refused one item (e.g. a mixture shorter than its receptive field)."""


def parse_arguments(argv: list[str]) -> tuple[Path, dict]:
    """Split ``hparams.yaml --key value ...`` into the yaml path and checked overrides.

    Values are read as YAML (``null``, ``true``, ``[a, b]``, numbers); a bare
    ``--flag`` means ``True``; path options stay strings. Unknown keys and values of
    the wrong type are refused (see :func:`modules.cli.parse_hparams_args`).

    Example
    -------
    >>> parse_arguments(["hparams/test.yaml", "--test_dir", "d", "--skip_bad",
    ...                  "--metrics=[si_sdr, pesq]"])
    (PosixPath('hparams/test.yaml'), {'test_dir': 'd', 'skip_bad': True, 'metrics': ['si_sdr', 'pesq']})
    """  # noqa: E501
    hparams_file, overrides, _ = parse_hparams_args(argv, __doc__, string_keys=PATH_KEYS)
    return hparams_file, overrides


def _metric_list(value) -> list[str]:
    """``[si_sdr, pesq]``, ``si_sdr`` or ``si_sdr,pesq`` -> a list of metric names."""
    if isinstance(value, str):
        value = value.strip("[]").replace(",", " ").split()
    if not isinstance(value, (list, tuple)) or not value:
        raise BadInput(f"--metrics: expected a list such as [si_sdr, pesq], got {value!r}")
    return [str(name).strip() for name in value]


def load_hparams_checked(hparams_file: Path, overrides: dict) -> dict:
    """Load the yaml with the overrides and check every option before any work."""
    hparams = load_hparams(hparams_file, overrides)
    hparams["metrics"] = _metric_list(hparams["metrics"])
    unknown = [name for name in hparams["metrics"] if name not in METRICS]
    if unknown:
        raise BadInput(f"--metrics: unknown metric(s) {', '.join(unknown)}; choose from "
                       f"{', '.join(METRICS)}")
    if hparams["baseline"] is not None and hparams["baseline"] not in BASELINES:
        raise BadInput(
            f"--baseline must be one of {', '.join(BASELINES)}, got {hparams['baseline']!r}"
        )
    if hparams["baseline"] is None and not hparams["model_dir"]:
        raise BadInput("give --model_dir MODEL to score a model, or --baseline mixture|target")
    if hparams["baseline"] is not None and hparams["model_dir"]:
        raise BadInput("give either --model_dir or --baseline, not both")
    if hparams["sample_rate"] != SAMPLE_RATE:
        raise BadInput(
            f"the metrics are defined at {SAMPLE_RATE} Hz: sample_rate must be {SAMPLE_RATE}"
        )
    compared = hparams["compare_baselines"] or []
    if isinstance(compared, str):
        compared = [compared]
    if any(name not in BASELINES for name in compared):
        raise BadInput(f"--compare_baselines: choose from {', '.join(BASELINES)}, got "
                       f"{compared!r}")
    hparams["compare_baselines"] = [name for name in compared if name != hparams["baseline"]]
    if not isinstance(hparams["html"], int) or hparams["html"] < 0:
        raise BadInput(f"--html: expected a number of items >= 0, got {hparams['html']!r}")
    lengths = hparams["ref_lengths"] or []
    if any(not isinstance(v, (int, float)) or not v > 0 for v in lengths):
        raise BadInput(f"--ref_lengths: expected seconds > 0 such as [1, 2, 4], got {lengths!r}")
    check_device(str(hparams["device"]))
    return hparams


def check_outputs(hparams: dict) -> None:
    """Refuse a missing test directory, and output folders that cannot be written or
    that lie inside the test data (before the model is loaded)."""
    test_dir = Path(hparams["test_dir"])
    if not test_dir.is_dir():
        what = "is not a directory" if test_dir.exists() else "not found"
        raise BadInput(f"{test_dir}: test directory {what}")
    for option in ("save_dir", "output_folder"):
        if not hparams[option]:
            continue
        folder = Path(hparams[option])
        for inputs in (MIX_DIR, REF_DIR, TARGET_DIR):
            if is_inside(folder, test_dir / inputs):
                raise BadInput(f"{folder}: --{option} is inside the test directory's "
                               f"{inputs}/: choose another folder")
        check_writable_dir(folder, f"--{option}")


def system_name(hparams: dict) -> str:
    """``baseline_mixture``, ``baseline_target`` or the model folder's name."""
    if hparams["baseline"]:
        return f"baseline_{hparams['baseline']}"
    return Path(hparams["model_dir"]).resolve().name


def make_estimator(hparams: dict):
    """``(item -> (est [T], info), InputLimits)`` for the baseline or model of ``hparams``.

    ``info`` is the extractor's (``energy_db`` before level matching,
    ``presence_cosine``, ...) for a model, ``{}`` for a baseline.

    A baseline takes what the default model limits allow, so a test directory is
    checked the same way whatever is scored.
    """
    if hparams["baseline"]:
        signal = BASELINE_SIGNALS[hparams["baseline"]]
        return (lambda item: (item[signal], {})), InputLimits()

    model_dir = Path(hparams["model_dir"])
    if not model_dir.is_dir():
        raise BadInput(f"{model_dir}: model directory not found")
    device = hparams["device"]
    from modules.inference import TargetSpeakerExtractor

    try:
        extractor = TargetSpeakerExtractor.from_hparams(
            source=str(model_dir), savedir=str(model_dir), run_opts={"device": device}
        )
    except BadInput:
        raise
    except (OSError, ValueError, KeyError) as error:
        raise BadInput(f"{model_dir}: cannot load the model ({error})") from None

    def estimate(item):
        # The one inference path (whole or chunked, input level, output level, peak
        # limit): exactly what extract.py gives users.
        try:
            return extractor.extract(item["mix"], item["ref"], return_info=True)
        except ValueError as error:  # input the model cannot take, e.g. too short
            raise ItemRefused(str(error)) from None

    return estimate, InputLimits.of(extractor)


def _finite_or_none(value: float):
    return value if math.isfinite(value) else None


def check_test_dir(hparams: dict, limits: InputLimits) -> tuple[CustomDirDataset, list]:
    """Check the whole test directory; refuse it (one message) unless ``skip_bad``."""
    test_dir = Path(hparams["test_dir"])
    dataset = CustomDirDataset(test_dir, hparams["sample_rate"], limits=limits)
    logger.info("Checking %d mixture(s) in %s", len(dataset), test_dir)
    problems = dataset.check()
    for note in dataset.notes:
        logger.info("notice: %s", note)
    listing = "".join(f"\n  {problem}" for problem in problems)
    if problems and not hparams["skip_bad"]:
        raise BadInput(
            f"{test_dir}: {len(problems)} problem(s); nothing was scored. Fix or remove "
            f"these files, or rerun with --skip_bad to score the rest:{listing}"
        )
    if problems:
        dropped = dataset.drop_bad()
        logger.warning("skipping %d bad item(s) (--skip_bad):%s", len(dropped), listing)
    if len(dataset) == 0:
        raise BadInput(f"{test_dir}: no usable triplets to evaluate{listing}")
    if hparams["absent"] and dataset.has_targets:
        raise BadInput(f"{test_dir}: --absent is for test dirs without the reference speaker, "
                       "so without targets/ (make_mixtures.py --num_test_absent writes one)")
    if not dataset.has_targets and not hparams["absent"]:
        if not hparams["save_dir"]:
            hint = (" (a target-absent test dir? add --absent)"
                    if (test_dir.parent / f"{test_dir.name}.csv").is_file() else "")
            raise BadInput(
                f"{test_dir}: no targets/ folder, so nothing can be scored: give "
                f"--save_dir DIR to save the estimates{hint}"
            )
        if hparams["baseline"] == "target":
            raise BadInput(f"{test_dir}: --baseline target needs {test_dir}/targets/")
    return dataset, problems


def _skip_or_refuse(hparams: dict, path: str, item_id: str, reason: str, problems: list):
    """An item that fails during scoring: skipped with ``--skip_bad``, else the run stops."""
    if not hparams["skip_bad"]:
        raise BadInput(f"{path}: {reason}; no summary written. Rerun with --skip_bad to skip "
                       "such items.")
    logger.warning("skipping %s: %s", path, reason)
    problems.append(Problem(path, reason, item_id))


def evaluate(hparams: dict) -> dict:
    """Check, estimate, score and write the outputs; returns the summary dict."""
    check_outputs(hparams)
    estimate, limits = make_estimator(hparams)
    dataset, problems = check_test_dir(hparams, limits)
    name = system_name(hparams)
    test_dir = Path(hparams["test_dir"])
    output_folder = Path(
        hparams["output_folder"] or Path("results", "eval", name, test_dir.resolve().name)
    )
    check_writable_dir(output_folder, "--output_folder")
    summary_path = output_folder / "summary.json"
    csv_path = output_folder / "per_utterance.csv"
    # A summary left by an earlier run must not pass for this run's if it is interrupted.
    summary_path.unlink(missing_ok=True)
    csv_path.unlink(missing_ok=True)
    save_dir = Path(hparams["save_dir"]) if hparams["save_dir"] else None
    metrics = list(hparams["metrics"]) if dataset.has_targets else []
    extras = ExtraEvaluation(hparams, test_dir, dataset.has_targets, refused=(ItemRefused,))

    scores = MetricSummary(metrics)
    # Baselines scored on the same items, for one table with a column per system.
    compared = {name: MetricSummary(metrics) for name in hparams["compare_baselines"]}
    if compared and not metrics:
        raise BadInput(f"{test_dir}: --compare_baselines needs targets/ to score against")
    problems = list(problems)
    processed = limited = chunked = 0
    with logging_redirect_tqdm():
        for index in tqdm(range(len(dataset)), desc=f"{name}", unit="utt", file=sys.stderr):
            item_id = dataset.ids[index]
            path = str(dataset.mix_paths[item_id])
            try:
                item = dataset[index]
                est, info = estimate(item)
            except AudioFileError as error:  # found on decoding (silence, NaN, ...)
                _skip_or_refuse(hparams, error.path, item_id, error.problem, problems)
                continue
            except ItemRefused as error:
                _skip_or_refuse(hparams, path, item_id, f"refused by the model: {error}",
                                problems)
                continue
            processed += 1
            limited += bool(info.get("peak_limited"))
            chunked += bool(info.get("chunked"))
            if save_dir is not None:
                save_audio(save_dir / f"{item['id']}-est.wav", est, hparams["sample_rate"])
            item_scores = None
            if metrics:
                item_scores = compute_metrics(
                    est, item["target"], item["mix"], metrics, utt_id=item["id"]
                )
                scores.add(item_scores, utt_id=item["id"])
            for baseline, baseline_scores in compared.items():
                baseline_scores.add(compute_metrics(
                    item[BASELINE_SIGNALS[baseline]], item["target"], item["mix"], metrics,
                    utt_id=item["id"],
                ), utt_id=item["id"])
            extras.add(item, est, info, item_scores, estimate)

    if processed == 0:
        raise BadInput(f"{test_dir}: every item was refused; no summary written")
    if not hparams["baseline"]:  # the extractor's per-item notices are at debug level
        logger.info("%d of %d estimate(s) peak-limited (scaled down so they do not clip), "
                    "%d chunked (longer than the model's max_whole_seconds)",
                    limited, processed, chunked)
    summary = {
        "complete": True,
        "test_dir": str(test_dir.resolve()),
        "system": name,
        "baseline": hparams["baseline"],
        "model_dir": str(Path(hparams["model_dir"]).resolve()) if hparams["model_dir"] else None,
        "items": processed,
        "scored": len(scores),
        "failed": scores.failed_count(),
        "skipped": len({problem.item_id for problem in problems if problem.item_id}),
        "problems": [
            {"id": problem.item_id, "file": problem.path, "problem": problem.reason}
            for problem in problems
        ],
        "metrics": {
            metric: {key: _finite_or_none(value) if isinstance(value, float) else value
                     for key, value in stats.items()}
            for metric, stats in scores.summarize().items()
        },
        "means": {metric: _finite_or_none(scores.mean(metric)) for metric in metrics},
        "baseline_means": {
            baseline: {metric: _finite_or_none(baseline_scores.mean(metric))
                       for metric in metrics}
            for baseline, baseline_scores in compared.items()
        },
        "peak_limited": limited,
        "chunked": chunked,
        "save_dir": str(save_dir.resolve()) if save_dir else None,
        "per_utterance_csv": str(csv_path.resolve()) if metrics or extras.columns else None,
        **extras.summary(),
    }
    if metrics or extras.columns:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["ID", *metrics, *extras.columns],
                                lineterminator="\n")
        writer.writeheader()
        ids = [row["ID"] for row in scores.rows] if metrics else list(extras.rows)
        by_id = {row["ID"]: row for row in scores.rows}
        for item_id in ids:
            row = by_id.get(item_id, {})
            writer.writerow({"ID": item_id, **{
                name: f"{row.get(name, math.nan):.6f}" for name in metrics},
                **{name: _csv_value(value) for name, value in extras.rows[item_id].items()}})
        atomic_write_text(csv_path, buffer.getvalue())
    if hparams["html"]:
        summary["listening_page"] = str(_write_page(hparams, dataset, estimate, scores,
                                                    extras, summary, output_folder))
    atomic_write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    if compared:
        table = format_comparison({**compared, name: scores})
    else:
        table = scores.format_table() if metrics else ""
    summary["_table"] = "\n\n".join(part for part in (table, extras.format_table()) if part)
    summary["_summary_path"] = str(summary_path)
    return summary


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def _write_page(hparams, dataset, estimate, scores, extras, summary, output_folder) -> Path:
    """The listening page: estimates of the chosen items are computed again."""
    index_of = {item_id: index for index, item_id in enumerate(dataset.ids)}

    def signals(item_id):
        item = dataset[index_of[item_id]]
        return {"mixture": item["mix"], "reference": item["ref"],
                "estimate": estimate(item)[0], "target": item.get("target")}

    overview = {"system": summary["system"], "test dir": summary["test_dir"],
                "items": summary["items"], "skipped": summary["skipped"],
                **{f"mean {k}": v for k, v in summary["means"].items()},
                **{f"{k} rate": v["rate"] for k, v in summary["failures"].items()}}
    page = extras.write_page(output_folder / "listening", scores.rows, signals,
                             int(hparams["html"]), overview)
    return page.resolve()


def report(summary: dict) -> str:
    """The final human-readable table."""
    lines = [
        f"System {summary['system']} on {summary['test_dir']}: {summary['scored']} of "
        f"{summary['items'] + summary['skipped']} item(s) scored, "
        f"{summary['skipped']} skipped as bad",
    ]
    if summary["_table"]:
        lines.append(summary["_table"])
    elif summary["save_dir"]:
        lines.append(f"No targets/: {summary['items']} estimate(s) saved, nothing scored")
    if summary["save_dir"]:
        lines.append(f"Estimates: {summary['save_dir']}")
    if summary["per_utterance_csv"]:
        lines.append(f"Per utterance: {summary['per_utterance_csv']}")
    if summary.get("listening_page"):
        lines.append(f"Listening page: {summary['listening_page']}")
    lines.append(f"Summary: {summary['_summary_path']}")
    return "\n".join(lines)


def _main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("speechbrain").setLevel(logging.WARNING)
    # One line per item (peak limited, chunked) would bury the table: counted instead.
    logging.getLogger("modules.inference").setLevel(logging.WARNING)
    hparams_file, overrides = parse_arguments(argv)
    hparams = load_hparams_checked(hparams_file, overrides)
    try:
        summary = evaluate(hparams)
    except KeyboardInterrupt:
        logger.error("interrupted: no summary written")
        return EXIT_INTERRUPTED
    print(report(summary))
    return 0


main = entry_point(_main, "evaluate.py")


if __name__ == "__main__":
    # Trained weights produce denormal floats that slow CPU convolutions >10x.
    torch.set_flush_denormal(True)
    raise SystemExit(main())
