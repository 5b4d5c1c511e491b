"""Segments of speech, and the choice of a target and a reference for a speaker.

A target speaker extraction example needs a *reference* utterance of the
target speaker that is not the target itself. Where a speaker has two or more
utterances, the reference is a different utterance. Where a speaker has one
long utterance (``../shared/data/librispeech``), the **split-utterance
protocol** applies: the utterance is cut at its lowest-energy 25 ms frame
inside the middle region (35 %..65 % by default), and the target comes from
one part, the reference from the other; the two never overlap.

Every piece of audio is a :class:`Segment` ``(path, start, stop)`` in samples
at 16 kHz, so the same description drives static mixing
(:mod:`mixing.make_mixtures`) and online mixing (:mod:`mixing.online`).

Example
-------
>>> segs = [Segment("/a.flac", 0, 64000), Segment("/b.flac", 0, 32000)]
>>> rng = np.random.default_rng(0)
>>> target, ref = pick_target_and_reference(segs, rng, min_target=48000, min_ref=16000)
>>> target.path, ref.path
('/a.flac', '/b.flac')
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from mixing.corpus import Utterance
from modules.audio import SAMPLE_RATE, AudioFileError, load_audio

logger = logging.getLogger(__name__)

#: Shortest usable segment: one 400 ms loudness gating block at 16 kHz.
MIN_SEGMENT_SAMPLES = 6400


@dataclass(frozen=True, order=True)
class Segment:
    """A piece ``[start, stop)`` of an audio file, in samples at 16 kHz.

    Example
    -------
    >>> seg = Segment("/data/a.flac", 16000, 48000)
    >>> seg.num_samples, seg.duration, Segment.from_dict(seg.to_dict()) == seg
    (32000, 2.0, True)
    """

    path: str
    start: int
    stop: int

    def __post_init__(self):
        if not 0 <= self.start < self.stop:
            raise ValueError(f"bad segment [{self.start}, {self.stop}) of {self.path}")

    @property
    def num_samples(self) -> int:
        """Length in samples."""
        return self.stop - self.start

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_samples / SAMPLE_RATE

    def overlaps(self, other: Segment) -> bool:
        """Whether two segments share audio (same file, intersecting ranges).

        Example
        -------
        >>> Segment("a", 0, 10).overlaps(Segment("a", 10, 20))
        False
        """
        return self.path == other.path and self.start < other.stop and other.start < self.stop

    def to_dict(self) -> dict:
        """``{"path", "start", "stop"}`` for JSON."""
        return {"path": self.path, "start": int(self.start), "stop": int(self.stop)}

    @classmethod
    def from_dict(cls, data: dict) -> Segment:
        """Inverse of :meth:`to_dict`."""
        return cls(str(data["path"]), int(data["start"]), int(data["stop"]))


def read_segment(segment: Segment, offset: int = 0, length: int | None = None) -> np.ndarray:
    """Read ``length`` samples of a segment from ``offset`` (only those frames).

    16 kHz mono files are read partially with soundfile; files at another rate
    go through :func:`modules.audio.load_audio` (whole file, resampled).

    Arguments
    ---------
    segment : Segment
    offset : int
        First sample to read, relative to ``segment.start``.
    length : int or None
        Number of samples; default: to the end of the segment.

    Returns
    -------
    np.ndarray
        ``[length]`` float64 (zero-padded if the file is shorter than its
        header said).

    Raises
    ------
    AudioFileError
        Unreadable, multi-channel or non-finite audio.

    Example
    -------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ramp.wav"
    >>> sf.write(path, np.arange(100) / 128.0, 16000, subtype="FLOAT")
    >>> read_segment(Segment(str(path), 10, 20), offset=2, length=3) * 128
    array([12., 13., 14.])
    """
    if length is None:
        length = segment.num_samples - offset
    if offset < 0 or length <= 0 or offset + length > segment.num_samples:
        raise ValueError(f"cannot read {length} samples at {offset} from {segment}")
    start = segment.start + offset
    data = None
    try:
        with sf.SoundFile(segment.path) as handle:
            if handle.samplerate == SAMPLE_RATE:
                if handle.channels != 1:
                    raise AudioFileError(segment.path, f"{handle.channels} channels, expected mono")
                handle.seek(start)
                data = handle.read(length, dtype="float64")
    except AudioFileError:
        raise
    except Exception as error:  # soundfile raises several types for bad files
        raise AudioFileError(segment.path, f"not a readable audio file ({error})") from None
    if data is None:  # another sample rate: read the whole file, resampled
        wav, _, _ = load_audio(segment.path, SAMPLE_RATE, allow_silent=True)
        data = wav.numpy().astype(np.float64)[start : start + length]
    if not np.isfinite(data).all():
        raise AudioFileError(segment.path, "contains NaN or infinite samples")
    if data.shape[0] < length:
        data = np.pad(data, (0, length - data.shape[0]))
    return data


def frame_energy(wav: np.ndarray, frame_length: int = 400) -> np.ndarray:
    """Mean energy of consecutive non-overlapping frames.

    Arguments
    ---------
    wav : np.ndarray
        ``[T]`` signal.
    frame_length : int
        Samples per frame (400 = 25 ms at 16 kHz); a last partial frame is dropped.

    Returns
    -------
    np.ndarray
        ``[T // frame_length]`` energies.

    Example
    -------
    >>> frame_energy(np.array([1.0, 1.0, 0.0, 0.0, 2.0]), frame_length=2)
    array([1., 0.])
    """
    num = len(wav) // frame_length
    frames = np.asarray(wav[: num * frame_length], dtype=np.float64).reshape(num, frame_length)
    return np.mean(frames**2, axis=1)


def find_split_point(
    wav: np.ndarray, frame_length: int = 400, region: tuple[float, float] = (0.35, 0.65)
) -> int:
    """Sample index at which to cut an utterance: the middle of its quietest frame.

    Only frames lying entirely within ``region`` (fractions of the length) are
    considered; ties go to the earliest frame.

    Arguments
    ---------
    wav : np.ndarray
        ``[T]`` signal.
    frame_length : int
        Frame size in samples (25 ms at 16 kHz by default).
    region : (float, float)
        Fractions of the signal where the cut may happen.

    Returns
    -------
    int
        Cut position, ``0 < cut < T``.

    Example
    -------
    >>> wav = np.ones(4000)
    >>> wav[2400:2800] = 0.0   # a pause between 60 % and 70 %
    >>> find_split_point(wav, frame_length=400, region=(0.3, 0.7))
    2600
    """
    lo, hi = region
    if not 0.0 < lo < hi < 1.0:
        raise ValueError(f"region must satisfy 0 < lo < hi < 1, got {region}")
    energy = frame_energy(wav, frame_length)
    first = int(np.ceil(lo * len(wav) / frame_length))
    last = int(np.floor(hi * len(wav) / frame_length))  # exclusive: frames end by hi
    if last <= first:
        return int(round(len(wav) * (lo + hi) / 2))
    best = first + int(np.argmin(energy[first:last]))
    return best * frame_length + frame_length // 2


def split_utterance(
    utterance: Utterance, frame_seconds: float = 0.025, region: tuple[float, float] = (0.35, 0.65)
) -> tuple[Segment, Segment]:
    """Cut one utterance into two non-overlapping segments (split-utterance protocol).

    Arguments
    ---------
    utterance : Utterance
        The file to cut (read whole with :func:`modules.audio.load_audio`).
    frame_seconds : float
        Energy frame length.
    region : (float, float)
        Where the cut may happen, as fractions of the length.

    Returns
    -------
    first, second : Segment
        ``[0, cut)`` and ``[cut, T)``.

    Example
    -------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "u.wav"
    >>> wav = np.sin(np.arange(32000) / 7.0) * 0.3
    >>> wav[15000:15800] = 0.0
    >>> sf.write(path, wav, 16000)
    >>> first, second = split_utterance(Utterance(str(path), 32000))
    >>> first.stop == second.start, first.stop
    (True, 15400)
    """
    wav, _, _ = load_audio(utterance.path, SAMPLE_RATE, allow_silent=True)
    wav = wav.numpy()
    cut = find_split_point(wav, int(round(frame_seconds * SAMPLE_RATE)), region)
    return Segment(utterance.path, 0, cut), Segment(utterance.path, cut, len(wav))


def speaker_segments(
    utterances: list[Utterance],
    frame_seconds: float = 0.025,
    region: tuple[float, float] = (0.35, 0.65),
) -> list[Segment]:
    """The non-overlapping segments a speaker offers: whole files, or the two
    halves of a single utterance.

    Example
    -------
    >>> speaker_segments([Utterance("/a.flac", 100), Utterance("/b.flac", 50)])
    [Segment(path='/a.flac', start=0, stop=100), Segment(path='/b.flac', start=0, stop=50)]
    """
    if len(utterances) >= 2:
        return [Segment(u.path, 0, u.num_samples) for u in utterances if u.num_samples > 0]
    if len(utterances) == 1 and utterances[0].num_samples > 1:
        return list(split_utterance(utterances[0], frame_seconds, region))
    return []


def has_valid_pair(segments: list[Segment], min_target: int, min_ref: int) -> bool:
    """Whether two distinct segments can serve as target (>= ``min_target``
    samples) and reference (>= ``min_ref`` samples).

    Example
    -------
    >>> has_valid_pair([Segment("a", 0, 10), Segment("b", 0, 4)], 8, 5)
    False
    """
    return len(_valid_pairs(segments, min_target, min_ref)) > 0


def _valid_pairs(segments, min_target, min_ref):
    return [
        (t, r)
        for t in range(len(segments))
        for r in range(len(segments))
        if t != r and segments[t].num_samples >= min_target and segments[r].num_samples >= min_ref
    ]


def pick_target_and_reference(
    segments: list[Segment], rng: np.random.Generator, min_target: int = 0, min_ref: int = 0
) -> tuple[Segment, Segment]:
    """Draw a (target, reference) pair of distinct segments of one speaker.

    Arguments
    ---------
    segments : list of Segment
        A speaker's non-overlapping segments (see :func:`speaker_segments`).
    rng : np.random.Generator
    min_target, min_ref : int
        Minimum lengths in samples.

    Returns
    -------
    target, reference : Segment

    Raises
    ------
    ValueError
        No pair meets the minimum lengths.

    Example
    -------
    >>> halves = [Segment("u", 0, 100), Segment("u", 100, 180)]
    >>> t, r = pick_target_and_reference(halves, np.random.default_rng(1), 90, 10)
    >>> (t.start, r.start), t.overlaps(r)
    ((0, 100), False)
    """
    pairs = _valid_pairs(segments, min_target, min_ref)
    if not pairs:
        raise ValueError(
            f"no target/reference pair of >= {min_target}/{min_ref} samples in {segments}"
        )
    t, r = pairs[int(rng.integers(len(pairs)))]
    return segments[t], segments[r]


def build_speaker_segments(
    corpus: dict[str, list[Utterance]],
    min_target_seconds: float = 0.0,
    min_ref_seconds: float = 0.0,
    frame_seconds: float = 0.025,
    region: tuple[float, float] = (0.35, 0.65),
) -> dict[str, list[Segment]]:
    """Segments of every speaker that can give a target and a reference.

    Speakers that cannot meet the minimum durations (and unreadable single
    utterances) are skipped, with a logged count. Segments shorter than both
    minima, or than 0.4 s (:data:`MIN_SEGMENT_SAMPLES`), are dropped.

    Arguments
    ---------
    corpus : dict
        Speaker -> utterances, from :func:`mixing.corpus.scan_corpora`.
    min_target_seconds, min_ref_seconds : float
        Minimum target and reference durations.
    frame_seconds, region
        Split-utterance settings (see :func:`find_split_point`).

    Returns
    -------
    dict
        Speaker -> list of non-overlapping :class:`Segment`, same order as ``corpus``.

    Example
    -------
    >>> corpus = {"c:a": [Utterance("/a1", 48000), Utterance("/a2", 8000)],
    ...           "c:b": [Utterance("/b1", 8000), Utterance("/b2", 8000)]}
    >>> list(build_speaker_segments(corpus, min_target_seconds=2.0, min_ref_seconds=0.5))
    ['c:a']
    """
    min_target = int(round(min_target_seconds * SAMPLE_RATE))
    min_ref = int(round(min_ref_seconds * SAMPLE_RATE))
    keep_len = max(MIN_SEGMENT_SAMPLES, min(min_target, min_ref))
    result = {}
    skipped = unreadable = 0
    for speaker, utterances in corpus.items():
        try:
            segments = speaker_segments(utterances, frame_seconds, region)
        except AudioFileError as error:
            logger.warning("skipping speaker %s: %s", speaker, error)
            unreadable += 1
            continue
        segments = [s for s in segments if s.num_samples >= keep_len]
        if has_valid_pair(segments, min_target, min_ref):
            result[speaker] = segments
        else:
            skipped += 1
    if skipped or unreadable:
        logger.info(
            "skipped %d speaker(s) without a target >= %.1f s and a reference >= %.1f s, "
            "%d with unreadable audio; %d speakers kept",
            skipped,
            min_target_seconds,
            min_ref_seconds,
            unreadable,
            len(result),
        )
    return result
