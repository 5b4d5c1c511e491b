"""Layer normalisations for ``[B, C, T]`` feature maps (Conv-TasNet / SpEx+ style).

* :class:`GlobalLayerNorm` (gLN): statistics over channels *and* time of each
  item, per-channel affine. Used inside the TCN blocks.
* :class:`ChannelLayerNorm` (cLN): statistics over channels of each frame,
  per-channel affine. Used after the multi-scale speech encoder.
* :class:`ProcessGroupBatchNorm`: BatchNorm whose training statistics span all
  DDP processes on CPU (gloo), where ``nn.SyncBatchNorm`` refuses to run;
  :func:`convert_batchnorm` swaps it in.

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
from speechbrain.utils.distributed import is_distributed_initialized
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
        if not torch.jit.is_scripting():  # (TorchScript skips this block)
            if torch.compiler.is_compiling():
                return self._masked(x, mask)
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

    def _masked(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The statistics over valid frames as masked sums: few fused loops once compiled."""
        # [B, 1, T] -> [B, 1, 1] valid values per item
        count = mask.sum(dim=(1, 2), keepdim=True) * x.shape[1]
        mean = (x * mask).sum(dim=(1, 2), keepdim=True) / count
        centered = (x - mean) * mask
        variance = centered.square().sum(dim=(1, 2), keepdim=True) / count
        y = centered * torch.rsqrt(variance + self.eps)
        if self.weight is not None:
            y = y * self.weight.unsqueeze(-1) + self.bias.unsqueeze(-1)
        return y * mask


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


class _SumOverProcesses(torch.autograd.Function):
    """``all_reduce`` (sum) with its gradient: the sum of every process's gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        torch.distributed.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        torch.distributed.all_reduce(grad)
        return grad


class ProcessGroupBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (any ``[B, C, ...]``) whose training statistics span every DDP process.

    ``nn.SyncBatchNorm`` runs on GPUs only. Two CPU processes with batch 4 each
    must normalise like one process with batch 8, or DDP trains another model:
    each process sums ``x`` and ``x**2`` per channel, one ``all_reduce`` adds them
    up (its backward adds the processes' gradients up likewise), and the mean and
    biased variance of the whole batch follow. Without an initialised
    process group, or in eval mode, it is ``BatchNorm``. Same parameters and
    buffers as ``nn.BatchNorm1d/2d``: checkpoints load into either.

    Example
    -------
    >>> import torch
    >>> plain = nn.BatchNorm1d(4)
    >>> synced = convert_batchnorm(nn.Sequential(plain))[0]
    >>> x = torch.randn(3, 4, 10)
    >>> bool(torch.allclose(synced(x), nn.BatchNorm1d(4)(x), atol=1e-6))
    True
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected a [B, C, ...] input, got {input.dim()} dimension(s)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` ``[B, C, ...]`` with the statistics of every process's batch."""
        if not (self.training and is_distributed_initialized()):
            return super().forward(x)
        self._check_input_dim(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, channels] + [1] * (x.dim() - 2)
        # float32 statistics and arithmetic, as BatchNorm keeps them under bf16/fp16 autocast
        dtype, x = x.dtype, x.float()
        local = torch.cat([x.sum(dims), x.pow(2).sum(dims), x.new_full((1,), x.numel() / channels)])
        total = _SumOverProcesses.apply(local)
        count = total[-1]
        mean = total[:channels] / count
        var = (total[channels:-1] / count - mean.pow(2)).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum
                if momentum is None:  # cumulative moving average, as BatchNorm
                    momentum = 1.0 / float(self.num_batches_tracked)
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every ``nn.BatchNorm1d/2d/3d`` replaced by :class:`ProcessGroupBatchNorm`.

    The new norms share the old ones' parameters and buffers (as
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` does).
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (ProcessGroupBatchNorm, nn.SyncBatchNorm)
    ):
        converted = ProcessGroupBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats,
        )  # fmt: skip
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean = module.running_mean
            converted.running_var = module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_batchnorm(child))
    return module
