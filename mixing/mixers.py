"""Mix a target speaker, an interferer and optional noise at controlled levels.

The recipe of :class:`Mixer` (one call = one example):

1. **Lengths.** ``length_mode="min"`` cuts both speakers to the shorter of the
   two (a random window of the longer one); ``"max"`` keeps both (each cut to
   ``max_seconds`` if longer) and zero-pads the shorter one, placed at a random
   offset inside the longer one. The test protocol uses ``"min"``.
2. **Loudness.** Each source is loudness-normalised (ITU-R BS.1770,
   ``pyloudnorm.Meter(16000)``): the target to ``lufs``, the interferer to
   ``lufs - ratio_db``, so the target-to-interferer ratio (TIR) is
   ``ratio_db`` LU. ``ratio_db`` is fixed or drawn uniformly from a range.
3. **Noise** (optional, WHAM-like): a file drawn from ``noise_files``, looped
   or cropped to the mixture length from a random offset, scaled to
   ``lufs - snr_db`` so that the SNR (target loudness minus noise loudness)
   is ``snr_db`` LU, drawn uniformly from ``snr_db``'s range. Only the part
   ``noise_part = (lo, hi)`` of each file (fractions of its length) is used,
   so that training and test noise can be disjoint in time: training uses
   :data:`TRAIN_NOISE_PART` (the first 80 %), test sets :data:`TEST_NOISE_PART`.
4. **Mixture level.** The mixture is re-normalised to ``lufs``; the target,
   interferer and noise get the same gain, so the ratios are untouched.
5. **Peak protection.** If the mixture or any scaled source would exceed
   ``peak_limit`` (0.99) full scale, all of them are scaled together by one
   gain: the ratios are kept, but the mixture loudness then lands *below*
   ``lufs`` (logged, and recorded as ``peak_gain_db`` < 0).
6. **Reference.** Normalised to ``lufs`` on its own (and peak-protected on
   its own).

Every random choice comes from the ``np.random.Generator`` passed in, so a
per-item generator (``np.random.default_rng([seed, item])``) gives identical
output whatever the number of workers. Segments too short for loudness
measurement (< 0.4 s) or silent (loudness ``-inf``) raise :class:`LoudnessError`
instead of producing NaN.

Example
-------
>>> rng = np.random.default_rng(0)
>>> t = rng.standard_normal(16000) * 0.1
>>> i = rng.standard_normal(24000) * 0.3
>>> out = Mixer(ratio_db=5.0).mix_arrays(t, i, t, np.random.default_rng(1))
>>> out.mix.shape, round(loudness(out.target) - loudness(out.interferer), 2)
(torch.Size([16000]), 5.0)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mixing.activity import active_fraction
from mixing.references import Segment, read_segment
from modules.audio import SAMPLE_RATE, AudioFileError, load_audio
from modules.levels import (  # the one home of levels; re-exported for the mixing scripts
    LoudnessError,
    db_to_gain,
    gain_to_db,
    loudness,
    peak_limit_gain,
)

logger = logging.getLogger(__name__)
#: Parts of each noise file (fractions of its length) for training and for test sets.
TRAIN_NOISE_PART = (0.0, 0.8)
TEST_NOISE_PART = (0.8, 1.0)


class InactiveCropError(LoudnessError):
    """A target or reference crop with too little active speech (see ``min_active_fraction``)."""


def _as_range(value, name: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value), float(value)
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise ValueError(f"{name} range {value} has min > max")
    return lo, hi


def part_bounds(length: int, part: tuple[float, float]) -> tuple[int, int]:
    """Sample range ``[lo, hi)`` of the fractions ``part`` of a ``length``-sample file.

    Example
    -------
    >>> part_bounds(100, TRAIN_NOISE_PART), part_bounds(100, TEST_NOISE_PART)
    ((0, 80), (80, 100))
    """
    return int(length * part[0]), int(length * part[1])


class NoiseBank:
    """Noise files, drawn at random and looped/cropped to a requested length.

    Files are read once per process with :func:`modules.audio.load_audio`; the
    ``part`` of each file is kept in memory, and drawn segments loop inside it.

    Arguments
    ---------
    files : sequence of str or Path
        Noise files (any rate, mono).
    part : (float, float)
        The fractions ``[lo, hi)`` of each file's length that are used
        (:data:`TRAIN_NOISE_PART`, :data:`TEST_NOISE_PART`, or all of it).

    Example
    -------
    >>> import tempfile, pathlib, soundfile as sf
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "n.wav"
    >>> sf.write(path, np.arange(1, 6) / 8.0, 16000)
    >>> noise, name, start = NoiseBank([path]).draw(7, np.random.default_rng(3))
    >>> start, noise * 8
    (4, array([5., 1., 2., 3., 4., 5., 1.]))
    >>> noise, name, start = NoiseBank([path], part=(0.4, 1.0)).draw(4, np.random.default_rng(0))
    >>> start, noise * 8  # start is the position in the file, inside the part
    (4, array([5., 3., 4., 5.]))
    """

    def __init__(self, files: Sequence, part: tuple[float, float] = (0.0, 1.0)):
        self.files = [str(Path(f).resolve()) for f in files]
        if not self.files:
            raise ValueError("NoiseBank needs at least one noise file")
        lo, hi = (float(v) for v in part)
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"noise part must be fractions 0 <= lo < hi <= 1, got {part}")
        self.part = (lo, hi)
        self._cache: dict[str, tuple[np.ndarray, int] | AudioFileError] = {}

    def __getstate__(self):
        return {"files": self.files, "part": self.part, "_cache": {}}

    def __len__(self) -> int:
        return len(self.files)

    def load(self, path: str) -> tuple[np.ndarray, int]:
        """The used part of a noise file as float64 ``[T]``, and its first sample (cached).

        Raises
        ------
        AudioFileError
            An unreadable file, or one whose part is empty.
        """
        if path not in self._cache:
            try:
                wav, _, _ = load_audio(path, SAMPLE_RATE)
                lo, hi = part_bounds(wav.shape[0], self.part)
                if hi <= lo:
                    raise AudioFileError(path, f"too short: the noise part {self.part} is empty")
                self._cache[path] = (wav.numpy()[lo:hi].astype(np.float64), lo)
            except AudioFileError as error:
                # Remembered: online mixing redraws, and must not decode a bad file again.
                self._cache[path] = error
        cached = self._cache[path]
        if isinstance(cached, AudioFileError):
            raise cached
        return cached

    def draw(self, length: int, rng: np.random.Generator) -> tuple[np.ndarray, str, int]:
        """Pick a file and a start sample; return ``length`` samples, looping.

        Returns
        -------
        noise : np.ndarray
            ``[length]`` float64.
        path : str
            The file used.
        start : int
            Its first sample, a position in the file (inside the part).
        """
        path = self.files[int(rng.integers(len(self.files)))]
        data, offset = self.load(path)
        start = int(rng.integers(len(data)))
        return data[(start + np.arange(length)) % len(data)], path, offset + start


@dataclass
class MixResult:
    """The signals of one example, all ``[T]`` float32 tensors, and what was drawn.

    Attributes
    ----------
    mix, target, interferer : torch.Tensor
        ``[L]``; ``mix = target + interferer (+ noise)``.
    reference : torch.Tensor
        ``[R]`` enrolment utterance of the target speaker.
    noise : torch.Tensor or None
        ``[L]``, ``None`` without noise.
    params : dict
        The drawn parameters: ``ratio_db``, ``noise_snr_db`` (NaN without noise),
        the crops (``target_start``/``target_stop`` in the target file and
        ``target_offset`` in the mixture, same for the interferer, ``ref_start``/
        ``ref_stop``, ``noise_start``), the gains in dB applied to each source
        (``target_gain_db``, ...), ``peak_gain_db`` (0 unless peak protection
        acted) and ``mix_lufs`` (intended mixture loudness after peak protection).
    """

    mix: torch.Tensor
    target: torch.Tensor
    interferer: torch.Tensor
    reference: torch.Tensor
    noise: torch.Tensor | None = None
    params: dict = field(default_factory=dict)


class Mixer:
    """Loudness-controlled two-speaker (+ noise) mixer; see the module docstring.

    Arguments
    ---------
    lufs : float
        Loudness of the mixture and of the reference (LUFS).
    ratio_db : float or (float, float)
        Target-to-interferer ratio in LU, fixed or a uniform range.
    snr_db : float or (float, float) or None
        Target-to-noise ratio in LU (fixed or range); required with noise,
        unused without (so that noise files can be added later, see :meth:`replace`).
    noise_files : sequence of paths or None
        Noise files; ``None`` for clean two-speaker mixtures.
    noise_part : (float, float)
        Fractions ``[lo, hi)`` of each noise file used (see :class:`NoiseBank`).
    length_mode : {"min", "max"}
        Cut to the shorter speaker, or zero-pad to the longer one.
    max_seconds : float or None
        Longest speaker crop (random window); ``None``: no limit.
    max_ref_seconds : float or None
        Longest reference crop (random window); ``None``: the whole segment.
    peak_limit : float
        Largest absolute sample allowed in any output.
    min_active_fraction : float
        Smallest fraction of active frames (:func:`mixing.activity.active_fraction`)
        in the target and reference crops; below it :class:`InactiveCropError`
        is raised (online mixing then redraws). ``0`` accepts anything.
    sample_rate : int

    Example
    -------
    >>> mixer = Mixer(ratio_db=(-5, 5), length_mode="max")
    >>> rng = np.random.default_rng(0)
    >>> out = mixer.mix_arrays(rng.standard_normal(20000), rng.standard_normal(9000),
    ...                        rng.standard_normal(8000), np.random.default_rng(7))
    >>> out.mix.shape, out.params["interferer_offset"] + 9000 <= 20000
    (torch.Size([20000]), True)
    """

    def __init__(
        self,
        lufs: float = -20.0,
        ratio_db=0.0,
        snr_db=None,
        noise_files: Sequence | None = None,
        noise_part: Sequence[float] = (0.0, 1.0),
        length_mode: str = "min",
        max_seconds: float | None = None,
        max_ref_seconds: float | None = None,
        peak_limit: float = 0.99,
        min_active_fraction: float = 0.0,
        sample_rate: int = SAMPLE_RATE,
    ):
        if length_mode not in ("min", "max"):
            raise ValueError(f"length_mode must be 'min' or 'max', got {length_mode!r}")
        if noise_files and snr_db is None:
            raise ValueError("noise_files given without snr_db")
        if not 0.0 < peak_limit <= 1.0:
            raise ValueError(f"peak_limit must be in (0, 1], got {peak_limit}")
        self.lufs = float(lufs)
        self.ratio_range = _as_range(ratio_db, "ratio_db")
        self.snr_range = _as_range(snr_db, "snr_db")
        self.noise_part = tuple(float(v) for v in noise_part)
        self.noise = NoiseBank(noise_files, self.noise_part) if noise_files else None
        self.length_mode = length_mode
        self.max_seconds = max_seconds
        self.max_ref_seconds = max_ref_seconds
        self.peak_limit = float(peak_limit)
        if not 0.0 <= min_active_fraction <= 1.0:
            raise ValueError(f"min_active_fraction must be in [0, 1], got {min_active_fraction}")
        self.min_active_fraction = float(min_active_fraction)
        self.sample_rate = int(sample_rate)

    def settings(self) -> dict:
        """The constructor arguments, e.g. for :meth:`replace` or a params file.

        Example
        -------
        >>> Mixer().settings()["length_mode"]
        'min'
        """
        return {
            "lufs": self.lufs,
            "ratio_db": list(self.ratio_range),
            "snr_db": None if self.snr_range is None else list(self.snr_range),
            "noise_files": None if self.noise is None else list(self.noise.files),
            "noise_part": list(self.noise_part),
            "length_mode": self.length_mode,
            "max_seconds": self.max_seconds,
            "max_ref_seconds": self.max_ref_seconds,
            "peak_limit": self.peak_limit,
            "min_active_fraction": self.min_active_fraction,
            "sample_rate": self.sample_rate,
        }

    def replace(self, **changes) -> Mixer:
        """A copy with some settings changed.

        Example
        -------
        >>> Mixer(max_seconds=12).replace(max_seconds=3.0).max_seconds
        3.0
        """
        return Mixer(**{**self.settings(), **changes})

    def _limit(self, seconds: float | None) -> int | None:
        return None if seconds is None else max(1, int(round(seconds * self.sample_rate)))

    def mix_segments(
        self, target: Segment, interferer: Segment, reference: Segment, rng: np.random.Generator
    ) -> MixResult:
        """Mix audio segments, reading only the frames that are used.

        Arguments
        ---------
        target, interferer, reference : Segment
        rng : np.random.Generator
            Source of every random choice.

        Returns
        -------
        MixResult
            ``params`` also holds ``target_file``, ``interferer_file``, ``ref_file``
            and file-relative ``*_start``/``*_stop`` sample positions.

        Example
        -------
        >>> import tempfile, pathlib, soundfile as sf
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> noise = np.random.default_rng(0).standard_normal(48000) * 0.1
        >>> sf.write(folder / "a.wav", noise, 16000)
        >>> t, i, r = (Segment(str(folder / "a.wav"), a, b)
        ...            for a, b in [(0, 16000), (16000, 40000), (40000, 48000)])
        >>> out = Mixer().mix_segments(t, i, r, np.random.default_rng(0))
        >>> out.params["interferer_start"] >= 16000, out.mix.shape
        (True, torch.Size([16000]))
        """

        def reader(segment):
            return lambda offset, length: read_segment(segment, offset, length)

        result = self._mix(
            (reader(target), target.num_samples),
            (reader(interferer), interferer.num_samples),
            (reader(reference), reference.num_samples),
            rng,
            names=(target.path, interferer.path, reference.path),
        )
        p = result.params
        for key, seg in (("target", target), ("interferer", interferer), ("ref", reference)):
            p[f"{key}_file"] = seg.path
            p[f"{key}_start"] += seg.start
            p[f"{key}_stop"] += seg.start
        return result

    def mix_arrays(self, target, interferer, reference, rng: np.random.Generator) -> MixResult:
        """Mix in-memory ``[T]`` signals (numpy arrays or tensors).

        Same draws as :meth:`mix_segments` for signals of the same lengths;
        positions in ``params`` are relative to the given arrays.

        Example
        -------
        >>> sig = np.random.default_rng(0).standard_normal(16000)
        >>> out = Mixer(lufs=-25).mix_arrays(sig, sig[::-1], sig, np.random.default_rng(0))
        >>> round(loudness(out.mix), 2), round(loudness(out.reference), 2)
        (-25.0, -25.0)
        """
        arrays = [_numpy(x) for x in (target, interferer, reference)]
        for name, array in zip(("target", "interferer", "reference"), arrays, strict=True):
            if array.ndim != 1:
                raise ValueError(f"{name} must be a [T] signal, got shape {array.shape}")

        def reader(array):
            return lambda offset, length: array[offset : offset + length]

        return self._mix(*[(reader(a), len(a)) for a in arrays], rng, names=("", "", ""))

    def _check_activity(self, wav: np.ndarray, what: str) -> None:
        if self.min_active_fraction <= 0:
            return
        fraction = active_fraction(wav, self.sample_rate)
        if fraction < self.min_active_fraction:
            raise InactiveCropError(
                f"{what}: {fraction:.0%} active frames < {self.min_active_fraction:.0%}"
            )

    def _mix(self, target, interferer, reference, rng, names) -> MixResult:
        read_t, n_t = target
        read_i, n_i = interferer
        read_r, n_r = reference
        # 1. lengths and crops (all draws happen whatever the lengths, in a fixed order)
        limit = self._limit(self.max_seconds) or max(n_t, n_i)
        if self.length_mode == "min":
            t_len = i_len = length = min(n_t, n_i, limit)
        else:
            t_len, i_len = min(n_t, limit), min(n_i, limit)
            length = max(t_len, i_len)
        t_start = int(rng.integers(n_t - t_len + 1))
        i_start = int(rng.integers(n_i - i_len + 1))
        t_off = int(rng.integers(length - t_len + 1))
        i_off = int(rng.integers(length - i_len + 1))
        r_len = min(n_r, self._limit(self.max_ref_seconds) or n_r)
        r_start = int(rng.integers(n_r - r_len + 1))
        ratio = float(rng.uniform(*self.ratio_range))

        # 2. loudness-normalised, placed sources
        t_raw = read_t(t_start, t_len)
        self._check_activity(t_raw, _name("target", names[0]))
        # The reference is checked before any mixing work, which a refusal would waste.
        ref = read_r(r_start, r_len)
        self._check_activity(ref, _name("reference", names[2]))
        i_raw = read_i(i_start, i_len)
        t_gain = db_to_gain(
            self.lufs - loudness(t_raw, self.sample_rate, _name("target", names[0]))
        )
        i_gain = db_to_gain(
            self.lufs - ratio - loudness(i_raw, self.sample_rate, _name("interferer", names[1]))
        )
        tgt = np.zeros(length)
        tgt[t_off : t_off + t_len] = t_raw * t_gain
        itf = np.zeros(length)
        itf[i_off : i_off + i_len] = i_raw * i_gain

        # 3. noise
        noise, n_gain = None, math.nan
        params_noise = {"noise_snr_db": math.nan, "noise_file": "", "noise_start": -1}
        if self.noise is not None:
            n_raw, n_file, n_start = self.noise.draw(length, rng)
            snr = float(rng.uniform(*self.snr_range))
            n_gain = db_to_gain(
                self.lufs - snr - loudness(n_raw, self.sample_rate, _name("noise", n_file))
            )
            noise = n_raw * n_gain
            params_noise = {"noise_snr_db": snr, "noise_file": n_file, "noise_start": n_start}

        # 4. mixture level
        mix = tgt + itf if noise is None else tgt + itf + noise
        mix_gain = db_to_gain(self.lufs - loudness(mix, self.sample_rate, "mixture"))
        sources = [tgt, itf] + ([] if noise is None else [noise])
        peak = max(float(np.max(np.abs(s))) for s in [mix, *sources]) * mix_gain

        # 5. peak protection, one gain for everything
        peak_gain = peak_limit_gain(peak, self.peak_limit)
        if peak_gain < 1.0:
            # Debug level: online mixing meets this every few batches; make_mixtures counts it.
            logger.debug(
                "peak protection: mixture peak %.3f > %.2f, everything scaled by %.2f dB "
                "(mixture loudness %.2f LUFS instead of %.2f)",
                peak,
                self.peak_limit,
                gain_to_db(peak_gain),
                self.lufs + gain_to_db(peak_gain),
                self.lufs,
            )
        common = mix_gain * peak_gain
        mix, tgt, itf = mix * common, tgt * common, itf * common
        if noise is not None:
            noise = noise * common

        # 6. reference (read and checked above), on its own
        ref_gain = db_to_gain(
            self.lufs - loudness(ref, self.sample_rate, _name("reference", names[2]))
        )
        ref_peak = float(np.max(np.abs(ref))) * ref_gain
        ref_peak_gain = peak_limit_gain(ref_peak, self.peak_limit)
        if ref_peak_gain < 1.0:
            logger.debug(
                "peak protection on the reference: scaled by %.2f dB", gain_to_db(ref_peak_gain)
            )
            ref_gain *= ref_peak_gain
        ref = ref * ref_gain

        params = {
            "length": length,
            "ratio_db": ratio,
            **params_noise,
            "target_start": t_start,
            "target_stop": t_start + t_len,
            "target_offset": t_off,
            "interferer_start": i_start,
            "interferer_stop": i_start + i_len,
            "interferer_offset": i_off,
            "ref_start": r_start,
            "ref_stop": r_start + r_len,
            "target_gain_db": gain_to_db(t_gain * common),
            "interferer_gain_db": gain_to_db(i_gain * common),
            "noise_gain_db": math.nan if noise is None else gain_to_db(n_gain * common),
            "ref_gain_db": gain_to_db(ref_gain),
            "mix_gain_db": gain_to_db(mix_gain),
            "peak_gain_db": gain_to_db(peak_gain),
            "mix_lufs": self.lufs + gain_to_db(peak_gain),
        }
        return MixResult(
            mix=_tensor(mix),
            target=_tensor(tgt),
            interferer=_tensor(itf),
            reference=_tensor(ref),
            noise=None if noise is None else _tensor(noise),
            params=params,
        )


class NoUsableMixture(RuntimeError):
    """Every attempt of :func:`mix_with_redraws` was refused (silent crops, bad files)."""


def mix_with_redraws(mixer, draw, seed, max_attempts: int, what: str):
    """Draw sources and mix them, redrawing when the mixer refuses them.

    The one draw-and-retry loop of mixing: attempt ``a`` uses the generator
    ``np.random.default_rng([*seed, a])`` for both the draw and the mix, so the
    same seed gives the same mixture (and the same number of redraws) every time.
    A crop without enough speech is redrawn quietly (it is expected now and then);
    a silent or unreadable file is logged as a warning.

    Arguments
    ---------
    mixer : Mixer
        Anything with ``mix_segments(target, interferer, reference, rng)``.
    draw : callable
        ``draw(rng, attempt) -> (target, interferer, reference, extra)``: three
        :class:`~mixing.references.Segment` and whatever the caller wants back
        (e.g. the speakers drawn).
    seed : sequence of int
        Seed prefix of the item, e.g. ``[seed, split, index]``.
    max_attempts : int
        Attempts before giving up.
    what : str
        The item in messages, e.g. ``"train item 7"``.

    Returns
    -------
    tuple
        ``(MixResult, extra, attempt)``.

    Raises
    ------
    NoUsableMixture
        Every attempt was refused; the message lists why.

    Example
    -------
    >>> class Flaky:
    ...     def mix_segments(self, target, interferer, reference, rng):
    ...         if target == "quiet":
    ...             raise InactiveCropError("too little speech")
    ...         return f"{target}+{interferer}"
    >>> draw = lambda rng, attempt: ("quiet" if attempt == 0 else "a", "b", "a2", "spk b")
    >>> mix_with_redraws(Flaky(), draw, seed=[0, 7], max_attempts=3, what="item 7")
    ('a+b', 'spk b', 1)
    >>> mix_with_redraws(Flaky(), lambda rng, a: ("quiet", "b", "a2", None), [0], 2, "item 8")
    Traceback (most recent call last):
    ...
    mixing.mixers.NoUsableMixture: item 8: no usable mixture in 2 attempts: too little speech; too little speech
    """  # noqa: E501
    errors = []
    for attempt in range(max_attempts):
        rng = np.random.default_rng([*seed, attempt])
        target, interferer, reference, extra = draw(rng, attempt)
        try:
            return mixer.mix_segments(target, interferer, reference, rng), extra, attempt
        except InactiveCropError as error:
            logger.debug("%s attempt %d: %s", what, attempt, error)
            errors.append(str(error))
        except (LoudnessError, AudioFileError) as error:
            logger.warning("%s attempt %d: %s", what, attempt, error)
            errors.append(str(error))
    raise NoUsableMixture(
        f"{what}: no usable mixture in {max_attempts} attempts: " + "; ".join(errors)
    )

def _name(what: str, path: str) -> str:
    return f"{what} ({path})" if path else what


def _numpy(wav) -> np.ndarray:
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().numpy()
    return np.asarray(wav, dtype=np.float64)


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
