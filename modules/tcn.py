"""Temporal convolutional network (TCN) blocks, optionally speaker-conditioned.

A :class:`TCNBlock` is the Conv-TasNet block used by SpEx+::

    x -> 1x1 conv (in [+ emb] -> H) -> PReLU -> gLN
      -> depthwise conv (kernel P, dilation d, "same" padding) -> PReLU -> gLN
      -> 1x1 conv (H -> in) -> + x

A :class:`TCNStack` chains ``X`` blocks with dilations ``1, 2, ..., 2**(X-1)``;
with ``embedding_dim > 0`` its first block receives a speaker embedding, tiled
over time and concatenated to its input channels.

Example
-------
>>> import torch
>>> stack = TCNStack(16, 32, kernel_size=3, num_blocks=3, embedding_dim=8)
>>> stack(torch.randn(2, 16, 50), torch.randn(2, 8)).shape
torch.Size([2, 16, 50])
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from modules.norms import GlobalLayerNorm


class TCNBlock(nn.Module):
    """One non-causal TCN block with a residual connection.

    Arguments
    ---------
    in_channels : int
        Channels of the block input and output (``B`` in the paper).
    hidden_channels : int
        Channels of the depthwise convolution (``H``).
    kernel_size : int
        Kernel of the depthwise convolution (``P``).
    dilation : int
        Dilation of the depthwise convolution.
    embedding_dim : int
        Size ``D`` of a speaker embedding concatenated (tiled over time) to the
        input of the first 1x1 convolution; ``0`` for an unconditioned block.
        The residual path always carries the ``in_channels`` input only.

    Example
    -------
    >>> import torch
    >>> block = TCNBlock(16, 32, kernel_size=3, dilation=4)
    >>> block(torch.randn(2, 16, 25)).shape
    torch.Size([2, 16, 25])
    >>> conditioned = TCNBlock(16, 32, embedding_dim=8)
    >>> conditioned(torch.randn(2, 16, 25), torch.randn(2, 8)).shape
    torch.Size([2, 16, 25])
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int = 3,
        dilation: int = 1,
        embedding_dim: int = 0,
    ):
        super().__init__()
        if kernel_size < 1 or dilation < 1:
            raise ValueError(f"kernel_size and dilation must be >= 1: {kernel_size}, {dilation}")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.embedding_dim = embedding_dim
        # "same" padding; split unevenly (one more on the right) for even kernels.
        total_pad = dilation * (kernel_size - 1)
        self.pad_left = total_pad // 2
        self.pad_right = total_pad - self.pad_left

        self.in_conv = nn.Conv1d(in_channels + embedding_dim, hidden_channels, 1)
        self.in_act = nn.PReLU()
        self.in_norm = GlobalLayerNorm(hidden_channels)
        self.depthwise_conv = nn.Conv1d(
            hidden_channels,
            hidden_channels,
            kernel_size,
            dilation=dilation,
            groups=hidden_channels,
            padding=self.pad_left if self.pad_left == self.pad_right else 0,
        )
        self.depthwise_act = nn.PReLU()
        self.depthwise_norm = GlobalLayerNorm(hidden_channels)
        self.out_conv = nn.Conv1d(hidden_channels, in_channels, 1)
        #: Training steps run through ``torch.compile`` (set by :func:`compile_training`).
        self.compiled_training = False

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Apply the block.

        Arguments
        ---------
        x : torch.Tensor
            ``[B, in_channels, T]``.
        emb : torch.Tensor or None
            ``[B, embedding_dim]`` speaker embedding; required exactly when the
            block was built with ``embedding_dim > 0``.
        mask : torch.Tensor or None
            ``[B, 1, T]`` 0/1 valid frames of a padded batch: the gLN statistics
            skip padding and the depthwise convolution sees zeros there, exactly
            as for the item alone. ``None``: no padding.

        Returns
        -------
        torch.Tensor
            ``[B, in_channels, T]``.
        """
        if not torch.jit.is_scripting():  # (TorchScript skips this block)
            if self.compiled_training and self.training and torch.is_grad_enabled():
                return _compiled_forward()(self, x, emb, mask)
        return self._forward(x, emb, mask)

    def _forward(
        self, x: torch.Tensor, emb: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        y = x
        if self.embedding_dim > 0:
            if emb is None:
                raise ValueError("this TCN block is speaker-conditioned: pass emb [B, D]")
            # [B, D] -> [B, D, T]
            tiled = emb.unsqueeze(-1).expand(-1, -1, x.shape[-1])
            # [B, C, T] + [B, D, T] -> [B, C + D, T]
            y = torch.cat([x, tiled], dim=1)
        # [B, C (+ D), T] -> [B, H, T]
        y = self.in_norm(self.in_act(self.in_conv(y)), mask)
        # [B, H, T] -> [B, H, T]
        y = self.depthwise_norm(self.depthwise_act(self._depthwise(y)), mask)
        # [B, H, T] -> [B, C, T]
        return x + self.out_conv(y)

    def _depthwise(self, y: torch.Tensor) -> torch.Tensor:
        """The depthwise convolution with "same" padding, ``[B, H, T] -> [B, H, T]``."""
        if not torch.jit.is_scripting():  # (TorchScript skips this block)
            if torch.compiler.is_compiling():
                return self._depthwise_as_shifted_products(y)
        if self.pad_left != self.pad_right:
            # [B, H, T] -> [B, H, T + d * (P - 1)]
            y = F.pad(y, (self.pad_left, self.pad_right))
        return self.depthwise_conv(y)

    def _depthwise_as_shifted_products(self, y: torch.Tensor) -> torch.Tensor:
        """:meth:`_depthwise` as a sum of ``P`` shifted, channel-scaled copies of ``y``.

        What the compiler traces: it fuses these products with the PReLU and gLN
        around them, while oneDNN's dilated depthwise kernel (eager's fastest)
        takes 3x its forward time in backward.
        """
        num_frames = y.shape[-1]
        # [B, H, T] -> [B, H, T + d * (P - 1)]
        padded = F.pad(y, (self.pad_left, self.pad_right))
        # [H, 1, P]
        weight = self.depthwise_conv.weight
        out = self.depthwise_conv.bias.unsqueeze(-1)
        for tap in range(self.kernel_size):
            start = tap * self.dilation
            # [B, H, T] * [H, 1]
            out = out + padded[..., start : start + num_frames] * weight[:, :, tap]
        return out


@functools.cache
def _compiled_forward():
    # one compiled function for all blocks: dynamo specialises it per block layout
    # (dilation, conditioning, mask or none), fixed shapes as in training
    return torch.compile(TCNBlock._forward, dynamic=False)


def compile_training(model: nn.Module) -> int:
    """Compile the training forward and backward of every :class:`TCNBlock` of ``model``.

    ``torch.compile`` fuses each block's PReLUs, gLNs, depthwise convolution and
    residual into a few loops (the 1x1 convolutions stay library GEMMs): on 2 CPU
    cores a training step of the reduced configuration takes about 0.75x the eager
    time (``bench/bench_processes.sh``). Evaluation and inference stay eager: their
    lengths vary, and each new length would compile again. The first training
    steps compile (about 75 s on 2 cores; cached on disk by TorchInductor).

    Returns the number of blocks switched.

    Example
    -------
    >>> stack = TCNStack(4, 8, num_blocks=2)
    >>> compile_training(stack)
    2
    """
    blocks = [module for module in model.modules() if isinstance(module, TCNBlock)]
    # Graphs of the one compiled function: per block layout (dilation, conditioning)
    # and padded or not, a few more if a batch size changes; room for 4 per block.
    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = max(limit, 4 * len(blocks))
    for block in blocks:
        block.compiled_training = True
    return len(blocks)


class TCNStack(nn.Module):
    """``X`` TCN blocks with dilations ``1, 2, ..., 2**(X-1)``.

    Arguments
    ---------
    in_channels : int
        Channels of the stack input and output (``B``).
    hidden_channels : int
        Channels inside each block (``H``).
    kernel_size : int
        Depthwise kernel (``P``).
    num_blocks : int
        Blocks in the stack (``X``).
    embedding_dim : int
        Speaker embedding size ``D`` fed to the first block; ``0`` for none.

    Example
    -------
    >>> import torch
    >>> stack = TCNStack(16, 32, num_blocks=4)
    >>> stack(torch.randn(1, 16, 7)).shape
    torch.Size([1, 16, 7])
    >>> stack.receptive_field
    31
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int = 3,
        num_blocks: int = 8,
        embedding_dim: int = 0,
    ):
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.embedding_dim = embedding_dim
        self.blocks = nn.ModuleList(
            [
                TCNBlock(
                    in_channels,
                    hidden_channels,
                    kernel_size=kernel_size,
                    dilation=2**index,
                    embedding_dim=embedding_dim if index == 0 else 0,
                )
                for index in range(num_blocks)
            ]
        )
        #: Frames of input that one output frame depends on (through the convolutions).
        self.receptive_field = 1 + (kernel_size - 1) * (2**num_blocks - 1)

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Apply the blocks in turn; only the first one sees ``emb``.

        Arguments and shapes as :meth:`TCNBlock.forward` (``mask`` goes to every block).
        """
        for index, block in enumerate(self.blocks):
            # [B, C, T] -> [B, C, T]
            x = block(x, emb if index == 0 else None, mask)
        return x
