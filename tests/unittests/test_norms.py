"""Tests for modules.norms."""

import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from modules.norms import ChannelLayerNorm, GlobalLayerNorm, convert_batchnorm


def test_global_layer_norm_statistics_over_channels_and_time():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 40) * 4 + 3
    y = GlobalLayerNorm(5)(x)
    assert y.shape == x.shape
    assert torch.allclose(y.mean(dim=(1, 2)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.var(dim=(1, 2), unbiased=False), torch.ones(3), atol=1e-4)


def test_global_layer_norm_affine_is_per_channel():
    norm = GlobalLayerNorm(4)
    assert norm.weight.shape == (4,) and norm.bias.shape == (4,)
    with torch.no_grad():
        norm.bias.copy_(torch.arange(4.0))
    y = norm(torch.randn(2, 4, 30))
    assert torch.allclose(y.mean(dim=(0, 2)), torch.arange(4.0), atol=0.5)
    assert GlobalLayerNorm(4, affine=False).weight is None


def test_channel_layer_norm_matches_layer_norm_per_frame():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 11)
    norm = ChannelLayerNorm(6)
    with torch.no_grad():
        norm.weight.uniform_()
        norm.bias.uniform_()
    reference = torch.nn.LayerNorm(6)
    reference.load_state_dict(norm.state_dict())
    expected = reference(x.transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(norm(x), expected, atol=1e-6)


def test_norms_do_not_mix_batch_items():
    x = torch.randn(2, 3, 10)
    for norm in (GlobalLayerNorm(3), ChannelLayerNorm(3)):
        together = norm(x)
        assert torch.allclose(together[1:], norm(x[1:]), atol=1e-6)


def test_global_layer_norm_matches_explicit_formula():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 17) * 3 + 1
    norm = GlobalLayerNorm(5, eps=1e-8)
    with torch.no_grad():
        norm.weight.uniform_()
        norm.bias.uniform_()
    mean = x.mean(dim=(1, 2), keepdim=True)
    var = (x - mean).pow(2).mean(dim=(1, 2), keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-8) * norm.weight.view(1, -1, 1)
    expected = expected + norm.bias.view(1, -1, 1)
    assert torch.allclose(norm(x), expected, atol=1e-5)


def test_masked_global_layer_norm_matches_masked_statistics_and_gradients():
    """The per-item fused path computes the masked-statistics formula, gradients included."""
    torch.manual_seed(0)
    x = (torch.randn(3, 5, 20) * 3 + 1).requires_grad_()
    mask = (torch.arange(20).view(1, 1, 20) < torch.tensor([20, 13, 7]).view(3, 1, 1)).float()
    norm = GlobalLayerNorm(5)
    with torch.no_grad():
        norm.weight.uniform_()
        norm.bias.uniform_()
    count = mask.sum(dim=(1, 2), keepdim=True) * 5
    mean = (x * mask).sum(dim=(1, 2), keepdim=True) / count
    var = ((x - mean) * mask).pow(2).sum(dim=(1, 2), keepdim=True) / count
    expected = ((x - mean) * torch.rsqrt(var + norm.eps) * norm.weight.view(1, -1, 1)
                + norm.bias.view(1, -1, 1)) * mask
    upstream = torch.randn_like(x)
    grads_expected = torch.autograd.grad((expected * upstream).sum(), [x, norm.weight, norm.bias])
    y = norm(x, mask)
    grads = torch.autograd.grad((y * upstream).sum(), [x, norm.weight, norm.bias])
    assert torch.allclose(y, expected, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(grads, grads_expected, strict=True))
    assert torch.equal(norm(x, torch.ones(3, 1, 20)), norm(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_masked_global_layer_norm_counts_frames_exactly_in_half_precision(dtype):
    """A half-precision mask of 3199 valid frames is 3199 frames, not 3200 (the bf16 sum)."""
    x = torch.randn(2, 2, 3199).to(dtype)
    mask = torch.ones(2, 1, 3199, dtype=dtype)
    mask[1, :, 3000:] = 0
    y = GlobalLayerNorm(2).to(dtype)(x, mask)
    assert y.shape == x.shape and bool((y[1, :, 3000:] == 0).all())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _half_batch_norm(rank, port, x, upstream, results):
    """One of two gloo processes: a converted BatchNorm2d on its half of the batch."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    torch.set_num_threads(1)
    norm = convert_batchnorm(nn.Sequential(nn.BatchNorm2d(3)))[0]
    half = slice(rank * 2, rank * 2 + 2)
    part = x[half].clone().requires_grad_()
    (norm(part) * upstream[half]).sum().backward()
    running = (norm.running_mean.clone(), norm.running_var.clone())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as --precision bf16 trains
        low = norm(x[half].to(torch.bfloat16))
    results[rank] = (part.grad, norm.weight.grad, norm.bias.grad, *running, low.detach())
    torch.distributed.destroy_process_group()


def test_process_group_batch_norm_on_two_processes_is_batch_norm_on_the_whole_batch():
    """Two gloo processes x 2 items: input gradients, parameter gradients (summed over
    processes; DDP then averages them), running statistics and bf16-autocast outputs
    of BatchNorm on 4 items."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 6) * 3 + 1
    upstream = torch.randn(4, 3, 5, 6)
    results = mp.Manager().dict()
    mp.spawn(_half_batch_norm, args=(_free_port(), x, upstream, results), nprocs=2)
    reference = nn.BatchNorm2d(3)
    whole = x.clone().requires_grad_()
    (reference(whole) * upstream).sum().backward()
    grad_x = torch.cat([results[0][0], results[1][0]])
    assert torch.allclose(grad_x, whole.grad, atol=1e-5)
    assert torch.allclose(results[0][1] + results[1][1], reference.weight.grad, atol=1e-4)
    assert torch.allclose(results[0][2] + results[1][2], reference.bias.grad, atol=1e-4)
    for rank in (0, 1):
        assert torch.allclose(results[rank][3], reference.running_mean, atol=1e-6)
        assert torch.allclose(results[rank][4], reference.running_var, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = reference(x.to(torch.bfloat16))
    synced_low = torch.cat([results[0][5], results[1][5]])
    assert synced_low.dtype == low.dtype == torch.bfloat16
    assert torch.allclose(synced_low.float(), low.float(), atol=0.05)


def test_convert_batchnorm_shares_state_and_keeps_checkpoint_keys():
    model = nn.Sequential(nn.Conv1d(2, 4, 1), nn.BatchNorm1d(4), nn.Sequential(nn.BatchNorm1d(4)))
    keys = list(model.state_dict())
    weight = model[1].weight
    converted = convert_batchnorm(model)
    assert type(converted[1]).__name__ == "ProcessGroupBatchNorm"
    assert type(converted[2][0]).__name__ == "ProcessGroupBatchNorm"
    assert converted[1].weight is weight
    assert list(converted.state_dict()) == keys
