"""Synthesise a small multi-speaker speech corpus offline with eSpeak NG.

This is the project's embedded default dataset: it needs no network and no
file from outside the project, only the eSpeak NG library and its data that
ship inside the ``espeakng-loader`` wheel (``pip install espeakng-loader``; a
system ``libespeak-ng`` is used as a fallback). Each speaker is a distinct
combination of an English accent, a voice variant (``voices/!v`` in the data
folder), a base pitch, a pitch range and a speaking rate, all drawn from
``--seed``; each utterance is a different sentence built from a built-in word
list. The layout written is::

    <out>/<speaker>/<speaker>_<nnn>.wav   16 kHz mono PCM16, 2-5 s each
    <out>/speakers.tsv                    speaker, voice, pitch, rate, range, sex
    <out>/utterances.tsv                  utt, speaker, path, seconds, text

Usage::

    python mixing/synth_corpus.py --out DIR --num_speakers 12 \\
        --utterances_per_speaker 6 --seed 0

Determinism: the eSpeak NG library keeps synthesis state (pitch flutter phase,
wave phase, ...) in globals that neither ``espeak_Terminate`` nor a second
``espeak_Initialize`` resets, so the same text said twice in one process gives
different samples. Every utterance is therefore synthesised in its own small,
fresh Python process (about 25 ms each, stdlib and ctypes only), which makes
:func:`synthesize` a pure function of its arguments and the corpus a pure
function of the seed.

Example
-------
>>> wav = synthesize("Hello world.", voice="en+m3", pitch=40, rate=160)
>>> wav.dim(), wav.dtype, 0.5 < wav.numel() / 16000 < 2.5
(1, torch.float32, True)
>>> bool(torch.equal(wav, synthesize("Hello world.", voice="en+m3", pitch=40, rate=160)))
True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import logging
import random
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.signal import resample_poly
from tqdm import tqdm

from modules.audio import SAMPLE_RATE, save_audio
from modules.cli import ArgumentParser, BadInput, check_writable_dir, entry_point

logger = logging.getLogger(__name__)

# Voice variants (files in ``espeak-ng-data/voices/!v``) that sound like a
# plain human voice; robots, whispers, croaks and heavy echoes are left out.
FEMALE_VARIANTS = (
    "f1", "f2", "f3", "f4", "f5", "linda", "belinda", "anika", "Andrea", "Alicia",
    "Annie", "aunty", "steph3", "grandma", "shelby",
)  # fmt: skip
MALE_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "klatt", "klatt2", "klatt3", "antonio",
    "michel", "miguel", "sandro", "victor", "Denis", "Diogo", "robert", "paul", "david",
    "edward", "Andy", "Lee", "gustave", "marcelo", "quincy",
)  # fmt: skip
# English accents shipped in ``espeak-ng-data/lang/gmw``.
ACCENTS = (
    "en", "en-US", "en-GB-x-rp", "en-GB-scotland", "en-029", "en-US-nyc",
    "en-GB-x-gbclan", "en-GB-x-gbcwmd",
)  # fmt: skip
PITCH_LIMITS = (30, 80)  # eSpeak pitch parameter, 0-100 relative to the variant's base
RANGE_LIMITS = (30, 90)  # eSpeak pitch-range parameter, 0-100
RATE_LIMITS = (140, 190)  # words per minute
VOLUME = 60  # eSpeak volume (default 100 clips some variants); level is normalised after
TARGET_RMS = 0.05  # about -26 dBFS
MAX_PEAK = 0.9
MAX_ATTEMPTS = 6  # sentence re-draws to land inside [min_seconds, max_seconds]

# --------------------------------------------------------------------------
# Built-in word list (written for this project) for the sentence generator.
_DETERMINERS = ("the", "a", "this", "that", "every", "my", "our", "their", "one", "her", "his")
_ADJECTIVES = (
    "small", "bright", "old", "quiet", "green", "heavy", "narrow", "warm", "yellow", "broken",
    "gentle", "silver", "tall", "empty", "wooden", "busy", "distant", "clever", "cold", "round",
    "muddy", "famous", "lazy", "sudden", "golden", "tiny", "patient", "crowded", "simple",
    "strange", "soft", "early", "northern", "careful", "noisy", "painted", "frozen", "smooth",
)  # fmt: skip
_NOUNS = (
    "river", "garden", "teacher", "window", "village", "doctor", "basket", "mountain", "letter",
    "kitchen", "farmer", "bridge", "candle", "sailor", "orchard", "market", "engine", "island",
    "painter", "forest", "lantern", "student", "harbour", "blanket", "tower", "rabbit", "kettle",
    "meadow", "neighbour", "wagon", "library", "pilot", "carpet", "station", "baker", "ribbon",
    "valley", "mirror", "soldier", "cottage", "pencil", "horse", "castle", "drummer", "puzzle",
    "garage", "parrot", "ladder", "tailor", "journal", "fountain", "captain", "saddle", "cabin",
)  # fmt: skip
_VERBS = (
    "found", "painted", "carried", "opened", "watched", "repaired", "followed", "borrowed",
    "cleaned", "lifted", "noticed", "visited", "measured", "covered", "pushed", "sold",
    "described", "guarded", "remembered", "dropped", "collected", "admired", "packed",
    "counted", "ignored", "delivered", "tested", "greeted", "mended", "answered",
)  # fmt: skip
_INTRANSITIVE = (
    "waited", "slept", "laughed", "wandered", "shivered", "paused", "smiled", "rested",
    "arrived", "listened", "whistled", "danced", "hurried", "stayed", "vanished", "travelled",
)  # fmt: skip
_ADVERBS = (
    "slowly", "quietly", "again", "happily", "outside", "together", "carefully", "today",
    "briefly", "alone", "patiently", "early", "late", "nearby",
)  # fmt: skip
_PREPOSITIONS = (
    "near", "behind", "under", "beside", "across", "inside", "over", "beyond", "around",
    "below", "along", "past", "towards", "above",
)  # fmt: skip
_CONJUNCTIONS = ("and", "but", "while", "because", "so", "before", "after", "until", "when")
# Clause shapes: D determiner, A adjective, N noun, V verb, I intransitive verb,
# R adverb, P preposition. Lengths run from 3 to 9 words.
_CLAUSES = (
    "D N I R",
    "D N I",
    "D A N I R",
    "D N V D N",
    "D A N V D N",
    "D N V D A N",
    "D A N V D A N",
    "D N I P D N",
    "D N I P D A N",
    "D A N I P D N",
    "D N V D N P D N",
    "D N V D A N P D N",
)
_SLOTS = {
    "D": _DETERMINERS,
    "A": _ADJECTIVES,
    "N": _NOUNS,
    "V": _VERBS,
    "I": _INTRANSITIVE,
    "R": _ADVERBS,
    "P": _PREPOSITIONS,
}

# --------------------------------------------------------------------------
# Worker: a fresh interpreter (``-I -S``: stdlib only) that initialises eSpeak
# NG, says one text and writes ``<int32 sample rate><int16 samples>`` to stdout.
# Exit codes: 3 library or data unusable, 4 unknown voice, 5 synthesis failed.
_WORKER = r"""
import ctypes, json, sys
try:
    lib = ctypes.CDLL(sys.argv[1])
except OSError as error:
    sys.exit(f"3 cannot load {sys.argv[1]}: {error}")
lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
# AUDIO_OUTPUT_SYNCHRONOUS = 2, espeakINITIALIZE_DONT_EXIT = 0x8000
rate = lib.espeak_Initialize(2, 0, sys.argv[2].encode() or None, 0x8000)
if rate <= 0:
    sys.exit(f"3 espeak_Initialize failed ({rate}) with data path {sys.argv[2]!r}")
# Breath and Klatt noise come from espeak's own generator, which Initialize
# seeds from the clock, and from libc rand(): fix both so output is repeatable.
if hasattr(lib, "espeak_ng_SetRandSeed"):
    lib.espeak_ng_SetRandSeed(ctypes.c_long(1))
try:
    ctypes.CDLL(None).srand(1)
except (OSError, AttributeError, TypeError):
    pass
req = json.loads(sys.stdin.buffer.read())
chunks = []
CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
def collect(wav, count, events):
    if count > 0 and wav:
        chunks.append(ctypes.string_at(wav, 2 * count))
    return 0
callback = CALLBACK(collect)
lib.espeak_SetSynthCallback(callback)
lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
status = lib.espeak_SetVoiceByName(req["voice"].encode())
if status != 0:
    sys.exit(f"4 unknown voice {req['voice']!r} (espeak error {status})")
# espeakRATE = 1, espeakVOLUME = 2, espeakPITCH = 3, espeakRANGE = 4
for key, name in ((1, "rate"), (2, "volume"), (3, "pitch"), (4, "range")):
    lib.espeak_SetParameter(key, int(req[name]), 0)
lib.espeak_Synth.argtypes = [
    ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
    ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
text = req["text"].encode("utf-8")
# POS_CHARACTER = 1, espeakCHARS_UTF8 = 1
status = lib.espeak_Synth(text, len(text) + 1, 0, 1, 0, 1, None, None)
status = status or lib.espeak_Synchronize()
if status != 0 or not chunks:
    sys.exit(f"5 espeak_Synth failed (espeak error {status}, {len(chunks)} chunks)")
sys.stdout.buffer.write(int(rate).to_bytes(4, "little") + b"".join(chunks))
"""


class EspeakUnavailableError(RuntimeError):
    """The eSpeak NG library or its data cannot be found or loaded."""


@dataclass(frozen=True)
class SpeakerSpec:
    """One synthetic speaker: an eSpeak NG voice and its prosody settings."""

    speaker: str
    voice: str  # "<accent>+<variant>", for espeak_SetVoiceByName
    pitch: int
    rate: int
    range: int
    sex: str


@functools.lru_cache(maxsize=1)
def find_espeak() -> tuple[str, str]:
    """Locate the eSpeak NG shared library and data folder, and check they load.

    Returns
    -------
    library : str
        Path of ``libespeak-ng``.
    data : str
        Path of ``espeak-ng-data``, or ``""`` for the library's built-in default
        (only with a system library).

    Raises
    ------
    EspeakUnavailableError
        Neither ``espeakng-loader`` nor a system ``libespeak-ng`` is usable.
    """
    hint = "install it with `python -m pip install espeakng-loader` (see requirements.txt)"
    try:
        import espeakng_loader
    except ImportError:
        library, data = ctypes.util.find_library("espeak-ng"), ""
        if library is None:
            raise EspeakUnavailableError(
                f"eSpeak NG not found: the espeakng-loader package is missing and there is "
                f"no system libespeak-ng; {hint}"
            ) from None
    else:
        library = espeakng_loader.get_library_path()
        try:
            data = espeakng_loader.get_data_path()
        except RuntimeError as error:
            raise EspeakUnavailableError(f"eSpeak NG data missing ({error}); {hint}") from None
    try:
        ctypes.CDLL(library)
    except OSError as error:
        raise EspeakUnavailableError(
            f"cannot load the eSpeak NG library {library}: {error}; {hint}"
        ) from None
    return library, data


def synthesize_native(
    text: str, voice: str = "en", pitch: int = 50, pitch_range: int = 50, rate: int = 175
) -> tuple[np.ndarray, int]:
    """Say ``text`` with eSpeak NG in a fresh worker process, at its native rate.

    Parameters
    ----------
    text : str
        UTF-8 text.
    voice : str
        Name for ``espeak_SetVoiceByName``, e.g. ``"en-US+f2"``.
    pitch, pitch_range : int
        eSpeak pitch and pitch-range parameters (0-100).
    rate : int
        Speaking rate in words per minute (80-450).

    Returns
    -------
    samples : numpy.ndarray
        int16 ``[T]``.
    sample_rate : int
        Native rate (22050 Hz).

    Raises
    ------
    EspeakUnavailableError
        The library cannot be loaded or initialised.
    ValueError
        Unknown voice.
    RuntimeError
        Any other synthesis failure.
    """
    library, data = find_espeak()
    request = {
        "text": text,
        "voice": voice,
        "pitch": pitch,
        "range": pitch_range,
        "rate": rate,
        "volume": VOLUME,
    }
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _WORKER, library, data],
        input=json.dumps(request).encode(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip() or f"exit {result.returncode}"
        code, _, detail = message.partition(" ")
        if code == "3":
            raise EspeakUnavailableError(f"eSpeak NG unusable: {detail}")
        if code == "4":
            raise ValueError(detail)
        raise RuntimeError(f"eSpeak NG failed to say {text!r} with voice {voice!r}: {message}")
    native_rate = int.from_bytes(result.stdout[:4], "little")
    return np.frombuffer(result.stdout[4:], dtype=np.int16).copy(), native_rate


def synthesize(
    text: str,
    voice: str = "en",
    pitch: int = 50,
    pitch_range: int = 50,
    rate: int = 175,
    sample_rate: int = SAMPLE_RATE,
) -> torch.Tensor:
    """Say ``text``; return a trimmed, level-normalised float32 ``[T]`` waveform.

    Leading and trailing silence is cut (40 ms kept), the signal is resampled
    from eSpeak's 22050 Hz to ``sample_rate`` and scaled to an RMS of
    ``TARGET_RMS`` with its peak kept under ``MAX_PEAK``. The result depends
    only on the arguments (see the module notes on determinism).

    Parameters
    ----------
    text, voice, pitch, pitch_range, rate
        As for :func:`synthesize_native`.
    sample_rate : int
        Output rate in Hz.

    Returns
    -------
    torch.Tensor
        float32 ``[T]`` at ``sample_rate``.

    Examples
    --------
    >>> wav = synthesize("Good morning.", voice="en+f2")
    >>> wav.shape[0] > 8000, float(wav.abs().max()) <= MAX_PEAK
    (True, True)
    """
    samples, native_rate = synthesize_native(text, voice, pitch, pitch_range, rate)
    wav = samples.astype(np.float64) / 32768.0
    loud = np.flatnonzero(np.abs(wav) > 0.01 * np.abs(wav).max())
    if loud.size == 0:
        raise RuntimeError(f"eSpeak NG produced silence for {text!r} with voice {voice!r}")
    margin = int(0.04 * native_rate)
    wav = wav[max(0, loud[0] - margin) : loud[-1] + margin + 1]
    if native_rate != sample_rate:
        divisor = np.gcd(native_rate, sample_rate)
        wav = resample_poly(wav, sample_rate // divisor, native_rate // divisor)
    rms = np.sqrt(np.mean(wav**2))
    wav = wav * min(TARGET_RMS / rms, MAX_PEAK / np.abs(wav).max())
    return torch.from_numpy(wav.astype(np.float32))


def make_sentence(rng: random.Random, num_words: int) -> str:
    """Build a sentence of about ``num_words`` words from the built-in word list.

    Examples
    --------
    >>> make_sentence(random.Random(0), 8)
    'Our old engine described their tiny fountain.'
    """
    words: list[str] = []
    while True:
        remaining = num_words - len(words) - (1 if words else 0)
        fitting = [c for c in _CLAUSES if len(c.split()) <= remaining]
        clause = rng.choice(fitting or [c for c in _CLAUSES if len(c.split()) <= 4])
        if words:
            words.append(rng.choice(_CONJUNCTIONS))
        words.extend(rng.choice(_SLOTS[slot]) for slot in clause.split())
        if len(words) >= num_words - 2:
            break
    for i in range(1, len(words)):  # "a" before a vowel reads as "an"
        if words[i - 1] == "a" and words[i][0] in "aeiou":
            words[i - 1] = "an"
    return " ".join(words).capitalize() + "."


def make_speakers(num_speakers: int, seed: int = 0) -> list[SpeakerSpec]:
    """Draw ``num_speakers`` distinct speakers, alternating female and male.

    Voice variants are used once each before any repeats (a repeated variant
    gets another accent, pitch and rate). Speaker ``i`` is the same for any
    ``num_speakers > i`` with the same seed.

    Examples
    --------
    >>> speakers = make_speakers(4, seed=0)
    >>> [s.sex for s in speakers], len({s.voice for s in speakers})
    (['female', 'male', 'female', 'male'], 4)
    """
    if num_speakers < 1:
        raise ValueError(f"num_speakers must be >= 1, got {num_speakers}")
    rng = random.Random(f"speakers:{seed}")
    pools = {"female": list(FEMALE_VARIANTS), "male": list(MALE_VARIANTS)}
    for pool in pools.values():
        rng.shuffle(pool)
    speakers: list[SpeakerSpec] = []
    seen = set()
    for i in range(num_speakers):
        sex = ("female", "male")[i % 2]
        pool = pools[sex]
        variant = pool[(i // 2) % len(pool)]
        draw = random.Random(f"speaker:{seed}:{i}")
        while True:
            spec = SpeakerSpec(
                speaker=f"spk{i:02d}",
                voice=f"{draw.choice(ACCENTS)}+{variant}",
                pitch=draw.randint(*PITCH_LIMITS),
                rate=draw.randint(*RATE_LIMITS),
                range=draw.randint(*RANGE_LIMITS),
                sex=sex,
            )
            key = (spec.voice, spec.pitch, spec.rate)
            if key not in seen:
                seen.add(key)
                speakers.append(spec)
                break
    return speakers


def synthesize_utterance(
    spec: SpeakerSpec,
    rng: random.Random,
    min_seconds: float = 2.0,
    max_seconds: float = 5.0,
    sample_rate: int = SAMPLE_RATE,
) -> tuple[torch.Tensor, str]:
    """Say a fresh sentence with speaker ``spec``, aiming for a length in range.

    The sentence length is re-drawn (scaled by the length obtained) until the
    waveform lasts ``min_seconds`` to ``max_seconds``; after ``MAX_ATTEMPTS``
    the closest one is kept and, if too long, cut with a 50 ms fade-out.

    Returns
    -------
    wav : torch.Tensor
        float32 ``[T]`` at ``sample_rate``.
    text : str
        The sentence said.
    """
    target = rng.uniform(min_seconds + 0.25 * (max_seconds - min_seconds), max_seconds - 0.3)
    num_words = max(3, round(target * spec.rate / 60 * 1.1))
    best = None
    for _ in range(MAX_ATTEMPTS):
        text = make_sentence(rng, num_words)
        wav = synthesize(text, spec.voice, spec.pitch, spec.range, spec.rate, sample_rate)
        seconds = wav.numel() / sample_rate
        miss = max(min_seconds - seconds, seconds - max_seconds, 0.0)
        if best is None or miss < best[0]:
            best = (miss, wav, text)
        if miss == 0.0:
            break
        num_words = max(3, round(num_words * target / seconds))
    _, wav, text = best
    limit = int(max_seconds * sample_rate)
    if wav.numel() > limit:
        wav = wav[:limit].clone()
        fade = int(0.05 * sample_rate)
        wav[-fade:] *= torch.linspace(1.0, 0.0, fade)
    return wav, text


def synth_corpus(
    out_dir,
    num_speakers: int = 12,
    utterances_per_speaker: int = 6,
    seed: int = 0,
    min_seconds: float = 2.0,
    max_seconds: float = 5.0,
    sample_rate: int = SAMPLE_RATE,
    progress: bool = True,
) -> list[dict]:
    """Write the synthetic corpus to ``out_dir``; see the module docstring for the layout.

    Parameters
    ----------
    out_dir : str or Path
        Created if missing; files of the same names are replaced.
    num_speakers, utterances_per_speaker : int
        Corpus size.
    seed : int
        Same seed, same files (byte for byte).
    min_seconds, max_seconds : float
        Utterance length range.
    sample_rate : int
        Output rate in Hz.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    list of dict
        One record per utterance: ``utt``, ``speaker``, ``path`` (relative to
        ``out_dir``), ``seconds``, ``text``.

    Raises
    ------
    EspeakUnavailableError
        eSpeak NG cannot be loaded.
    """
    if utterances_per_speaker < 1:
        raise ValueError(f"utterances_per_speaker must be >= 1, got {utterances_per_speaker}")
    if not 0 < min_seconds < max_seconds:
        raise ValueError(f"need 0 < min_seconds < max_seconds, got {min_seconds}, {max_seconds}")
    find_espeak()  # fail early with a clear message
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    speakers = make_speakers(num_speakers, seed)
    stale = sorted(
        p.name
        for p in out_dir.iterdir()
        if p.is_dir() and p.name.startswith("spk") and p.name not in {s.speaker for s in speakers}
    )
    if stale:
        logger.warning("%s holds speaker folders from another run: %s", out_dir, ", ".join(stale))
    records = []
    bar = tqdm(
        total=num_speakers * utterances_per_speaker,
        desc="synthesising",
        unit="utt",
        disable=not progress,
    )
    with bar:
        for spec in speakers:
            for j in range(utterances_per_speaker):
                rng = random.Random(f"utterance:{seed}:{spec.speaker}:{j}")
                wav, text = synthesize_utterance(spec, rng, min_seconds, max_seconds, sample_rate)
                utt = f"{spec.speaker}_{j:03d}"
                path = Path(spec.speaker) / f"{utt}.wav"
                save_audio(out_dir / path, wav, sample_rate)
                seconds = round(wav.numel() / sample_rate, 3)
                records.append(
                    {
                        "utt": utt,
                        "speaker": spec.speaker,
                        "path": path.as_posix(),
                        "seconds": seconds,
                        "text": text,
                    }
                )
                bar.update()
    _write_tsv(out_dir / "speakers.tsv", [asdict(s) for s in speakers])
    _write_tsv(out_dir / "utterances.tsv", records)
    total = sum(r["seconds"] for r in records)
    logger.info(
        "wrote %d utterances (%.1f s) from %d speakers to %s",
        len(records),
        total,
        len(speakers),
        out_dir,
    )
    return records


def _write_tsv(path: Path, rows: list[dict]) -> None:
    columns = list(rows[0])
    lines = ["\t".join(columns)] + ["\t".join(str(row[c]) for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _main(argv) -> int:
    parser = ArgumentParser(prog="synth_corpus.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--num_speakers", type=int, default=12)
    parser.add_argument("--utterances_per_speaker", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min_seconds", type=float, default=2.0)
    parser.add_argument("--max_seconds", type=float, default=5.0)
    parser.add_argument("--sample_rate", type=int, default=SAMPLE_RATE)
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    check_writable_dir(args.out, "--out")
    try:
        synth_corpus(
            args.out,
            num_speakers=args.num_speakers,
            utterances_per_speaker=args.utterances_per_speaker,
            seed=args.seed,
            min_seconds=args.min_seconds,
            max_seconds=args.max_seconds,
            sample_rate=args.sample_rate,
            progress=not args.no_progress,
        )
    except (EspeakUnavailableError, ValueError) as error:  # a setup or an option to fix
        raise BadInput(str(error)) from None
    return 0


main = entry_point(_main, "synth_corpus.py")


if __name__ == "__main__":
    sys.exit(main())
