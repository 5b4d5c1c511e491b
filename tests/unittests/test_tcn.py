"""Tests for modules.tcn."""

import pytest
import torch

from modules.tcn import TCNBlock, TCNStack, compile_training


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


def _forward_and_grads(block, x, emb, mask):
    block.zero_grad()
    out = block._forward(x, emb, mask)
    out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
    return out.detach(), {name: p.grad.clone() for name, p in block.named_parameters()}


@pytest.mark.parametrize("kernel_size, dilation", [(3, 1), (3, 4), (2, 2), (4, 3)])
@pytest.mark.parametrize("padded", [False, True])
def test_compiled_formulas_compute_the_eager_block(monkeypatch, kernel_size, dilation, padded):
    """What the compiler traces (depthwise conv as shifted products, gLN as masked sums)
    is the eager block: outputs and every parameter gradient, with and without padding."""
    torch.manual_seed(0)
    block = TCNBlock(4, 8, kernel_size=kernel_size, dilation=dilation, embedding_dim=3)
    for norm in (block.in_norm, block.depthwise_norm):
        torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
        torch.nn.init.uniform_(norm.bias, -0.5, 0.5)
    x, emb = torch.randn(3, 4, 20), torch.randn(3, 3)
    mask = None
    if padded:
        mask = (torch.arange(20) < torch.tensor([[20], [13], [6]])).float().unsqueeze(1)
        x = x * mask
    eager, eager_grads = _forward_and_grads(block, x, emb, mask)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    traced, traced_grads = _forward_and_grads(block, x, emb, mask)
    assert torch.allclose(traced, eager, atol=1e-5)
    for name, grad in eager_grads.items():
        assert torch.allclose(traced_grads[name], grad, atol=1e-4), name


def test_compile_training_compiles_training_steps_only():
    """Training steps run compiled and match eager; evaluation runs the eager code."""
    torch.manual_seed(0)
    stack = TCNStack(4, 8, kernel_size=3, num_blocks=2, embedding_dim=3)
    reference = TCNStack(4, 8, kernel_size=3, num_blocks=2, embedding_dim=3)
    reference.load_state_dict(stack.state_dict())
    assert compile_training(stack) == 2
    x, emb = torch.randn(2, 4, 16), torch.randn(2, 3)
    mask = (torch.arange(16) < torch.tensor([[16], [9]])).float().unsqueeze(1)
    torch._dynamo.reset()
    for model in (stack, reference):
        model(x, emb, mask).square().sum().backward()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it did compile
    for (name, p), q in zip(stack.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-4), name
    compiled_graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    with torch.no_grad():
        assert torch.equal(stack.eval()(x, emb, mask), reference.eval()(x, emb, mask))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == compiled_graphs
