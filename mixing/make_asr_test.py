"""An English test set with real transcripts of the targets, for ASR on extracted speech.

Usage (from the repository root)::

    python mixing/make_asr_test.py --corpus ../shared/data/commonvoice_rsample \\
        --lang en --out data/asr_en/test --seed 0 [--noise_dir ../shared/data/noise]

The Common Voice sample has one or two clips per speaker, each with its sentence in
``utterances.tsv`` (columns ``lang``, ``speaker``, ``utterance``, ``sentence``; audio
at ``<corpus>/<lang>/<speaker>/<utterance>.flac``). Every clip becomes the target of
one mixture, split-utterance style: the clip is cut in two at a pause between words,
the longer part is the target and the other part the reference, so target and
reference never overlap and the target's words are known:

1. The sentence is force-aligned to the clip with PocketSphinx
   (:meth:`modules.asr.PocketSphinxRecognizer.align`). Among the word boundaries that
   leave at least ``--min_target_seconds`` and ``--min_ref_seconds`` on either side,
   the one with the longest pause is the cut (its middle); the target's transcript is
   the words on its side.
2. Where the alignment fails (a word missing from the dictionary, audio that does not
   follow the sentence), the clip is cut at its quietest frame in the middle region
   (:func:`mixing.references.find_split_point`) and the item gets **no** transcript:
   ``evaluate.py --asr`` then uses the recogniser's output on the clean target as its
   reference and says so. The count of such items is printed and recorded.
3. The interferer is a whole clip of another speaker (``--interferer_langs``, default
   the same language), mixed by :class:`mixing.mixers.Mixer` with ``length_mode="max"``
   so the target is never cropped (the shorter source is zero-padded at a random
   offset), at ``--ratio_db``, with optional noise from the *test* part of each noise
   file (:data:`mixing.mixers.TEST_NOISE_PART`).

Writes ``OUT/{mix,refs,targets}/`` (a test directory for ``evaluate.py``),
``OUT/transcripts.tsv`` (``ID``, ``transcript``: the items with a transcript),
the manifest ``OUT.csv`` beside it (speakers and source files, for the gender
breakdown) and ``OUT/asr_test_params.yaml`` (the command and the counts). Exit
status 0 done, 2 bad input (one message), 1 internal failure.

Example
-------
>>> choose_word_split([("a", 0.1, 0.5), ("b", 0.9, 1.6), ("c", 1.7, 2.5)], 2.6, 1.0, 0.5)
(0.7, 'right', ['b', 'c'])
"""

from __future__ import annotations

import csv
import io
import logging
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from mixing.corpus import find_noise_files
from mixing.make_mixtures import (
    SUBDIRS,
    UsageError,
    check_noise_files,
    safe_name,
    write_manifest,
)
from mixing.mixers import TEST_NOISE_PART, LoudnessError, Mixer
from mixing.references import find_split_point
from modules.asr import AsrError, PocketSphinxRecognizer
from modules.audio import SAMPLE_RATE, AudioFileError, load_audio, save_audio
from modules.cli import ArgumentParser, run_main
from modules.files import atomic_write_text

logger = logging.getLogger("mixing.make_asr_test")

COLUMNS = [
    "ID", "duration", "mix_wav", "ref_wav", "target_wav", "target_speaker",
    "interferer_speaker", "target_file", "target_start", "target_stop", "ref_start",
    "ref_stop", "interferer_file", "ratio_db", "noise_snr_db", "noise_file", "noise_start",
    "cut", "transcript",
]  # fmt: skip


def choose_word_split(
    words: list[tuple[str, float, float]], total: float, min_target: float, min_ref: float
) -> tuple[float, str, list[str]] | None:
    """The cut (seconds) at the longest pause between aligned words, the target side, its words.

    The target is the side with more words (the left one on a tie); both sides must be
    long enough. ``None`` when no word boundary qualifies.
    """
    best = None
    for k in range(1, len(words)):
        end, start = words[k - 1][2], words[k][1]
        cut = round((end + start) / 2, 3)
        left, right = words[:k], words[k:]
        side = "left" if len(left) >= len(right) else "right"
        target_len, ref_len = (cut, total - cut) if side == "left" else (total - cut, cut)
        if target_len < min_target or ref_len < min_ref:
            continue
        key = (start - end, -abs(len(left) - len(right)))
        if best is None or key > best[0]:
            best = (key, cut, side, [w for w, _, _ in (left if side == "left" else right)])
    return None if best is None else best[1:]


def read_clips(corpus: Path, lang: str) -> list[dict]:
    """Rows of ``utterances.tsv`` for one language, with the audio ``path``.

    Raises
    ------
    UsageError
        No ``utterances.tsv``, missing columns, or no clip of that language.
    """
    table = corpus / "utterances.tsv"
    if not table.is_file():
        raise UsageError(f"{table} not found (expected a Common Voice sample folder)")
    with open(table, newline="", encoding="utf-8") as fin:
        reader = csv.DictReader(fin, delimiter="\t", quoting=csv.QUOTE_NONE)
        need = {"lang", "speaker", "utterance", "sentence"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise UsageError(f"{table}: needs the columns {sorted(need)}")
        clips = [
            {**row, "path": str((corpus / row["lang"] / row["speaker"]
                                 / f"{row['utterance']}.flac").resolve())}
            for row in reader if row["lang"] == lang
        ]
    if not clips:
        raise UsageError(f"{table}: no clip of language {lang!r}")
    return clips


def build_parser() -> ArgumentParser:
    """The command-line parser (see the module docstring)."""
    parser = ArgumentParser(prog="make_asr_test.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True,
                        help="Common Voice sample folder (utterances.tsv, <lang>/<spk>/)")
    parser.add_argument("--lang", default="en", help="language of the targets")
    parser.add_argument("--interferer_langs", nargs="+", default=None,
                        help="languages of the interferers (default: --lang)")
    parser.add_argument("--out", type=Path, required=True, help="test directory to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ratio_db", type=float, default=0.0,
                        help="target-to-interferer loudness ratio (LU)")
    parser.add_argument("--noise_dir", type=Path, default=None)
    parser.add_argument("--snr_range", type=float, nargs=2, default=[5.0, 15.0])
    parser.add_argument("--lufs", type=float, default=-20.0)
    parser.add_argument("--min_target_seconds", type=float, default=1.0)
    parser.add_argument("--min_ref_seconds", type=float, default=1.0)
    parser.add_argument("--num_items", type=int, default=0,
                        help="use only the first N clips (0: all)")
    parser.add_argument("--overwrite", action="store_true")
    return parser


def main(argv: list[str]) -> int:
    """Build the test set; returns the exit status."""
    args = build_parser().parse_args(argv)
    clips = read_clips(args.corpus, args.lang)
    pool = clips if not args.interferer_langs or args.interferer_langs == [args.lang] else [
        clip for lang in args.interferer_langs for clip in read_clips(args.corpus, lang)]
    clips = clips[: args.num_items] if args.num_items > 0 else clips
    out = args.out.resolve()
    manifest = out.parent / f"{out.name}.csv"
    if (manifest.exists() or (out / "mix").exists()) and not args.overwrite:
        raise UsageError(f"{out} already holds a test set: use --overwrite or another --out")
    noise_files, noise_skipped = None, []
    if args.noise_dir:
        lengths, noise_skipped = check_noise_files(
            find_noise_files(args.noise_dir), [TEST_NOISE_PART], 1.0)
        noise_files = list(lengths)
    mixer = Mixer(lufs=args.lufs, ratio_db=args.ratio_db,
                  snr_db=tuple(args.snr_range) if noise_files else None,
                  noise_files=noise_files, noise_part=TEST_NOISE_PART, length_mode="max")
    asr = PocketSphinxRecognizer()
    for sub, _ in SUBDIRS.values():
        folder = out / sub
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.wav"):
            old.unlink()
    rows, transcripts, skipped, unaligned = [], [], [], []
    for index, clip in enumerate(clips):
        try:
            row = make_item(index, clip, pool, mixer, asr, args, out)
        except (AudioFileError, LoudnessError, ValueError) as error:
            logger.warning("skipping %s: %s", clip["path"], error)
            skipped.append(f"{clip['path']}: {error}")
            continue
        rows.append(row)
        if row["cut"] == "words":
            transcripts.append((row["ID"], row["transcript"]))
        else:
            unaligned.append(f"{row['ID']}: {row['transcript']}")
            row["transcript"] = ""
    if not rows:
        raise UsageError(f"no usable clip of {args.lang!r} in {args.corpus}: " + "; ".join(skipped))
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE,
                        escapechar="\\")
    writer.writerow(["ID", "transcript"])
    writer.writerows(transcripts)
    atomic_write_text(out / "transcripts.tsv", buffer.getvalue())
    write_manifest(manifest, rows, COLUMNS)
    counts = {
        "items": len(rows), "with_transcript": len(transcripts),
        "without_transcript": len(unaligned), "skipped_clips": len(skipped),
        "target_speakers": len({r["target_speaker"] for r in rows}),
        "speakers": len({r["target_speaker"] for r in rows} | {r["interferer_speaker"]
                                                                for r in rows}),
        "hours": round(sum(float(r["duration"]) for r in rows) / 3600, 4),
    }
    params = {
        "command": shlex.join([sys.executable, "mixing/make_asr_test.py", *argv]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "mixer": mixer.settings(), "counts": counts, "without_transcript": unaligned,
        "skipped": skipped, "noise_skipped": noise_skipped,
    }
    atomic_write_text(out / "asr_test_params.yaml", yaml.safe_dump(params, sort_keys=False))
    print(f"wrote {counts['items']} mixtures to {out} ({counts['hours']:.3f} h, "
          f"{counts['target_speakers']} target speakers, {counts['speakers']} speakers)")
    print(f"{counts['with_transcript']} with a transcript (cut at a pause between aligned "
          f"words), {counts['without_transcript']} without (alignment failed: evaluate.py "
          f"--asr uses the recogniser's output on the target), {len(skipped)} clip(s) skipped")
    return 0


def make_item(index: int, clip: dict, pool: list[dict], mixer: Mixer, asr, args, out: Path):
    """Cut one clip into target and reference, mix it with an interferer, write it."""
    rng = np.random.default_rng([args.seed, 5, index])
    wav, _, _ = load_audio(clip["path"], SAMPLE_RATE)
    total = wav.shape[0] / SAMPLE_RATE
    split, note = None, ""
    try:
        split = choose_word_split(asr.align(wav, clip["sentence"]), total,
                                  args.min_target_seconds, args.min_ref_seconds)
        note = "" if split else "no pause between words leaves both parts long enough"
    except AsrError as error:
        note = str(error)
    if split:
        cut_s, side, words = split
        cut, how, transcript = int(round(cut_s * SAMPLE_RATE)), "words", " ".join(words)
    else:
        cut = find_split_point(wav.numpy())
        side = "left" if cut >= wav.shape[0] - cut else "right"
        how, transcript = "energy", note
    t_start, t_stop = (0, cut) if side == "left" else (cut, wav.shape[0])
    r_start, r_stop = (cut, wav.shape[0]) if side == "left" else (0, cut)
    if (t_stop - t_start) < args.min_target_seconds * SAMPLE_RATE or (
            r_stop - r_start) < args.min_ref_seconds * SAMPLE_RATE:
        raise ValueError(f"too short to split ({total:.2f} s)")
    others = [c for c in pool if c["speaker"] != clip["speaker"]]
    if not others:
        raise ValueError("no interferer of another speaker")
    other = others[int(rng.integers(len(others)))]
    interferer, _, _ = load_audio(other["path"], SAMPLE_RATE)
    result = mixer.mix_arrays(wav[t_start:t_stop], interferer, wav[r_start:r_stop], rng)
    target_speaker = f"cv_{clip['lang']}:{clip['speaker']}"
    interferer_speaker = f"cv_{other['lang']}:{other['speaker']}"
    item_id = f"{index:05d}_{safe_name(target_speaker)}_{safe_name(interferer_speaker)}"
    row = {"ID": item_id, "duration": f"{result.mix.shape[0] / SAMPLE_RATE:.4f}"}
    signals = {"mix_wav": result.mix, "ref_wav": result.reference, "target_wav": result.target}
    for column, (sub, suffix) in SUBDIRS.items():
        path = out / sub / f"{item_id}-{suffix}.wav"
        save_audio(path, torch.as_tensor(signals[column]), SAMPLE_RATE)
        row[column] = str(path)
    p = result.params
    row.update(
        target_speaker=target_speaker, interferer_speaker=interferer_speaker,
        target_file=clip["path"], target_start=t_start, target_stop=t_stop,
        ref_start=r_start, ref_stop=r_stop, interferer_file=other["path"],
        ratio_db=f"{p['ratio_db']:.2f}", noise_snr_db=f"{p['noise_snr_db']:.2f}",
        noise_file=p["noise_file"], noise_start=p["noise_start"], cut=how,
        transcript=transcript,
    )
    return row


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(run_main(main, prog="make_asr_test.py"))
