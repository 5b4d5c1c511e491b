"""Pretrained GE2E d-vector speaker encoder (the weights of the ``resemblyzer`` wheel).

The model (Wan et al., "Generalized end-to-end loss for speaker verification",
ICASSP 2018) as trained and published by the Resemblyzer project (Apache-2.0):
40-band power mel spectrogram (25 ms window, 10 ms hop at 16 kHz), a 3-layer
LSTM of 256 units, a linear layer to 256, ReLU and L2 normalisation. Its authors
trained it on about 8,400 speakers of VoxCeleb 1 and 2 and LibriSpeech
train-other-500. An utterance is cut into 1.6 s partials (1.3 per second), each
partial is embedded, and the mean of the partial embeddings is L2-normalised.

Only the weights file ``resemblyzer/pretrained.pt`` is used; the package itself
is never imported (it pulls in ``webrtcvad`` and ``librosa``), so install it with
``pip install --no-deps resemblyzer==0.1.4``. The mel front end follows
librosa's conventions (Slaney mel scale and norm, centred frames, zero padding)
with torchaudio's filterbank and the convolutional STFT of :mod:`modules.stft`;
``tests/unittests/test_dvector.py`` checks the embedding against the package's
own ``VoiceEncoder`` where librosa is installed. Every size inside is tensor
arithmetic, so traced (TorchScript) and ONNX graphs hold for any reference length.

Differences from ``VoiceEncoder.embed_utterance``: the input is not trimmed of
long silences (that needs webrtcvad); batches of references of different
lengths are handled with relative lengths, and padding never changes an
embedding.

Example
-------
>>> import torch
>>> encoder = DVectorEncoder(pretrained=False)
>>> encoder(torch.randn(2, 24000) * 0.1, torch.tensor([1.0, 0.5])).shape
torch.Size([2, 256])
>>> encoder.num_partials(torch.tensor([8000, 25600, 40000]))
tensor([1, 1, 2])
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torchaudio
from torch import nn

from modules.audio import SAMPLE_RATE
from modules.losses import absolute_lengths
from modules.stft import STFT

#: How to install the wheel that carries the weights.
INSTALL_HINT = "pip install --no-deps resemblyzer==0.1.4"


class DVectorUnavailable(ImportError):
    """The pretrained d-vector weights cannot be found or read."""


def resemblyzer_weights() -> Path:
    """Path of ``pretrained.pt`` inside the installed ``resemblyzer`` package.

    Raises
    ------
    DVectorUnavailable
        When the package is not installed or holds no weights file.
    """
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise DVectorUnavailable(
            f"the pretrained d-vector needs the resemblyzer wheel: {INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise DVectorUnavailable(f"{path}: resemblyzer is installed but has no pretrained.pt")
    return path


class DVectorEncoder(nn.Module):
    """GE2E d-vector of each reference in a batch, ``[B, T] -> [B, 256]``.

    Arguments
    ---------
    pretrained : bool
        Load the Resemblyzer weights (raises :class:`DVectorUnavailable` when
        they are missing). ``False`` leaves a random initialisation, for tests or
        when a checkpoint will overwrite the weights anyway.
    trainable : bool
        ``False`` freezes the encoder (no gradients, always in eval mode, run
        under ``torch.no_grad``); ``True`` fine-tunes it.
    sample_rate : int
        Must be :data:`modules.audio.SAMPLE_RATE`, 16000 (the rate the weights were
        trained at).
    partial_frames : int
        Frames per partial utterance (160 = 1.6 s).
    partials_per_second : float
        Partial rate (Resemblyzer's 1.3).
    min_coverage : float
        The last partial is kept only if this fraction of it is inside the
        reference (unless it is the only one).
    target_dbfs : float
        References quieter than this RMS level are amplified to it (as
        Resemblyzer's preprocessing does); louder ones are left alone. The
        features are power mels, so the embedding depends on level.

    Example
    -------
    >>> import torch
    >>> encoder = DVectorEncoder(pretrained=False).eval()
    >>> wav = torch.randn(1, 30000) * 0.05
    >>> padded = torch.nn.functional.pad(wav, (0, 9000))
    >>> a = encoder(wav)
    >>> b = encoder(padded, torch.tensor([30000 / 39000]))
    >>> bool(torch.allclose(a, b, atol=1e-5)), round(float(a.norm()), 4)
    (True, 1.0)
    """

    embedding_dim = 256

    def __init__(
        self,
        pretrained: bool = True,
        trainable: bool = False,
        sample_rate: int = SAMPLE_RATE,
        partial_frames: int = 160,
        partials_per_second: float = 1.3,
        min_coverage: float = 0.75,
        target_dbfs: float = -30.0,
    ):
        super().__init__()
        if sample_rate != SAMPLE_RATE:
            raise ValueError(
                f"the pretrained d-vector works at {SAMPLE_RATE} Hz, got {sample_rate}"
            )
        self.hop = sample_rate // 100  # 10 ms
        self.partial_frames = int(partial_frames)
        self.partial_step = int(round(sample_rate / partials_per_second / self.hop))
        self.min_coverage = float(min_coverage)
        self.target_dbfs = float(target_dbfs)
        self.trainable = bool(trainable)
        # librosa.feature.melspectrogram(sr=16000, n_fft=400, hop_length=160, n_mels=40):
        # power spectrum of centred, zero-padded frames through a Slaney mel filterbank.
        # The STFT is a convolution (modules.stft), so traced and ONNX graphs export it.
        n_fft = sample_rate * 25 // 1000
        self.stft = STFT(n_fft=n_fft, win_length=n_fft, hop_length=self.hop)
        fbank = torchaudio.functional.melscale_fbanks(
            n_fft // 2 + 1, 0.0, sample_rate / 2, 40, sample_rate, norm="slaney", mel_scale="slaney"
        )
        self.register_buffer("mel_fbank", fbank.T.contiguous(), persistent=False)  # [40, F]
        self.lstm = nn.LSTM(40, 256, num_layers=3, batch_first=True)
        self.linear = nn.Linear(256, self.embedding_dim)
        if pretrained:
            self.load_pretrained()
        if not self.trainable:
            self.requires_grad_(False)
            super().train(False)

    def load_pretrained(self, path=None) -> None:
        """Load the GE2E weights (default: the installed Resemblyzer's)."""
        path = Path(path) if path is not None else resemblyzer_weights()
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            state = {
                key: value
                for key, value in checkpoint["model_state"].items()
                if key.startswith(("lstm.", "linear."))
            }
            self.load_state_dict(state, strict=False)
        except (OSError, KeyError, RuntimeError) as error:
            problem = f"{path}: cannot load the d-vector weights ({error})"
            raise DVectorUnavailable(problem) from None

    def train(self, mode: bool = True):
        """A frozen encoder stays in eval mode whatever its parent does."""
        return super().train(mode and self.trainable)

    def num_partials(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Partial utterances used for references of ``num_samples`` samples (integer tensor).

        The same slicing as ``VoiceEncoder.compute_partial_slices`` (rate 1.3,
        coverage 0.75).
        """
        frames = torch.div(num_samples + 1 + self.hop - 1, self.hop, rounding_mode="floor")
        steps = (frames - self.partial_frames + self.partial_step + 1).clamp(min=1)
        count = torch.div(steps + self.partial_step - 1, self.partial_step, rounding_mode="floor")
        last_start = (count - 1) * self.partial_step * self.hop
        coverage = (num_samples - last_start) / (self.partial_frames * self.hop)
        return count - ((coverage < self.min_coverage) & (count > 1)).long()

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Embed a batch of 16 kHz references.

        Arguments
        ---------
        wav : torch.Tensor
            ``[B, T]`` waveforms.
        lengths : torch.Tensor or None
            ``[B]`` lengths relative to ``T`` (SpeechBrain convention); ``None``: all full.

        Returns
        -------
        torch.Tensor
            ``[B, 256]`` L2-normalised, non-negative d-vectors.
        """
        if self.trainable:
            return self._embed(wav, lengths)
        with torch.no_grad():
            return self._embed(wav, lengths)

    def _embed(self, wav: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        batch, num_samples = wav.shape
        abs_lens = absolute_lengths(lengths, num_samples, wav)
        # [T] < [B, 1] -> [B, T]
        valid = torch.arange(num_samples, device=wav.device).unsqueeze(0) < abs_lens.unsqueeze(1)
        wav = wav.float() * valid
        # Quiet references up to target_dbfs (RMS over the valid samples), never down.
        power = wav.pow(2).sum(dim=-1) / abs_lens
        gain_db = (self.target_dbfs - 10 * torch.log10(power + 1e-12)).clamp(min=0.0, max=60.0)
        wav = wav * torch.pow(10.0, gain_db / 20).unsqueeze(1)

        counts = self.num_partials(abs_lens)  # [B]
        # Zero-pad so that every item's last partial has all its frames: to at least one
        # partial, plus one partial step. Sizes stay tensor arithmetic, never a Python
        # int of the data, so a traced graph is valid for references of any length.
        missing = self.partial_frames * self.hop - num_samples
        extra = (missing + abs(missing)) // 2 + (self.partial_step + 1) * self.hop
        wav = nn.functional.pad(wav, (0, extra))
        # [B, T] -> [B, F, N] -> [B, 40, N] -> [B, N, 40]
        real, imag = self.stft(wav)
        mel = torch.matmul(self.mel_fbank, real.pow(2) + imag.pow(2)).transpose(1, 2)
        # [B, N, 40] -> [B, P, partial_frames, 40] -> [B * P, partial_frames, 40]
        # (P >= every item's count; the partials past an item's count are masked below;
        # indexing rather than Tensor.unfold, which ONNX cannot export at dynamic sizes)
        num_partials = (mel.shape[1] - self.partial_frames) // self.partial_step + 1
        starts = torch.arange(num_partials, device=wav.device) * self.partial_step
        frames = starts.unsqueeze(1) + torch.arange(self.partial_frames, device=wav.device)
        partials = mel[:, frames].reshape(-1, self.partial_frames, 40)
        # [B * P, frames, 40] -> [B * P, 256]
        _, (hidden, _) = self.lstm(partials)
        partial_emb = torch.relu(self.linear(hidden[-1]))
        partial_emb = partial_emb / partial_emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        # [B * P, 256] -> [B, P, 256]; mean over each item's partials
        partial_emb = partial_emb.view(batch, -1, self.embedding_dim)
        keep = torch.arange(partial_emb.shape[1], device=wav.device).unsqueeze(0)
        keep = keep < counts.unsqueeze(1)
        emb = (partial_emb * keep.unsqueeze(-1)).sum(dim=1) / counts.unsqueeze(1)
        return emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
