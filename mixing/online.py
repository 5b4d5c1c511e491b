"""On-the-fly mixing for training: fresh mixtures every epoch.

:class:`OnlineMixer` draws, for ``(epoch, index)``, a target speaker, a
(target, reference) pair of that speaker's segments, an interferer speaker and
segment, random crops and levels, and mixes them with a
:class:`mixing.mixers.Mixer`. Every draw comes from
``np.random.default_rng([seed, epoch, index, attempt])``: the same triple gives
the same example in any process, in any order. Only the frames that are used
are read from disk.

The speakers usually come from the ``speakers.json`` of one split written by
``mixing/make_mixtures.py`` (:func:`load_speakers_json`), so online training
uses the training speakers only.

Example
-------
>>> import tempfile, pathlib, soundfile as sf
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> rng = np.random.default_rng(0)
>>> speakers = {}
>>> for spk in ("a", "b"):
...     sf.write(folder / f"{spk}.wav", rng.standard_normal(64000) * 0.05, 16000)
...     speakers[spk] = [Segment(str(folder / f"{spk}.wav"), 0, 32000),
...                      Segment(str(folder / f"{spk}.wav"), 32000, 64000)]
>>> online = OnlineMixer(speakers, Mixer(), segment_seconds=1.0, seed=3)
>>> item = online.mix(index=5, epoch=2)
>>> item["mix"].shape, item["target_speaker"] != item["interferer_speaker"]
(torch.Size([16000]), True)
>>> bool((online.mix(5, 2)["mix"] == item["mix"]).all())
True
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from mixing.mixers import Mixer, MixResult, mix_with_redraws
from mixing.references import MIN_SEGMENT_SAMPLES, Segment, pick_target_and_reference
from modules.files import FileError, atomic_write_text

logger = logging.getLogger(__name__)


def load_speakers_json(path) -> dict[str, list[Segment]]:
    """Read a ``speakers.json`` (speaker -> list of ``{path, start, stop}``).

    Raises
    ------
    modules.files.FileError
        A missing, unreadable or malformed file (a ``BadInput``: exit status 2
        in the command-line tools).

    Example
    -------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "speakers.json"
    >>> save_speakers_json(path, {"c:1": [Segment("/x.flac", 0, 16000)]})
    >>> load_speakers_json(path)
    {'c:1': [Segment(path='/x.flac', start=0, stop=16000)]}
    """
    path = Path(path)
    if not path.is_file():
        raise FileError(path, "no speakers file (mixing/make_mixtures.py writes it)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise FileError(path, f"cannot read speakers file ({error})") from None
    if not isinstance(data, dict):
        raise FileError(path, "expected an object speaker -> list of segments")
    try:
        return {str(spk): [Segment.from_dict(s) for s in segs] for spk, segs in data.items()}
    except (TypeError, ValueError, KeyError) as error:
        raise FileError(path, f"malformed segment ({error})") from None


def save_speakers_json(path, speakers: dict[str, list[Segment]]) -> None:
    """Write ``speakers`` as JSON atomically (temporary file, then rename).

    Example
    -------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "s.json"
    >>> save_speakers_json(path, {"a": [Segment("/a.wav", 0, 10)]})
    >>> path.read_text().count("start")
    1
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {spk: [s.to_dict() for s in segs] for spk, segs in speakers.items()}
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def check_no_overlap(speakers: dict[str, list[Segment]]) -> None:
    """Raise ``ValueError`` if two segments of one speaker share audio.

    Example
    -------
    >>> check_no_overlap({"a": [Segment("f", 0, 10), Segment("f", 5, 20)]})
    Traceback (most recent call last):
    ...
    ValueError: speaker a: segments [0, 10) and [5, 20) of f overlap
    """
    for speaker, segments in speakers.items():
        ordered = sorted(segments)
        for first, second in zip(ordered, ordered[1:], strict=False):
            if first.overlaps(second):
                raise ValueError(
                    f"speaker {speaker}: segments [{first.start}, {first.stop}) and "
                    f"[{second.start}, {second.stop}) of {first.path} overlap"
                )


def draw_sources(
    speakers: dict[str, list[Segment]],
    target_speaker: str,
    rng: np.random.Generator,
    min_target: int = 0,
    min_ref: int = 0,
) -> tuple[Segment, Segment, str, Segment]:
    """Draw (target, reference, interferer speaker, interferer segment).

    The interferer is another speaker of ``speakers``; its segment is drawn
    among those of at least ``min_target`` samples when it has any.

    Example
    -------
    >>> spk = {"a": [Segment("a1", 0, 9), Segment("a2", 0, 9)], "b": [Segment("b1", 0, 9)]}
    >>> t, r, who, seg = draw_sources(spk, "a", np.random.default_rng(0))
    >>> t != r, who, seg.path
    (True, 'b', 'b1')
    """
    target, reference = pick_target_and_reference(
        speakers[target_speaker], rng, min_target, min_ref
    )
    others = [s for s in speakers if s != target_speaker]
    if not others:
        raise ValueError("need at least two speakers to draw an interferer")
    interferer = others[int(rng.integers(len(others)))]
    candidates = [s for s in speakers[interferer] if s.num_samples >= min_target]
    candidates = candidates or speakers[interferer]
    return target, reference, interferer, candidates[int(rng.integers(len(candidates)))]


class OnlineMixer:
    """Fresh, reproducible training mixtures from per-speaker segments.

    Arguments
    ---------
    speakers : dict
        Speaker -> list of non-overlapping :class:`Segment` (e.g. from
        :func:`load_speakers_json`). Speakers with two or more segments can be
        targets; every speaker can be an interferer.
    mixer : Mixer or None
        Levels, ratios, length mode; ``None``: ``Mixer()`` (0 dB, no noise).
    segment_seconds : float
        Length of the random target/interferer crops (the mixer's
        ``max_seconds`` is replaced by this).
    ref_seconds : float or None
        Longest reference (random crop); ``None``: the whole segment.
    seed : int
        Base seed.
    noise_files : sequence of paths or None
        Noise files, replacing the mixer's (the mixer must have an ``snr_db``).
    max_attempts : int
        Draws (new attempt seed each) before giving up when a crop is silent,
        has too little active speech (the mixer's ``min_active_fraction``) or a
        file is bad. :meth:`mix` reports the redraws it needed.

    Example
    -------
    >>> seg = lambda name: [Segment(name, 0, 8000), Segment(name, 8000, 16000)]
    >>> online = OnlineMixer({"x": seg("x.wav"), "y": seg("y.wav")}, seed=1)
    >>> online.target_speakers
    ['x', 'y']
    """

    def __init__(
        self,
        speakers: dict[str, list[Segment]],
        mixer: Mixer | None = None,
        segment_seconds: float = 3.0,
        ref_seconds: float | None = None,
        seed: int = 0,
        noise_files=None,
        max_attempts: int = 10,
    ):
        mixer = mixer or Mixer()
        changes = {"max_seconds": segment_seconds, "max_ref_seconds": ref_seconds}
        if noise_files is not None:
            if mixer.snr_range is None:
                raise ValueError("noise_files given but the mixer has no snr_db")
            changes["noise_files"] = list(noise_files)
        self.mixer = mixer.replace(**changes)
        check_no_overlap(speakers)
        kept = {
            spk: [s for s in segs if s.num_samples >= MIN_SEGMENT_SAMPLES]
            for spk, segs in speakers.items()
        }
        dropped = sum(len(v) for v in speakers.values()) - sum(len(v) for v in kept.values())
        if dropped:
            logger.info("dropped %d segment(s) shorter than 0.4 s", dropped)
        self.speakers = {spk: segs for spk, segs in sorted(kept.items()) if segs}
        self.target_speakers = [s for s, segs in self.speakers.items() if len(segs) >= 2]
        if not self.target_speakers or len(self.speakers) < 2:
            raise ValueError(
                f"OnlineMixer needs >= 2 speakers, one with >= 2 segments; got "
                f"{len(self.speakers)} speakers, {len(self.target_speakers)} with >= 2 segments"
            )
        self.seed = int(seed)
        self.max_attempts = int(max_attempts)

    def mix_result(self, index: int, epoch: int = 0) -> tuple[MixResult, str, str, int]:
        """The full :class:`MixResult` with (target speaker, interferer speaker, redraws).

        The target speaker cycles through :attr:`target_speakers` with ``index``;
        after ``max_attempts // 2`` failed draws another one is drawn at random.
        """

        def draw(rng, attempt):
            if attempt < self.max_attempts // 2:
                target_speaker = self.target_speakers[index % len(self.target_speakers)]
            else:  # this speaker's audio keeps failing (e.g. mostly silence): try another
                target_speaker = self.target_speakers[int(rng.integers(len(self.target_speakers)))]
            target, ref, interferer, i_seg = draw_sources(self.speakers, target_speaker, rng)
            return target, i_seg, ref, (target_speaker, interferer)

        result, (target_speaker, interferer), attempt = mix_with_redraws(
            self.mixer, draw, [self.seed, epoch, index], self.max_attempts,
            f"epoch {epoch} item {index}",
        )
        return result, target_speaker, interferer, attempt

    def mix(self, index: int, epoch: int = 0) -> dict:
        """One training example.

        Arguments
        ---------
        index : int
            Item index (any non-negative int).
        epoch : int
            Epoch number: a new epoch gives new mixtures.

        Returns
        -------
        dict
            ``mix``, ``target`` (``[L]`` float32 tensors), ``ref`` (``[R]``),
            ``target_speaker``, ``interferer_speaker`` (str), ``redraws`` (int:
            rejected draws before this one) and ``params`` (the drawn values,
            see :class:`mixing.mixers.MixResult`).

        Example
        -------
        >>> import tempfile, pathlib, soundfile as sf
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> for spk in ("a", "b", "c"):
        ...     sf.write(folder / f"{spk}.wav", np.random.default_rng(1).random(40000) - .5, 16000)
        >>> spk = {s: [Segment(str(folder / f"{s}.wav"), 0, 20000),
        ...            Segment(str(folder / f"{s}.wav"), 20000, 40000)] for s in "abc"}
        >>> online = OnlineMixer(spk, segment_seconds=0.5, ref_seconds=1.0)
        >>> item = online.mix(0, epoch=0)
        >>> item["target"].shape, item["ref"].shape, item["target_speaker"]
        (torch.Size([8000]), torch.Size([16000]), 'a')
        >>> bool((online.mix(0, epoch=1)["mix"] != item["mix"]).any())
        True
        """
        result, target_speaker, interferer, redraws = self.mix_result(index, epoch)
        return {
            "mix": result.mix,
            "target": result.target,
            "ref": result.reference,
            "target_speaker": target_speaker,
            "interferer_speaker": interferer,
            "redraws": redraws,
            "params": result.params,
        }
