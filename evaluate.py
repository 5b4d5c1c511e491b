#!/usr/bin/env python3
"""Score a target speaker extractor, or a baseline, on a directory of test triplets.

Usage::

    python evaluate.py hparams/test.yaml --test_dir DIR --model_dir MODEL [--device cuda]
    python evaluate.py hparams/test.yaml --test_dir DIR --baseline mixture|target
    python evaluate.py hparams/test.yaml --test_dir DIR --model_dir MODEL --save_dir EST

Options (any key of the yaml file can be overridden as ``--key value``): ``--save_dir``
writes the estimates as ``<ID>-est.wav``; ``--skip_bad`` scores the usable triplets and
reports the bad ones as skipped; ``--output_folder`` is where ``per_utterance.csv`` and
``summary.json`` go; ``--metrics "[si_sdr, pesq]"`` picks metrics.

The whole test directory is checked before anything is scored: a bad file stops the run
with one message listing every bad file (exit status 2, nothing written) unless
``--skip_bad`` is given. ``summary.json`` is written last, atomically, and only for a
complete run; an interrupted run leaves none (a previous one is removed at the start).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
import sys
from pathlib import Path

import torch
import yaml
from hyperpyyaml import load_hyperpyyaml
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from modules.audio import AudioFileError, save_audio
from modules.dataio import CustomDirDataset, Problem
from modules.files import atomic_write_text
from modules.metrics import METRICS, MetricSummary, compute_metrics

logger = logging.getLogger("evaluate")

BASELINES = ("mixture", "target")
PATH_KEYS = ("test_dir", "save_dir", "model_dir", "output_folder")
EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130


class UsageError(Exception):
    """Bad command line or bad input: reported as one clean message, exit status 2."""


class ItemRefused(Exception):
    """The model refused one item (e.g. a mixture shorter than its receptive field)."""


class HelpRequested(Exception):
    """``-h`` / ``--help``: show the usage and exit 0."""


def parse_arguments(argv: list[str]) -> tuple[Path, dict]:
    """Split ``hparams.yaml --key value ...`` into the yaml path and an overrides dict.

    Values are read as YAML (``null``, ``true``, ``[a, b]``, numbers); a bare
    ``--flag`` means ``True``. Path options always stay strings.

    Example
    -------
    >>> parse_arguments(["hparams/test.yaml", "--test_dir", "d", "--skip_bad",
    ...                  "--metrics=[si_sdr, pesq]"])
    (PosixPath('hparams/test.yaml'), {'test_dir': 'd', 'skip_bad': True, 'metrics': ['si_sdr', 'pesq']})
    """  # noqa: E501
    if any(token in ("-h", "--help") for token in argv):
        raise HelpRequested
    if not argv:
        raise UsageError(__doc__.split("Options")[0].strip())
    if argv[0].startswith("--"):
        raise UsageError("the hparams yaml file comes first: python evaluate.py "
                         "hparams/test.yaml --test_dir DIR ...")
    overrides: dict = {}
    rest = list(argv[1:])
    while rest:
        token = rest.pop(0)
        if not token.startswith("--") or token == "--":
            raise UsageError(f"unexpected argument {token!r}: options are --key value")
        key, has_value, value = token[2:].partition("=")
        if not has_value:
            if rest and not rest[0].startswith("--"):
                value = rest.pop(0)
            else:
                value = "true"
        if key in PATH_KEYS:
            overrides[key] = None if value in ("null", "None", "") else value
            continue
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            overrides[key] = value
    return Path(argv[0]), overrides


def load_hparams(hparams_file: Path, overrides: dict) -> dict:
    """Load the yaml with the overrides, turning every mistake into a :class:`UsageError`."""
    if not hparams_file.is_file():
        raise UsageError(f"hparams file {hparams_file} not found")
    try:
        with open(hparams_file) as fin:
            hparams = load_hyperpyyaml(fin, overrides)
    except KeyError as error:
        match = re.match(r"Override '(.+)' not found in: \[(.*)\]", str(error.args[0]))
        if match is None:
            raise UsageError(f"{hparams_file}: {error}") from None
        known = ", ".join(f"--{key.strip(chr(39))}" for key in match.group(2).split(", "))
        raise UsageError(f"unknown option --{match.group(1)} (options: {known})") from None
    except ValueError as error:
        message = str(error)
        if "PLACEHOLDER" in message:
            key = message.split("'")[1] if "'" in message else message
            raise UsageError(f"--{key} is required") from None
        raise UsageError(f"{hparams_file}: {message}") from None
    unknown = [name for name in hparams["metrics"] if name not in METRICS]
    if unknown:
        raise UsageError(f"unknown metric(s) {unknown}: choose from {list(METRICS)}")
    if hparams["baseline"] is not None and hparams["baseline"] not in BASELINES:
        raise UsageError(
            f"--baseline must be one of {', '.join(BASELINES)}, got {hparams['baseline']!r}"
        )
    if hparams["baseline"] is None and not hparams["model_dir"]:
        raise UsageError("give --model_dir MODEL to score a model, or --baseline mixture|target")
    if hparams["baseline"] is not None and hparams["model_dir"]:
        raise UsageError("give either --model_dir or --baseline, not both")
    if hparams["sample_rate"] != 16000:
        raise UsageError("the metrics are defined at 16 kHz: sample_rate must be 16000")
    return hparams


def system_name(hparams: dict) -> str:
    """``baseline_mixture``, ``baseline_target`` or the model folder's name."""
    if hparams["baseline"]:
        return f"baseline_{hparams['baseline']}"
    return Path(hparams["model_dir"]).resolve().name


def make_estimator(hparams: dict):
    """A function ``item -> est [T]`` for the baseline or the model of ``hparams``."""
    if hparams["baseline"] == "mixture":
        return lambda item: item["mix"]
    if hparams["baseline"] == "target":
        return lambda item: item["target"]

    model_dir = Path(hparams["model_dir"])
    if not model_dir.is_dir():
        raise UsageError(f"model directory {model_dir} not found")
    device = hparams["device"]
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device} asked for, but no CUDA device is available")
    try:
        from modules.inference import TargetSpeakerExtractor
    except ImportError as error:
        raise UsageError(f"cannot import the model API (modules.inference): {error}") from None
    try:
        extractor = TargetSpeakerExtractor.from_hparams(
            source=str(model_dir), savedir=str(model_dir), run_opts={"device": device}
        )
    except (OSError, ValueError, KeyError, AudioFileError) as error:
        raise UsageError(f"cannot load the model from {model_dir}: {error}") from None

    def estimate(item):
        try:
            with torch.no_grad():
                est = extractor.extract_batch(
                    item["mix"][None].to(device), torch.ones(1), item["ref"][None].to(device),
                    torch.ones(1),
                )[0]
        except ValueError as error:  # input the model cannot take, e.g. too short
            raise ItemRefused(str(error)) from None
        # What extract.py gives users: the mixture's loudness, never clipping. The raw
        # level is arbitrary (scale-invariant loss); every metric here ignores the scale.
        return extractor.match_level(est.detach().cpu(), item["mix"])[0]

    return estimate


def _finite_or_none(value: float):
    return value if math.isfinite(value) else None


def check_test_dir(hparams: dict) -> tuple[CustomDirDataset, list]:
    """Check the whole test directory; refuse it (one message) unless ``skip_bad``."""
    test_dir = Path(hparams["test_dir"])
    if not test_dir.is_dir():
        what = "is not a directory" if test_dir.exists() else "not found"
        raise UsageError(f"test directory {test_dir} {what}")
    dataset = CustomDirDataset(test_dir, hparams["sample_rate"])
    logger.info("Checking %d mixture(s) in %s", len(dataset), test_dir)
    problems = dataset.check()
    for note in dataset.notes:
        logger.info("notice: %s", note)
    if problems and not hparams["skip_bad"]:
        listing = "\n".join(f"  {problem}" for problem in problems)
        raise UsageError(
            f"{test_dir} has {len(problems)} problem(s); nothing was scored. Fix or remove "
            f"these files, or rerun with --skip_bad to score the rest:\n{listing}"
        )
    if problems:
        dropped = dataset.drop_bad()
        logger.warning("skipping %d bad item(s) (--skip_bad):%s", len(dropped),
                       "".join(f"\n  {problem}" for problem in problems))
    if len(dataset) == 0:
        listing = "".join(f"\n  {problem}" for problem in problems)
        raise UsageError(f"{test_dir}: no usable triplets to evaluate{listing}")
    if not dataset.has_targets:
        if not hparams["save_dir"]:
            raise UsageError(
                f"{test_dir} has no targets/ folder, so nothing can be scored: give "
                "--save_dir DIR to save the estimates"
            )
        if hparams["baseline"] == "target":
            raise UsageError(f"--baseline target needs {test_dir}/targets/")
    return dataset, problems


def evaluate(hparams: dict) -> dict:
    """Check, estimate, score and write the outputs; returns the summary dict."""
    dataset, problems = check_test_dir(hparams)
    estimate = make_estimator(hparams)
    name = system_name(hparams)
    test_dir = Path(hparams["test_dir"])
    output_folder = Path(
        hparams["output_folder"] or Path("results", "eval", name, test_dir.resolve().name)
    )
    summary_path = output_folder / "summary.json"
    csv_path = output_folder / "per_utterance.csv"
    # A summary left by an earlier run must not pass for this run's if it is interrupted.
    summary_path.unlink(missing_ok=True)
    csv_path.unlink(missing_ok=True)
    save_dir = Path(hparams["save_dir"]) if hparams["save_dir"] else None
    metrics = list(hparams["metrics"]) if dataset.has_targets else []

    scores = MetricSummary(metrics)
    problems = list(problems)
    processed = 0
    with logging_redirect_tqdm():
        for index in tqdm(range(len(dataset)), desc=f"{name}", unit="utt", file=sys.stderr):
            item = dataset[index]
            try:
                est = estimate(item)
            except ItemRefused as error:
                path = str(dataset.mix_paths[item["id"]])
                if not hparams["skip_bad"]:
                    raise UsageError(
                        f"{path}: the model refused it ({error}); no summary written. "
                        "Rerun with --skip_bad to skip such items."
                    ) from None
                logger.warning("skipping %s: the model refused it (%s)", path, error)
                problems.append(Problem(path, f"refused by the model: {error}", item["id"]))
                continue
            processed += 1
            if save_dir is not None:
                save_audio(save_dir / f"{item['id']}-est.wav", est, hparams["sample_rate"])
            if metrics:
                scores.add(compute_metrics(
                    est, item["target"], item["mix"], metrics, utt_id=item["id"]
                ), utt_id=item["id"])

    if processed == 0:
        raise UsageError(f"{test_dir}: every item was refused; no summary written")
    summary = {
        "complete": True,
        "test_dir": str(test_dir.resolve()),
        "system": name,
        "baseline": hparams["baseline"],
        "model_dir": str(Path(hparams["model_dir"]).resolve()) if hparams["model_dir"] else None,
        "items": processed,
        "scored": len(scores),
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
        "save_dir": str(save_dir.resolve()) if save_dir else None,
        "per_utterance_csv": str(csv_path.resolve()) if metrics else None,
    }
    if metrics:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["ID", *metrics], lineterminator="\n")
        writer.writeheader()
        for row in scores.rows:
            writer.writerow({"ID": row["ID"], **{
                name: f"{row.get(name, math.nan):.6f}" for name in metrics}})
        atomic_write_text(csv_path, buffer.getvalue())
    atomic_write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    summary["_table"] = scores.format_table() if metrics else ""
    summary["_summary_path"] = str(summary_path)
    return summary


def report(summary: dict) -> str:
    """The final human-readable table."""
    lines = [
        f"System {summary['system']} on {summary['test_dir']}: {summary['scored']} of "
        f"{summary['items'] + summary['skipped']} item(s) scored, "
        f"{summary['skipped']} skipped as bad",
    ]
    if summary["_table"]:
        lines.append(summary["_table"])
    else:
        lines.append(f"No targets/: {summary['items']} estimate(s) saved, nothing scored")
    if summary["save_dir"]:
        lines.append(f"Estimates: {summary['save_dir']}")
    if summary["per_utterance_csv"]:
        lines.append(f"Per utterance: {summary['per_utterance_csv']}")
    lines.append(f"Summary: {summary['_summary_path']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; returns the exit status (0 on success)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("speechbrain").setLevel(logging.WARNING)
    try:
        hparams_file, overrides = parse_arguments(sys.argv[1:] if argv is None else argv)
        hparams = load_hparams(hparams_file, overrides)
        summary = evaluate(hparams)
    except HelpRequested:
        sys.stdout.write(__doc__)
        return 0
    except UsageError as error:
        logger.error("%s", error)
        return EXIT_BAD_INPUT
    except AudioFileError as error:  # a file changed between the check and its use
        logger.error("bad audio file %s; no summary written", error)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        logger.error("interrupted: no summary written")
        return EXIT_INTERRUPTED
    print(report(summary))
    return 0


if __name__ == "__main__":
    # Trained weights produce denormal floats that slow CPU convolutions >10x.
    torch.set_flush_denormal(True)
    raise SystemExit(main())
