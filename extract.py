#!/usr/bin/env python3
"""Extract a target speaker from a mixture with a trained model.

One pair of files::

    python extract.py --model_dir MODEL_DIR --mix mix.wav --ref ref.wav --out est.wav [--lufs -20]

A test directory (``mix/ID-mixed.wav`` + ``refs/ID-ref.wav``, see
``modules/dataio.py``), writing ``OUT_DIR/ID-est.wav`` for every ID and
``OUT_DIR/extract_info.csv`` with the presence score and levels of each::

    python extract.py --model_dir MODEL_DIR --test_dir TEST_DIR --out_dir OUT_DIR

Inputs at any sample rate and with any number of channels are converted to
16 kHz mono (with a notice). The output is loudness-matched to the mixture (or
set to ``--lufs``) and never clips. Mixtures longer than ``max_whole_seconds``
(inference.yaml) are processed in overlapping chunks (``--chunk_seconds``,
``--hop_seconds``).

A test directory is checked as a whole first (the checks of ``evaluate.py``:
missing counterparts, unreadable, stereo, empty, too short or silent files):
a bad file stops the run with one message listing every problem, before
anything is computed, unless ``--skip_bad`` (the bad items are listed and
skipped). ``--out_dir`` may not lie inside the test directory's ``mix/``,
``refs/`` or ``targets/``.

Exit status (every command-line tool of the project): 0 done, 2 bad input or
usage (one line ``extract.py: error: FILE: problem``; nothing is written at the
output path, and an output path that is an input, or cannot be written, is
refused before any computation), 1 internal failure.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import sys
from pathlib import Path

from modules.cli import (
    ArgumentParser,
    BadInput,
    check_device,
    check_output_file,
    check_writable_dir,
    checked_type,
    entry_point,
    is_inside,
)

logger = logging.getLogger("extract")


def parse_args(argv=None):
    """Command-line arguments (see the module docstring)."""
    parser = ArgumentParser(
        prog="extract.py",
        description="Extract the speaker of a reference recording from a mixture.",
    )
    parser.add_argument(
        "--model_dir", required=True, help="model directory (inference.yaml, model.ckpt)"
    )
    parser.add_argument("--mix", help="mixture audio file")
    parser.add_argument("--ref", help="reference (enrolment) speech of the target speaker")
    parser.add_argument("--out", help="output wav file")
    parser.add_argument("--test_dir", help="directory with mix/ID-mixed.wav and refs/ID-ref.wav")
    parser.add_argument("--out_dir", help="where --test_dir outputs ID-est.wav go")
    parser.add_argument(
        "--skip_bad", action="store_true",
        help="with --test_dir: skip (and list) bad items instead of refusing the directory",
    )
    parser.add_argument(
        "--lufs", type=checked_type(float, lambda v: -70.0 <= v <= 0.0, "LUFS in [-70, 0]"),
        default=None, help="output loudness (default: the mixture's)",
    )
    parser.add_argument(
        "--chunk_seconds", type=float, default=None, help="chunk length for long inputs"
    )
    parser.add_argument(
        "--hop_seconds", type=float, default=None, help="hop between chunks (default chunk/2)"
    )
    parser.add_argument(
        "--max_whole_seconds", type=checked_type(float, lambda v: v >= 0, "seconds >= 0"),
        default=None,
        help="mixtures longer than this are chunked (default from inference.yaml)",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--quiet", action="store_true", help="only errors and the final line")
    args = parser.parse_args(argv)
    single = [args.mix, args.ref, args.out]
    if args.test_dir is not None or args.out_dir is not None:
        if any(value is not None for value in single):
            parser.error("use either --mix/--ref/--out or --test_dir/--out_dir, not both")
        if args.test_dir is None or args.out_dir is None:
            parser.error("--test_dir and --out_dir go together")
    elif any(value is None for value in single):
        parser.error("give --mix, --ref and --out (or --test_dir and --out_dir)")
    elif args.skip_bad:
        parser.error("--skip_bad goes with --test_dir")
    return args


def _not_speechbrain_info(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not record.name.startswith("speechbrain")


def setup_logging(quiet: bool) -> None:
    """Notices from this script and the inference module; SpeechBrain only from WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_not_speechbrain_info)
    level = logging.WARNING if quiet else logging.INFO
    for name in ("extract", "modules.inference"):
        logging.getLogger(name).setLevel(level)


def load_extractor(args):
    """The model of ``--model_dir`` with the command-line settings applied."""
    from modules.inference import TargetSpeakerExtractor

    check_device(args.device)
    try:
        extractor = TargetSpeakerExtractor.from_hparams(
            source=args.model_dir, run_opts={"device": args.device}
        )
    except OSError as error:  # a ModelDirError is already bad input
        raise BadInput(f"{error}") from None
    if args.chunk_seconds is not None:
        extractor.chunk_seconds = args.chunk_seconds
        extractor.hop_seconds = (
            args.hop_seconds if args.hop_seconds is not None else args.chunk_seconds / 2
        )
    elif args.hop_seconds is not None:
        extractor.hop_seconds = args.hop_seconds
    if args.max_whole_seconds is not None:
        extractor.max_whole_seconds = args.max_whole_seconds
    try:
        extractor._chunk_hop()  # validate the chunk settings now, not after the first file
    except ValueError as error:
        raise BadInput(str(error)) from None
    return extractor


def _fmt(value: float, digits: int = 2) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def run_single(args) -> str:
    """Extract one file pair; returns the final message."""
    from modules.audio import audio_format, save_audio

    out = check_output_file(args.out, inputs=[args.mix, args.ref], option="--out")
    audio_format(out)
    for path in (args.mix, args.ref):
        if not Path(path).is_file():
            raise BadInput(f"{path}: " + ("not an audio file (a folder)" if Path(path).exists()
                                          else "file not found"))
    extractor = load_extractor(args)
    wav, info = extractor.extract_file(args.mix, args.ref, lufs=args.lufs, return_info=True)
    save_audio(out, wav, extractor.sample_rate)
    return (
        f"wrote {out} ({info['duration_s']:.2f} s, {_fmt(info['loudness_lufs'], 1)} LUFS, "
        f"presence cosine {_fmt(info['presence_cosine'])}, "
        f"energy {_fmt(info['energy_db'], 1)} dB re mixture)"
    )


def check_out_dir(out_dir: Path, test_dir: Path) -> None:
    """Refuse an output folder inside the test directory's inputs, or not writable."""
    from modules.dataio import MIX_DIR, REF_DIR, TARGET_DIR

    for folder in (MIX_DIR, REF_DIR, TARGET_DIR):
        if is_inside(out_dir, test_dir / folder):
            raise BadInput(
                f"{out_dir}: --out_dir is inside the test directory's {folder}/; the "
                f"estimates would be mixed with its inputs: choose another folder"
            )
    check_writable_dir(out_dir, "--out_dir")


def check_test_dir(test_dir: Path, extractor, skip_bad: bool):
    """The usable items of a test directory (whole directory checked first)."""
    from modules.dataio import CustomDirDataset, InputLimits

    dataset = CustomDirDataset(
        test_dir, extractor.sample_rate, limits=InputLimits.of(extractor), use_targets=False
    )
    problems = dataset.check()
    for note in dataset.notes:
        logger.info("notice: %s", note)
    listing = "".join(f"\n  {problem}" for problem in problems)
    if problems and not skip_bad:
        raise BadInput(
            f"{test_dir}: {len(problems)} problem(s); nothing was extracted. Fix or remove "
            f"these files, or rerun with --skip_bad to extract the rest:{listing}"
        )
    dropped = dataset.drop_bad()
    if problems:
        logger.warning("skipping %d bad item(s) (--skip_bad):%s", len(dropped), listing)
    if len(dataset) == 0:
        raise BadInput(f"{test_dir}: no usable mixture/reference pairs{listing}")
    return dataset, dropped


def run_test_dir(args) -> str:
    """Extract every ID of a test directory; returns the final message."""
    from tqdm import tqdm

    from modules.audio import AudioFileError, save_audio
    from modules.files import atomic_write_text

    test_dir, out_dir = Path(args.test_dir), Path(args.out_dir)
    if not test_dir.is_dir():
        what = "is not a directory" if test_dir.exists() else "not found"
        raise BadInput(f"{test_dir}: test directory {what}")
    check_out_dir(out_dir, test_dir)
    extractor = load_extractor(args)
    dataset, dropped = check_test_dir(test_dir, extractor, args.skip_bad)
    rows = []
    for item in tqdm(dataset.ids, desc="extract", unit="file", disable=args.quiet):
        try:  # each file decoded once, here: what needs its samples is checked now
            wav, info = extractor.extract_file(
                dataset.mix_paths[item], dataset.ref_paths[item], lufs=args.lufs,
                return_info=True,
            )
        except AudioFileError as error:
            if not args.skip_bad:
                raise BadInput(f"{error}; rerun with --skip_bad to skip such items") from None
            logger.warning("skipping %s (--skip_bad)", error)
            dropped.append(item)
            continue
        save_audio(out_dir / f"{item}-est.wav", wav, extractor.sample_rate)
        rows.append({
            "id": item,
            "duration_s": round(info["duration_s"], 3),
            "presence_cosine": round(info["presence_cosine"], 4),
            "energy_db": round(info["energy_db"], 2),
            "loudness_lufs": round(info["loudness_lufs"], 2),
            "peak_limited": info["peak_limited"],
            "chunked": info["chunked"],
        })
    if not rows:
        raise BadInput(f"{test_dir}: no usable mixture/reference pairs")
    info_path = out_dir / "extract_info.csv"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(info_path, buffer.getvalue())
    skipped = f"; {len(dropped)} bad item(s) skipped" if dropped else ""
    return f"wrote {len(rows)} estimates to {out_dir} (scores in {info_path.name}){skipped}"


def _main(argv) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet)
    message = run_test_dir(args) if args.test_dir else run_single(args)
    print(message)
    return 0


main = entry_point(_main, "extract.py")


if __name__ == "__main__":
    import torch

    # Trained weights produce denormal floats that slow CPU convolutions >10x.
    torch.set_flush_denormal(True)
    sys.exit(main())
