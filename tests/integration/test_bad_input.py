# ruff: noqa: E501  (the case table keeps one case per line)
"""Every command-line tool against bad input: one case per line.

Each case names the command (``{R}``: the shared inputs built once from ci_tiny,
``{C}``: a fresh folder of its own, ``{M}``: a tiny model directory), how its
folder is prepared, the exit status it must end with (0 done, 2 bad input or
usage, 1 failure; see README "Command-line tools"), words its output must hold
(and must not), and the files that must exist, must not exist (globs allowed) or
must not change. An exit status 2 must come with one ``SCRIPT: error: ...`` line
and no traceback.

The commands run as real processes (``python SCRIPT ARGS`` semantics: the script
file run as ``__main__``, its own exit status), two at a time. To keep the module
fast, they are forked from one helper process that has already imported torch,
SpeechBrain and the project's modules, so no case pays for those imports again.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from modules.audio import load_audio, save_audio
from modules.model_dir import write_model_dir
from modules.spex_plus import SpExPlus

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
SR = 16000
TRAIN = ("recipes/LibriMix-TSE/train.py recipes/LibriMix-TSE/hparams/tiny.yaml "
         "--output_folder {C}/results")
EXTRACT = "extract.py --model_dir {M}"
EVAL = "evaluate.py hparams/test.yaml"
EVAL_MIX = "evaluate.py hparams/test.yaml --baseline mixture --metrics [si_sdr]"
MIXTURES = ("mixing/make_mixtures.py --corpus {C}/corpus --out {C}/out --seed 0 "
            "--min_target_seconds 1.0 --min_ref_seconds 1.0")
SILENT_SPEAKER = "cp {R}/corpus {C}/corpus; cp {R}/silence.flac {C}/corpus/103/*"
CUT_FILE = "cp {R}/corpus {C}/corpus; cp {R}/cut.flac {C}/corpus/1034/*part0.flac"
TEST_COPY = "cp {R}/test {C}/test"
MIX_RUN = f"{MIXTURES} --num_valid 2 --num_valid_speakers 3 --num_test 2 --num_test_speakers 3"


@dataclass
class Case:
    """One command and what must hold afterwards."""

    name: str
    command: str
    status: int
    words: str = ""  # "|"-separated, all in stdout + stderr
    setup: str = ""  # "; "-separated: "cp SRC DST" (DST glob: every match), "ln SRC DST",
    #                  "write PATH TEXT", "mkdir PATH", "rm PATH"
    exists: str = ""  # "|"-separated paths
    absent: str = ""  # "|"-separated globs
    unchanged: str = ""  # "|"-separated paths
    not_words: str = ""  # "|"-separated, none in stdout + stderr
    before: str = ""  # a command run first (must exit 0)


C = Case
CASES = [
    # ---- extract.py: data loss first
    C("extract-out-is-mix", EXTRACT + " --mix {C}/mix.wav --ref {R}/ref.wav --out {C}/mix.wav", 2, "is the input file", setup="cp {R}/mix.wav {C}/mix.wav", unchanged="{C}/mix.wav"),
    C("extract-out-is-ref-dot", EXTRACT + " --mix {R}/mix.wav --ref {C}/ref.wav --out {C}/./ref.wav", 2, "is the input file", setup="cp {R}/ref.wav {C}/ref.wav", unchanged="{C}/ref.wav"),
    C("extract-out-via-dotdot", EXTRACT + " --mix {C}/mix.wav --ref {R}/ref.wav --out {C}/sub/../mix.wav", 2, "is the input file", setup="cp {R}/mix.wav {C}/mix.wav; mkdir {C}/sub", unchanged="{C}/mix.wav"),
    C("extract-out-symlink-to-mix", EXTRACT + " --mix {C}/mix.wav --ref {R}/ref.wav --out {C}/alias.wav", 2, "is the input file", setup="cp {R}/mix.wav {C}/mix.wav; ln {C}/mix.wav {C}/alias.wav", unchanged="{C}/mix.wav"),
    C("extract-out-unwritable", EXTRACT + " --mix {R}/mix.wav --ref {R}/ref.wav --out /proc/tse-test/est.wav", 2, "/proc/tse-test/est.wav|cannot be written there", not_words=".est.wav"),
    C("extract-out-is-dir", EXTRACT + " --mix {R}/mix.wav --ref {R}/ref.wav --out {C}", 2, "is a directory"),
    C("extract-out-bad-suffix", EXTRACT + " --mix {R}/mix.wav --ref {R}/ref.wav --out {C}/est.xyz", 2, "unknown audio format", absent="{C}/*"),
    C("extract-lufs-nan", EXTRACT + " --mix {R}/mix.wav --ref {R}/ref.wav --out {C}/est.wav --lufs nan", 2, "--lufs: expected LUFS in [-70, 0]", absent="{C}/*"),
    C("extract-out-mp3", EXTRACT + " --mix {R}/mix.wav --ref {R}/ref.wav --out {C}/est.mp3", 2, "unknown audio format|.mp3", absent="{C}/*", not_words="Traceback"),
    C("extract-mix-is-folder", EXTRACT + " --mix {C} --ref {R}/ref.wav --out {C}/est.wav", 2, "not an audio file (a folder)", absent="{C}/est.wav"),
    C("extract-missing-mix", EXTRACT + " --mix {C}/missing.wav --ref {R}/ref.wav --out {C}/est.wav", 2, "missing.wav: file not found", absent="{C}/est.wav"),
    C("extract-text-ref", EXTRACT + " --mix {R}/mix.wav --ref {R}/text.wav --out {C}/est.wav", 2, "text.wav: not a readable audio file", absent="{C}/est.wav"),
    C("extract-zero-ref", EXTRACT + " --mix {R}/mix.wav --ref {R}/silent.wav --out {C}/est.wav", 2, "silent.wav: all samples are zero", absent="{C}/est.wav"),
    C("extract-near-silent-ref", EXTRACT + " --mix {R}/mix.wav --ref {R}/quiet_ref.wav --out {C}/est.wav", 2, "quiet_ref.wav: reference is silent", absent="{C}/est.wav"),
    C("extract-100-sample-ref", EXTRACT + " --mix {R}/mix.wav --ref {R}/ref100.wav --out {C}/est.wav", 2, "ref100.wav: reference is 0.006 s long", absent="{C}/est.wav"),
    C("extract-0.3s-ref", EXTRACT + " --mix {R}/mix.wav --ref {R}/ref03.wav --out {C}/est.wav", 2, "ref03.wav: reference is 0.300 s long", absent="{C}/est.wav"),
    C("extract-short-mix", EXTRACT + " --mix {R}/short_mix.wav --ref {R}/ref.wav --out {C}/est.wav", 2, "short_mix.wav: mixture is 0.050 s long", absent="{C}/est.wav"),
    C("extract-no-model", "extract.py --model_dir {C}/none --mix {R}/mix.wav --ref {R}/ref.wav --out {C}/est.wav", 2, "none: model directory not found", absent="{C}/est.wav"),
    C("extract-empty-checkpoint", "extract.py --model_dir {R}/empty_ckpt --mix {R}/mix.wav --ref {R}/ref.wav --out {C}/est.wav", 2, "model.ckpt: empty checkpoint file (0 bytes)", absent="{C}/est.wav"),
    C("extract-device-abc", EXTRACT + " --device abc --mix {R}/mix.wav --ref {R}/ref.wav --out {C}/est.wav", 2, "--device abc: not a torch device", absent="{C}/est.wav"),
    C("extract-unknown-option", EXTRACT + " --bogus 1 --mix {R}/mix.wav --ref {R}/ref.wav --out {C}/est.wav", 2, "unrecognized arguments: --bogus 1"),
    C("extract-both-modes", EXTRACT + " --mix {R}/mix.wav --ref {R}/ref.wav --out {C}/est.wav --test_dir {R}/test --out_dir {C}", 2, "not both"),
    C("extract-good", EXTRACT + " --mix {R}/mix.wav --ref {R}/ref.wav --out {C}/est.wav --quiet", 0, "wrote", exists="{C}/est.wav"),
    # ---- extract.py --test_dir: the whole directory first
    C("extract-dir-missing", EXTRACT + " --test_dir {C}/nope --out_dir {C}/est", 2, "nope: test directory not found", absent="{C}/est"),
    C("extract-dir-bad-ref", EXTRACT + " --test_dir {C}/test --out_dir {C}/est", 2, "a-1-ref.wav: reference is 0.006 s long|--skip_bad", setup=TEST_COPY + "; cp {R}/ref100.wav {C}/test/refs/a-1-ref.wav", absent="{C}/est"),
    C("extract-dir-skip-bad", EXTRACT + " --test_dir {C}/test --out_dir {C}/est --skip_bad --quiet", 0, "1 bad item(s) skipped", setup=TEST_COPY + "; cp {R}/ref100.wav {C}/test/refs/a-1-ref.wav", exists="{C}/est/b_2-est.wav|{C}/est/extract_info.csv", absent="{C}/est/a-1-est.wav"),
    C("extract-dir-out-in-mix", EXTRACT + " --test_dir {C}/test --out_dir {C}/test/mix/est", 2, "inside the test directory's mix/", setup=TEST_COPY, absent="{C}/test/mix/est"),
    C("extract-dir-out-is-file", EXTRACT + " --test_dir {R}/test --out_dir {C}/file", 2, "is not a folder", setup="write {C}/file x"),
    # ---- evaluate.py: usage
    C("eval-no-args", "evaluate.py", 2, "hparams yaml file comes first"),
    C("eval-missing-yaml", "evaluate.py {C}/none.yaml --test_dir {R}/test", 2, "none.yaml: hparams file not found"),
    C("eval-no-test-dir", EVAL + " --baseline mixture", 2, "--test_dir is required"),
    C("eval-unknown-option", EVAL + " --test_dir {R}/test --baseline mixture --bogus 1", 2, "unknown option --bogus"),
    C("eval-html-negative", EVAL + " --test_dir {R}/test --baseline mixture --html -1", 2, "--html: expected a number of items >= 0"),
    C("eval-ref-length-zero", EVAL + " --test_dir {R}/test --baseline mixture --ref_lengths [0]", 2, "--ref_lengths: expected seconds > 0"),
    C("eval-misspelt-option", EVAL + " --test_dir {R}/test --baseline mixture --skipbad", 2, "unknown option --skipbad (did you mean --skip_bad"),
    C("eval-number-expected", EVAL + " --test_dir {R}/test --baseline mixture --sample_rate abc", 2, "--sample_rate expects a number"),
    C("eval-metrics-no-brackets", EVAL + " --test_dir {R}/test --baseline mixture --metrics si_sdr --output_folder {C}/out", 0, "si_sdr (dB)", exists="{C}/out/summary.json"),
    C("eval-metrics-unknown", EVAL + " --test_dir {R}/test --baseline mixture --metrics si_sdr,foo --output_folder {C}/out", 2, "unknown metric(s) foo", absent="{C}/out"),
    C("eval-device-abc", EVAL + " --test_dir {R}/test --model_dir {M} --device abc --output_folder {C}/out", 2, "--device abc: not a torch device", absent="{C}/out"),
    C("eval-bad-baseline", EVAL + " --test_dir {R}/test --baseline foo", 2, "--baseline must be one of"),
    C("eval-model-and-baseline", EVAL + " --test_dir {R}/test --baseline mixture --model_dir {M}", 2, "not both"),
    C("eval-no-model", EVAL + " --test_dir {R}/test --model_dir {C}/none --output_folder {C}/out", 2, "none: model directory not found", absent="{C}/out"),
    # ---- evaluate.py: outputs checked before the first item
    C("eval-save-dir-unwritable", EVAL_MIX + " --test_dir {R}/test --save_dir /proc/tse-test/est --output_folder {C}/out", 2, "/proc/tse-test/est: --save_dir cannot be written there", absent="{C}/out"),
    C("eval-output-unwritable", EVAL_MIX + " --test_dir {R}/test --output_folder /proc/tse-test/out", 2, "/proc/tse-test/out: --output_folder cannot be written there"),
    C("eval-output-is-file", EVAL_MIX + " --test_dir {R}/test --output_folder {C}/file", 2, "is not a folder", setup="write {C}/file x"),
    C("eval-save-dir-in-mix", EVAL_MIX + " --test_dir {C}/test --save_dir {C}/test/mix/est --output_folder {C}/out", 2, "inside the test directory's mix/", setup=TEST_COPY, absent="{C}/test/mix/est|{C}/out"),
    # ---- evaluate.py: the test directory, checked whole before anything is scored
    C("eval-dir-missing", EVAL_MIX + " --test_dir {C}/nope --output_folder {C}/out", 2, "nope: test directory not found", absent="{C}/out"),
    C("eval-ref-100-samples", EVAL_MIX + " --test_dir {C}/test --output_folder {C}/out", 2, "a-1-ref.wav: reference is 0.006 s long|nothing was scored", setup=TEST_COPY + "; cp {R}/ref100.wav {C}/test/refs/a-1-ref.wav", absent="{C}/out"),
    C("eval-ref-0.3s", EVAL_MIX + " --test_dir {C}/test --output_folder {C}/out", 2, "a-1-ref.wav: reference is 0.300 s long", setup=TEST_COPY + "; cp {R}/ref03.wav {C}/test/refs/a-1-ref.wav", absent="{C}/out"),
    C("eval-ref-near-silent", EVAL_MIX + " --test_dir {C}/test --output_folder {C}/out", 2, "a-1-ref.wav: reference is silent", setup=TEST_COPY + "; cp {R}/quiet_ref.wav {C}/test/refs/a-1-ref.wav", absent="{C}/out"),
    C("eval-mix-too-short", EVAL_MIX + " --test_dir {C}/test --output_folder {C}/out", 2, "b_2-mixed.wav: mixture is 0.050 s long", setup=TEST_COPY + "; cp {R}/short_mix.wav {C}/test/mix/b_2-mixed.wav; cp {R}/short_mix.wav {C}/test/targets/b_2-target.wav", absent="{C}/out"),
    C("eval-stereo-and-orphan", EVAL_MIX + " --test_dir {C}/test --output_folder {C}/out", 2, "c-mixed.wav: 2 channels|d-ref.wav: no mixture", setup=TEST_COPY + "; cp {R}/stereo.wav {C}/test/mix/c-mixed.wav; cp {R}/ref.wav {C}/test/refs/c-ref.wav; cp {R}/ref.wav {C}/test/refs/d-ref.wav", absent="{C}/out"),
    C("eval-empty-targets", EVAL_MIX + " --test_dir {C}/test --output_folder {C}/out", 2, "empty targets/ folder", setup=TEST_COPY + "; rm {C}/test/targets; mkdir {C}/test/targets", absent="{C}/out"),
    C("eval-no-targets-no-save-dir", EVAL_MIX + " --test_dir {C}/test --output_folder {C}/out", 2, "no targets/ folder|--save_dir", setup=TEST_COPY + "; rm {C}/test/targets", absent="{C}/out"),
    C("eval-skip-bad-complete", EVAL_MIX + " --test_dir {C}/test --output_folder {C}/out --skip_bad", 0, "1 of 2 item(s) scored|1 skipped as bad", setup=TEST_COPY + "; cp {R}/ref100.wav {C}/test/refs/a-1-ref.wav", exists="{C}/out/summary.json"),
    C("eval-failed-estimates-count", EVAL + " --test_dir {R}/test --model_dir {R}/zero_model --metrics [si_sdr,si_sdri] --output_folder {C}/out", 0, "2 failed estimate(s)|at floor", exists="{C}/out/summary.json"),
    C("eval-model-good", EVAL + " --test_dir {R}/test --model_dir {M} --metrics [si_sdr] --output_folder {C}/out --save_dir {C}/est", 0, "si_sdr (dB)", exists="{C}/out/summary.json|{C}/est/a-1-est.wav"),
    # ---- download_model.py
    C("pack-out-is-checkpoint", "download_model.py --pack {C}/model --out {C}/model/model.ckpt", 2, "inside the packed directory", setup="cp {M} {C}/model", unchanged="{C}/model/model.ckpt|{C}/model/inference.yaml"),
    C("pack-out-inside-dir", "download_model.py --pack {C}/model --out {C}/model/release.tar.gz", 2, "inside the packed directory", setup="cp {M} {C}/model", absent="{C}/model/release.tar.gz|{C}/model/.release*"),
    C("pack-missing-dir", "download_model.py --pack {C}/none --out {C}/a.tar.gz", 2, "none: model directory not found", absent="{C}/a.tar.gz"),
    C("pack-good", "download_model.py --pack {M} --out {C}/tiny-v1.tar.gz", 0, "sha256", exists="{C}/tiny-v1.tar.gz"),
    C("download-not-a-model-no-part", "download_model.py --url file://{R}/not_model.tar.gz --sha256 {NOT_MODEL_SHA} --dest {C}/dest", 2, "not a model directory", absent="{C}/dest|{C}/.dest*"),
    C("download-garbage-no-part", "download_model.py --url file://{R}/garbage.tar.gz --sha256 {GARBAGE_SHA} --dest {C}/dest", 2, "not a valid .tar.gz", absent="{C}/dest|{C}/.dest*"),
    C("download-checksum-mismatch", "download_model.py --url file://{R}/garbage.tar.gz --sha256 " + "0" * 64 + " --dest {C}/dest", 2, "checksum mismatch", absent="{C}/dest|{C}/.dest*"),
    C("download-bad-sha", "download_model.py --url file://{R}/garbage.tar.gz --sha256 xyz --dest {C}/dest", 2, "is not a SHA-256"),
    C("download-url-without-sha", "download_model.py --url file://{R}/garbage.tar.gz", 2, "--url needs --sha256"),
    C("download-unknown-name", "download_model.py --name nope --dest {C}/dest", 2, "unknown model 'nope'"),
    C("download-not-published", "download_model.py --name spexplus-libri2mix-16k --dest {C}/dest", 2, "not published yet"),
    C("download-dest-in-the-way", "download_model.py --url file://{R}/good.tar.gz --sha256 {GOOD_SHA} --dest {C}/dest", 2, "--force", setup="write {C}/dest/notes.txt mine", unchanged="{C}/dest/notes.txt"),
    C("download-good", "download_model.py --url file://{R}/good.tar.gz --sha256 {GOOD_SHA} --dest {C}/dest", 0, "model ready", exists="{C}/dest/model.ckpt", absent="{C}/.dest*"),
    # ---- export_model.py
    C("export-no-model", "export_model.py --model_dir {C}/none --out {C}/out", 2, "none: model directory not found", absent="{C}/out"),
    C("export-out-is-file", "export_model.py --model_dir {M} --out {C}/file", 2, "exists and is not a directory", setup="write {C}/file x", unchanged="{C}/file"),
    C("export-out-in-model", "export_model.py --model_dir {C}/model --out {C}/model/export", 2, "inside the model directory", setup="cp {M} {C}/model", absent="{C}/model/export"),
    C("export-bad-format", "export_model.py --model_dir {M} --out {C}/out --format tflite", 2, "invalid choice"),
    C("export-missing-check-file", "export_model.py --model_dir {M} --out {C}/out --check_mix {C}/none.wav", 2, "none.wav: file not found", absent="{C}/out"),
    # ---- mixing/make_mixtures.py
    C("mix-missing-corpus", MIXTURES + " --num_test 2", 2, "does not exist"),
    C("mix-nothing-to-do", MIXTURES, 2, "nothing to do", setup="cp {R}/corpus {C}/corpus"),
    C("mix-silent-speaker", MIXTURES + " --num_train 2 --num_test 2 --num_test_speakers 3", 2, "3 unusable source file(s)|103|silent|--skip_bad", setup=SILENT_SPEAKER, absent="{C}/out/train.csv|{C}/out/mixing_params.yaml|{C}/out/*/*/*.wav", not_words="Traceback"),
    C("mix-cut-flac", MIXTURES + " --num_test 2 --num_test_speakers 3", 2, "1 unusable source file(s)|1034", setup=CUT_FILE, absent="{C}/out/test.csv"),
    C("mix-skip-bad", MIXTURES + " --num_train 2 --num_test 2 --num_test_speakers 3 --skip_bad", 0, "left out 3 unusable source file(s)", setup=SILENT_SPEAKER, exists="{C}/out/train.csv|{C}/out/test.csv|{C}/out/mixing_params.yaml"),
    C("mix-exists-no-overwrite", MIX_RUN, 2, "--overwrite", setup="cp {R}/corpus {C}/corpus", before=MIX_RUN, unchanged="{C}/out/valid.csv"),
    C("mix-overwrite-fewer-splits", MIXTURES + " --num_test 2 --num_test_speakers 3 --overwrite", 0, "wrote mixtures", setup="cp {R}/corpus {C}/corpus", before=MIX_RUN, exists="{C}/out/test.csv|{C}/out/test/speakers.json", absent="{C}/out/valid.csv|{C}/out/valid"),
    C("mix-train-hint", MIXTURES + " --num_train 2 --num_valid_speakers 4 --num_test_speakers 3", 2, "not enough speakers|--num_valid_speakers", setup="cp {R}/corpus {C}/corpus", not_words="--num_train_speakers"),
    C("mix-out-is-file", MIXTURES + " --num_test 2 --num_test_speakers 3", 2, "--out is not a folder", setup="cp {R}/corpus {C}/corpus; write {C}/out x", unchanged="{C}/out"),
    C("mix-out-unwritable", "mixing/make_mixtures.py --corpus {R}/corpus --out /proc/tse-test/mix --num_test 2", 2, "/proc/tse-test/mix: --out cannot be written there"),
    C("mix-workers-zero", MIXTURES + " --num_test 2 --workers 0", 2, "expected an integer >= 1"),
    # ---- mixing/synth_corpus.py
    C("synth-out-unwritable", "mixing/synth_corpus.py --out /proc/tse-test/corpus", 2, "cannot be written there"),
    C("synth-no-speakers", "mixing/synth_corpus.py --out {C}/corpus --num_speakers 0 --no_progress", 2, "num_speakers must be >= 1"),
    # ---- recipes/LibriMix-TSE/train.py: refused before any model is built
    C("train-no-data-folder-option", TRAIN, 2, "--data_folder is required"),
    C("train-missing-data-folder", TRAIN + " --data_folder {C}/none", 2, "none: data folder not found"),
    C("train-no-valid-csv", TRAIN + " --data_folder {R}/data_no_valid", 2, "valid.csv: no validation manifest"),
    C("train-one-speaker", TRAIN + " --data_folder {R}/data_one_speaker", 2, "speakers.json: 1 training speaker(s)"),
    C("train-no-two-segments", TRAIN + " --data_folder {R}/data_one_segment", 2, "speakers.json: 2 training speaker(s), the most segments of one 1"),
    C("train-corrupt-file", TRAIN + " --data_folder {R}/data_corrupt", 2, "cut.flac: cannot be decoded"),
    C("train-valid-csv-not-a-manifest", TRAIN + " --data_folder {C}/data", 2, "valid.csv: not a mixing manifest (no mix_wav", setup="cp {R}/data {C}/data; write {C}/data/valid.csv ID,path"),
    C("train-unknown-option", TRAIN + " --data_folder {R}/data --bogus 1", 2, "unknown option --bogus"),
    C("train-batch-size-text", TRAIN + " --data_folder {R}/data --batch_size abc", 2, "--batch_size expects a number (default 8), got 'abc'"),
    C("train-bad-run-option", TRAIN + " --data_folder {R}/data --precision fp7", 2, "argument --precision: invalid choice"),
    C("train-device-abc", TRAIN + " --data_folder {R}/data --device abc", 2, "--device abc: not a torch device"),
    C("train-batch-size-zero", TRAIN + " --data_folder {R}/data --batch_size 0", 2, "--batch_size must be > 0, got 0", not_words="Traceback"),
    C("train-negative-budget", TRAIN + " --data_folder {R}/data --max_train_minutes -5", 2, "--max_train_minutes must be >= 0", not_words="Traceback"),
    C("train-unknown-reference-encoder", TRAIN + " --data_folder {R}/data --reference_encoder ecapa", 2, "reference_encoder must be one of", not_words="Traceback"),
]  # fmt: skip


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tar(path: Path, folder: Path, arcname: str) -> None:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=arcname)


@pytest.fixture(scope="module")
def inputs(ci_tiny, tmp_path_factory, tiny_args) -> dict:
    """The shared inputs (read-only for the cases) and the placeholders of the commands."""
    root = tmp_path_factory.mktemp("bad_input")
    speech = ci_tiny / "speech"
    target = load_audio(next((speech / "103").glob("*-part0.flac")))[0]
    ref = load_audio(next((speech / "103").glob("*-part1.flac")))[0]
    other = load_audio(next((speech / "1040").glob("*-part0.flac")))[0]
    length = min(len(target), len(other))
    mix = 0.5 * (target[:length] + other[:length])
    save_audio(root / "mix.wav", mix, SR)
    save_audio(root / "ref.wav", ref, SR)
    save_audio(root / "ref100.wav", ref[:100], SR)
    save_audio(root / "ref03.wav", ref[: int(0.3 * SR)], SR)
    sf.write(root / "quiet_ref.wav", 1e-5 * ref.numpy(), SR, subtype="FLOAT")
    save_audio(root / "short_mix.wav", mix[:800], SR)
    save_audio(root / "silent.wav", torch.zeros(SR), SR)
    sf.write(root / "stereo.wav", np.stack([mix.numpy()] * 2, axis=1), SR)
    (root / "text.wav").write_text("this is not audio")
    for item, (m, t) in {"a-1": (mix, 0.5 * target[:length]), "b_2": (mix[:SR], 0.5 * target[:SR])
                         }.items():
        save_audio(root / "test" / "mix" / f"{item}-mixed.wav", m, SR)
        save_audio(root / "test" / "refs" / f"{item}-ref.wav", ref, SR)
        save_audio(root / "test" / "targets" / f"{item}-target.wav", t, SR)

    # models: a tiny random one, one whose every weight is zero (all-zero estimates),
    # one with an empty checkpoint
    torch.manual_seed(0)
    model = SpExPlus(**tiny_args)
    write_model_dir(model, root / "model")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    write_model_dir(model, root / "zero_model")
    shutil.copytree(root / "model", root / "empty_ckpt")
    (root / "empty_ckpt" / "model.ckpt").write_bytes(b"")
    _tar(root / "good.tar.gz", root / "model", "tiny")
    (root / "readme").mkdir()
    (root / "readme" / "README").write_text("no model here")
    _tar(root / "not_model.tar.gz", root / "readme", "readme")
    (root / "garbage.tar.gz").write_bytes(b"not a tar archive at all" * 10)

    # a corpus of ci_tiny speakers; a silent and a cut-short FLAC to put into copies
    shutil.copytree(speech, root / "corpus")
    sf.write(root / "silence.flac", np.zeros(3 * SR), SR)
    data = next((speech / "1034").glob("*-part0.flac")).read_bytes()
    (root / "cut.flac").write_bytes(data[: len(data) // 2])

    # training data folders (what make_mixtures writes, reduced to what train.py reads)
    def data_folder(name, speakers, valid=True, segments_each=2):
        folder = root / name
        (folder / "train").mkdir(parents=True)
        segments = {f"ci:{spk}": [{"path": str(path), "start": start, "stop": start + 16000}
                                  for start in range(0, 16000 * segments_each, 16000)]
                    for spk, path in speakers.items()}
        (folder / "train" / "speakers.json").write_text(json.dumps(segments))
        if valid:
            (folder / "valid.csv").write_text(
                "ID,duration,mix_wav,ref_wav,target_wav,target_speaker,interferer_speaker\n"
                f"a-1,1.0,{root}/test/mix/a-1-mixed.wav,{root}/test/refs/a-1-ref.wav,"
                f"{root}/test/targets/a-1-target.wav,103,1040\n"
            )

    pieces = {spk: next((speech / spk).glob("*-part0.flac")) for spk in ("103", "1040")}
    data_folder("data", pieces)
    data_folder("data_no_valid", pieces, valid=False)
    data_folder("data_one_speaker", {"103": pieces["103"]})
    data_folder("data_corrupt", {**pieces, "1034": root / "cut.flac"})
    data_folder("data_one_segment", pieces, segments_each=1)
    return {
        "R": str(root), "M": str(root / "model"),
        "GOOD_SHA": _sha256(root / "good.tar.gz"),
        "NOT_MODEL_SHA": _sha256(root / "not_model.tar.gz"),
        "GARBAGE_SHA": _sha256(root / "garbage.tar.gz"),
    }


def _fill(text: str, values: dict) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def _setup(case: Case, values: dict) -> None:
    for step in filter(None, (s.strip() for s in case.setup.split(";"))):
        op, *args = _fill(step, values).split(" ", 2)
        if op == "cp":
            for dest in sorted(glob.glob(args[1])) or [args[1]]:
                if Path(args[0]).is_dir():
                    shutil.copytree(args[0], dest)
                else:
                    Path(dest).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(args[0], dest)
        elif op == "ln":
            os.symlink(args[0], args[1])
        elif op == "write":
            Path(args[0]).parent.mkdir(parents=True, exist_ok=True)
            Path(args[0]).write_text(args[1])
        elif op == "mkdir":
            Path(args[0]).mkdir(parents=True)
        elif op == "rm":
            shutil.rmtree(args[0])
        else:
            raise ValueError(f"unknown setup step {step!r}")


# --------------------------------------------------------------------------------------
# Running: a helper process imports everything once, then forks one child per command
# --------------------------------------------------------------------------------------

RUNNER = r'''
import hashlib, json, os, runpy, sys, traceback
import torch, torchaudio, soundfile, speechbrain, torchmetrics.functional.audio  # noqa
import hyperpyyaml, ruamel.yaml, yaml, tqdm, pesq, pystoi  # noqa
import modules.inference, modules.metrics, modules.dataio, modules.cli  # noqa
import mixing.make_mixtures, mixing.corpus, mixing.synth_corpus  # noqa

def run(command, out_path, err_path, cwd):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(cwd)
            for fd, path in ((1, out_path), (2, err_path)):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            sys.stdout = open(1, "w", closefd=False, buffering=1)
            sys.stderr = open(2, "w", closefd=False, buffering=1)
            sys.argv = list(command)
            try:
                runpy.run_path(command[0], run_name="__main__")
                code = 0
            except SystemExit as exit_:
                if exit_.code is None:
                    code = 0
                elif isinstance(exit_.code, int):
                    code = exit_.code
                else:
                    print(exit_.code, file=sys.stderr)
                    code = 1
            except BaseException:
                traceback.print_exc()
                code = 1
        finally:
            try:
                sys.stdout.flush(); sys.stderr.flush()
            finally:
                os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

def run_case(case):
    if case["before"]:
        status = run(case["before"], case["out"] + ".before", case["err"] + ".before",
                     case["cwd"])
        if status != 0:
            return 200  # the preparing command failed
    digests = {path: hashlib.sha256(open(path, "rb").read()).hexdigest()
               for path in case["unchanged"]}
    with open(case["out"] + ".digests", "w") as stream:
        json.dump(digests, stream)
    return run(case["command"], case["out"], case["err"], case["cwd"])

cases = json.load(sys.stdin)
parallel = int(os.environ.get("BAD_INPUT_PARALLEL", "2"))
running, statuses = {}, {}
pending = list(cases)
while pending or running:
    while pending and len(running) < parallel:
        case = pending.pop(0)
        pid = os.fork()
        if pid == 0:
            os._exit(run_case(case) & 0xFF)
        running[pid] = case["name"]
    pid, wait = os.wait()
    statuses[running.pop(pid)] = os.waitstatus_to_exitcode(wait)
json.dump(statuses, sys.stdout)
'''


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str
    folder: Path  # the case's own folder ({C})
    digests: dict  # sha256 of the `unchanged` files just before the command


@pytest.fixture(scope="module")
def results(inputs, request, tmp_path_factory) -> dict[str, Result]:
    """Run every selected case (two at a time); ``{case name: Result}``."""
    selected = {item.callspec.params["case"].name for item in request.session.items
                if getattr(item, "module", None) is request.module and hasattr(item, "callspec")}
    work = tmp_path_factory.mktemp("cases")
    specs = []
    for case in CASES:
        if case.name not in selected:
            continue
        folder = work / case.name
        folder.mkdir()
        values = {**inputs, "C": str(folder)}
        _setup(case, values)
        specs.append({
            "name": case.name,
            "command": _fill(case.command, values).split(),
            "before": _fill(case.before, values).split(),
            "unchanged": [path for path in _fill(case.unchanged, values).split("|") if path],
            "out": str(work / f"{case.name}.out"), "err": str(work / f"{case.name}.err"),
            "cwd": str(REPO_ROOT),
        })
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    completed = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(specs),
                               capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                               timeout=1800)
    assert completed.returncode == 0, completed.stderr[-3000:]
    statuses = json.loads(completed.stdout)
    found = {}
    for spec in specs:
        texts = [Path(spec[key]).read_text(errors="replace") if Path(spec[key]).exists() else ""
                 for key in ("out", "err")]
        digests_path = Path(spec["out"] + ".digests")
        digests = json.loads(digests_path.read_text()) if digests_path.exists() else {}
        found[spec["name"]] = Result(statuses[spec["name"]], *texts, work / spec["name"], digests)
    return found


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case(case, inputs, results):
    result = results[case.name]
    output = result.stdout + result.stderr
    assert result.status != 200, f"the preparing command failed: {case.before}"
    assert result.status == case.status, f"exit {result.status}, expected {case.status}:\n{output}"
    assert "Traceback" not in result.stderr, result.stderr
    script = Path(case.command.split()[0]).name
    if case.status == 2:
        errors = [line for line in result.stderr.splitlines() if line.startswith(script)]
        assert len(errors) == 1 and errors[0].startswith(f"{script}: error: "), result.stderr
    for word in filter(None, case.words.split("|")):
        assert word in output, f"{word!r} not in the output:\n{output}"
    for word in filter(None, case.not_words.split("|")):
        assert word not in output, f"{word!r} in the output:\n{output}"
    values = {**inputs, "C": str(result.folder)}
    for path in filter(None, _fill(case.exists, values).split("|")):
        assert Path(path).exists(), f"{path} does not exist"
    for pattern in filter(None, _fill(case.absent, values).split("|")):
        assert not glob.glob(pattern), f"{glob.glob(pattern)} should not exist"
    for path, digest in result.digests.items():
        assert Path(path).is_file() and _sha256(Path(path)) == digest, f"{path} was changed"


def test_written_files_get_the_normal_mode(inputs, results):
    """Wavs, archives and model folders are as readable as any new file (not 0600/0700)."""
    mask = os.umask(0)
    os.umask(mask)
    for path in (Path(inputs["M"]), Path(inputs["M"]) / "model.ckpt"):  # write_model_dir
        expected = (0o777 if path.is_dir() else 0o666) & ~mask
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
    checked = {
        "extract-good": ["est.wav"],
        "extract-dir-skip-bad": ["est/b_2-est.wav", "est/extract_info.csv", "est"],
        "eval-model-good": ["est/a-1-est.wav", "out/summary.json"],
        "pack-good": ["tiny-v1.tar.gz"],
        "download-good": ["dest", "dest/model.ckpt"],
        "mix-skip-bad": ["out/test.csv", "out/test/speakers.json"],
    }
    for name, paths in checked.items():
        if name not in results:
            continue
        for relative in paths:
            path = results[name].folder / relative
            expected = (0o777 if path.is_dir() else 0o666) & ~mask
            assert stat.S_IMODE(path.stat().st_mode) == expected, (path, oct(path.stat().st_mode))
    mixed = results.get("mix-skip-bad")
    if mixed is not None:
        wav = next((mixed.folder / "out" / "test" / "mix").glob("*.wav"))
        assert stat.S_IMODE(wav.stat().st_mode) == 0o666 & ~mask
