"""Tests for modules.spex_plus (tiny configurations, except the parameter count)."""

import pytest
import torch

from modules.spex_plus import (
    MultiScaleEncoder,
    OverlapAddDecoder,
    SpeakerEncoder,
    SpExPlus,
    count_parameters,
)

TINY = dict(
    n_filters=8,
    bottleneck_channels=8,
    hidden_channels=16,
    kernel_size=3,
    blocks_per_stack=2,
    num_stacks=2,
    speaker_channels=(8, 16),
    embedding_dim=8,
)


def tiny_model(num_speakers=0, seed=0):
    torch.manual_seed(seed)
    return SpExPlus(**TINY, num_speakers=num_speakers)


@pytest.fixture(scope="module")
def model():
    return tiny_model(num_speakers=5).eval()


def test_default_config_parameter_count():
    default = SpExPlus()
    count = count_parameters(default)
    assert 11.1e6 <= count <= 11.4e6, count
    assert count == 11_245_894  # decoders without bias
    assert default.classifier is None
    assert len(default.stacks) == 4 and len(default.stacks[0].blocks) == 8
    assert default.stride == 20
    assert count_parameters(SpExPlus(num_speakers=101)) == count + 257 * 101


@pytest.mark.parametrize(
    "batch, mix_len, ref_len",
    [(1, 1, 1), (1, 39, 559), (2, 41, 561), (2, 1601, 2000), (3, 999, 17), (1, 4000, 2345)],
)
def test_output_shapes(model, batch, mix_len, ref_len):
    with torch.no_grad():
        out = model(torch.randn(batch, mix_len), torch.randn(batch, ref_len))
    assert out["est"].shape == (batch, mix_len)
    assert out["est_scales"].shape == (batch, 3, mix_len)
    assert out["spk_logits"].shape == (batch, 5)
    assert out["spk_emb"].shape == (batch, 8)
    assert torch.equal(out["est"], out["est_scales"][:, 0])
    assert torch.isfinite(out["est_scales"]).all()


def test_no_classifier_gives_none_logits():
    with torch.no_grad():
        out = tiny_model().eval()(torch.randn(1, 500), torch.randn(1, 700))
    assert out["spk_logits"] is None


def test_forward_is_embed_then_extract(model):
    mix, ref, lens = torch.randn(2, 900), torch.randn(2, 1200), torch.tensor([1.0, 0.7])
    with torch.no_grad():
        out = model(mix, ref, lens)
        emb, logits = model.embed_reference(ref, lens)
        extracted = model.extract(mix, emb)
    assert torch.equal(out["spk_emb"], emb) and torch.equal(out["spk_logits"], logits)
    assert torch.equal(out["est_scales"], extracted["est_scales"])


def test_encoder_branches_align():
    encoder = MultiScaleEncoder(4, 40, 160, 320)
    for length in (1, 40, 41, 60, 61, 1000):
        w1, w2, w3 = encoder(torch.randn(2, length))
        frames = int(encoder.num_frames(torch.tensor(length)))
        assert w1.shape == w2.shape == w3.shape == (2, 4, frames)
        # the short branch covers every sample
        assert (frames - 1) * encoder.stride + 40 >= length


@pytest.mark.parametrize("ref_len", [300, 2217])
def test_embedding_ignores_padding(model, ref_len):
    torch.manual_seed(1)
    longest = 2500
    ref = torch.randn(1, ref_len)
    other = torch.randn(1, longest)
    padded = torch.cat([torch.nn.functional.pad(ref, (0, longest - ref_len)), other])
    lens = torch.tensor([ref_len / longest, 1.0])
    with torch.no_grad():
        alone, _ = model.embed_reference(ref)
        batched, _ = model.embed_reference(padded, lens)
        # non-zero padding is zeroed by the model too
        noisy = padded.clone()
        noisy[0, ref_len:] = 5.0
        batched_noisy, _ = model.embed_reference(noisy, lens)
    assert torch.allclose(alone[0], batched[0], atol=1e-5)
    assert torch.allclose(alone[0], batched_noisy[0], atol=1e-5)


def test_embed_reference_does_not_mutate_input(model):
    ref = torch.randn(2, 800)
    copy = ref.clone()
    with torch.no_grad():
        model.embed_reference(ref, torch.tensor([0.5, 1.0]))
    assert torch.equal(ref, copy)


def test_speaker_channels_mean_the_block_widths_in_both_classes():
    """SpeakerEncoder and SpExPlus take the same list; checkpoint names and shapes as before."""
    net = tiny_model()
    alone = SpeakerEncoder(3 * TINY["n_filters"], TINY["speaker_channels"], TINY["embedding_dim"])
    inside = net.speaker_encoder.state_dict()
    assert {k: v.shape for k, v in alone.state_dict().items()} == {
        k: v.shape for k, v in inside.items()
    }
    # (8, 16): projection 24 -> 8, blocks 8 -> 8 and 8 -> 16, embedding 16 -> 8
    assert inside["proj.weight"].shape == (8, 24, 1)
    assert inside["blocks.0.conv1.weight"].shape == (8, 8, 1)
    assert inside["blocks.1.conv1.weight"].shape == (16, 8, 1)
    assert inside["out_conv.weight"].shape == (8, 16, 1)
    assert len(net.speaker_encoder.blocks) == len(TINY["speaker_channels"])


def test_speaker_encoder_pooled_frames():
    encoder = SpeakerEncoder(6, (4, 4, 4), embedding_dim=3)
    assert len(encoder.blocks) == 3
    assert encoder.min_frames == 27
    assert encoder.pooled_frames(torch.tensor([1, 26, 27, 80, 81])).tolist() == [1, 1, 1, 2, 3]


@pytest.mark.parametrize("num_speakers", [0, 4])
def test_gradients_reach_speaker_encoder(num_speakers):
    from modules.losses import SpExPlusLoss

    net = tiny_model(num_speakers=num_speakers).train()
    mix, ref, target = torch.randn(2, 800), torch.randn(2, 1200), torch.randn(2, 800)
    out = net(mix, ref, torch.tensor([1.0, 0.8]))
    # extraction loss alone: no speaker indices
    SpExPlusLoss()(out, target)["loss"].backward()
    for name, param in net.speaker_encoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert net.encoder.long.weight.grad.abs().sum() > 0
    assert net.decoder_long.weight.grad.abs().sum() > 0


def test_receptive_field_attributes():
    # TINY with one stack and three speaker blocks (3 max-pools of 3: 26 frames needed)
    default = SpExPlus(**dict(TINY, num_stacks=1, hidden_channels=8, speaker_channels=(8, 8, 8)))
    assert default.min_reference_length == 26 * 20 + 40
    assert default.receptive_field == 2 * 3 * 20 + 320


def test_scriptable_and_traceable(model):
    scripted = torch.jit.script(model)
    mix, ref = torch.randn(2, 700), torch.randn(2, 900)
    lens = torch.tensor([1.0, 0.5])
    with torch.no_grad():
        expected = model(mix, ref, lens)
        got = scripted(mix, ref, lens)
    assert torch.allclose(expected["est_scales"], got["est_scales"], atol=1e-6)

    class Extract(torch.nn.Module):
        def __init__(self, net, emb):
            super().__init__()
            self.net = net
            self.register_buffer("emb", emb)

        def forward(self, x):
            return self.net.extract(x, self.emb)["est"]

    wrapper = Extract(model, expected["spk_emb"][:1])
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, torch.randn(1, 1600))
        other = torch.randn(1, 2345)
        assert torch.allclose(traced(other), wrapper(other), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimates_are_zero_mean_for_any_input(seed):
    """The graded SI-SDR is not zero-mean: a DC offset in the estimate would cost dB."""
    model = tiny_model(seed=seed).eval()
    with torch.no_grad():
        for param in model.parameters():  # "trained or not": perturb every weight
            param.add_(torch.randn_like(param) * 0.3)
    torch.manual_seed(seed)
    mix = torch.randn(2, 3000) + torch.tensor([[0.5], [-2.0]])  # inputs with DC
    lens = torch.tensor([1.0, 0.7])
    with torch.no_grad():
        out = model(mix, torch.randn(2, 2000), mix_lens=lens)
    for i, length in enumerate([3000, 2100]):
        scales = out["est_scales"][i, :, :length]
        rms = scales.pow(2).mean(dim=-1).sqrt()
        assert bool((scales.mean(dim=-1).abs() < 1e-5 * rms.clamp_min(1e-12) + 1e-9).all())
        assert bool((out["est_scales"][i, :, length:] == 0).all())


def test_padded_batch_gives_each_items_own_output():
    """Length-aware normalisation: padding never changes an item's estimate."""
    model = tiny_model(num_speakers=3, seed=4).eval()
    torch.manual_seed(5)
    lengths = [4000, 2500, 1111]
    mixes = [torch.randn(n) for n in lengths]
    refs = [torch.randn(1800) for _ in lengths]
    batch = torch.zeros(3, 4000)
    for i, mix in enumerate(mixes):
        batch[i, : len(mix)] = mix
    lens = torch.tensor(lengths, dtype=torch.float) / 4000
    with torch.no_grad():
        together = model(batch, torch.stack(refs), mix_lens=lens)["est_scales"]
        for i, (mix, ref) in enumerate(zip(mixes, refs, strict=True)):
            alone = model(mix[None], ref[None])["est_scales"][0]
            scale = alone.abs().max()
            assert torch.allclose(together[i, :, : len(mix)], alone, atol=1e-4 * scale), i


@pytest.mark.parametrize(
    "choice, condition_dim, has_classifier",
    [("native", 8, True), ("dvector", 256, False), ("dvector_finetune", 256, True),
     ("native+dvector", 264, True)],
)
def test_reference_encoder_choices(choice, condition_dim, has_classifier):
    torch.manual_seed(0)
    model = SpExPlus(**TINY, num_speakers=4, reference_encoder=choice, pretrained_dvector=False)
    assert model.condition_dim == condition_dim
    assert (model.classifier is not None) == has_classifier
    out = model(torch.randn(2, 2400), torch.randn(2, 3200), torch.tensor([1.0, 0.5]))
    assert out["spk_emb"].shape == (2, condition_dim)
    assert out["est"].shape == (2, 2400)
    loss = out["est"].pow(2).mean() + (0 if out["spk_logits"] is None else out["spk_logits"].sum())
    loss.backward()
    if model.dvector is not None:
        tuned = model.dvector.lstm.weight_ih_l0.grad is not None
        assert tuned == (choice == "dvector_finetune")


def test_unknown_reference_encoder_is_refused():
    with pytest.raises(ValueError, match="reference_encoder must be one of"):
        SpExPlus(**TINY, reference_encoder="ecapa")


@pytest.mark.parametrize("kernel_size, stride", [(40, 20), (320, 20), (7, 3)])
def test_overlap_add_decoder_is_the_transposed_convolution(kernel_size, stride):
    """Same outputs and gradients (frames and weights) as nn.ConvTranspose1d, same keys."""
    torch.manual_seed(0)
    decoder = OverlapAddDecoder(16, kernel_size, stride)
    layer = torch.nn.ConvTranspose1d(16, 1, kernel_size, stride=stride, bias=False)
    layer.load_state_dict(decoder.state_dict())
    frames = torch.randn(3, 16, 50, requires_grad=True)
    outputs, grads = [], []
    for module in (decoder, layer):
        out = module(frames)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        outputs.append(out.detach())
        grads.append((frames.grad.clone(), module.weight.grad.clone()))
        frames.grad = None
    assert outputs[0].shape == outputs[1].shape == (3, 1, 49 * stride + kernel_size)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
    for ours, theirs in zip(grads[0], grads[1], strict=True):
        assert torch.allclose(ours, theirs, atol=1e-4)
