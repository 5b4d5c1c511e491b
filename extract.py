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

On bad input (missing or unreadable file, silent or too-short reference,
too-short mixture, bad model directory) the script prints one line
``extract.py: error: ...`` naming the file and the problem, exits with status 1
and writes nothing at the output path.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
from pathlib import Path

logger = logging.getLogger("extract")

EXIT_BAD_INPUT = 1


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(
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
        "--lufs", type=float, default=None, help="output loudness (default: the mixture's)"
    )
    parser.add_argument(
        "--chunk_seconds", type=float, default=None, help="chunk length for long inputs"
    )
    parser.add_argument(
        "--hop_seconds", type=float, default=None, help="hop between chunks (default chunk/2)"
    )
    parser.add_argument(
        "--max_whole_seconds", type=float, default=None,
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


def check_output_path(path: Path) -> None:
    """Refuse an output path that cannot take a wav file, before any computation."""
    import soundfile as sf

    if path.is_dir():
        raise ValueError(f"{path}: is a directory; --out must be a file name")
    if path.suffix.lstrip(".").upper() not in sf.available_formats():
        raise ValueError(f"{path}: unknown audio format '{path.suffix}' (use .wav or .flac)")


def load_extractor(args):
    """The model of ``--model_dir`` with the command-line settings applied."""
    import torch

    from modules.inference import TargetSpeakerExtractor

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
    extractor = TargetSpeakerExtractor.from_hparams(
        source=args.model_dir, run_opts={"device": args.device}
    )
    if args.chunk_seconds is not None:
        extractor.chunk_seconds = args.chunk_seconds
        extractor.hop_seconds = (
            args.hop_seconds if args.hop_seconds is not None else args.chunk_seconds / 2
        )
    elif args.hop_seconds is not None:
        extractor.hop_seconds = args.hop_seconds
    if args.max_whole_seconds is not None:
        extractor.max_whole_seconds = args.max_whole_seconds
    extractor._chunk_hop()  # validate the chunk settings now, not after the first file
    return extractor


def _fmt(value: float, digits: int = 2) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def run_single(args) -> str:
    """Extract one file pair; returns the final message."""
    from modules.audio import save_audio

    out = Path(args.out)
    check_output_path(out)
    for path in (args.mix, args.ref):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: file not found")
    extractor = load_extractor(args)
    wav, info = extractor.extract_file(args.mix, args.ref, lufs=args.lufs, return_info=True)
    save_audio(out, wav, extractor.sample_rate)
    return (
        f"wrote {out} ({info['duration_s']:.2f} s, {_fmt(info['loudness_lufs'], 1)} LUFS, "
        f"presence cosine {_fmt(info['presence_cosine'])}, "
        f"energy {_fmt(info['energy_db'], 1)} dB re mixture)"
    )


def list_test_dir(test_dir: Path) -> tuple[dict, dict]:
    """``{ID: mixture path}`` and ``{ID: reference path}`` of a test directory.

    Raises
    ------
    ValueError
        Missing folders, no mixtures, or mixtures without a reference (all named).
    """
    from modules.dataio import MIX_DIR, MIX_SUFFIX, REF_DIR, REF_SUFFIX

    if not test_dir.is_dir():
        raise ValueError(f"{test_dir}: test directory not found")
    found = []
    for folder, suffix in ((MIX_DIR, MIX_SUFFIX), (REF_DIR, REF_SUFFIX)):
        path = test_dir / folder
        if not path.is_dir():
            raise ValueError(f"{path}: no {folder}/ folder (expected {folder}/<ID>{suffix})")
        found.append({
            file.name[: -len(suffix)]: file
            for file in sorted(path.iterdir())
            if file.is_file() and file.name.endswith(suffix) and len(file.name) > len(suffix)
        })
    mixes, refs = found
    if not mixes:
        raise ValueError(f"{test_dir / MIX_DIR}: no mixtures named <ID>{MIX_SUFFIX}")
    missing = [item for item in sorted(mixes) if item not in refs]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        shown = ", ".join(str(test_dir / REF_DIR / f"{item}{REF_SUFFIX}") for item in missing[:3])
        raise ValueError(f"{len(missing)} mixtures have no reference: {shown}{more}")
    return mixes, refs


def run_test_dir(args) -> str:
    """Extract every ID of a test directory; returns the final message."""
    from tqdm import tqdm

    from modules.audio import save_audio
    mixes, refs = list_test_dir(Path(args.test_dir))
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: exists and is not a directory")
    extractor = load_extractor(args)
    rows = []
    for item in tqdm(sorted(mixes), desc="extract", unit="file", disable=args.quiet):
        wav, info = extractor.extract_file(
            mixes[item], refs[item], lufs=args.lufs, return_info=True
        )
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
    info_path = out_dir / "extract_info.csv"
    with open(info_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return f"wrote {len(rows)} estimates to {out_dir} (scores in {info_path.name})"


def main(argv=None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    setup_logging(args.quiet)
    try:
        message = run_test_dir(args) if args.test_dir else run_single(args)
    except (ValueError, OSError) as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"extract.py: error: {text}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(message)
    return 0


if __name__ == "__main__":
    import torch

    # Trained weights produce denormal floats that slow CPU convolutions >10x.
    torch.set_flush_denormal(True)
    sys.exit(main())
