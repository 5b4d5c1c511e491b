"""Speech recognition on extracted speech: word and character error rates.

Does the extracted speech serve a recogniser better than the mixture? For every
scored item, an offline English recogniser transcribes the clean target, the
mixture and the estimate, and each transcript is compared with a reference
transcript:

* **Recognisers.** ``"pocketsphinx"`` (default): CMU PocketSphinx with the US English
  acoustic model, dictionary and language model that ship inside the ``pocketsphinx``
  wheel (nothing is downloaded). Any other value is the path of a *local* speechbrain
  ASR model folder (``hyperparams.yaml`` + checkpoints, as saved by
  ``EncoderDecoderASR``/``EncoderASR``); it is loaded from that folder only, never
  from the hub.
* **References.** A real transcript where the test directory has one
  (``TEST_DIR/transcripts.tsv``, columns ``ID`` and ``transcript``, see
  :func:`load_transcripts`). Where an item has none, the recogniser's own output on
  the clean target is used as the reference: the rates then measure how much the
  mixture or the estimate changes the recognition, not how right it is. Each item
  records which (``asr_ref_source``: ``transcript`` or ``asr_on_target``), the summary
  counts both, and corpus rates are given for both sets separately as well as
  together.
* **Normalisation** (:func:`normalize_text`), applied to references and hypotheses
  alike: Unicode NFKC, lower case, every character that is not a letter, a digit or
  an apostrophe inside a word becomes a space (so ``"nerve-wracking,"`` ->
  ``"nerve wracking"``, ``"don't"`` stays), whitespace collapsed. PocketSphinx's
  alternative-pronunciation marks (``word(2)``) and fillers (``<sil>``, ``[noise]``)
  are removed before that.
* **Rates.** ``jiwer``: WER = (substitutions + deletions + insertions) / reference
  words; CER the same on characters (spaces included). Per item, and corpus-level
  (total edits over total reference length, not the mean of per-item rates).
* **Degenerate input.** An estimate that is empty or all zeros is not given to the
  recogniser: its hypothesis is the empty string (every reference word deleted, WER
  1). A recogniser that raises on an item is logged and counted
  (``asr_failed``), and that signal of that item is left out of the corpus rates; an
  item whose reference normalises to nothing is counted (``asr_empty_reference``) and
  left out. Nothing is silently dropped: every count is in the summary.

Example
-------
>>> normalize_text("Nerve-wracking, isn't it?  YES!")
"nerve wracking isn't it yes"
>>> scorer = AsrScorer(FixedRecognizer({"t": "a b c", "m": "a x", "e": "a b c"}))
>>> wavs = {name: torch.full((1600,), float(i + 1)) for i, name in enumerate("tme")}
>>> row = scorer.add("u1", wavs["t"], wavs["m"], wavs["e"], transcript="A B C")
>>> row["wer_mixture"], row["wer_estimate"], row["asr_ref_source"]
(0.6666666666666666, 0.0, 'transcript')
>>> scorer.summary()["corpus"]["all"]["mixture"]["wer"]
0.6666666666666666
"""

from __future__ import annotations

import csv
import logging
import math
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path

import torch

from modules.cli import BadInput

logger = logging.getLogger(__name__)

SIGNALS = ("target", "mixture", "estimate")
TRANSCRIPTS_FILE = "transcripts.tsv"
REF_SOURCES = ("transcript", "asr_on_target")

_FILLER = re.compile(r"<[^>]*>|\[[^\]]*\]|\(\d+\)")
_NOT_WORD = re.compile(r"[^\w']+|_")
_LOOSE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")


def normalize_text(text: str) -> str:
    """Normalise a transcript for scoring (see the module docstring).

    Example
    -------
    >>> normalize_text("  What's <sil> THE(2) forecast?\\n")
    "what's the forecast"
    >>> normalize_text("'quoted' — words")
    'quoted words'
    """
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").lower()
    text = _FILLER.sub(" ", text)
    text = _NOT_WORD.sub(" ", text)
    text = _LOOSE_APOSTROPHE.sub(" ", text)
    return " ".join(text.split())


class AsrError(Exception):
    """The recogniser failed on one signal (counted, not fatal)."""


class FixedRecognizer:
    """A stand-in recogniser for tests: looks the answer up by the signal's first sample.

    Arguments
    ---------
    answers : mapping
        Hypothesis per key; the key of a signal is ``"tme"[int(wav[0]) - 1]``, i.e.
        first sample 1.0 -> ``"t"``, 2.0 -> ``"m"``, 3.0 -> ``"e"``. A missing key
        raises :class:`AsrError`.

    Example
    -------
    >>> FixedRecognizer({"t": "hello"}).transcribe(torch.ones(10))
    'hello'
    """

    name = "fixed"

    def __init__(self, answers: Mapping[str, str]):
        self.answers = dict(answers)

    def transcribe(self, wav: torch.Tensor) -> str:
        key = "tme"[int(wav[0]) - 1] if 1 <= int(wav[0]) <= 3 else "?"
        if key not in self.answers:
            raise AsrError(f"no answer for signal {key!r}")
        return self.answers[key]


class PocketSphinxRecognizer:
    """CMU PocketSphinx, US English model from the ``pocketsphinx`` wheel (offline).

    One decoder is built on first use and reused, its feature front end reset before
    every utterance (deterministic, order-independent transcripts). Input: a 16 kHz
    ``[T]`` float
    waveform in [-1, 1] (converted to 16-bit PCM; samples beyond full scale are
    clipped).

    Example
    -------
    >>> asr = PocketSphinxRecognizer()
    >>> isinstance(asr.transcribe(0.01 * torch.randn(8000)), str)
    True
    """

    name = "pocketsphinx"

    def __init__(self):
        self._decoder = None

    def _get_decoder(self):
        if self._decoder is None:
            try:
                from pocketsphinx import Decoder
            except ImportError as error:
                raise BadInput(
                    f"--asr needs the pocketsphinx package ({error}): pip install pocketsphinx"
                ) from None
            self._decoder = Decoder(loglevel="ERROR")
        # The feature front end adapts (cepstral mean, ...) from one utterance to the next;
        # reset it so that a transcript does not depend on the one before (as a fresh
        # decoder would transcribe it).
        self._decoder.reinit_feat()
        return self._decoder

    def transcribe(self, wav: torch.Tensor) -> str:
        decoder = self._get_decoder()
        pcm = (wav.detach().cpu().float().clamp(-1.0, 1.0) * 32767.0).round().to(torch.int16)
        try:
            decoder.start_utt()
            decoder.process_raw(pcm.numpy().tobytes(), full_utt=True)
            decoder.end_utt()
        except Exception as error:  # the C decoder raises IndexError/RuntimeError
            raise AsrError(f"pocketsphinx failed: {type(error).__name__}: {error}") from None
        hyp = decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def align(self, wav: torch.Tensor, text: str) -> list[tuple[str, float, float]]:
        """Force-align a transcript: ``[(word, start_s, end_s), ...]`` of its words.

        Silences and fillers are left out; the words are the normalised transcript's,
        in order.

        Raises
        ------
        AsrError
            A word the dictionary lacks, or audio the alignment cannot follow.

        Example
        -------
        >>> PocketSphinxRecognizer().align(torch.zeros(1600), "xqzzyt")
        Traceback (most recent call last):
        ...
        modules.asr.AsrError: cannot align 'xqzzyt': word(s) not in the dictionary: xqzzyt
        """
        from pocketsphinx import Decoder

        if getattr(self, "_aligner", None) is None:
            self._aligner = Decoder(loglevel="FATAL")
        words = normalize_text(text).split()
        missing = [w for w in words if self._aligner.lookup_word(w) is None]
        if not words or missing:
            why = f"word(s) not in the dictionary: {' '.join(missing)}" if missing else "no words"
            raise AsrError(f"cannot align {text!r}: {why}")
        pcm = (wav.detach().cpu().float().clamp(-1.0, 1.0) * 32767.0).round().to(torch.int16)
        try:
            self._aligner.set_align_text(" ".join(words))
            self._aligner.start_utt()
            self._aligner.process_raw(pcm.numpy().tobytes(), full_utt=True)
            self._aligner.end_utt()
            segments = [(seg.word, seg.start_frame, seg.end_frame) for seg in self._aligner.seg()]
        except Exception as error:  # no path through the grammar: seg() is None
            raise AsrError(f"cannot align {text!r}: {type(error).__name__}: {error}") from None
        aligned = [(_FILLER.sub("", w), start / 100.0, (end + 1) / 100.0)
                   for w, start, end in segments if not w.startswith(("<", "["))]
        if [w for w, _, _ in aligned] != words:
            raise AsrError(f"cannot align {text!r}: the alignment does not cover every word")
        return aligned


class SpeechBrainRecognizer:
    """A speechbrain ASR model from a local folder (never downloaded).

    Arguments
    ---------
    path : str or Path
        Folder with the model's ``hyperparams.yaml`` (and what it loads).
    device : str

    Raises
    ------
    BadInput
        Missing folder, or no speechbrain ASR interface can load it.
    """

    name = "speechbrain"

    def __init__(self, path, device: str = "cpu"):
        path = Path(path)
        if not (path / "hyperparams.yaml").is_file():
            raise BadInput(
                f"--asr {path}: not 'pocketsphinx' and not a local speechbrain ASR model "
                "folder (no hyperparams.yaml there)"
            )
        from speechbrain.inference import ASR

        errors = []
        for interface in ("EncoderDecoderASR", "EncoderASR"):
            try:
                self.model = getattr(ASR, interface).from_hparams(
                    source=str(path), savedir=str(path), run_opts={"device": device}
                )
                break
            except Exception as error:  # each interface fails in its own way
                errors.append(f"{interface}: {type(error).__name__}: {error}")
        else:
            raise BadInput(f"--asr {path}: cannot load a speechbrain ASR model: {errors}")
        self.name = f"speechbrain:{path.name}"
        self.device = device

    def transcribe(self, wav: torch.Tensor) -> str:
        try:
            with torch.no_grad():
                words, _ = self.model.transcribe_batch(
                    wav.detach().float().reshape(1, -1).to(self.device), torch.ones(1)
                )
        except Exception as error:
            raise AsrError(f"{self.name} failed: {type(error).__name__}: {error}") from None
        text = words[0]
        return " ".join(text) if isinstance(text, list) else str(text)


def make_recognizer(spec: str, device: str = "cpu"):
    """``"pocketsphinx"`` or the path of a local speechbrain ASR model folder.

    Example
    -------
    >>> make_recognizer("pocketsphinx").name
    'pocketsphinx'
    """
    if str(spec).lower() in ("pocketsphinx", "true", "1"):
        return PocketSphinxRecognizer()
    return SpeechBrainRecognizer(spec, device=device)


def load_transcripts(test_dir) -> dict[str, str]:
    """``{ID: transcript}`` from ``TEST_DIR/transcripts.tsv`` (``{}`` when absent).

    The file is tab-separated with a header naming the columns ``ID`` and
    ``transcript``; other columns are ignored. An ID may appear once.

    Raises
    ------
    BadInput
        A file without those columns, or an ID given twice.

    Example
    -------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "transcripts.tsv").write_text("ID\\ttranscript\\na\\tHello there\\n")
    >>> load_transcripts(folder)
    {'a': 'Hello there'}
    """
    path = Path(test_dir) / TRANSCRIPTS_FILE
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fin:
        reader = csv.DictReader(fin, delimiter="\t", quoting=csv.QUOTE_NONE)
        if not reader.fieldnames or not {"ID", "transcript"} <= set(reader.fieldnames):
            raise BadInput(f"{path}: needs a header with the columns ID and transcript")
        transcripts: dict[str, str] = {}
        for line, row in enumerate(reader, start=2):
            if row["ID"] in transcripts:
                raise BadInput(f"{path}: line {line}: ID {row['ID']!r} given twice")
            transcripts[row["ID"]] = row["transcript"] or ""
    return transcripts


def _same_signal(a, b) -> bool:
    a, b = torch.as_tensor(a).reshape(-1), torch.as_tensor(b).reshape(-1)
    return a.shape == b.shape and bool(torch.equal(a, b))


def error_rates(reference: str, hypothesis: str) -> dict[str, int]:
    """Edit counts of normalised texts: ``word_edits``, ``words``, ``char_edits``, ``chars``.

    Example
    -------
    >>> error_rates("the cat sat", "the bat sat down")
    {'word_edits': 2, 'words': 3, 'char_edits': 6, 'chars': 11}
    """
    import jiwer

    words = len(reference.split())
    if not hypothesis:  # jiwer refuses an empty hypothesis string
        return {"word_edits": words, "words": words, "char_edits": len(reference),
                "chars": len(reference)}
    out = jiwer.process_words(reference, hypothesis)
    chars = jiwer.process_characters(reference, hypothesis)
    return {
        "word_edits": out.substitutions + out.deletions + out.insertions,
        "words": words,
        "char_edits": chars.substitutions + chars.deletions + chars.insertions,
        "chars": len(reference),
    }


class AsrScorer:
    """Transcribe target, mixture and estimate of each item; per-item and corpus rates.

    Arguments
    ---------
    recognizer : object
        Has ``transcribe(wav [T]) -> str`` and a ``name``.
    """

    def __init__(self, recognizer):
        self.recognizer = recognizer
        self.counts = {"items": 0, "asr_failed": 0, "asr_empty_reference": 0,
                       **{f"ref_{source}": 0 for source in REF_SOURCES}}
        self.failures: list[str] = []
        # [source][signal] -> summed edit counts
        self._totals: dict = {}

    def _transcribe(self, wav: torch.Tensor, item_id: str, signal: str) -> str | None:
        wav = torch.as_tensor(wav).reshape(-1)
        if wav.numel() == 0 or not bool(wav.abs().max() > 0):
            return ""  # nothing to recognise: the empty hypothesis
        try:
            return normalize_text(self.recognizer.transcribe(wav))
        except AsrError as error:
            logger.warning("ASR failed on the %s of %s (%s): left out of the rates",
                           signal, item_id, error)
            self.counts["asr_failed"] += 1
            self.failures.append(f"{item_id} ({signal}): {error}")
            return None

    def add(self, item_id: str, target, mix, est, transcript: str | None = None) -> dict:
        """Transcribe the three signals of one item and score them.

        Returns
        -------
        dict
            The item's columns: ``asr_ref_source``, ``asr_reference``, and per signal
            ``hyp_<signal>``, ``wer_<signal>``, ``cer_<signal>`` (NaN where undefined).
        """
        self.counts["items"] += 1
        hyps = {"target": self._transcribe(target, item_id, "target")}
        hyps["mixture"] = self._transcribe(mix, item_id, "mixture")
        if _same_signal(est, mix):  # the mixture baseline: transcripts are deterministic
            hyps["estimate"] = hyps["mixture"]
        elif _same_signal(est, target):  # the target baseline
            hyps["estimate"] = hyps["target"]
        else:
            hyps["estimate"] = self._transcribe(est, item_id, "estimate")
        if transcript is not None:
            source, reference = "transcript", normalize_text(transcript)
        else:
            source, reference = "asr_on_target", hyps["target"]
        self.counts[f"ref_{source}"] += 1
        row = {"ID": item_id, "asr_ref_source": source, "asr_reference": reference or ""}
        empty_reference = not reference
        if empty_reference:
            self.counts["asr_empty_reference"] += 1
            logger.warning("%s: empty ASR reference (%s): left out of the rates", item_id,
                           "transcript normalises to nothing" if source == "transcript"
                           else "no words recognised in the clean target")
        for signal in SIGNALS:
            hyp = hyps[signal]
            row[f"hyp_{signal}"] = "" if hyp is None else hyp
            if hyp is None or empty_reference or (source == "asr_on_target"
                                                  and signal == "target"):
                row[f"wer_{signal}"] = row[f"cer_{signal}"] = math.nan
                continue
            counts = error_rates(reference, hyp)
            row[f"wer_{signal}"] = counts["word_edits"] / counts["words"]
            row[f"cer_{signal}"] = counts["char_edits"] / counts["chars"]
            for key in (source, "all"):
                totals = self._totals.setdefault(key, {}).setdefault(
                    signal, {"word_edits": 0, "words": 0, "char_edits": 0, "chars": 0,
                             "items": 0})
                totals["items"] += 1
                for name, value in counts.items():
                    totals[name] += value
        return row

    def summary(self) -> dict:
        """Counts and corpus-level rates per reference source (and ``all``) and signal.

        The target row of ``asr_on_target`` is absent (it is its own reference).
        """
        corpus = {
            source: {
                signal: {
                    "wer": t["word_edits"] / t["words"],
                    "cer": t["char_edits"] / t["chars"],
                    "items": t["items"],
                    "words": t["words"],
                }
                for signal, t in by_signal.items()
            }
            for source, by_signal in self._totals.items()
        }
        return {"recognizer": self.recognizer.name, **self.counts, "corpus": corpus,
                "failures": list(self.failures)}

    def format_table(self) -> str:
        """Corpus WER/CER per signal and reference source, with counts and gaps.

        Example
        -------
        >>> scorer = AsrScorer(FixedRecognizer({"t": "a b", "m": "a", "e": "a b"}))
        >>> _ = scorer.add("u", torch.ones(9), 2 * torch.ones(9), 3 * torch.ones(9))
        >>> print(scorer.format_table())
        ASR (fixed): 1 item(s); references: 0 transcript(s), 1 recognised on the clean target
        reference      signal         WER %   CER %  items
        asr_on_target  mixture        50.00   66.67      1
        asr_on_target  estimate        0.00    0.00      1
        """
        s = self.summary()
        lines = [
            f"ASR ({s['recognizer']}): {s['items']} item(s); references: "
            f"{s['ref_transcript']} transcript(s), {s['ref_asr_on_target']} recognised on the "
            "clean target"
        ]
        if s["asr_failed"] or s["asr_empty_reference"]:
            lines.append(
                f"  left out of the rates: {s['asr_failed']} failed recognition(s), "
                f"{s['asr_empty_reference']} empty reference(s)"
            )
        lines.append(f"{'reference':<14} {'signal':<10} {'WER %':>9} {'CER %':>7} {'items':>6}")
        order = [source for source in (*REF_SOURCES, "all") if source in s["corpus"]]
        if len(order) == 2:  # one source only: "all" repeats it
            order = order[:1]
        for source in order:
            for signal in SIGNALS:
                stats = s["corpus"][source].get(signal)
                if stats:
                    lines.append(
                        f"{source:<14} {signal:<10} {100 * stats['wer']:>9.2f} "
                        f"{100 * stats['cer']:>7.2f} {stats['items']:>6}"
                    )
        return "\n".join(lines)
