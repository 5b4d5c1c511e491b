"""Use a trained target speaker extraction model.

A *model directory* is what training leaves behind (see :func:`write_model_dir`)
and what ``download_model.py`` unpacks::

    model_dir/
        inference.yaml      # hparams/inference.yaml with the trained architecture
        model.ckpt          # state_dict of the model (torch.save)
        train_hparams.yaml  # the training configuration (for the record)
        metrics.json        # final validation/test metrics (for the record)

:class:`TargetSpeakerExtractor` loads it with SpeechBrain's
``Pretrained.from_hparams`` (offline: a local directory is read in place, no
links or copies are made) and extracts the speaker of a reference recording from
a mixture, for a batch of tensors, a pair of files, a long recording (chunked,
with the speaker embedding computed once) or a stream (:class:`StreamingExtractor`).

It works with any model that has the SpEx+ interface:

* ``forward(mix [B, T], ref [B, Tr], ref_lens [B] or None) -> {"est": [B, T], ...}``
* ``embed_reference(ref [B, Tr], ref_lens=None) -> (emb [B, D], logits or None)``
* ``extract(mix [B, T], emb [B, D]) -> {"est": [B, T], ...}``

Long inputs and streaming share one overlap-add scheme: chunks of ``chunk``
samples every ``hop`` samples (``hop <= chunk``), the last chunk aligned to the
end of the signal (so every chunk is full length and none is zero-padded), each
chunk output multiplied by a strictly positive Hann window and the sum divided by
the sum of the windows at each sample. The division makes the reconstruction
exact for any hop (a signal that every chunk reproduces is reproduced), and a
chunk that covers the whole input gives exactly the whole-utterance output.

Speaker classifier: models trained with ``num_speakers > 0`` carry a speaker
classification head used only as a training loss. Inference builds the model
with ``num_speakers: 0`` and :func:`load_model_state` skips the weights of
sub-modules that the inference model does not have (the head); every weight the
inference model has must be in ``model.ckpt`` with the right shape, otherwise
loading fails. ``model.ckpt`` keeps the head, so a model directory can still be
used to resume or fine-tune with the classification loss.

Example
-------
>>> import torch
>>> from modules.spex_plus import SpExPlus
>>> _ = torch.manual_seed(0)
>>> tiny = SpExPlus(**TINY_ARCHITECTURE)
    >>> tse = TargetSpeakerExtractor.from_model(tiny, run_opts={"device": "cpu"})
>>> mix, ref = torch.randn(2, 8000), torch.randn(2, 8000)
>>> tse.extract_batch(mix, torch.tensor([1.0, 0.5]), ref, None).shape
torch.Size([2, 8000])
>>> est = tse.extract_long(mix[0], ref[0], chunk_seconds=0.2, hop_seconds=0.1)
>>> est.shape
torch.Size([8000])
>>> stream = tse.stream(ref[0], chunk_seconds=0.2, hop_seconds=0.1)
>>> pieces = [stream.push(piece) for piece in mix[0].split(1234)] + [stream.flush()]
>>> torch.allclose(torch.cat(pieces), est, atol=1e-5)
True
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from hyperpyyaml import load_hyperpyyaml
from speechbrain.inference.interfaces import Pretrained

from modules.audio import AudioFileError, load_audio

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = REPO_ROOT / "hparams" / "inference.yaml"
HPARAMS_FILE = "inference.yaml"
CKPT_FILE = "model.ckpt"

#: Inference settings and their defaults (the values of ``hparams/inference.yaml``);
#: a model directory whose ``inference.yaml`` lacks one gets the default.
INFERENCE_DEFAULTS = {
    "sample_rate": SAMPLE_RATE,
    "chunk_seconds": 4.0,
    "hop_seconds": 2.0,
    "max_whole_seconds": 30.0,
    "min_ref_seconds": 0.5,
    "min_mix_seconds": 0.1,
    "silence_dbfs": -80.0,
    "target_lufs": None,
    "max_gain_db": 30.0,
    "peak_limit": 0.99,
}

#: Constructor arguments forced at inference (the speaker classifier is not built).
INFERENCE_ARCH_OVERRIDES = {"num_speakers": 0}

#: Keys of ``inference.yaml`` that an architecture dict may not use.
RESERVED_KEYS = set(INFERENCE_DEFAULTS) | {"model", "modules", "pretrainer", "savedir"}

#: A very small SpEx+ for doctests, unit tests and benchmarks of the machinery.
TINY_ARCHITECTURE = {
    "n_filters": 16,
    "bottleneck_channels": 16,
    "hidden_channels": 32,
    "kernel_size": 3,
    "blocks_per_stack": 2,
    "num_stacks": 1,
    "embedding_dim": 16,
    "short_kernel": 40,
    "middle_kernel": 160,
    "long_kernel": 320,
    "speaker_channels": [16, 16],
}


class ModelDirError(ValueError):
    """A model directory that cannot be loaded, with the directory and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


# --------------------------------------------------------------------------------------
# Writing and loading model directories
# --------------------------------------------------------------------------------------


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """Strip DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, torch.nn.DataParallel | torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _strip_prefixes(state_dict: dict) -> dict:
    """Remove the ``module.`` / ``_orig_mod.`` prefixes that wrappers add to every key."""
    for prefix in ("module.", "_orig_mod."):
        if state_dict and all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
    return state_dict


def load_model_state(model: torch.nn.Module, path) -> None:
    """Load ``model.ckpt`` into ``model``: strict, except for sub-modules not built.

    This is the Pretrainer hook named in ``inference.yaml``. A weight whose
    owning sub-module does not exist in ``model`` (the speaker classifier of a
    model trained with ``num_speakers > 0`` and built with ``num_speakers=0``)
    is skipped (logged at debug level); a missing weight, a mis-shaped weight or an
    unknown weight of an existing sub-module is an error.

    Arguments
    ---------
    model : torch.nn.Module
        The freshly built inference model.
    path : str or Path
        A ``torch.save``'d state_dict.

    Raises
    ------
    ModelDirError
        The checkpoint does not fit the model built from ``inference.yaml``.

    Example
    -------
    >>> import tempfile, pathlib, torch
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.ckpt"
    >>> trained = torch.nn.ModuleDict({"net": torch.nn.Linear(2, 2), "head": torch.nn.Linear(2, 5)})
    >>> torch.save(trained.state_dict(), path)
    >>> inference = torch.nn.ModuleDict({"net": torch.nn.Linear(2, 2)})
    >>> load_model_state(inference, path)
    >>> torch.equal(inference["net"].weight, trained["net"].weight)
    True
    """
    path = Path(path)
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelDirError(path, f"cannot read the checkpoint ({error})") from None
    if not isinstance(state_dict, dict):
        raise ModelDirError(path, f"expected a state_dict, found a {type(state_dict).__name__}")
    state_dict = _strip_prefixes(state_dict)
    expected = model.state_dict()
    skipped, unknown = [], []
    for key in list(state_dict):
        if key in expected:
            continue
        owner = key.rsplit(".", 1)[0] if "." in key else ""
        try:
            model.get_submodule(owner)
            unknown.append(key)
        except AttributeError:
            skipped.append(key)
            del state_dict[key]
    missing = [key for key in expected if key not in state_dict]
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"missing weights {_preview(missing)}")
        if unknown:
            problems.append(f"unexpected weights {_preview(unknown)}")
        raise ModelDirError(
            path,
            "checkpoint does not match the model built from inference.yaml ("
            + "; ".join(problems)
            + "): is the architecture in inference.yaml the trained one?",
        )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1].strip()
        raise ModelDirError(
            path, f"checkpoint does not match the model built from inference.yaml ({first})"
        ) from None
    if skipped:
        owners = sorted({key.split(".")[0] for key in skipped})
        logger.debug(
            "%s: skipped %d weights of modules not used at inference: %s",
            path.name,
            len(skipped),
            ", ".join(owners),
        )


def _preview(keys: list[str], count: int = 3) -> str:
    shown = ", ".join(keys[:count])
    return shown + (f" and {len(keys) - count} more" if len(keys) > count else "")


def _yaml_scalar(value) -> str:
    """One YAML value in flow style (numbers, strings, booleans, None, lists)."""
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def render_inference_yaml(
    architecture: dict, model_class: str, template_path=None, trained_values: dict | None = None
) -> str:
    """Fill the template ``hparams/inference.yaml`` with an architecture and class.

    Arguments
    ---------
    architecture : dict
        Constructor keyword arguments of the model (plain YAML values).
    model_class : str
        Import path of the class, e.g. ``"modules.spex_plus.SpExPlus"``.
    template_path : str or Path, optional
        The template (default: ``hparams/inference.yaml`` of this repository).
    trained_values : dict, optional
        Values replaced by :data:`INFERENCE_ARCH_OVERRIDES`, recorded as
        ``trained_<key>`` for information.

    Returns
    -------
    str
        The text of a model directory's ``inference.yaml``.

    Example
    -------
    >>> text = render_inference_yaml({"n_filters": 16}, "torch.nn.Identity")
    >>> "model: !new:torch.nn.Identity" in text and "n_filters: !ref <n_filters>" in text
    True
    """
    template = Path(template_path or TEMPLATE_PATH).read_text(encoding="utf-8")
    bad = sorted(set(architecture) & RESERVED_KEYS)
    if bad:
        raise ValueError(f"architecture keys {bad} clash with inference.yaml settings")
    for key in architecture:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"architecture key {key!r} is not a valid YAML/Python name")
    lines = ["# <architecture>", "# Constructor arguments of the trained model."]
    for key, value in architecture.items():
        comment = ""
        if trained_values and key in trained_values:
            comment = f"  # trained with {trained_values[key]!r}; not needed at inference"
        lines.append(f"{key}: {_yaml_scalar(value)}{comment}")
    for key, value in (trained_values or {}).items():
        lines.append(f"trained_{key}: {_yaml_scalar(value)}")
    lines.append("# </architecture>")
    model_lines = ["# <model>", f"model: !new:{model_class}"]
    model_lines += [f"    {key}: !ref <{key}>" for key in architecture]
    model_lines.append("# </model>")
    for tag, block in (("architecture", lines), ("model", model_lines)):
        pattern = re.compile(rf"^# <{tag}>.*?^# </{tag}>$", re.DOTALL | re.MULTILINE)
        if not pattern.search(template):
            raise ValueError(f"{template_path or TEMPLATE_PATH}: no '# <{tag}>' block")
        template = pattern.sub(lambda _match, block=block: "\n".join(block), template, count=1)
    return template


def write_model_dir(
    model: torch.nn.Module,
    dest,
    architecture: dict,
    train_hparams_path=None,
    metrics: dict | None = None,
    template_path=None,
    verify: bool = True,
) -> Path:
    """Write a loadable model directory, atomically (temporary dir, then rename).

    Arguments
    ---------
    model : torch.nn.Module
        The trained model (wrappers such as DataParallel or torch.compile are
        removed). Its class must be importable (it is named in inference.yaml).
    dest : str or Path
        The model directory to create (replaced if it exists).
    architecture : dict
        The keyword arguments that built ``model``. ``num_speakers`` (if any) is
        written as 0: the classifier is not built at inference, its weights stay
        in ``model.ckpt``.
    train_hparams_path : str or Path, optional
        The training hparams file, copied as ``train_hparams.yaml``.
    metrics : dict, optional
        Written as ``metrics.json``.
    template_path : str or Path, optional
        The inference.yaml template (default ``hparams/inference.yaml``).
    verify : bool
        Build the model from the written inference.yaml and load model.ckpt into
        it before publishing the directory, so that a bad architecture dict fails
        at the end of training rather than at the user's.

    Returns
    -------
    Path
        ``dest``.

    Example
    -------
    >>> import tempfile, pathlib
    >>> from modules.spex_plus import SpExPlus
    >>> dest = pathlib.Path(tempfile.mkdtemp()) / "model"
    >>> arch = dict(TINY_ARCHITECTURE, num_speakers=4)
    >>> _ = write_model_dir(SpExPlus(**arch), dest, arch, metrics={"si_sdr": 1.5})
    >>> sorted(path.name for path in dest.iterdir())
    ['inference.yaml', 'metrics.json', 'model.ckpt']
    >>> tse = TargetSpeakerExtractor.from_hparams(source=dest, run_opts={"device": "cpu"})
    >>> tse.hparams.num_speakers, tse.hparams.trained_num_speakers
    (0, 4)
    """
    dest = Path(dest)
    architecture = dict(architecture)
    model = _unwrap(model)
    cls = type(model)
    model_class = f"{cls.__module__}.{cls.__qualname__}"
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise ValueError(f"model class {model_class} is not importable: define it in a module")
    trained_values = {}
    for key, value in INFERENCE_ARCH_OVERRIDES.items():
        if key in architecture and architecture[key] != value:
            trained_values[key] = architecture[key]
            architecture[key] = value
    text = render_inference_yaml(architecture, model_class, template_path, trained_values)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    try:
        (tmp / HPARAMS_FILE).write_text(text, encoding="utf-8")
        state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
        torch.save(state_dict, tmp / CKPT_FILE)
        if train_hparams_path is not None:
            shutil.copyfile(train_hparams_path, tmp / "train_hparams.yaml")
        if metrics is not None:
            with open(tmp / "metrics.json", "w", encoding="utf-8") as handle:
                json.dump(metrics, handle, indent=2, default=_json_default)
                handle.write("\n")
        if verify:
            try:
                with open(tmp / HPARAMS_FILE, encoding="utf-8") as handle:
                    hparams = load_hyperpyyaml(handle)
            except (ImportError, AttributeError, TypeError, ValueError) as error:
                raise ModelDirError(
                    dest / HPARAMS_FILE,
                    f"the architecture {architecture} does not build {model_class} "
                    f"({type(error).__name__}: {error})",
                ) from None
            load_model_state(hparams["model"], tmp / CKPT_FILE)
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote model directory %s (%s)", dest, model_class)
    return dest


def _json_default(value):
    if isinstance(value, torch.Tensor | np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to metrics.json")


def replace_dir(src: Path, dest: Path) -> None:
    """Move directory ``src`` to ``dest``, replacing ``dest`` if it exists.

    The old ``dest`` is renamed aside first and restored if the final rename
    fails, so ``dest`` is always either the old or the new complete directory
    (apart from the instant between the two renames).
    """
    if not dest.exists():
        os.replace(src, dest)
        return
    old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
    os.rmdir(old)
    os.replace(dest, old)
    try:
        os.replace(src, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_model_dir(path) -> Path:
    """Check that ``path`` holds ``inference.yaml`` and ``model.ckpt``; return it.

    Raises
    ------
    ModelDirError
        Naming the directory and what is missing.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelDirError(path, "model directory not found")
    if not path.is_dir():
        raise ModelDirError(path, "not a directory (expected a model directory)")
    missing = [name for name in (HPARAMS_FILE, CKPT_FILE) if not (path / name).is_file()]
    if missing:
        raise ModelDirError(
            path,
            f"not a model directory: {' and '.join(missing)} missing (a model directory is "
            "written at the end of training or by download_model.py)",
        )
    return path


# --------------------------------------------------------------------------------------
# Signal helpers
# --------------------------------------------------------------------------------------


def ola_window(length: int) -> torch.Tensor:
    """Strictly positive Hann window ``[length]`` used for overlap-add.

    The symmetric Hann window of ``length + 2`` points without its two zero end
    points: it never vanishes, so the per-sample normalisation by the sum of
    windows is defined for every hop up to the chunk length.

    Example
    -------
    >>> w = ola_window(4)
    >>> bool((w > 0).all()), round(float(w.max()), 3)
    (True, 0.905)
    """
    return torch.hann_window(length + 2, periodic=False, dtype=torch.float64)[1:-1].float()


def _energy(wav: torch.Tensor) -> float:
    """Sum of squares, accumulated in float64 over 1 M-sample blocks (no full-size copy)."""
    wav = wav.detach().reshape(-1)
    if not wav.is_floating_point():
        wav = wav.float()
    return sum(float(torch.dot(block, block)) for block in wav.split(1 << 20))


def rms_dbfs(wav: torch.Tensor) -> float:
    """RMS level of a waveform in dB relative to full scale (``-inf`` if silent).

    Example
    -------
    >>> round(rms_dbfs(torch.full((100,), 0.1)), 2)
    -20.0
    """
    power = _energy(wav) / wav.numel() if wav.numel() else 0.0
    return 10.0 * math.log10(power) if power > 0 else -math.inf


def energy_ratio_db(est: torch.Tensor, mix: torch.Tensor) -> float:
    """Energy of ``est`` relative to ``mix`` in dB (``-inf`` for a silent estimate).

    Example
    -------
    >>> round(energy_ratio_db(torch.ones(10) * 0.1, torch.ones(10)), 2)
    -20.0
    """
    est_energy, mix_energy = _energy(est), _energy(mix)
    if mix_energy <= 0:
        return math.nan
    return 10.0 * math.log10(est_energy / mix_energy) if est_energy > 0 else -math.inf


def measure_loudness(wav: torch.Tensor, sample_rate: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770 via pyloudnorm).

    Signals shorter than one 0.4 s gating block fall back to the RMS level in
    dBFS (equal to LUFS for a 1 kHz tone). ``-inf`` for signals below the
    absolute gate (-70 LUFS).

    Example
    -------
    >>> tone = 0.1 * torch.sin(2 * torch.pi * 1000 * torch.arange(16000) / 16000)
    >>> round(measure_loudness(tone, 16000))
    -23
    """
    import pyloudnorm

    data = wav.detach().double().cpu().numpy()
    if data.shape[-1] < int(0.4 * sample_rate) + 1:
        return rms_dbfs(wav)
    with np.errstate(divide="ignore"):
        return float(pyloudnorm.Meter(sample_rate).integrated_loudness(data))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two vectors ``[D]`` as a float."""
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1))


# --------------------------------------------------------------------------------------
# Chunked overlap-add (shared by long-file and streaming inference)
# --------------------------------------------------------------------------------------


class _ChunkedOverlapAdd:
    """Windowed overlap-add of a per-chunk function over a stream of samples.

    Regular chunks start at ``0, hop, 2 hop, ...`` and run as soon as their
    ``chunk`` samples have arrived; at :meth:`flush` one more chunk aligned to
    the end of the signal covers any remainder (a signal no longer than one
    chunk is processed whole, without a window). Samples more than ``chunk``
    samples behind the newest input can no longer change and are returned.
    Memory is bounded: the last ``chunk`` input samples and at most about
    ``chunk + hop`` output accumulators are kept.
    """

    def __init__(self, process: Callable, chunk: int, hop: int, min_samples: int):
        if not 0 < hop <= chunk:
            raise ValueError(f"need 0 < hop <= chunk, got hop={hop}, chunk={chunk} samples")
        self.process, self.chunk, self.hop, self.min_samples = process, chunk, hop, min_samples
        self.window = ola_window(chunk)
        self._input = torch.zeros(0)  # input samples [_input_start, received)
        self._input_start = 0
        self.received = 0
        self._next = 0  # start of the next regular chunk
        self._processed_end = 0  # end of the last processed chunk
        self._num = torch.zeros(0)  # accumulators for output samples [_emitted, ...)
        self._den = torch.zeros(0)
        self._emitted = 0
        self._flushed = False

    def _add(self, start: int, out: torch.Tensor, window: torch.Tensor) -> None:
        end = start + out.shape[-1]
        need = end - self._emitted
        if need > self._num.shape[0]:
            grow = need - self._num.shape[0]
            self._num = torch.cat([self._num, torch.zeros(grow)])
            self._den = torch.cat([self._den, torch.zeros(grow)])
        offset = start - self._emitted
        self._num[offset : offset + out.shape[-1]] += out * window
        self._den[offset : offset + out.shape[-1]] += window
        self._processed_end = max(self._processed_end, end)

    def _segment(self, start: int, end: int) -> torch.Tensor:
        return self._input[start - self._input_start : end - self._input_start]

    def _emit(self, upto: int) -> torch.Tensor:
        count = max(0, upto - self._emitted)
        out = self._num[:count] / self._den[:count]
        self._num, self._den = self._num[count:], self._den[count:]
        self._emitted += count
        return out

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        if self._flushed:
            raise RuntimeError("push() after flush(): start a new stream")
        samples = torch.as_tensor(samples, dtype=torch.float32).detach().cpu().reshape(-1)
        self._input = torch.cat([self._input, samples])
        self.received += samples.shape[0]
        while self._next + self.chunk <= self.received:
            start = self._next
            out = self.process(self._segment(start, start + self.chunk))
            self._add(start, out, self.window)
            self._next += self.hop
        # Every later chunk starts at or after received - chunk.
        ready = self.received - self.chunk
        keep_from = max(0, ready)
        self._input = self._input[keep_from - self._input_start :]
        self._input_start = keep_from
        return self._emit(min(ready, self._processed_end))

    def flush(self) -> torch.Tensor:
        if self._flushed:
            return torch.zeros(0)
        self._flushed = True
        total = self.received
        if total == 0:
            return torch.zeros(0)
        if total < self.min_samples:
            raise ValueError(
                f"mixture is {total} samples long; the model needs at least "
                f"{self.min_samples} samples"
            )
        if self._processed_end == 0:  # shorter than one chunk: one whole pass
            self._add(0, self.process(self._segment(0, total)), torch.ones(total))
        elif self._processed_end < total:
            start = total - self.chunk
            self._add(start, self.process(self._segment(start, total)), self.window)
        out = self._emit(total)
        self._input = torch.zeros(0)
        return out


class StreamingExtractor:
    """Extract a target speaker from a mixture that arrives piece by piece.

    Created by :meth:`TargetSpeakerExtractor.stream`. The reference embedding is
    computed once; :meth:`push` takes any number of new mixture samples (16 kHz)
    and returns the output samples that are final, :meth:`flush` ends the
    stream and returns the rest. The concatenated output equals
    :meth:`TargetSpeakerExtractor.extract_long` on the whole mixture with the
    same chunk and hop. Latency: one chunk (plus computation).

    Arguments
    ---------
    extractor : TargetSpeakerExtractor
        The loaded model.
    ref : torch.Tensor
        ``[Tr]`` reference speech of the target speaker (16 kHz).
    chunk_seconds, hop_seconds : float, optional
        Chunk length and hop (default: the model's ``inference.yaml``).

    Example
    -------
    >>> import torch
    >>> from modules.spex_plus import SpExPlus
    >>> tiny = SpExPlus(**TINY_ARCHITECTURE)
    >>> tse = TargetSpeakerExtractor.from_model(tiny, run_opts={"device": "cpu"})
    >>> stream = tse.stream(torch.randn(8000), chunk_seconds=0.25, hop_seconds=0.125)
    >>> stream.push(torch.randn(3000)).shape, stream.push(torch.randn(3000)).shape
    (torch.Size([0]), torch.Size([2000]))
    >>> stream.flush().shape
    torch.Size([4000])
    """

    def __init__(self, extractor, ref, chunk_seconds=None, hop_seconds=None):
        self.extractor = extractor
        chunk, hop = extractor._chunk_hop(chunk_seconds, hop_seconds)
        self.emb = extractor.embed(ref)
        self._ola = _ChunkedOverlapAdd(
            lambda segment: extractor._extract_segment(segment, self.emb),
            chunk,
            hop,
            extractor.min_mix_samples,
        )

    @property
    def latency_samples(self) -> int:
        """Samples between an input sample's arrival and its output (one chunk)."""
        return self._ola.chunk

    def push(self, samples) -> torch.Tensor:
        """Add mixture samples ``[n]``; return the output samples now final ``[m]``."""
        return self._ola.push(samples)

    def flush(self) -> torch.Tensor:
        """End the stream; return the remaining output samples."""
        return self._ola.flush()


# --------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------


class TargetSpeakerExtractor(Pretrained):
    """Extract a target speaker, given a reference recording, with a trained model.

    Load a model directory with ``TargetSpeakerExtractor.from_hparams(source=DIR)``
    or wrap a model in memory with :meth:`from_model`. Settings (chunking,
    minimum lengths, output level) come from the model's ``inference.yaml``
    (defaults: :data:`INFERENCE_DEFAULTS`) and can be changed as attributes,
    e.g. ``tse.chunk_seconds = 2.0``.

    Example
    -------
    >>> import torch
    >>> from modules.spex_plus import SpExPlus
    >>> tiny = SpExPlus(**TINY_ARCHITECTURE)
    >>> tse = TargetSpeakerExtractor.from_model(tiny, run_opts={"device": "cpu"})
    >>> ref, mix = torch.randn(16000), torch.randn(4000)
    >>> tse.extract(mix, ref).shape
    torch.Size([4000])
    >>> -1.0 <= tse.presence_score(mix, ref) <= 1.0
    True
    """

    MODULES_NEEDED = ["model"]

    def __init__(self, modules=None, hparams=None, run_opts=None, freeze_params=True):
        hparams = dict(hparams or {})
        super().__init__(modules, hparams, run_opts, freeze_params)
        for key in self.MODULES_NEEDED:
            if key not in self.mods:
                raise ValueError(f"inference.yaml must define modules: {{{key}: ...}}")
        for key, default in INFERENCE_DEFAULTS.items():
            setattr(self, key, hparams.get(key, default))
        kernels = [
            hparams.get(key) or 0 for key in ("short_kernel", "middle_kernel", "long_kernel")
        ]
        self.min_kernel_samples = int(max(kernels))

    @classmethod
    def from_hparams(cls, source, hparams_file=HPARAMS_FILE, **kwargs):
        """Load a model directory.

        A local directory is checked first (``inference.yaml`` and ``model.ckpt``
        present) and read in place: without ``savedir`` nothing is linked or
        copied, and nothing is looked up on the network.

        Arguments
        ---------
        source : str or Path
            Model directory. An ``https://`` source is passed to SpeechBrain
            unchanged (it then needs ``savedir``); released models are fetched
            with ``download_model.py`` instead.
        hparams_file : str
            Name of the hparams file in ``source``.
        **kwargs
            Passed to ``Pretrained.from_hparams`` (``run_opts``, ``savedir``,
            ``overrides``...).

        Raises
        ------
        ModelDirError
            For a local directory that is missing, incomplete or does not load.
        """
        text = str(source)
        if text.startswith(("http://", "https://")):
            return super().from_hparams(source=text, hparams_file=hparams_file, **kwargs)
        path = Path(text).expanduser().resolve()
        if hparams_file == HPARAMS_FILE:
            check_model_dir(path)
        elif not (path / hparams_file).is_file():
            raise ModelDirError(path, f"{hparams_file} not found")
        try:
            return super().from_hparams(source=str(path), hparams_file=hparams_file, **kwargs)
        except ModelDirError:
            raise
        except (ImportError, AttributeError, KeyError, TypeError, yaml.YAMLError) as error:
            raise ModelDirError(
                path / hparams_file, f"cannot build the model ({type(error).__name__}: {error})"
            ) from None

    @classmethod
    def from_model(cls, model: torch.nn.Module, run_opts=None, **settings):
        """Wrap a model in memory (no model directory), e.g. for tests or benchmarks.

        Arguments
        ---------
        model : torch.nn.Module
            A model with the SpEx+ interface.
        run_opts : dict, optional
            SpeechBrain run options, e.g. ``{"device": "cpu"}``.
        **settings
            Inference settings (see :data:`INFERENCE_DEFAULTS`) and architecture
            values such as ``long_kernel`` (used for the minimum input length).
        """
        hparams = dict(INFERENCE_DEFAULTS)
        for key in ("short_kernel", "middle_kernel", "long_kernel"):
            for owner in (model, getattr(model, "encoder", None)):
                if isinstance(getattr(owner, key, None), int):
                    hparams[key] = getattr(owner, key)
                    break
        hparams.update(settings)
        hparams["model"] = model
        return cls(modules={"model": model}, hparams=hparams, run_opts=run_opts)

    # ---- lengths and checks -------------------------------------------------------------

    @property
    def model(self) -> torch.nn.Module:
        """The wrapped model."""
        return self.mods.model

    @property
    def min_mix_samples(self) -> int:
        """Shortest mixture accepted, in samples."""
        return max(int(round(self.min_mix_seconds * self.sample_rate)), self.min_kernel_samples, 1)

    @property
    def min_ref_samples(self) -> int:
        """Shortest reference accepted, in samples."""
        return max(int(round(self.min_ref_seconds * self.sample_rate)), self.min_kernel_samples, 1)

    def _check_signal(self, wav: torch.Tensor, what: str, minimum: int, source=None) -> None:
        name = source if source is not None else what
        error = AudioFileError if source is not None else ValueError

        def fail(problem):
            raise error(source, problem) if source is not None else error(f"{name}: {problem}")

        if wav.numel() == 0:
            fail("empty (0 samples)")
        if not all(bool(torch.isfinite(block).all()) for block in wav.split(1 << 20)):
            fail("contains NaN or infinite samples")
        if wav.shape[-1] < minimum:
            fail(
                f"{what} is {wav.shape[-1] / self.sample_rate:.3f} s long; at least "
                f"{minimum / self.sample_rate:.3f} s ({minimum} samples at "
                f"{self.sample_rate} Hz) is needed"
            )
        level = rms_dbfs(wav)
        if level < self.silence_dbfs:
            fail(f"{what} is silent (RMS {level:.1f} dBFS < {self.silence_dbfs} dBFS)")

    def _chunk_hop(self, chunk_seconds=None, hop_seconds=None) -> tuple[int, int]:
        if chunk_seconds is None:
            chunk_seconds = self.chunk_seconds
            hop_seconds = self.hop_seconds if hop_seconds is None else hop_seconds
        elif hop_seconds is None:
            hop_seconds = chunk_seconds / 2
        chunk = int(round(chunk_seconds * self.sample_rate))
        hop = int(round(hop_seconds * self.sample_rate))
        if chunk < self.min_mix_samples:
            raise ValueError(
                f"chunk_seconds={chunk_seconds} is shorter than the shortest input the model "
                f"takes ({self.min_mix_samples / self.sample_rate:.3f} s)"
            )
        if not 0 < hop <= chunk:
            raise ValueError(
                f"hop_seconds={hop_seconds} must be > 0 and <= chunk_seconds={chunk_seconds}"
            )
        return chunk, hop

    # ---- model calls ----------------------------------------------------------------------

    @staticmethod
    def _fit_length(est: torch.Tensor, length: int) -> torch.Tensor:
        if est.shape[-1] > length:
            return est[..., :length]
        if est.shape[-1] < length:
            return torch.nn.functional.pad(est, (0, length - est.shape[-1]))
        return est

    @torch.no_grad()
    def embed(self, ref: torch.Tensor) -> torch.Tensor:
        """Speaker embedding ``[D]`` of a reference ``[Tr]`` (checked first).

        References longer than ``max_whole_seconds`` are embedded in pieces of
        that length (the last one aligned to the end) and the embeddings averaged.
        """
        ref = torch.as_tensor(ref, dtype=torch.float32).reshape(-1)
        self._check_signal(ref, "reference", self.min_ref_samples)
        return self._embed_unchecked(ref)

    def _embed_unchecked(self, wav: torch.Tensor) -> torch.Tensor:
        limit = max(int(self.max_whole_seconds * self.sample_rate), self.min_ref_samples)
        if wav.shape[-1] <= limit:
            pieces = [wav]
        else:
            starts = list(range(0, wav.shape[-1] - limit + 1, limit))
            if starts[-1] + limit < wav.shape[-1]:
                starts.append(wav.shape[-1] - limit)
            pieces = [wav[start : start + limit] for start in starts]
        embs = [self.model.embed_reference(piece[None].to(self.device))[0][0] for piece in pieces]
        return torch.stack(embs).mean(dim=0).detach().cpu()

    @torch.no_grad()
    def _extract_segment(self, segment: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        out = self.model.extract(segment[None].to(self.device), emb[None].to(self.device))
        return self._fit_length(out["est"][0], segment.shape[-1]).float().cpu()

    @torch.no_grad()
    def extract_batch(self, mixes, mix_lens, refs, ref_lens=None) -> torch.Tensor:
        """Extract the reference speakers from a batch of mixtures (whole utterances).

        Arguments
        ---------
        mixes : torch.Tensor
            ``[B, T]`` mixtures at the model's sample rate, zero-padded.
        mix_lens : torch.Tensor or None
            ``[B]`` relative lengths (1.0 = ``T``); None: all full length.
        refs : torch.Tensor
            ``[B, Tr]`` reference speech, zero-padded.
        ref_lens : torch.Tensor or None
            ``[B]`` relative lengths of the references.

        Returns
        -------
        torch.Tensor
            ``[B, T]`` estimates on the CPU, zero beyond each mixture's length.
        """
        mixes = torch.as_tensor(mixes, dtype=torch.float32)
        refs = torch.as_tensor(refs, dtype=torch.float32)
        if mixes.dim() == 1:
            mixes = mixes[None]
        if refs.dim() == 1:
            refs = refs[None]
        if mixes.dim() != 2 or refs.dim() != 2 or mixes.shape[0] != refs.shape[0]:
            raise ValueError(
                f"expected mixes [B, T] and refs [B, Tr], got {tuple(mixes.shape)} and "
                f"{tuple(refs.shape)}"
            )
        batch, length = mixes.shape
        if length < self.min_mix_samples:
            raise ValueError(
                f"mixture is {length} samples long; the model needs at least "
                f"{self.min_mix_samples} samples ({self.min_mix_samples / self.sample_rate:.3f} s)"
            )
        if ref_lens is not None:
            ref_lens = torch.as_tensor(ref_lens, dtype=torch.float32).to(self.device)
        out = self.model(mixes.to(self.device), refs.to(self.device), ref_lens)
        est = self._fit_length(out["est"], length).float().cpu()
        if mix_lens is not None:
            abs_lens = torch.round(torch.as_tensor(mix_lens, dtype=torch.float32) * length).long()
            mask = torch.arange(length)[None, :] < abs_lens[:, None]
            est = est * mask
        return est

    def forward(self, mixes, refs, mix_lens=None, ref_lens=None):
        """Same as :meth:`extract_batch` (``mixes [B, T], refs [B, Tr] -> [B, T]``)."""
        return self.extract_batch(mixes, mix_lens, refs, ref_lens)

    @torch.no_grad()
    def extract_long(self, mix, ref, chunk_seconds=None, hop_seconds=None) -> torch.Tensor:
        """Chunked extraction of a long mixture ``[T]`` -> ``[T]``.

        The reference embedding is computed once; chunks of ``chunk_seconds``
        every ``hop_seconds`` are overlap-added (see the module docstring).
        Defaults come from ``inference.yaml``; ``chunk_seconds`` alone sets the
        hop to half a chunk.
        """
        mix = torch.as_tensor(mix, dtype=torch.float32).reshape(-1)
        self._check_signal(mix, "mixture", self.min_mix_samples)
        stream = self.stream(ref, chunk_seconds, hop_seconds)
        # Push chunk-sized views and fill a preallocated output: memory is the input,
        # the output and one chunk's activations, whatever the length.
        out = torch.empty_like(mix)
        position = 0
        for piece in [*mix.split(stream.latency_samples), None]:
            ready = stream.flush() if piece is None else stream.push(piece)
            out[position : position + ready.shape[0]] = ready
            position += ready.shape[0]
        assert position == mix.shape[0], (position, mix.shape[0])
        return out

    def stream(self, ref, chunk_seconds=None, hop_seconds=None) -> StreamingExtractor:
        """Start a :class:`StreamingExtractor` for reference ``ref [Tr]``."""
        return StreamingExtractor(self, ref, chunk_seconds, hop_seconds)

    @torch.no_grad()
    def extract(self, mix, ref) -> torch.Tensor:
        """Extract from one mixture ``[T]`` -> ``[T]``, chunked if longer than
        ``max_whole_seconds``, otherwise in one pass."""
        mix = torch.as_tensor(mix, dtype=torch.float32).reshape(-1)
        ref = torch.as_tensor(ref, dtype=torch.float32).reshape(-1)
        self._check_signal(mix, "mixture", self.min_mix_samples)
        self._check_signal(ref, "reference", self.min_ref_samples)
        if mix.shape[-1] > self.max_whole_seconds * self.sample_rate:
            return self.extract_long(mix, ref)
        return self.extract_batch(mix[None], None, ref[None], None)[0]

    @torch.no_grad()
    def presence_score(self, est, ref) -> float:
        """Cosine similarity of the speaker embeddings of an estimate and a reference.

        High when the estimate sounds like the reference speaker; low (or
        undefined for a silent estimate: ``nan``) when the target is absent.
        """
        est = torch.as_tensor(est, dtype=torch.float32).reshape(-1)
        if est.shape[-1] < self.min_kernel_samples or rms_dbfs(est) < self.silence_dbfs:
            return math.nan
        return cosine(self._embed_unchecked(est), self.embed(ref))

    # ---- files ------------------------------------------------------------------------------

    def load_checked(self, path, what: str, minimum: int) -> torch.Tensor:
        """Read ``path`` as mono at the model's rate, logging conversions; check it."""
        wav, _, notes = load_audio(path, sample_rate=self.sample_rate, mono="mix")
        for note in notes:
            logger.info("notice: %s", note)
        self._check_signal(wav, what, minimum, source=path)
        return wav

    def match_level(self, est: torch.Tensor, mix: torch.Tensor, lufs=None):
        """Scale ``est`` to the loudness of ``mix`` (or to ``lufs``), then peak-limit.

        Returns
        -------
        wav : torch.Tensor
            ``[T]`` scaled estimate, peak <= ``peak_limit``.
        info : dict
            ``target_lufs``, ``loudness_lufs`` (of the output), ``gain_db``,
            ``peak_limited`` and ``notes``.
        """
        notes = []
        target = lufs if lufs is not None else self.target_lufs
        if target is None:
            target = measure_loudness(mix, self.sample_rate)
        est_loudness = measure_loudness(est, self.sample_rate)
        gain_db = 0.0
        if not math.isfinite(est_loudness):
            notes.append("estimate is below the -70 LUFS gate: loudness not matched")
        elif not math.isfinite(target):
            notes.append("mixture is below the -70 LUFS gate: loudness not matched")
        else:
            gain_db = target - est_loudness
            if gain_db > self.max_gain_db:
                notes.append(
                    f"loudness matching needs {gain_db:.1f} dB of gain; limited to "
                    f"{self.max_gain_db} dB (quiet estimate: is the target speaker present?)"
                )
                gain_db = self.max_gain_db
        wav = est * 10.0 ** (gain_db / 20.0)
        peak = float(wav.abs().max()) if wav.numel() else 0.0
        limited = peak > self.peak_limit
        change_db = 0.0
        if limited:
            wav = wav * (self.peak_limit / peak)
            change_db = 20 * math.log10(self.peak_limit / peak)
            notes.append(
                f"peak {peak:.2f} would clip: scaled by {change_db:.1f} dB to {self.peak_limit}"
            )
        info = {
            "target_lufs": float(target),
            "loudness_lufs": measure_loudness(wav, self.sample_rate),
            "gain_db": float(gain_db + change_db),
            "peak_limited": bool(limited),
            "notes": notes,
        }
        for note in notes:
            logger.info("notice: %s", note)
        return wav, info

    def extract_file(self, mix_path, ref_path, lufs=None, return_info=False):
        """Extract the speaker of ``ref_path`` from ``mix_path``.

        Any sample rate and channel count is converted to the model's rate and
        mono (logged). Mixtures longer than ``max_whole_seconds`` are chunked.
        The output is loudness-matched to the mixture (or set to ``lufs``) and
        scaled down if it would clip.

        Arguments
        ---------
        mix_path, ref_path : str or Path
            Audio files (anything libsndfile reads).
        lufs : float, optional
            Output loudness in LUFS instead of the mixture's.
        return_info : bool
            Also return a dict with ``presence_cosine`` (speaker similarity of
            estimate and reference), ``energy_db`` (estimate energy relative to
            the mixture, before level matching), ``loudness_lufs``,
            ``gain_db``, ``peak_limited``, ``chunked``, ``duration_s``, ``notes``.

        Returns
        -------
        torch.Tensor or (torch.Tensor, dict)
            ``[T]`` estimate at the model's sample rate.

        Raises
        ------
        AudioFileError
            Missing, unreadable, empty, silent or too short files (the message
            names the file and the problem).
        """
        mix = self.load_checked(mix_path, "mixture", self.min_mix_samples)
        ref = self.load_checked(ref_path, "reference", self.min_ref_samples)
        chunked = mix.shape[-1] > self.max_whole_seconds * self.sample_rate
        if chunked:
            logger.info(
                "notice: %s is %.1f s long (> %.1f s): chunked in %.1f s pieces every %.1f s",
                Path(mix_path).name,
                mix.shape[-1] / self.sample_rate,
                self.max_whole_seconds,
                self.chunk_seconds,
                self.hop_seconds,
            )
            est = self.extract_long(mix, ref)
        else:
            est = self.extract_batch(mix[None], None, ref[None], None)[0]
        energy_db = energy_ratio_db(est, mix)
        wav, level_info = self.match_level(est, mix, lufs)
        if not return_info:
            return wav
        info = {
            "presence_cosine": self.presence_score(est, ref),
            "energy_db": energy_db,
            "chunked": chunked,
            "duration_s": mix.shape[-1] / self.sample_rate,
            **level_info,
        }
        return wav, info
