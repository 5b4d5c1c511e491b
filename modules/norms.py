"""Layer normalisations for ``[B, C, T]`` feature maps (Conv-TasNet / SpEx+ style).

* :class:`GlobalLayerNorm` (gLN): statistics over channels *and* time of each
  item, per-channel affine. Used inside the TCN blocks.
* :class:`ChannelLayerNorm` (cLN): statistics over channels of each frame,
  per-channel affine. Used after the multi-scale speech encoder.

Example
-------
>>> import torch
>>> x = torch.randn(2, 8, 50)
>>> GlobalLayerNorm(8)(x).shape, ChannelLayerNorm(8)(x).shape
(torch.Size([2, 8, 50]), torch.Size([2, 8, 50]))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _AffineChannelNorm(nn.Module):
    """Shared state of the norms: ``C``, ``eps`` and the per-channel affine ``[C]``.

    Arguments
    ---------
    num_channels : int
        Number of channels ``C``.
    eps : float or None
        Added to the variance; ``None``: the class's :attr:`default_eps`.
    affine : bool
        Learn the per-channel ``gamma`` (initialised to 1) and ``beta`` (0).
    """

    default_eps = 1e-5

    def __init__(self, num_channels: int, eps: float | None = None, affine: bool = True):
        super().__init__()
        self.num_channels = num_channels
        self.eps = self.default_eps if eps is None else eps
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels))
            self.bias = nn.Parameter(torch.zeros(num_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, affine={self.weight is not None}"


class GlobalLayerNorm(_AffineChannelNorm):
    """Global layer normalisation (gLN) over channels and time.

    ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` where ``mean`` and ``var``
    are taken over the channel and time axes of each item, and ``gamma``,
    ``beta`` are per-channel (``[C]``). Computed as a one-group ``group_norm``.
    Arguments as :class:`_AffineChannelNorm` (``eps`` 1e-8 by default).

    Example
    -------
    >>> import torch
    >>> norm = GlobalLayerNorm(4)
    >>> y = norm(torch.randn(3, 4, 10) * 5 + 2)
    >>> y.shape
    torch.Size([3, 4, 10])
    >>> bool(y.mean(dim=(1, 2)).abs().max() < 1e-5)
    True
    """

    default_eps = 1e-8

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x``, taking the statistics over the valid frames only.

        Arguments
        ---------
        x : torch.Tensor
            ``[B, C, T]``.
        mask : torch.Tensor or None
            ``[B, 1, T]`` 0/1 valid frames, valid first and padding last (as
            :class:`~modules.spex_plus.SpExPlus` builds it from the mixture
            lengths): padding is excluded from the mean and variance and zeroed
            in the output; ``None``: every frame is valid.

        Returns
        -------
        torch.Tensor
            ``[B, C, T]``.

        Example
        -------
        >>> import torch
        >>> norm, x = GlobalLayerNorm(3), torch.randn(1, 3, 8)
        >>> padded = torch.nn.functional.pad(x, (0, 4), value=5.0)
        >>> mask = (torch.arange(12) < 8).float().view(1, 1, 12)
        >>> bool(torch.allclose(norm(padded, mask)[..., :8], norm(x), atol=1e-5))
        True
        """
        if mask is None:
            # [B, C, T] -> [B, C, T]: one group spanning all channels = statistics over C and T
            # (the fused kernel keeps only mean and 1/std for backward, unlike the explicit formula)
            return F.group_norm(x, 1, self.weight, self.bias, self.eps)
        # The fused kernel on each item's valid frames, zero padding after them: about
        # 3x faster forward + backward than masked elementwise statistics, which made
        # padded training batches (most of them) 1.75x slower per step (bench/bench_gln.py).
        num_frames = x.shape[-1]
        # counted as integers: a bf16/fp16 sum of 3199 ones rounds to 3200
        lengths = (mask[:, 0] != 0).sum(dim=-1)
        if bool((lengths == num_frames).all()):
            return F.group_norm(x, 1, self.weight, self.bias, self.eps)
        # split, not indexing: the backward of x[i] allocates a whole [B, C, T] per item
        # (an index loop, not zip: TorchScript scripts it)
        chunks = x.split(1)
        items = []
        for i in range(len(chunks)):
            length = int(lengths[i])
            item = F.group_norm(chunks[i][:, :, :length], 1, self.weight, self.bias, self.eps)
            if length < num_frames:  # F.pad copies even when it adds nothing
                item = F.pad(item, [0, num_frames - length])
            items.append(item)
        return torch.cat(items)


class ChannelLayerNorm(_AffineChannelNorm):
    """Channel-wise layer normalisation (cLN): LayerNorm over ``C`` for each frame.

    Arguments as :class:`_AffineChannelNorm` (``eps`` 1e-5 by default).

    Example
    -------
    >>> import torch
    >>> y = ChannelLayerNorm(4)(torch.randn(3, 4, 10) * 5 + 2)
    >>> bool(y.mean(dim=1).abs().max() < 1e-5), tuple(y.shape)
    (True, (3, 4, 10))
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` ``[B, C, T]`` -> ``[B, C, T]``."""
        # [B, C, T] -> [B, T, C]
        y = x.transpose(1, 2)
        y = F.layer_norm(y, (self.num_channels,), self.weight, self.bias, self.eps)
        # [B, T, C] -> [B, C, T]
        return y.transpose(1, 2)
