"""Short-time Fourier transform and its inverse as fixed convolutions (traceable, exportable).

Example
-------
>>> import torch
>>> wav = torch.randn(1, 1000)
>>> stft = STFT(n_fft=400, win_length=400, hop_length=160)
>>> bool((stft.inverse(*stft(wav), 1000) - wav).abs().max() < 1e-4)
True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from modules.losses import absolute_lengths


class STFT(nn.Module):
    """Centred short-time Fourier transform and its inverse, as fixed convolutions.

    Equal to ``torch.stft(..., center=True, pad_mode="constant",
    window=hann_window(win_length), return_complex=True)`` and
    ``torch.istft(..., center=True, length=T)`` (to float32 rounding; see the
    unit tests), written as a ``Conv1d`` with the windowed real-DFT basis and a
    ``ConvTranspose1d`` with the windowed inverse basis, for two reasons:

    * tracing and ONNX export: opset 17 has no inverse STFT, and its STFT needs
      ``return_complex=False``; convolutions export everywhere;
    * exact batching: the inverse divides the overlap-add by the squared-window
      envelope of each item's *valid* frames (``num_frames``), so a zero-padded
      item in a batch gives the same samples as the item alone.

    The bases are buffers that are not saved in ``state_dict`` (they depend only
    on the sizes). ``T`` samples give ``T // hop_length + 1`` frames.

    Arguments
    ---------
    n_fft : int
        FFT size; ``n_fft // 2 + 1`` frequency bins.
    win_length : int
        Hann window length (``<= n_fft``), zero-padded to ``n_fft`` in the middle.
    hop_length : int
        Frame step in samples.

    Example
    -------
    >>> import torch
    >>> stft = STFT(512, 400, 160)
    >>> wav = torch.randn(2, 3000)
    >>> real, imag = stft(wav)
    >>> real.shape
    torch.Size([2, 257, 19])
    >>> bool((stft.inverse(real, imag, 3000) - wav).abs().max() < 1e-4)
    True
    """

    def __init__(self, n_fft: int = 512, win_length: int = 400, hop_length: int = 160):
        super().__init__()
        if not 0 < hop_length <= win_length <= n_fft:
            raise ValueError(
                f"need 0 < hop_length <= win_length <= n_fft, got {hop_length}, {win_length}, "
                f"{n_fft}"
            )
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.num_bins = n_fft // 2 + 1
        left = (n_fft - win_length) // 2
        window = torch.zeros(n_fft, dtype=torch.float64)
        window[left : left + win_length] = torch.hann_window(
            win_length, periodic=True, dtype=torch.float64
        )
        # [F] x [n_fft] angles 2 pi k n / n_fft
        angle = (
            2
            * math.pi
            * torch.outer(torch.arange(self.num_bins), torch.arange(n_fft)).double()
            / n_fft
        )
        # Analysis: X[k] = sum_n x[n] w[n] exp(-j angle); [2F, 1, n_fft] (real rows, then imag)
        analysis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window
        # Synthesis (irfft of one frame, times the window): DC and Nyquist once, others twice.
        weight = torch.full((self.num_bins, 1), 2.0, dtype=torch.float64)
        weight[0] = 1.0
        if n_fft % 2 == 0:
            weight[-1] = 1.0
        synthesis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * torch.cat([weight] * 2)
        synthesis = synthesis * window / n_fft
        self.register_buffer("analysis", analysis.float().unsqueeze(1), persistent=False)
        self.register_buffer("synthesis", synthesis.float().unsqueeze(1), persistent=False)
        self.register_buffer("window_sq", window.pow(2).float().view(1, 1, n_fft), persistent=False)

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Frames of ``num_samples`` samples (integer tensor, any shape)."""
        return torch.div(num_samples, self.hop_length, rounding_mode="floor") + 1

    def frame_mask(self, lengths: torch.Tensor, num_samples: int, num_frames: int) -> torch.Tensor:
        """``[B, N]`` 0/1 float mask of the frames inside each item of a padded batch.

        Arguments
        ---------
        lengths : torch.Tensor
            ``[B]`` lengths relative to ``num_samples`` (SpeechBrain convention).
        num_samples : int
            ``T`` of the padded batch.
        num_frames : int
            ``N`` of its spectrogram (``T // hop_length + 1``).

        Example
        -------
        >>> STFT(512, 400, 160).frame_mask(torch.tensor([1.0, 0.5]), 800, 6)
        tensor([[1., 1., 1., 1., 1., 1.],
                [1., 1., 1., 0., 0., 0.]])
        """
        abs_lens = absolute_lengths(lengths, num_samples, lengths)
        index = torch.arange(num_frames, device=lengths.device)
        return (index.unsqueeze(0) < self.num_frames(abs_lens).unsqueeze(1)).float()

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Analyse a batch of waveforms.

        Arguments
        ---------
        wav : torch.Tensor
            ``[B, T]``, any ``T >= 1``.

        Returns
        -------
        real, imag : torch.Tensor
            ``[B, F, N]`` each, ``F = n_fft // 2 + 1``, ``N = T // hop_length + 1``.
        """
        pad = self.n_fft // 2
        # [B, T] -> [B, 1, T + n_fft] -> [B, 2F, N]
        spec = F.conv1d(F.pad(wav.unsqueeze(1), (pad, pad)), self.analysis, stride=self.hop_length)
        return spec[:, : self.num_bins], spec[:, self.num_bins :]

    def inverse(
        self,
        real: torch.Tensor,
        imag: torch.Tensor,
        length: int,
        frame_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Overlap-add synthesis, ``[B, F, N]`` x 2 -> ``[B, length]``.

        Arguments
        ---------
        real, imag : torch.Tensor
            ``[B, F, N]`` spectrum (the imaginary parts of the DC and Nyquist
            bins are ignored, as by ``irfft``).
        length : int
            Output samples ``T`` (the analysed signal's length).
        frame_mask : torch.Tensor or None
            ``[B, N]`` 0/1 valid frames of each item (:meth:`frame_mask`); the
            others are left out of the sum and of the window envelope, and
            samples that no valid frame covers are 0. ``None``: all valid.

        Returns
        -------
        torch.Tensor
            ``[B, length]``.
        """
        pad = self.n_fft // 2
        # [B, 1, N] 0/1 frame mask
        frames = torch.ones_like(real[:, :1])
        if frame_mask is not None:
            frames = frame_mask.to(real.dtype).unsqueeze(1)
        # [B, 2F, N] -> [B, 1, (N - 1) * hop + n_fft]
        spec = torch.cat([real, imag], dim=1) * frames
        signal = F.conv_transpose1d(spec, self.synthesis, stride=self.hop_length)
        envelope = F.conv_transpose1d(frames, self.window_sq, stride=self.hop_length)
        covered = envelope > 1e-8
        signal = torch.where(covered, signal / torch.where(covered, envelope, 1.0), 0.0)
        # drop the centring padding: [B, 1, ...] -> [B, length]
        return signal[:, 0, pad : pad + length]
