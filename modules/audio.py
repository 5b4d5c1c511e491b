"""Checked audio I/O shared by mixing, evaluation and inference.

All reading goes through :func:`load_audio` so that every entry point reports a
bad file the same way: one :class:`AudioFileError` naming the file and the
problem, never a traceback from inside soundfile or torch. Writing goes through
:func:`save_audio`, which writes to a temporary file and renames it, so a failed
or interrupted run never leaves a half-written wav behind.

Waveforms are 1-D float32 tensors ``[T]`` at this boundary.

Example
-------
>>> import tempfile, pathlib, torch
>>> path = pathlib.Path(tempfile.mkdtemp()) / "tone.wav"
>>> tone = 0.1 * torch.sin(torch.arange(16000) / 10.0)
>>> save_audio(path, tone, 16000)
>>> wav, sample_rate, notes = load_audio(path)
>>> wav.shape, sample_rate, notes
(torch.Size([16000]), 16000, [])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from modules.files import FileError, atomic_path

#: The sample rate of every model, metric and mixture of the project (Hz): the one
#: definition, imported wherever a rate is needed.
SAMPLE_RATE = 16000


class AudioFileError(FileError):
    """An audio file that cannot be used (``path``, ``problem``; see :class:`FileError`).

    A :class:`~modules.cli.BadInput` (a ``ValueError``): the command-line tools report it
    in one line and exit with status 2.
    """


def load_audio(
    path,
    sample_rate: int | None = SAMPLE_RATE,
    mono: str = "refuse",
    allow_silent: bool = False,
) -> tuple[torch.Tensor, int, list[str]]:
    """Read an audio file as a float32 ``[T]`` tensor, checking it on the way.

    Arguments
    ---------
    path : str or Path
        Any format libsndfile reads (wav, flac, ogg, ...).
    sample_rate : int or None
        Resample to this rate (with a note) if the file differs; ``None`` keeps
        the file's rate.
    mono : {"refuse", "mix"}
        What to do with a multi-channel file: refuse it, or average the channels
        (with a note).
    allow_silent : bool
        Accept an all-zero signal (refused by default: it makes every metric
        undefined).

    Returns
    -------
    wav : torch.Tensor
        ``[T]`` float32.
    sample_rate : int
        The rate of ``wav``.
    notes : list of str
        Human-readable notes on conversions applied (resampling, downmix).

    Raises
    ------
    AudioFileError
        Missing, unreadable, empty, silent, non-finite or (with
        ``mono="refuse"``) multi-channel files.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(path, "file not found")
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types for bad files
        raise AudioFileError(path, f"not a readable audio file ({error})") from None
    notes = []
    if data.shape[0] == 0:
        raise AudioFileError(path, "empty audio file (0 samples)")
    if data.shape[1] > 1:
        if mono == "refuse":
            raise AudioFileError(path, f"{data.shape[1]} channels, expected mono")
        notes.append(f"{path.name}: averaged {data.shape[1]} channels to mono")
        data = data.mean(axis=1, keepdims=True)
    if not np.isfinite(data).all():
        raise AudioFileError(path, "contains NaN or infinite samples")
    if not allow_silent and not np.any(data):
        raise AudioFileError(path, "all samples are zero (silent file)")
    wav = torch.from_numpy(np.ascontiguousarray(data[:, 0]))
    if sample_rate is not None and file_rate != sample_rate:
        wav = torchaudio.functional.resample(wav, file_rate, sample_rate)
        notes.append(f"{path.name}: resampled {file_rate} Hz -> {sample_rate} Hz")
        file_rate = sample_rate
    return wav, file_rate, notes


def probe_audio(path) -> tuple[int, int, int]:
    """``(frames, sample_rate, channels)`` of an audio file from its header (no decoding).

    The cheap part of :func:`load_audio`'s checks, with the same messages: a
    missing, unreadable or empty file raises. What needs the samples (cut-short
    data, NaN, silence) is only found by decoding.

    Example
    -------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.wav"
    >>> save_audio(path, 0.1 * torch.ones(800), 8000)
    >>> probe_audio(path)
    (800, 8000, 1)
    """
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(path, "file not found")
    try:
        info = sf.info(str(path))
    except Exception as error:  # soundfile raises several types for bad files
        raise AudioFileError(path, f"not a readable audio file ({error})") from None
    if info.frames == 0:
        raise AudioFileError(path, "empty audio file (0 samples)")
    return int(info.frames), int(info.samplerate), int(info.channels)


def resampled_length(num_samples: int, file_rate: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Samples :func:`load_audio` returns for ``num_samples`` at ``file_rate`` (torchaudio's).

    Example
    -------
    >>> resampled_length(800, 8000), resampled_length(441, 44100), resampled_length(7, 16000)
    (1600, 160, 7)
    """
    return -(-num_samples * sample_rate // file_rate)


def save_audio(path, wav: torch.Tensor, sample_rate: int = SAMPLE_RATE, subtype="PCM_16"):
    """Write a ``[T]`` waveform atomically (temporary file, then rename).

    Samples are clipped to [-1, 1) only by the PCM conversion; callers that care
    about clipping scale the signal first (see the mixers and the extractor). The
    format follows the suffix (``.wav``, ``.flac``, ...); the file gets the normal
    mode of a new file (see :func:`modules.files.atomic_path`).
    """
    path = Path(path)
    wav = torch.as_tensor(wav).detach().to(torch.float32).cpu()
    if wav.dim() != 1:
        raise ValueError(f"save_audio expects a [T] waveform, got shape {tuple(wav.shape)}")
    with atomic_path(path) as tmp:
        sf.write(tmp, wav.numpy(), sample_rate, subtype=subtype, format=audio_format(path, subtype))


def audio_format(path, subtype: str = "PCM_16") -> str:
    """The libsndfile format of an output path, from its suffix.

    Example
    -------
    >>> audio_format("est.wav"), audio_format("x/est.FLAC")
    ('WAV', 'FLAC')

    Raises
    ------
    AudioFileError
        A suffix libsndfile cannot write with ``subtype`` (e.g. ``.mp3``, ``.txt``).
    """
    path = Path(path)
    name = path.suffix.lstrip(".").upper()
    if name not in sf.available_formats() or not sf.check_format(name, subtype):
        suffix = path.suffix or "no suffix"
        raise AudioFileError(path, f"unknown audio format {suffix!r} (use .wav or .flac)")
    return name
