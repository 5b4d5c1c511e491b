"""Make speaker-disjoint train/valid/test target-speaker-extraction mixtures.

Usage (from the repository root)::

    python mixing/make_mixtures.py \\
        --corpus ../shared/data/librispeech/train-clean-100 \\
        --corpus cv_fa=../shared/data/commonvoice_fa \\
        --noise_dir ../shared/data/noise --out data/mix --seed 0 \\
        --num_train 2000 --num_valid 200 --num_test 300 \\
        --num_valid_speakers 10 --num_test_speakers 20 --heldout_from train-clean-100 \\
        --ratio_db 0 --snr_range 5 15 --length_mode min --workers 2

Writes, for each split with mixtures::

    OUT/<split>/mix/ID-mixed.wav      mixture (16 kHz mono PCM16)
    OUT/<split>/refs/ID-ref.wav       enrolment utterance of the target speaker
    OUT/<split>/targets/ID-target.wav target speaker as heard in the mixture
    OUT/<split>/speakers.json         speaker -> segments, for online mixing
    OUT/<split>.csv                   manifest (SpeechBrain CSV: ID first, absolute paths)
    OUT/mixing_params.yaml            every parameter, the command line, counts

Valid and test speakers are drawn (seeded) from the corpora named by
``--heldout_from`` (default: all); every other speaker is a training speaker,
so the three splits are speaker-disjoint. Interferers come from the same split
as the target. Item ``i`` of split ``s`` uses
``np.random.default_rng([seed, split_code(s), i, attempt])`` for every random
choice, so the output is byte-identical whatever ``--workers``. Audio is
written atomically, and each manifest is written (temporary file, rename) only
after all of its split's audio: an interrupted run leaves no manifest that
claims missing files. Errors in the inputs (missing/empty corpus, not enough
speakers, existing output) exit with code 2 and one clear message.

Example
-------
>>> make_id(12, "librispeech:103", "cv_fa:client_7", width=5)
'00012_librispeech-103_cv-fa-client-7'
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import multiprocessing
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from mixing.corpus import AUDIO_SUFFIXES, CorpusError, corpus_of, scan_corpora
from mixing.mixers import LoudnessError, Mixer
from mixing.online import draw_sources, save_speakers_json
from mixing.references import build_speaker_segments
from modules.audio import AudioFileError, save_audio
from modules.files import atomic_write_text

logger = logging.getLogger("mixing.make_mixtures")

SPLITS = ("train", "valid", "test")
SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}
SUBDIRS = {
    "mix_wav": ("mix", "mixed"),
    "ref_wav": ("refs", "ref"),
    "target_wav": ("targets", "target"),
}
MAX_ATTEMPTS = 10
COLUMNS = [
    "ID", "duration", "mix_wav", "ref_wav", "target_wav", "target_speaker",
    "interferer_speaker", "ratio_db", "noise_snr_db", "target_file", "target_start",
    "target_stop", "target_offset", "interferer_file", "interferer_start", "interferer_stop",
    "interferer_offset", "ref_file", "ref_start", "ref_stop", "ref_duration", "noise_file",
    "noise_start", "target_gain_db", "interferer_gain_db", "noise_gain_db", "ref_gain_db",
    "mix_gain_db", "peak_gain_db", "mix_lufs", "attempt",
]  # fmt: skip


class UsageError(ValueError):
    """Bad inputs or options: reported in one line, exit code 2."""


def safe_name(speaker: str) -> str:
    """A speaker id usable inside a file name (``[A-Za-z0-9.-]`` only).

    Example
    -------
    >>> safe_name("cv_fa:ab/c d")
    'cv-fa-ab-c-d'
    """
    return re.sub(r"[^A-Za-z0-9.-]+", "-", speaker)


def make_id(index: int, target_speaker: str, interferer_speaker: str, width: int = 5) -> str:
    """Mixture ID ``<index>_<target>_<interferer>``, unique through the index.

    Example
    -------
    >>> make_id(3, "a:1", "b:2")
    '00003_a-1_b-2'
    """
    return f"{index:0{width}d}_{safe_name(target_speaker)}_{safe_name(interferer_speaker)}"


def assign_speakers(
    speakers: list[str],
    seed: int,
    num_valid_speakers: int,
    num_test_speakers: int,
    heldout_from: list[str] | None = None,
) -> dict[str, list[str]]:
    """Split speakers into disjoint train/valid/test lists (each sorted).

    Valid and test speakers are drawn with ``default_rng([seed, 7])`` among the
    speakers of the ``heldout_from`` corpora (all corpora when ``None``).

    Raises
    ------
    UsageError
        Fewer held-out candidates than requested.

    Example
    -------
    >>> spk = [f"a:{i}" for i in range(6)] + ["b:0", "b:1"]
    >>> split = assign_speakers(spk, 0, 2, 2, heldout_from=["a"])
    >>> len(split["train"]), len(split["valid"]), len(split["test"]), "b:0" in split["train"]
    (4, 2, 2, True)
    """
    pool = sorted(s for s in speakers if heldout_from is None or corpus_of(s) in heldout_from)
    need = num_valid_speakers + num_test_speakers
    if need > len(pool):
        where = "all corpora" if heldout_from is None else f"corpora {', '.join(heldout_from)}"
        raise UsageError(
            f"not enough speakers: {num_valid_speakers} valid + {num_test_speakers} test "
            f"speakers requested, but {len(pool)} usable speakers in {where}"
        )
    chosen = [pool[k] for k in np.random.default_rng([seed, 7]).permutation(len(pool))[:need]]
    test, valid = chosen[:num_test_speakers], chosen[num_test_speakers:]
    return {
        "train": sorted(set(speakers) - set(chosen)),
        "valid": sorted(valid),
        "test": sorted(test),
    }


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (see the module docstring).

    Example
    -------
    >>> args = build_parser().parse_args(["--corpus", "a", "--out", "o", "--num_test", "3"])
    >>> args.length_mode, args.lufs, args.ratio_db, args.workers
    ('min', -20.0, 0.0, 1)
    """
    parser = argparse.ArgumentParser(
        description="Make speaker-disjoint target speaker extraction mixtures.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--corpus",
        action="append",
        required=True,
        metavar="[NAME=]DIR",
        help="corpus root (<spk>/*.flac or <spk>/<chapter>/*.flac); repeatable; "
        "speaker ids become NAME:<spk>, NAME defaulting to the folder name",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--seed", type=_non_negative, default=0)
    parser.add_argument(
        "--noise_dir",
        type=Path,
        default=None,
        help="folder of noise .flac/.wav (searched recursively); none: no noise",
    )
    for split in SPLITS:
        parser.add_argument(
            f"--num_{split}", type=_non_negative, default=0, help=f"number of {split} mixtures"
        )
    for split in ("valid", "test"):
        parser.add_argument(
            f"--num_{split}_speakers",
            type=_non_negative,
            default=0,
            help=f"number of {split} speakers (held out from training)",
        )
    parser.add_argument(
        "--heldout_from",
        nargs="+",
        action="extend",
        default=None,
        metavar="CORPUSNAME",
        help="draw valid/test speakers from these corpora only (default: all)",
    )
    ratio = parser.add_mutually_exclusive_group()
    ratio.add_argument(
        "--ratio_db", type=float, default=0.0, help="fixed target-to-interferer loudness ratio (LU)"
    )
    ratio.add_argument(
        "--ratio_range",
        type=float,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="draw the ratio uniformly from [LO, HI] instead",
    )
    parser.add_argument(
        "--snr_range",
        type=float,
        nargs=2,
        default=[5.0, 15.0],
        metavar=("LO", "HI"),
        help="target-to-noise ratio range (with --noise_dir)",
    )
    parser.add_argument("--length_mode", choices=("min", "max"), default="min")
    parser.add_argument("--lufs", type=float, default=-20.0, help="mixture/reference loudness")
    parser.add_argument("--min_target_seconds", type=float, default=2.0)
    parser.add_argument("--min_ref_seconds", type=float, default=2.0)
    parser.add_argument(
        "--max_seconds", type=float, default=12.0, help="longest target/interferer crop"
    )
    parser.add_argument(
        "--max_ref_seconds",
        type=float,
        default=None,
        help="longest reference crop (default: --max_seconds)",
    )
    parser.add_argument("--peak_limit", type=float, default=0.99)
    parser.add_argument("--workers", type=_positive, default=1)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the wav files and manifests of a previous run in --out",
    )
    parser.add_argument("--verbose", action="store_true", help="log every peak protection")
    return parser


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def find_noise_files(noise_dir: Path) -> list[str]:
    """Sorted absolute paths of the ``.flac``/``.wav`` files under ``noise_dir``.

    Raises
    ------
    UsageError
        Missing folder, or no audio in it.

    Example
    -------
    >>> find_noise_files(Path("/nonexistent"))
    Traceback (most recent call last):
    ...
    mixing.make_mixtures.UsageError: noise folder /nonexistent does not exist
    """
    if not noise_dir.is_dir():
        raise UsageError(f"noise folder {noise_dir} does not exist")
    files = sorted(
        str(p.resolve())
        for p in noise_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise UsageError(f"noise folder {noise_dir} holds no .flac/.wav files")
    return files


def prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse (or, with ``overwrite``, clear) the wavs and manifests of an earlier run.

    Only ``OUT/mixing_params.yaml``, ``OUT/<split>.csv`` and the ``*.wav`` files inside
    ``OUT/<split>/{mix,refs,targets}`` are removed.
    """
    old_wavs = [
        p
        for split in SPLITS
        for sub, _ in SUBDIRS.values()
        for p in (out / split / sub).glob("*.wav")
    ]
    old_csvs = [out / f"{split}.csv" for split in SPLITS if (out / f"{split}.csv").exists()]
    old_params = [p for p in [out / "mixing_params.yaml"] if p.exists()]
    if (old_wavs or old_csvs) and not overwrite:
        raise UsageError(
            f"{out} already holds {len(old_wavs)} wav file(s) and {len(old_csvs)} manifest(s) "
            "from an earlier run: use --overwrite or another --out"
        )
    for path in old_params + old_csvs + old_wavs:  # manifests first: none without its files
        path.unlink()


_STATE: dict = {}


def _init_worker(state: dict) -> None:
    _STATE.clear()
    _STATE.update(state)


def _format(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def make_item(task: tuple[str, int]) -> dict:
    """Draw, mix and write mixture ``index`` of ``split``; return its manifest row.

    Uses the state installed by the worker initialiser (speakers, mixer, seed, out).
    """
    split, index = task
    state = _STATE
    speakers = state["speakers"][split]
    order = state["order"][split]
    target_speaker = order[index % len(order)]
    errors = []
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([state["seed"], SPLIT_CODES[split], index, attempt])
        target, ref, interferer, i_seg = draw_sources(
            speakers, target_speaker, rng, state["min_target"], state["min_ref"]
        )
        try:
            result = state["mixer"].mix_segments(target, i_seg, ref, rng)
            break
        except (LoudnessError, AudioFileError) as error:
            logger.warning("%s item %d attempt %d: %s", split, index, attempt, error)
            errors.append(str(error))
    else:
        raise RuntimeError(
            f"{split} item {index}: no usable mixture in {MAX_ATTEMPTS} attempts: {errors}"
        )
    item_id = make_id(index, target_speaker, interferer, state["width"][split])
    row = {"ID": item_id}
    p = result.params
    row["duration"] = p["length"] / 16000
    signals = {"mix_wav": result.mix, "ref_wav": result.reference, "target_wav": result.target}
    for column, (sub, suffix) in SUBDIRS.items():
        path = state["out"] / split / sub / f"{item_id}-{suffix}.wav"
        save_audio(path, signals[column], 16000)
        row[column] = str(path)
    row.update(target_speaker=target_speaker, interferer_speaker=interferer)
    row["ref_duration"] = (p["ref_stop"] - p["ref_start"]) / 16000
    row["attempt"] = attempt
    for column in COLUMNS:
        if column not in row:
            row[column] = p[column]
    return {c: _format(row[c]) for c in COLUMNS}


def _run_split(split: str, count: int, state: dict, workers: int) -> list[dict]:
    tasks = [(split, i) for i in range(count)]
    bar = dict(total=count, desc=f"{split} mixtures", unit="mix", mininterval=1.0)
    if workers == 1:
        _init_worker(state)
        return [make_item(task) for task in tqdm(tasks, **bar)]
    with multiprocessing.get_context().Pool(workers, _init_worker, (state,)) as pool:
        return list(tqdm(pool.imap(make_item, tasks, chunksize=2), **bar))


def write_manifest(path: Path, rows: list[dict]) -> None:
    """Write a manifest CSV atomically (columns :data:`COLUMNS`, ``ID`` first).

    Example
    -------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "test.csv"
    >>> write_manifest(path, [{c: "x" for c in COLUMNS}])
    >>> path.read_text().splitlines()[0].split(",")[:3]
    ['ID', 'duration', 'mix_wav']
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Do the work of :func:`main` on parsed arguments; raise UsageError on bad inputs."""
    counts = {split: getattr(args, f"num_{split}") for split in SPLITS}
    if not any(counts.values()):
        raise UsageError("nothing to do: give --num_train, --num_valid and/or --num_test")
    corpus = scan_corpora(args.corpus)
    names = sorted({corpus_of(s) for s in corpus})
    if args.heldout_from:
        unknown = sorted(set(args.heldout_from) - set(names))
        if unknown:
            raise UsageError(f"--heldout_from {unknown}: corpora are named {names}")
    noise_files = find_noise_files(args.noise_dir) if args.noise_dir else None
    try:
        mixer = Mixer(
            lufs=args.lufs,
            ratio_db=tuple(args.ratio_range) if args.ratio_range else args.ratio_db,
            snr_db=tuple(args.snr_range) if noise_files else None,
            noise_files=noise_files,
            length_mode=args.length_mode,
            max_seconds=args.max_seconds,
            max_ref_seconds=args.max_ref_seconds or args.max_seconds,
            peak_limit=args.peak_limit,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None

    segments = build_speaker_segments(corpus, args.min_target_seconds, args.min_ref_seconds)
    split_speakers = assign_speakers(
        list(segments),
        args.seed,
        args.num_valid_speakers,
        args.num_test_speakers,
        args.heldout_from,
    )
    for split in SPLITS:
        if counts[split] and len(split_speakers[split]) < 2:
            raise UsageError(
                f"not enough speakers: {counts[split]} {split} mixtures need >= 2 {split} "
                f"speakers, have {len(split_speakers[split])} ({len(segments)} usable of "
                f"{len(corpus)} found; see --num_{split}_speakers, --min_target_seconds, "
                "--min_ref_seconds)"
            )
    out = args.out.resolve()
    prepare_output(out, args.overwrite)

    state = {
        "seed": args.seed,
        "mixer": mixer,
        "min_target": int(round(args.min_target_seconds * 16000)),
        "min_ref": int(round(args.min_ref_seconds * 16000)),
        "out": out,
        "speakers": {s: {k: segments[k] for k in split_speakers[s]} for s in SPLITS},
        "order": {
            s: [
                split_speakers[s][k]
                for k in np.random.default_rng([args.seed, 1000 + SPLIT_CODES[s]]).permutation(
                    len(split_speakers[s])
                )
            ]
            for s in SPLITS
        },
        "width": {s: max(5, len(str(max(counts[s] - 1, 0)))) for s in SPLITS},
    }
    summary = {}
    for split in SPLITS:
        if split_speakers[split]:
            save_speakers_json(out / split / "speakers.json", state["speakers"][split])
        if not counts[split]:
            continue
        for sub, _ in SUBDIRS.values():
            (out / split / sub).mkdir(parents=True, exist_ok=True)
        rows = _run_split(split, counts[split], state, args.workers)
        ids = [row["ID"] for row in rows]
        if len(set(ids)) != len(ids):
            raise RuntimeError(f"duplicate IDs in {split}")
        write_manifest(out / f"{split}.csv", rows)
        summary[split] = {
            "mixtures": len(rows),
            "speakers": len(split_speakers[split]),
            "hours": round(sum(float(r["duration"]) for r in rows) / 3600, 4),
            "peak_protected": sum(float(r["peak_gain_db"]) < 0 for r in rows),
            "redrawn": sum(int(r["attempt"]) > 0 for r in rows),
        }

    params = {
        "command": shlex.join([sys.executable, "mixing/make_mixtures.py", *argv]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "mixer": mixer.settings(),
        "corpora": names,
        "speakers_found": len(corpus),
        "speakers_usable": len(segments),
        "split_speakers": {s: len(v) for s, v in split_speakers.items()},
        "splits": summary,
        "seeding": "np.random.default_rng([seed, split_code, index, attempt]) per item; "
        f"split codes {SPLIT_CODES}",
        "sample_rate": 16000,
    }
    atomic_write_text(out / "mixing_params.yaml", yaml.safe_dump(params, sort_keys=False))

    print(f"wrote mixtures to {out}")
    print(f"{'split':<6} {'mixtures':>8} {'speakers':>8} {'hours':>7} {'peak-protected':>14}")
    for split, info in summary.items():
        print(
            f"{split:<6} {info['mixtures']:>8} {info['speakers']:>8} {info['hours']:>7.3f} "
            f"{info['peak_protected']:>14}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2 for bad inputs).

    Example
    -------
    >>> main(["--corpus", "/nonexistent/corpus", "--out", "/tmp/x", "--num_test", "2"])
    2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    mixer_logger = logging.getLogger("mixing.mixers")
    old_level = mixer_logger.level
    if args.verbose:  # peak protections are logged at debug level, counted in the summary
        mixer_logger.setLevel(logging.DEBUG)
    try:
        return run(args, argv)
    except (UsageError, CorpusError) as error:
        logger.error("%s", error)
        return 2
    finally:
        mixer_logger.setLevel(old_level)


if __name__ == "__main__":
    from mixing.make_mixtures import main as _main  # workers pickle this module, not __main__

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(_main())
