"""Use a trained target speaker extraction model: :class:`TargetSpeakerExtractor`.

The extractor loads a model directory (:mod:`modules.model_dir`) with
SpeechBrain's ``Pretrained.from_hparams`` (offline: a local directory is read
in place, no links or copies are made) and extracts the speaker of a reference
recording from a mixture. Four ways in, all with the mixture first:

* :meth:`~TargetSpeakerExtractor.extract_file` ``(mix_path, ref_path)``: files;
* :meth:`~TargetSpeakerExtractor.extract` ``(mix, ref)``: tensors, ``[T]`` or
  zero-padded ``[B, T]`` batches with relative lengths;
* :meth:`~TargetSpeakerExtractor.stream` ``(ref)``: a mixture that arrives block
  by block (:class:`StreamingExtractor`);
* :meth:`~TargetSpeakerExtractor.presence_score` ``(est, ref)``: does an
  estimate sound like the reference speaker?

Every extraction goes through one place that makes every decision, in this
order: check both inputs (length, finite, not silent); scale them to
``input_lufs`` so that the result does not depend on the recording level;
embed the reference once; run the mixture whole, or in overlapping chunks when
it is longer than ``max_whole_seconds`` (:mod:`modules.overlap_add`); scale the
estimate back; match its loudness to the mixture (or to ``lufs``) and limit its
peak (:func:`modules.levels.match_level`). ``extract.py`` and ``evaluate.py``
both call it, so what is scored is what users get.

It works with any model that has the SpEx+ interface:

* ``embed_reference(ref [B, Tr]) -> (emb [B, D], logits or None)``
* ``extract(mix [B, T], emb [B, D]) -> {"est": [B, T], ...}``
* optionally ``min_input_samples``: the shortest mixture it takes.

Example
-------
>>> import torch
>>> from modules.model_dir import REPO_ROOT, model_args_from_hparams
>>> from modules.spex_plus import SpExPlus
>>> tiny_yaml = REPO_ROOT / "recipes" / "LibriMix-TSE" / "hparams" / "tiny.yaml"
>>> tse = TargetSpeakerExtractor.from_model(SpExPlus(**model_args_from_hparams(tiny_yaml)))
>>> mix, ref = torch.randn(2, 8000), torch.randn(2, 8000)
>>> tse.extract(mix, ref, mix_lens=torch.tensor([1.0, 0.5])).shape
torch.Size([2, 8000])
>>> est, info = tse.extract(mix[0], ref[0], return_info=True)
>>> est.shape, info["chunked"], -1 <= info["presence_cosine"] <= 1
(torch.Size([8000]), False, True)
>>> stream = tse.stream(ref[0], chunk_seconds=0.2, hop_seconds=0.1)
>>> pieces = [stream.push(piece) for piece in mix[0].split(1234)] + [stream.flush()]
>>> torch.cat(pieces).shape
torch.Size([8000])
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import yaml
from speechbrain.inference.interfaces import Pretrained

from modules.audio import AudioFileError, load_audio
from modules.dataio import InputLimits
from modules.levels import energy_ratio_db, match_level, normalize_level, rms_dbfs
from modules.losses import absolute_lengths
from modules.model_dir import (  # noqa: F401 - load_model_state: named by older model dirs
    HPARAMS_FILE,
    INFERENCE_DEFAULTS,
    ModelDirError,
    check_model_dir,
    load_model_state,
)
from modules.overlap_add import ChunkedOverlapAdd, overlap_add

logger = logging.getLogger(__name__)

#: Choices of ``runtime`` (inference.yaml): the PyTorch model, or its ``extract`` exported
#: to ONNX and run by ONNX Runtime (CPU only; :mod:`modules.onnx_runtime`).
RUNTIMES = ("torch", "onnxruntime")


class StreamingExtractor:
    """Extract a target speaker from a mixture that arrives piece by piece.

    Created by :meth:`TargetSpeakerExtractor.stream`. The reference is checked,
    level-normalised and embedded once; :meth:`push` takes any number of new
    mixture samples and returns the output samples that are final, :meth:`flush`
    ends the stream and returns the rest. The output is the chunked overlap-add
    of the model output (:mod:`modules.overlap_add`) with the given chunk and
    hop; latency: one chunk (plus computation). The mixture's level cannot be
    measured before it has all arrived, so it is given to the model as it is
    (and the output is not loudness-matched): scale a stream near ``input_lufs``
    (-20 LUFS) for the best result.

    Arguments
    ---------
    extractor : TargetSpeakerExtractor
        The loaded model.
    ref : torch.Tensor
        ``[Tr]`` reference speech of the target speaker at the model's rate.
    chunk_seconds, hop_seconds : float, optional
        Chunk length and hop (default: the model's ``inference.yaml``).

    Example
    -------
    >>> import torch
    >>> from modules.spex_plus import SpExPlus
    >>> tse = TargetSpeakerExtractor.from_model(SpExPlus(), run_opts={"device": "cpu"})
    >>> stream = tse.stream(torch.randn(8000), chunk_seconds=0.25, hop_seconds=0.125)
    >>> stream.push(torch.randn(3000)).shape, stream.push(torch.randn(3000)).shape
    (torch.Size([0]), torch.Size([2000]))
    >>> stream.flush().shape
    torch.Size([4000])
    """

    def __init__(self, extractor, ref, chunk_seconds=None, hop_seconds=None):
        chunk, hop = extractor._chunk_hop(chunk_seconds, hop_seconds)
        ref = torch.as_tensor(ref, dtype=torch.float32).reshape(-1)
        extractor._check(ref, "reference")
        self.emb = extractor._embed(ref)
        self._ola = ChunkedOverlapAdd(
            lambda segment: extractor._run_model(segment, self.emb),
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


class TargetSpeakerExtractor(Pretrained):
    """Extract a target speaker, given a reference recording, with a trained model.

    Load a model directory with ``TargetSpeakerExtractor.from_hparams(source=DIR)``
    or wrap a model in memory with :meth:`from_model`. Settings (chunking,
    minimum lengths, input and output levels) come from the model's
    ``inference.yaml`` (defaults: :data:`modules.model_dir.INFERENCE_DEFAULTS`)
    and can be changed as attributes, e.g. ``tse.chunk_seconds = 2.0``.

    Example
    -------
    >>> import torch
    >>> from modules.spex_plus import SpExPlus
    >>> tiny = SpExPlus(n_filters=8, hidden_channels=16, num_stacks=1, speaker_channels=[8])
    >>> tse = TargetSpeakerExtractor.from_model(tiny)
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
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if self.runtime == "onnxruntime" and torch.device(self.device).type != "cpu":
            raise ValueError(f"runtime onnxruntime runs on the CPU, not on {self.device}")
        self._onnx = None  # the ONNX Runtime session, made at the first use
        #: Shortest input the model itself takes (its ``min_input_samples``, else 1).
        self.model_min_samples = int(getattr(self.model, "min_input_samples", 1) or 1)

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
            Inference settings (see :data:`modules.model_dir.INFERENCE_DEFAULTS`).
        """
        hparams = {**INFERENCE_DEFAULTS, **settings, "model": model}
        return cls(modules={"model": model}, hparams=hparams, run_opts=run_opts)

    # ---- lengths and checks -------------------------------------------------------------

    @property
    def model(self) -> torch.nn.Module:
        """The wrapped model."""
        return self.mods.model

    @property
    def min_mix_samples(self) -> int:
        """Shortest mixture accepted, in samples."""
        return max(int(round(self.min_mix_seconds * self.sample_rate)), self.model_min_samples)

    @property
    def min_ref_samples(self) -> int:
        """Shortest reference accepted, in samples."""
        return max(int(round(self.min_ref_seconds * self.sample_rate)), self.model_min_samples)

    def _check(self, wav: torch.Tensor, what: str, source=None) -> None:
        """Refuse an empty, non-finite, too short or silent input (once per input).

        The length and silence limits are :class:`modules.dataio.InputLimits`, the
        ones a test directory is checked against before anything is scored.
        """
        if wav.numel() == 0:
            problem = "empty (0 samples)"
        elif not all(bool(torch.isfinite(block).all()) for block in wav.split(1 << 20)):
            problem = "contains NaN or infinite samples"
        else:
            problem = InputLimits.of(self).problem(wav, what, self.sample_rate)
        if problem is None:
            return
        if source is not None:
            raise AudioFileError(source, problem)
        raise ValueError(f"{what}: {problem}")

    def _chunk_hop(self, chunk_seconds=None, hop_seconds=None) -> tuple[int, int]:
        """Chunk and hop in samples (``chunk_seconds`` alone: hop = half a chunk); checked."""
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

    # ---- the model ------------------------------------------------------------------------

    def _normalise(self, wav: torch.Tensor) -> tuple[torch.Tensor, float]:
        """``wav`` scaled to ``input_lufs`` (unchanged when that is None), and the gain."""
        if self.input_lufs is None:
            return wav, 1.0
        return normalize_level(wav, self.input_lufs, self.sample_rate)

    @torch.no_grad()
    def _embed(self, ref: torch.Tensor) -> torch.Tensor:
        """Speaker embedding ``[D]`` of a checked signal ``[Tr]``, at ``input_lufs``.

        Signals longer than ``max_whole_seconds`` are embedded in pieces of that
        length (the last one aligned to the end) and the embeddings averaged.
        """
        wav = self._normalise(ref)[0]
        # float, not int: max_whole_seconds may be inf (no limit)
        limit = max(self.max_whole_seconds * self.sample_rate, self.min_ref_samples)
        if wav.shape[-1] <= limit:
            pieces = [wav]
        else:
            limit = int(limit)
            starts = list(range(0, wav.shape[-1] - limit + 1, limit))
            if starts[-1] + limit < wav.shape[-1]:
                starts.append(wav.shape[-1] - limit)
            pieces = [wav[start : start + limit] for start in starts]
        embs = [self.model.embed_reference(piece[None].to(self.device))[0][0] for piece in pieces]
        return torch.stack(embs).mean(dim=0).detach().cpu()

    @torch.no_grad()
    def _run_model(self, mix: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """One pass of the model over ``mix [T]`` -> ``[T]`` (CPU, float32)."""
        if self.runtime == "onnxruntime":
            if self._onnx is None:
                from modules.onnx_runtime import OnnxExtract

                self._onnx = OnnxExtract(self.model, emb.shape[-1])
            est = self._onnx(mix[None], emb[None])[0]
        else:
            est = self.model.extract(mix[None].to(self.device), emb[None].to(self.device))["est"][0]
        if est.shape[-1] > mix.shape[-1]:
            est = est[: mix.shape[-1]]
        elif est.shape[-1] < mix.shape[-1]:
            est = torch.nn.functional.pad(est, (0, mix.shape[-1] - est.shape[-1]))
        return est.float().cpu()

    def _extract_one(self, mix, ref, lufs=None, return_info=False, name="mixture"):
        """Every inference decision for one checked pair ``[T]``, ``[Tr]`` -> ``([T], info)``."""
        emb = self._embed(ref)
        model_in, gain = self._normalise(mix)
        chunked = mix.shape[-1] > self.max_whole_seconds * self.sample_rate
        if chunked:
            chunk, hop = self._chunk_hop()
            logger.info(
                "notice: %s is %.1f s long (> %.1f s): chunked in %.1f s pieces every %.1f s",
                name, mix.shape[-1] / self.sample_rate, self.max_whole_seconds,
                chunk / self.sample_rate, hop / self.sample_rate,
            )
            est = overlap_add(
                lambda segment: self._run_model(segment, emb), model_in, chunk, hop,
                self.min_mix_samples,
            )
        else:
            est = self._run_model(model_in, emb)
        est = est / gain
        wav, level_info = match_level(
            est, mix, lufs if lufs is not None else self.target_lufs, self.sample_rate,
            self.max_gain_db, self.peak_limit,
        )
        for note in level_info["notes"]:
            logger.info("notice: %s: %s", name, note)
        if not return_info:
            return wav, None
        info = {
            "presence_cosine": self._presence(est, emb),
            "energy_db": energy_ratio_db(est, mix),
            "chunked": chunked,
            "duration_s": mix.shape[-1] / self.sample_rate,
            **level_info,
        }
        return wav, info

    def _presence(self, est: torch.Tensor, emb: torch.Tensor) -> float:
        if est.shape[-1] < self.model_min_samples or rms_dbfs(est) < self.silence_dbfs:
            return math.nan
        return float(torch.nn.functional.cosine_similarity(
            self._embed(est).double(), emb.double(), dim=-1
        ))

    # ---- the ways in ------------------------------------------------------------------------

    def extract(self, mix, ref, mix_lens=None, ref_lens=None, lufs=None, return_info=False):
        """Extract the reference speaker from a mixture (tensors at the model's rate).

        Arguments
        ---------
        mix : torch.Tensor
            ``[T]`` mixture, or ``[B, T]`` zero-padded mixtures.
        ref : torch.Tensor
            ``[Tr]`` reference speech, or ``[B, Tr]`` zero-padded references.
        mix_lens, ref_lens : torch.Tensor, optional
            ``[B]`` lengths relative to ``T`` / ``Tr`` (SpeechBrain convention);
            None: all full length.
        lufs : float, optional
            Output loudness instead of the mixture's.
        return_info : bool
            Also return, per item, ``presence_cosine`` (speaker similarity of
            estimate and reference), ``energy_db`` (estimate energy relative to
            the mixture, before level matching), ``loudness_lufs``, ``gain_db``,
            ``peak_limited``, ``chunked``, ``duration_s`` and ``notes``.

        Returns
        -------
        torch.Tensor or (torch.Tensor, dict or list of dict)
            Estimates shaped like ``mix`` on the CPU (zero past each length),
            loudness-matched and peak-limited; with ``return_info`` the info of
            the item (``[T]`` input) or of each item (``[B, T]``).

        Raises
        ------
        ValueError
            Bad shapes, or an input that is empty, not finite, silent or too short.
        """
        mix = torch.as_tensor(mix, dtype=torch.float32).detach().cpu()
        ref = torch.as_tensor(ref, dtype=torch.float32).detach().cpu()
        single = mix.dim() == 1
        mixes, refs = (mix[None], ref.reshape(1, -1)) if single else (mix, ref)
        if mixes.dim() != 2 or refs.dim() != 2 or mixes.shape[0] != refs.shape[0]:
            raise ValueError(
                f"expected mix [T] and ref [Tr], or mix [B, T] and ref [B, Tr]; got "
                f"{tuple(mix.shape)} and {tuple(ref.shape)}"
            )
        mix_counts = self._lengths(mix_lens, mixes)
        ref_counts = self._lengths(ref_lens, refs)
        out, infos = torch.zeros_like(mixes), []
        for index, (mix_count, ref_count) in enumerate(zip(mix_counts, ref_counts, strict=True)):
            one_mix, one_ref = mixes[index, :mix_count], refs[index, :ref_count]
            self._check(one_mix, "mixture")
            self._check(one_ref, "reference")
            wav, info = self._extract_one(one_mix, one_ref, lufs, return_info)
            out[index, :mix_count] = wav
            infos.append(info)
        out = out[0] if single else out
        if not return_info:
            return out
        return out, (infos[0] if single else infos)

    @staticmethod
    def _lengths(lengths, batch: torch.Tensor) -> list[int]:
        """Sample counts of a padded batch ``[B, T]`` from relative lengths."""
        if lengths is None:
            return [batch.shape[-1]] * batch.shape[0]
        lengths = torch.as_tensor(lengths, dtype=torch.float32).reshape(-1)
        return absolute_lengths(lengths, batch.shape[-1], batch).tolist()

    def extract_file(self, mix_path, ref_path, lufs=None, return_info=False):
        """Extract the speaker of ``ref_path`` from ``mix_path``.

        Any sample rate and channel count is converted to the model's rate and
        mono (logged); then exactly what :meth:`extract` does.

        Arguments
        ---------
        mix_path, ref_path : str or Path
            Audio files (anything libsndfile reads).
        lufs : float, optional
            Output loudness in LUFS instead of the mixture's.
        return_info : bool
            Also return the info dict of :meth:`extract`.

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
        mix = self._read(mix_path, "mixture")
        ref = self._read(ref_path, "reference")
        wav, info = self._extract_one(mix, ref, lufs, return_info, name=Path(mix_path).name)
        return (wav, info) if return_info else wav

    def _read(self, path, what: str) -> torch.Tensor:
        """``path`` as mono at the model's rate, conversions logged, checked once."""
        wav, _, notes = load_audio(path, sample_rate=self.sample_rate, mono="mix")
        for note in notes:
            logger.info("notice: %s", note)
        self._check(wav, what, source=path)
        return wav

    def stream(self, ref, chunk_seconds=None, hop_seconds=None) -> StreamingExtractor:
        """Start a :class:`StreamingExtractor` for reference ``ref [Tr]``."""
        return StreamingExtractor(self, ref, chunk_seconds, hop_seconds)

    def presence_score(self, est, ref) -> float:
        """Cosine similarity of the speaker embeddings of an estimate and a reference.

        Both are embedded at ``input_lufs``. High when the estimate sounds like
        the reference speaker; low (or undefined for a silent estimate: ``nan``)
        when the target is absent.
        """
        est = torch.as_tensor(est, dtype=torch.float32).reshape(-1)
        ref = torch.as_tensor(ref, dtype=torch.float32).reshape(-1)
        self._check(ref, "reference")
        return self._presence(est, self._embed(ref))
