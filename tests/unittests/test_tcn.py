"""Tests for modules.tcn."""

import pytest
import torch

from modules.tcn import TCNBlock, TCNStack


@pytest.mark.parametrize("kernel_size", [2, 3, 4])
@pytest.mark.parametrize("length", [1, 7, 30])
def test_block_keeps_shape(kernel_size, length):
    block = TCNBlock(6, 10, kernel_size=kernel_size, dilation=4)
    assert block(torch.randn(2, 6, length)).shape == (2, 6, length)


def test_conditioned_block_channels_and_emb_required():
    block = TCNBlock(6, 10, embedding_dim=5)
    assert block.in_conv.in_channels == 11
    assert block.out_conv.out_channels == 6
    assert block(torch.randn(2, 6, 9), torch.randn(2, 5)).shape == (2, 6, 9)
    with pytest.raises(ValueError):
        block(torch.randn(2, 6, 9))


def test_conditioned_block_depends_on_embedding():
    torch.manual_seed(0)
    block = TCNBlock(4, 8, embedding_dim=3)
    x = torch.randn(1, 4, 12)
    assert not torch.allclose(block(x, torch.randn(1, 3)), block(x, torch.randn(1, 3)))


def test_block_is_residual():
    block = TCNBlock(4, 8)
    with torch.no_grad():
        block.out_conv.weight.zero_()
        block.out_conv.bias.zero_()
    x = torch.randn(2, 4, 10)
    assert torch.equal(block(x), x)


def test_stack_dilations_and_conditioning():
    stack = TCNStack(4, 8, kernel_size=3, num_blocks=4, embedding_dim=3)
    assert [b.dilation for b in stack.blocks] == [1, 2, 4, 8]
    assert [b.embedding_dim for b in stack.blocks] == [3, 0, 0, 0]
    assert stack.receptive_field == 1 + 2 * 15
    assert stack(torch.randn(3, 4, 5), torch.randn(3, 3)).shape == (3, 4, 5)


class _NoNorm(torch.nn.Module):
    def forward(self, x, mask=None):
        return x


def test_stack_receptive_field_is_local():
    """Without gLN's global statistics, an impulse spreads over the receptive field."""
    torch.manual_seed(0)
    stack = TCNStack(2, 4, kernel_size=3, num_blocks=3)
    for block in stack.blocks:
        block.in_norm = _NoNorm()
        block.depthwise_norm = _NoNorm()
    x = torch.zeros(1, 2, 41)
    base = stack(x)
    x[0, :, 20] = 1.0
    changed = (stack(x) - base).abs().sum(dim=1)[0] > 0
    span = changed.nonzero().flatten()
    assert int(span.max() - span.min()) + 1 == stack.receptive_field
