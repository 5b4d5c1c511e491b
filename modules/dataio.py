"""Test-set readers: a directory of mixture/reference/target triplets, and CSV manifests.

Directory layout read by :class:`CustomDirDataset`::

    TEST_DIR/
        mix/ID-mixed.wav      the two-speaker mixture
        refs/ID-ref.wav       enrollment speech of the target speaker
        targets/ID-target.wav the clean target (optional: without it nothing is scored)

``ID`` may contain ``-`` and ``_``; exactly the suffix (``-mixed.wav``, ``-ref.wav``,
``-target.wav``) is stripped. Hidden files (``.*``) are ignored; any other file in these
folders that does not follow the naming is reported as a problem rather than silently
left out.

:meth:`CustomDirDataset.check` reads the *whole* directory before anything is scored and
returns every problem at once, each with the file and the reason: a missing counterpart
for an ID, an empty folder, a file that is unreadable, corrupt, empty, all-zero, has NaN
or infinite samples, or has more than one channel (refused: which channel holds the
speech is ambiguous), a mixture whose length differs from its target's, and a mixture
or reference the model would refuse (shorter than :class:`InputLimits`, or silent),
so a run never stops part way through on an item the check could have found.

Sample-rate decision
--------------------
A **mixture or reference** at a rate other than 16 kHz is resampled to 16 kHz, with a
notice (:attr:`CustomDirDataset.notes`); this is what the inference API does with user
input. A **target** at another rate is refused as a bad file: scoring against a
resampled reference would not give the graded number, so the target must be supplied at
16 kHz.

Example
-------
>>> import tempfile, pathlib, torch
>>> from modules.audio import save_audio
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> tone = 0.1 * torch.sin(torch.arange(16000) / 7.0)
>>> save_audio(root / "mix" / "spk-1_a-mixed.wav", tone, 16000)
>>> save_audio(root / "refs" / "spk-1_a-ref.wav", tone[:8000], 16000)
>>> save_audio(root / "targets" / "spk-1_a-target.wav", 0.5 * tone, 16000)
>>> dataset = CustomDirDataset(root)
>>> dataset.check()
[]
>>> item = dataset[0]
>>> item["id"], item["mix"].shape, item["ref"].shape, item["target"].shape
('spk-1_a', torch.Size([16000]), torch.Size([8000]), torch.Size([16000]))
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import torch

from modules.audio import SAMPLE_RATE, AudioFileError, load_audio, probe_audio, resampled_length
from modules.levels import rms_dbfs

logger = logging.getLogger(__name__)

MIX_DIR, REF_DIR, TARGET_DIR = "mix", "refs", "targets"
MIX_SUFFIX, REF_SUFFIX, TARGET_SUFFIX = "-mixed.wav", "-ref.wav", "-target.wav"


class InputLimits(NamedTuple):
    """What a model can take: shortest mixture and reference, and the silence level.

    The defaults are those of ``hparams/inference.yaml`` (0.1 s, 0.5 s, -80 dBFS at
    16 kHz); a loaded model gives its own (``min_mix_samples``, ``min_ref_samples``,
    ``silence_dbfs`` of the extractor), so a test directory is refused for exactly
    what the model would refuse: lengths up front (from the headers), silence when
    an item is decoded.

    Example
    -------
    >>> InputLimits().min_ref_samples / 16000
    0.5
    """

    min_mix_samples: int = 1600
    min_ref_samples: int = 8000
    silence_dbfs: float = -80.0

    @classmethod
    def of(cls, extractor) -> InputLimits:
        """The limits of a loaded extractor."""
        return cls(extractor.min_mix_samples, extractor.min_ref_samples,
                   float(extractor.silence_dbfs))

    def length_problem(self, num_samples: int, what: str, sample_rate: int = SAMPLE_RATE):
        """Why ``num_samples`` are too few for a ``what`` (mixture, reference), or ``None``."""
        minimum = self.min_ref_samples if what == "reference" else self.min_mix_samples
        if num_samples < minimum:
            return (f"{what} is {num_samples / sample_rate:.3f} s long; at least "
                    f"{minimum / sample_rate:.3f} s ({minimum} samples at {sample_rate} Hz) "
                    "is needed")
        return None

    def problem(self, wav: torch.Tensor, what: str, sample_rate: int = SAMPLE_RATE):
        """Why ``wav`` (a mixture or a reference) cannot be used, or ``None``.

        Example
        -------
        >>> InputLimits().problem(torch.ones(100), "reference")
        'reference is 0.006 s long; at least 0.500 s (8000 samples at 16000 Hz) is needed'
        >>> InputLimits().problem(1e-6 * torch.ones(16000), "mixture")
        'mixture is silent (RMS -120.0 dBFS < -80.0 dBFS)'
        """
        problem = self.length_problem(wav.shape[-1], what, sample_rate)
        if problem:
            return problem
        level = rms_dbfs(wav)
        if level < self.silence_dbfs:
            return f"{what} is silent (RMS {level:.1f} dBFS < {self.silence_dbfs} dBFS)"
        return None


class Problem(NamedTuple):
    """One reason a test directory (or one item of it) cannot be used.

    ``item_id`` is the ID the problem disqualifies, or ``None`` for a problem with the
    directory itself (missing folder, no mixtures, a wrongly named file).
    """

    path: str
    reason: str
    item_id: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _scan(folder: Path, suffix: str, problems: list[Problem]) -> dict[str, Path]:
    """``{ID: path}`` for ``ID<suffix>`` files; wrongly named visible files are problems."""
    found = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file() and path.name.endswith(suffix) and len(path.name) > len(suffix):
            found[path.name[: -len(suffix)]] = path
        else:
            what = "a folder" if path.is_dir() else "a file"
            problems.append(
                Problem(str(path), f"{what} not named <ID>{suffix}: rename or remove it")
            )
    return found


def target_rate_problem(rate: int, sample_rate: int = SAMPLE_RATE) -> str:
    """Why a target at ``rate`` is refused (a target is never resampled)."""
    return (f"target is {rate} Hz, expected {sample_rate} Hz (a target is never resampled: "
            "scores against a resampled target are not the graded ones)")


def read_wav(
    path, sample_rate: int = SAMPLE_RATE, resample: bool = True
) -> tuple[torch.Tensor, list[str]]:
    """Load one mono ``[T]`` file at ``sample_rate`` under the sample-rate decision above.

    Arguments
    ---------
    path : str or Path
        The audio file.
    sample_rate : int
        The rate wanted.
    resample : bool
        True for a mixture or reference (resampled, with a note); False for a target,
        which is refused at any other rate.

    Returns
    -------
    wav : torch.Tensor
        ``[T]`` float32.
    notes : list of str
        Conversions applied.

    Raises
    ------
    AudioFileError
        Everything :func:`~modules.audio.load_audio` refuses (multi-channel included),
        and a target at another rate.

    Example
    -------
    >>> import tempfile, pathlib, torch
    >>> from modules.audio import save_audio
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x-target.wav"
    >>> save_audio(path, 0.1 * torch.sin(torch.arange(800.0)), 8000)
    >>> read_wav(path, resample=True)[0].shape
    torch.Size([1600])
    >>> read_wav(path, resample=False)
    Traceback (most recent call last):
    ...
    modules.audio.AudioFileError: ...: target is 8000 Hz, expected 16000 Hz (...)
    """
    if resample:
        wav, _, notes = load_audio(path, sample_rate, mono="refuse")
        return wav, notes
    wav, rate, notes = load_audio(path, None, mono="refuse")
    if rate != sample_rate:
        raise AudioFileError(path, target_rate_problem(rate, sample_rate))
    return wav, notes


class CustomDirDataset(torch.utils.data.Dataset):
    """The triplets of a test directory (see the module docstring for the layout).

    Arguments
    ---------
    test_dir : str or Path
        Folder holding ``mix/``, ``refs/`` and optionally ``targets/``.
    sample_rate : int
        Rate everything is delivered at (16 kHz: the rate the models and metrics use).
    limits : InputLimits
        Shortest mixture and reference and the silence level a model takes; checked for
        mixtures and references by :meth:`check`.
    use_targets : bool
        False: ignore ``targets/`` (extraction only needs mixtures and references).

    Attributes
    ----------
    ids : list of str
        Sorted IDs of the mixtures (after :meth:`drop_bad`, only the usable ones).
    has_targets : bool
        Whether a non-empty ``targets/`` folder exists (otherwise ``target`` is None).
    notes : list of str
        Conversions applied while checking (resampling of mixtures and references).

    Example
    -------
    >>> import tempfile
    >>> CustomDirDataset(tempfile.mkdtemp()).check()[0].reason
    'no mix/ folder (expected mix/<ID>-mixed.wav)'
    """

    def __init__(self, test_dir, sample_rate: int = SAMPLE_RATE,
                 limits: InputLimits | None = None, use_targets: bool = True):
        self.test_dir = Path(test_dir)
        self.sample_rate = sample_rate
        self.limits = limits or InputLimits()
        self.use_targets = use_targets
        self.notes: list[str] = []
        self.problems: list[Problem] | None = None
        self._structure: list[Problem] = []
        self.mix_paths: dict[str, Path] = {}
        self.ref_paths: dict[str, Path] = {}
        self.target_paths: dict[str, Path] = {}
        self.has_targets = False
        self._index()
        self.ids = sorted(self.mix_paths)

    def _index(self) -> None:
        """Find the files by name only (no audio is read here)."""
        problems = self._structure
        if not self.test_dir.is_dir():
            what = "is not a directory" if self.test_dir.exists() else "not found"
            problems.append(Problem(str(self.test_dir), f"test directory {what}"))
            return
        mix_dir, ref_dir = self.test_dir / MIX_DIR, self.test_dir / REF_DIR
        target_dir = self.test_dir / TARGET_DIR
        if mix_dir.is_dir():
            self.mix_paths = _scan(mix_dir, MIX_SUFFIX, problems)
            if not self.mix_paths:
                problems.append(Problem(str(mix_dir), f"no mixtures (<ID>{MIX_SUFFIX})"))
        else:
            problems.append(
                Problem(str(mix_dir), f"no {MIX_DIR}/ folder (expected {MIX_DIR}/<ID>{MIX_SUFFIX})")
            )
        if ref_dir.is_dir():
            self.ref_paths = _scan(ref_dir, REF_SUFFIX, problems)
        else:
            problems.append(
                Problem(str(ref_dir), f"no {REF_DIR}/ folder (expected {REF_DIR}/<ID>{REF_SUFFIX})")
            )
        if target_dir.is_dir() and self.use_targets:
            self.target_paths = _scan(target_dir, TARGET_SUFFIX, problems)
            self.has_targets = bool(self.target_paths)
            if not self.has_targets:
                problems.append(Problem(
                    str(target_dir),
                    f"empty {TARGET_DIR}/ folder: put the targets (<ID>{TARGET_SUFFIX}) there "
                    "to score, or remove the folder to only save estimates",
                ))
        if not self.has_targets and self.use_targets:
            logger.info("%s has no targets/: estimates can be saved, nothing scored",
                        self.test_dir)

    def __len__(self) -> int:
        return len(self.ids)

    def _expected(self, folder: str, item_id: str, suffix: str) -> str:
        return str(self.test_dir / folder / f"{item_id}{suffix}")

    def check(self) -> list[Problem]:
        """Check every file's header and return every problem found (empty: all usable).

        No audio is decoded here (each file is decoded once, when its item is
        loaded), so the whole directory is checked in moments and a run fails before
        any scoring for everything a header tells: missing or unreadable files,
        empty or multi-channel ones, a target at another rate, a mixture whose
        length differs from its target's, mixtures and references shorter than the
        :attr:`limits`. What needs the samples (cut-short data, NaN, silence) is
        refused when the item is loaded (:meth:`__getitem__`). Resampling notices
        go to :attr:`notes`.

        Returns
        -------
        list of Problem
            ``(path, reason, item_id)`` for each problem, in a stable order.
        """
        problems = list(self._structure)
        self.notes = []
        all_ids = sorted(set(self.mix_paths) | set(self.ref_paths) | set(self.target_paths))
        for item_id in all_ids:
            if item_id not in self.mix_paths:
                path = self.ref_paths.get(item_id) or self.target_paths[item_id]
                problems.append(Problem(
                    str(path), f"no mixture {self._expected(MIX_DIR, item_id, MIX_SUFFIX)}",
                    item_id,
                ))
                continue
            mix_path = self.mix_paths[item_id]
            if item_id not in self.ref_paths:
                problems.append(Problem(
                    str(mix_path),
                    f"no reference {self._expected(REF_DIR, item_id, REF_SUFFIX)}",
                    item_id,
                ))
            if self.has_targets and item_id not in self.target_paths:
                problems.append(Problem(
                    str(mix_path),
                    f"no target {self._expected(TARGET_DIR, item_id, TARGET_SUFFIX)}",
                    item_id,
                ))
            mix = self._check_header(mix_path, item_id, problems, "mixture")
            if item_id in self.ref_paths:
                self._check_header(self.ref_paths[item_id], item_id, problems, "reference")
            if item_id in self.target_paths:
                target = self._check_header(self.target_paths[item_id], item_id, problems)
                if mix is not None and target is not None and mix != target:
                    problems.append(Problem(
                        str(mix_path),
                        f"mix has {mix} samples, target {target}: they must be the same length",
                        item_id,
                    ))
        self.problems = problems
        return problems

    def _check_header(self, path: Path, item_id: str, problems: list[Problem],
                      what: str | None = None) -> int | None:
        """Samples at :attr:`sample_rate` of a mixture/reference (``what``) or a target
        (``None``, never resampled), from its header; ``None`` after a problem."""
        try:
            frames, rate, channels = probe_audio(path)
            if channels > 1:
                raise AudioFileError(path, f"{channels} channels, expected mono")
            if what is None and rate != self.sample_rate:
                raise AudioFileError(path, target_rate_problem(rate, self.sample_rate))
        except AudioFileError as error:
            problems.append(Problem(str(path), error.problem, item_id))
            return None
        if rate != self.sample_rate:
            self.notes.append(f"{path.name}: resampled {rate} Hz -> {self.sample_rate} Hz")
        length = resampled_length(frames, rate, self.sample_rate)
        problem = self.limits.length_problem(length, what, self.sample_rate) if what else None
        if problem:
            problems.append(Problem(str(path), problem, item_id))
            return None
        return length

    def _load_checked(self, path: Path, notes: list[str], what: str | None = None):
        """Decode one file; a mixture or reference (``what``) must also pass :attr:`limits`."""
        wav = self._load(path, what is not None, notes)
        problem = self.limits.problem(wav, what, self.sample_rate) if what else None
        if problem:
            raise AudioFileError(path, problem)
        return wav

    def _load(self, path: Path, resample: bool, notes: list[str] | None = None) -> torch.Tensor:
        wav, file_notes = read_wav(path, self.sample_rate, resample)
        (self.notes if notes is None else notes).extend(file_notes)
        return wav

    @property
    def bad_ids(self) -> list[str]:
        """IDs disqualified by the last :meth:`check`."""
        if self.problems is None:
            raise RuntimeError("call check() first")
        return sorted({p.item_id for p in self.problems if p.item_id is not None})

    def drop_bad(self) -> list[str]:
        """Keep only the usable IDs (after :meth:`check`); returns the dropped IDs."""
        bad = set(self.bad_ids)
        dropped = [item_id for item_id in self.ids if item_id in bad]
        self.ids = [item_id for item_id in self.ids if item_id not in bad]
        return dropped

    def __getitem__(self, index: int) -> dict:
        """``dict(id, mix [T], ref [Tr], target [T] or None)`` at :attr:`sample_rate`.

        Each file is decoded here, once, and checked on its samples: mixtures and
        references against :attr:`limits` (length and silence).

        Raises
        ------
        AudioFileError
            A file is bad: what :meth:`check` finds from the headers (run it first to
            learn about all of those at once), or undecodable data, NaN or silence.
        """
        item_id = self.ids[index]
        if item_id not in self.ref_paths:
            raise AudioFileError(
                self._expected(REF_DIR, item_id, REF_SUFFIX), "file not found"
            )
        notes: list[str] = []
        mix = self._load_checked(self.mix_paths[item_id], notes, "mixture")
        ref = self._load_checked(self.ref_paths[item_id], notes, "reference")
        target = None
        if self.has_targets:
            target_path = self.target_paths.get(item_id)
            if target_path is None:
                raise AudioFileError(
                    self._expected(TARGET_DIR, item_id, TARGET_SUFFIX), "file not found"
                )
            target = self._load_checked(target_path, notes)
            if len(target) != len(mix):
                raise AudioFileError(
                    self.mix_paths[item_id],
                    f"mix has {len(mix)} samples, target {len(target)}",
                )
        return {"id": item_id, "mix": mix, "ref": ref, "target": target}


def manifest_dataset(csv_path, sample_rate: int = SAMPLE_RATE, replacements=None):
    """A SpeechBrain ``DynamicItemDataset`` over a mixing manifest CSV.

    Arguments
    ---------
    csv_path : str or Path
        CSV with columns ``ID, duration, mix_wav, ref_wav, target_wav, target_speaker,
        interferer_speaker, ...`` (as written by the mixing scripts).
    sample_rate : int
        Mixture and reference are resampled to it; a target at another rate raises
        :class:`~modules.audio.AudioFileError` (same decision as :class:`CustomDirDataset`).
    replacements : dict, optional
        ``$key`` substitutions for the CSV (e.g. ``{"data_root": "/data"}``).

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset
        Items ``{"id", "mix" [T], "ref" [Tr], "target" [T], "target_speaker"}``.

    Example
    -------
    >>> import tempfile, pathlib, torch
    >>> from modules.audio import save_audio
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("m", "r", "t"):
    ...     save_audio(root / f"{name}.wav", 0.1 * torch.sin(torch.arange(1600.0)), 16000)
    >>> _ = (root / "test.csv").write_text(
    ...     "ID,duration,mix_wav,ref_wav,target_wav,target_speaker,interferer_speaker\\n"
    ...     "u1,0.1,$root/m.wav,$root/r.wav,$root/t.wav,103,1034\\n")
    >>> data = manifest_dataset(root / "test.csv", replacements={"root": str(root)})
    >>> item = data[0]
    >>> item["id"], item["mix"].shape, item["target_speaker"]
    ('u1', torch.Size([1600]), '103')
    """
    from speechbrain.dataio.dataset import DynamicItemDataset
    from speechbrain.utils.data_pipeline import provides, takes

    @takes("mix_wav")
    @provides("mix")
    def mix_pipeline(path):
        return read_wav(path, sample_rate, resample=True)[0]

    @takes("ref_wav")
    @provides("ref")
    def ref_pipeline(path):
        return read_wav(path, sample_rate, resample=True)[0]

    @takes("target_wav")
    @provides("target")
    def target_pipeline(path):
        return read_wav(path, sample_rate, resample=False)[0]

    dataset = DynamicItemDataset.from_csv(
        str(csv_path), replacements=replacements or {},
        dynamic_items=[mix_pipeline, ref_pipeline, target_pipeline],
    )
    dataset.set_output_keys(["id", "mix", "ref", "target", "target_speaker"])
    return dataset
