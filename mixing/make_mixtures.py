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

Noise (``--noise_dir``, WHAM-like) is disjoint in time between training and
evaluation: the train split uses the first ``--noise_train_fraction`` (0.8) of
every noise file, the valid, test and test_absent splits the rest (the training
recipe's ``noise_folder`` uses the same first part, see ``mixing.mixers``). Every
noise file is read first; an unreadable, silent or too short one (a used part
under ``--min_noise_seconds``) is skipped with a warning and counted in
``mixing_params.yaml``. The summary gives, per split, how many speakers the
mixtures use and how many seconds of noise they cover.

``--num_test_absent N`` also writes ``OUT/test_absent/{mix,refs}`` and
``OUT/test_absent.csv``: mixtures of two test speakers with the reference of a
third, so the reference speaker is *absent* (no targets/; score them with
``evaluate.py ... --absent``).

Valid and test speakers are drawn (seeded) from the corpora named by
``--heldout_from`` (default: all); every other speaker is a training speaker,
so the three splits are speaker-disjoint. Interferers come from the same split
as the target. Item ``i`` of split ``s`` uses
``np.random.default_rng([seed, split_code(s), i, attempt])`` for every random
choice, so the output is byte-identical whatever ``--workers``. Audio is
written atomically, and each manifest is written (temporary file, rename) only
after all of its split's audio: an interrupted run leaves no manifest that
claims missing files; the ``speakers.json`` files, the manifests and
``mixing_params.yaml`` are written only after the audio of every split, and a
failed run removes what it wrote. Every source file is decoded when the corpora
are scanned; an unusable one (undecodable, cut short after a valid header,
silent: :func:`mixing.corpus.audio_problem`) stops the run with a list of them,
or with ``--skip_bad`` is left out and counted in ``mixing_params.yaml``.
``--overwrite`` replaces everything an earlier run wrote in ``--out``, so the
folder holds exactly the new run.

Exit status (every command-line tool of the project): 0 done, 2 bad input or
usage (missing/empty corpus, unusable files, not enough speakers, existing
output; one clear message), 1 internal failure.

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

from mixing.corpus import BadFile, corpus_of, find_noise_files, scan_corpora
from mixing.mixers import (
    LoudnessError,
    Mixer,
    NoUsableMixture,
    loudness,
    mix_with_redraws,
    part_bounds,
)
from mixing.online import draw_sources, save_speakers_json
from mixing.references import build_speaker_segments
from modules.audio import SAMPLE_RATE, AudioFileError, load_audio, save_audio
from modules.cli import ArgumentParser, BadInput, check_writable_dir, checked_type, entry_point
from modules.files import atomic_write_text

logger = logging.getLogger("mixing.make_mixtures")

SPLITS = ("train", "valid", "test")
ABSENT_SPLIT = "test_absent"
SPLIT_CODES = {"train": 0, "valid": 1, "test": 2, ABSENT_SPLIT: 3}
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
ABSENT_COLUMNS = [
    "ID", "duration", "mix_wav", "ref_wav", "ref_speaker", "mix_speakers", "ratio_db",
    "noise_snr_db", "mix_files", "ref_file", "ref_start", "ref_stop", "ref_duration",
    "noise_file", "noise_start", "peak_gain_db", "mix_lufs", "attempt",
]  # fmt: skip


class UsageError(BadInput):
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


def build_parser() -> ArgumentParser:
    """The command-line parser (see the module docstring).

    Example
    -------
    >>> args = build_parser().parse_args(["--corpus", "a", "--out", "o", "--num_test", "3"])
    >>> args.length_mode, args.lufs, args.ratio_db, args.workers
    ('min', -20.0, 0.0, 1)
    """
    parser = ArgumentParser(
        prog="make_mixtures.py",
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
    # [LO, HI] ranges of ratios drawn uniformly per mixture
    ranges = {"type": float, "nargs": 2, "metavar": ("LO", "HI")}
    ratio.add_argument(
        "--ratio_range", default=None, help="draw the ratio from [LO, HI] instead", **ranges
    )
    parser.add_argument(
        "--snr_range", default=[5.0, 15.0], help="target-to-noise ratio, with --noise_dir", **ranges
    )
    parser.add_argument(
        "--noise_train_fraction",
        type=_fraction,
        default=0.8,
        help="the train split uses this first fraction of every noise file, the other "
        "splits the rest (1: every split uses whole files)",
    )
    parser.add_argument(
        "--min_noise_seconds",
        type=float,
        default=1.0,
        help="skip (and count) noise files whose used part is shorter",
    )
    parser.add_argument(
        f"--num_{ABSENT_SPLIT}",
        type=_non_negative,
        default=0,
        help="target-absent test mixtures (two test speakers, a third one's reference)",
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
        help="replace everything a previous run wrote in --out (wavs, manifests, "
        "speakers.json, mixing_params.yaml)",
    )
    parser.add_argument(
        "--skip_bad",
        action="store_true",
        help="leave out (and count) unusable source files instead of stopping",
    )
    parser.add_argument("--verbose", action="store_true", help="log every peak protection")
    return parser


_non_negative = checked_type(int, lambda v: v >= 0, "an integer >= 0")
_fraction = checked_type(float, lambda v: 0.0 < v <= 1.0, "a fraction in (0, 1]")
_positive = checked_type(int, lambda v: v >= 1, "an integer >= 1")


def noise_parts(train_fraction: float) -> dict[str, tuple[float, float]]:
    """The part of every noise file each split uses.

    Example
    -------
    >>> noise_parts(0.8)["train"], noise_parts(0.8)["test"], noise_parts(1.0)["test"]
    ((0.0, 0.8), (0.8, 1.0), (0.0, 1.0))
    """
    if train_fraction >= 1.0:
        return {split: (0.0, 1.0) for split in SPLIT_CODES}
    return {split: (0.0, train_fraction) if split == "train" else (train_fraction, 1.0)
            for split in SPLIT_CODES}


def check_noise_files(
    files: list[str], parts: list[tuple[float, float]], min_seconds: float
) -> tuple[dict[str, int], list[str]]:
    """Read every noise file; keep those whose used parts are long enough and not silent.

    Returns
    -------
    usable : dict
        ``{path: length in samples}`` of the files kept.
    skipped : list of str
        ``"path: reason"`` for each file left out.

    Raises
    ------
    UsageError
        No usable file at all.
    """
    usable, skipped = {}, []
    for path in files:
        try:
            wav, _, _ = load_audio(path, SAMPLE_RATE)
            for part in parts:
                lo, hi = part_bounds(wav.shape[0], part)
                if hi - lo < min_seconds * SAMPLE_RATE:
                    raise LoudnessError(
                        f"part {part[0]:g}-{part[1]:g} is "
                        f"{(hi - lo) / SAMPLE_RATE:.2f} s long, "
                        f"under --min_noise_seconds {min_seconds:g}"
                    )
                loudness(wav.numpy()[lo:hi].astype(np.float64), SAMPLE_RATE, f"part {part}")
        except (AudioFileError, LoudnessError) as error:
            reason = str(error).removeprefix(f"{path}: ")
            logger.warning("skipping noise file %s: %s", path, reason)
            skipped.append(f"{path}: {reason}")
            continue
        usable[path] = wav.shape[0]
    if not usable:
        raise UsageError(
            f"no usable noise file ({len(skipped)} skipped): " + "; ".join(skipped)
        )
    return usable, skipped


def noise_coverage_seconds(rows: list[dict], lengths: dict[str, int],
                           part: tuple[float, float]) -> float:
    """Seconds of distinct noise (10 ms resolution) the mixtures of one split use.

    Example
    -------
    >>> rows = [{"noise_file": "n", "noise_start": "0", "duration": "1.0"},
    ...         {"noise_file": "n", "noise_start": "8000", "duration": "1.0"}]
    >>> noise_coverage_seconds(rows, {"n": 160000}, (0.0, 1.0))
    1.5
    """
    hop = SAMPLE_RATE // 100  # 10 ms
    used: dict[str, np.ndarray] = {}
    for row in rows:
        path = row.get("noise_file")
        if not path or path not in lengths:
            continue
        lo, hi = part_bounds(lengths[path], part)
        frames = (hi - lo) // hop
        mask = used.setdefault(path, np.zeros(max(frames, 1), dtype=bool))
        first = (int(row["noise_start"]) - lo) // hop
        count = min(int(round(float(row["duration"]) * 100)), len(mask))
        mask[(first + np.arange(count)) % len(mask)] = True
    return round(sum(int(mask.sum()) for mask in used.values()) / 100, 2)


def _run_files(out: Path) -> list[Path]:
    """Every file a run writes in ``out``: manifests and parameters first, then audio."""
    splits = (*SPLITS, ABSENT_SPLIT)
    listed = [out / "mixing_params.yaml"]
    listed += [out / f"{split}.csv" for split in splits]
    listed += [out / split / "speakers.json" for split in splits]
    found = [path for path in listed if path.is_file()]
    found += [
        path
        for split in splits
        for sub, _ in SUBDIRS.values()
        for path in sorted((out / split / sub).glob("*.wav"))
    ]
    return found


def remove_run(out: Path) -> None:
    """Delete what a run wrote in ``out`` (manifests first: none without its files) and
    the folders that leaves empty; any other file in ``out`` is kept."""
    for path in _run_files(out):
        path.unlink()
    for split in (*SPLITS, ABSENT_SPLIT):
        for folder in [*(out / split / sub for sub, _ in SUBDIRS.values()), out / split]:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse (or, with ``overwrite``, remove) the output of an earlier run.

    Removed: ``OUT/mixing_params.yaml``, ``OUT/<split>.csv``, ``OUT/<split>/speakers.json``
    and the ``*.wav`` files of ``OUT/<split>/{mix,refs,targets}``, so the folder then
    holds exactly the new run; files the script never writes are left alone.
    """
    old = _run_files(out)
    if old and not overwrite:
        wavs = sum(path.suffix == ".wav" for path in old)
        raise UsageError(
            f"{out} already holds {wavs} wav file(s) and {len(old) - wavs} manifest/parameter "
            "file(s) from an earlier run: use --overwrite or another --out"
        )
    remove_run(out)


_STATE: dict = {}


def _init_worker(state: dict) -> None:
    _STATE.clear()
    _STATE.update(state)


def _format(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _mix_item(split: str, index: int, draw):
    """:func:`~mixing.mixers.mix_with_redraws` for item ``index`` of ``split``.

    An item no attempt can mix stops the run (a corpus problem the user must fix).
    """
    state = _STATE
    try:
        return mix_with_redraws(
            state["mixers"][split], draw, [state["seed"], SPLIT_CODES[split], index],
            MAX_ATTEMPTS, f"{split} item {index}",
        )
    except NoUsableMixture as error:
        raise UsageError(
            f"{error}; check the speakers' files or leave them out of the corpus"
        ) from None


def make_item(task: tuple[str, int]) -> dict:
    """Draw, mix and write mixture ``index`` of ``split``; return its manifest row.

    Uses the state installed by the worker initialiser (speakers, mixer, seed, out).
    """
    split, index = task
    if split == ABSENT_SPLIT:
        return make_absent_item(index)
    state = _STATE
    speakers = state["speakers"][split]
    order = state["order"][split]
    target_speaker = order[index % len(order)]

    def draw(rng, attempt):
        target, ref, interferer, i_seg = draw_sources(
            speakers, target_speaker, rng, state["min_target"], state["min_ref"]
        )
        return target, i_seg, ref, interferer

    result, interferer, attempt = _mix_item(split, index, draw)
    item_id = make_id(index, target_speaker, interferer, state["width"][split])
    row = {"ID": item_id}
    p = result.params
    row["duration"] = p["length"] / SAMPLE_RATE
    signals = {"mix_wav": result.mix, "ref_wav": result.reference, "target_wav": result.target}
    for column, (sub, suffix) in SUBDIRS.items():
        path = state["out"] / split / sub / f"{item_id}-{suffix}.wav"
        save_audio(path, signals[column], SAMPLE_RATE)
        row[column] = str(path)
    row.update(target_speaker=target_speaker, interferer_speaker=interferer)
    row["ref_duration"] = (p["ref_stop"] - p["ref_start"]) / SAMPLE_RATE
    row["attempt"] = attempt
    for column in COLUMNS:
        if column not in row:
            row[column] = p[column]
    return {c: _format(row[c]) for c in COLUMNS}


def make_absent_item(index: int) -> dict:
    """Target-absent item ``index``: two test speakers mixed, a third one's reference."""
    state, split = _STATE, ABSENT_SPLIT
    speakers = state["speakers"][split]
    order = state["order"][split]
    absent = order[index % len(order)]

    def draw(rng, attempt):
        _, ref, first, first_seg = draw_sources(
            speakers, absent, rng, state["min_target"], state["min_ref"]
        )
        others = [s for s in speakers if s not in (absent, first)]
        second = others[int(rng.integers(len(others)))]
        candidates = [s for s in speakers[second] if s.num_samples >= state["min_target"]]
        candidates = candidates or speakers[second]
        second_seg = candidates[int(rng.integers(len(candidates)))]
        return first_seg, second_seg, ref, (first, first_seg, second, second_seg)

    result, (first, first_seg, second, second_seg), attempt = _mix_item(split, index, draw)
    item_id = (f"{index:0{state['width'][split]}d}_{safe_name(absent)}_absent_"
               f"{safe_name(first)}_{safe_name(second)}")
    p = result.params
    row = {
        "ID": item_id, "duration": p["length"] / SAMPLE_RATE, "ref_speaker": absent,
        "mix_speakers": f"{first}+{second}", "mix_files": f"{first_seg.path}+{second_seg.path}",
        "ref_duration": (p["ref_stop"] - p["ref_start"]) / SAMPLE_RATE, "attempt": attempt,
    }
    for column, signal in (("mix_wav", result.mix), ("ref_wav", result.reference)):
        sub, suffix = SUBDIRS[column]
        path = state["out"] / split / sub / f"{item_id}-{suffix}.wav"
        save_audio(path, signal, SAMPLE_RATE)
        row[column] = str(path)
    for column in ABSENT_COLUMNS:
        if column not in row:
            row[column] = p[column]
    return {c: _format(row[c]) for c in ABSENT_COLUMNS}


def _mix_split(split: str, count: int, state: dict, workers: int) -> list[dict]:
    """Write the audio of one split; its manifest rows."""
    for column, (sub, _) in SUBDIRS.items():
        if not (split == ABSENT_SPLIT and column == "target_wav"):
            (state["out"] / split / sub).mkdir(parents=True, exist_ok=True)
    rows = _run_split(split, count, state, workers)
    ids = [row["ID"] for row in rows]
    if len(set(ids)) != len(ids):
        raise RuntimeError(f"duplicate IDs in {split}")
    return rows


def _run_split(split: str, count: int, state: dict, workers: int) -> list[dict]:
    tasks = [(split, i) for i in range(count)]
    bar = dict(total=count, desc=f"{split} mixtures", unit="mix", mininterval=1.0)
    if workers == 1:
        _init_worker(state)
        return [make_item(task) for task in tqdm(tasks, **bar)]
    with multiprocessing.get_context().Pool(workers, _init_worker, (state,)) as pool:
        return list(tqdm(pool.imap(make_item, tasks, chunksize=2), **bar))


def write_manifest(path: Path, rows: list[dict], columns: list[str] = COLUMNS) -> None:
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
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _speaker_options(split: str) -> str:
    """The options that set how many speakers a split gets (there is no --num_train_speakers).

    Example
    -------
    >>> _speaker_options("train")
    'see --num_valid_speakers and --num_test_speakers (the rest are training speakers)'
    """
    if split == "train":
        return "see --num_valid_speakers and --num_test_speakers (the rest are training speakers)"
    return f"see --num_{'test' if split == ABSENT_SPLIT else split}_speakers"


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Do the work of :func:`main` on parsed arguments; raise UsageError on bad inputs."""
    counts = {split: getattr(args, f"num_{split}") for split in (*SPLITS, ABSENT_SPLIT)}
    if not any(counts.values()):
        raise UsageError("nothing to do: give --num_train, --num_valid and/or --num_test")
    check_writable_dir(args.out, "--out")  # before the corpora are read
    bad_files: list[BadFile] = []
    corpus = scan_corpora(args.corpus, check=True, bad_files=bad_files)
    if bad_files:
        listing = "".join(f"\n  {bad}" for bad in bad_files)
        if not args.skip_bad:
            raise UsageError(
                f"{len(bad_files)} unusable source file(s); nothing was written. Remove "
                f"them, or rerun with --skip_bad to leave them out:{listing}"
            )
        logger.warning("leaving out %d unusable source file(s) (--skip_bad):%s",
                       len(bad_files), listing)
    names = sorted({corpus_of(s) for s in corpus})
    if args.heldout_from:
        unknown = sorted(set(args.heldout_from) - set(names))
        if unknown:
            raise UsageError(f"--heldout_from {unknown}: corpora are named {names}")
    parts = noise_parts(args.noise_train_fraction)
    noise_lengths, noise_skipped = {}, []
    if args.noise_dir:
        needed = sorted({parts[split] for split, count in counts.items() if count})
        noise_lengths, noise_skipped = check_noise_files(
            find_noise_files(args.noise_dir), needed, args.min_noise_seconds
        )
    noise_files = list(noise_lengths) or None
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
    split_speakers[ABSENT_SPLIT] = split_speakers["test"]
    for split in (*SPLITS, ABSENT_SPLIT):
        need = 3 if split == ABSENT_SPLIT else 2
        if counts[split] and len(split_speakers[split]) < need:
            raise UsageError(
                f"not enough speakers: {counts[split]} {split} mixtures need >= {need} {split} "
                f"speakers, have {len(split_speakers[split])} ({len(segments)} usable of "
                f"{len(corpus)} found; {_speaker_options(split)}, --min_target_seconds, "
                "--min_ref_seconds)"
            )
    out = args.out.resolve()
    prepare_output(out, args.overwrite)

    state = {
        "seed": args.seed,
        "mixers": {s: mixer.replace(noise_part=parts[s]) for s in SPLIT_CODES},
        "min_target": int(round(args.min_target_seconds * SAMPLE_RATE)),
        "min_ref": int(round(args.min_ref_seconds * SAMPLE_RATE)),
        "out": out,
        "speakers": {s: {k: segments[k] for k in split_speakers[s]} for s in SPLIT_CODES},
        "order": {
            s: [
                split_speakers[s][k]
                for k in np.random.default_rng([args.seed, 1000 + SPLIT_CODES[s]]).permutation(
                    len(split_speakers[s])
                )
            ]
            for s in SPLIT_CODES
        },
        "width": {s: max(5, len(str(max(counts[s] - 1, 0)))) for s in SPLIT_CODES},
    }
    try:
        rows_by_split = {
            split: _mix_split(split, counts[split], state, args.workers)
            for split in (*SPLITS, ABSENT_SPLIT) if counts[split]
        }
    except BaseException:
        remove_run(out)  # a failed run leaves nothing half-made behind
        raise
    for split in SPLITS:  # only once the audio of every split is there
        if split_speakers[split]:
            save_speakers_json(out / split / "speakers.json", state["speakers"][split])
    summary = {}
    for split, rows in rows_by_split.items():
        absent = split == ABSENT_SPLIT
        write_manifest(out / f"{split}.csv", rows, ABSENT_COLUMNS if absent else COLUMNS)
        used = {r["ref_speaker"] for r in rows} if absent else {r["target_speaker"] for r in rows}
        talkers = ({s for r in rows for s in r["mix_speakers"].split("+")} if absent
                   else {r["interferer_speaker"] for r in rows})
        summary[split] = {
            "mixtures": len(rows),
            "speakers": len(split_speakers[split]),
            "speakers_used": len(used | talkers),
            "hours": round(sum(float(r["duration"]) for r in rows) / 3600, 4),
            "peak_protected": sum(float(r["peak_gain_db"]) < 0 for r in rows),
            "redrawn": sum(int(r["attempt"]) > 0 for r in rows),
        }
        if noise_files:
            lo, hi = parts[split]
            summary[split].update(
                noise_part=[lo, hi],
                noise_files_used=len({r["noise_file"] for r in rows}),
                noise_seconds_available=round(sum(
                    (b - a) / SAMPLE_RATE for a, b in (part_bounds(n, (lo, hi))
                                                 for n in noise_lengths.values())), 2),
                noise_seconds_used=noise_coverage_seconds(rows, noise_lengths, (lo, hi)),
            )

    params = {
        "command": shlex.join([sys.executable, "mixing/make_mixtures.py", *argv]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "mixer": mixer.settings(),
        "noise_parts": {s: list(parts[s]) for s in SPLIT_CODES} if noise_files else None,
        "noise_skipped": noise_skipped,
        "files_skipped": [f"{bad.path}: {bad.problem}" for bad in bad_files],
        "corpora": names,
        "speakers_found": len(corpus),
        "speakers_usable": len(segments),
        "split_speakers": {s: len(v) for s, v in split_speakers.items()},
        "splits": summary,
        "seeding": "np.random.default_rng([seed, split_code, index, attempt]) per item; "
        f"split codes {SPLIT_CODES}",
        "sample_rate": SAMPLE_RATE,
    }
    atomic_write_text(out / "mixing_params.yaml", yaml.safe_dump(params, sort_keys=False))

    print(f"wrote mixtures to {out}")
    print(f"{'split':<11} {'mixtures':>8} {'speakers':>8} {'hours':>7} {'peak-protected':>14}")
    for split, info in summary.items():
        print(
            f"{split:<11} {info['mixtures']:>8} {info['speakers_used']:>8} "
            f"{info['hours']:>7.3f} {info['peak_protected']:>14}"
        )
        if "noise_seconds_used" in info:
            print(f"{'':<11} noise: {info['noise_files_used']} file(s), "
                  f"{info['noise_seconds_used']:.1f} s used of "
                  f"{info['noise_seconds_available']:.1f} s (part {info['noise_part']})")
    if noise_skipped:
        print(f"skipped {len(noise_skipped)} noise file(s): " + "; ".join(noise_skipped))
    if bad_files:
        print(f"left out {len(bad_files)} unusable source file(s) (--skip_bad; listed in "
              "mixing_params.yaml)")
    return 0


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    mixer_logger = logging.getLogger("mixing.mixers")
    old_level = mixer_logger.level
    if args.verbose:  # peak protections are logged at debug level, counted in the summary
        mixer_logger.setLevel(logging.DEBUG)
    try:
        return run(args, argv)
    finally:
        mixer_logger.setLevel(old_level)


main = entry_point(_main, "make_mixtures.py")


if __name__ == "__main__":
    from mixing.make_mixtures import main as _main  # workers pickle this module, not __main__

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(_main())
