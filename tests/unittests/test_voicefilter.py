"""modules.voicefilter on tiny configurations (the parameter counts use the paper sizes)."""

import warnings

import pytest
import torch

import modules.dvector
from modules.dvector import DVectorUnavailable
from modules.spex_plus import count_parameters
from modules.voicefilter import MelBands, VoiceFilter, VoiceFilterLoss, build_speaker_encoder

TINY = dict(conv_channels=4, conv_out_channels=2, time_dilations=(1, 2), lstm_units=8, fc_units=8)


def tiny_model(scale="linear", seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs = {"pretrained_dvector": False, **kwargs}
    return VoiceFilter(scale=scale, n_mels=40, **TINY, **kwargs)


def full_mask(model):
    """Make the network output a mask of ones (sigmoid of a large bias)."""
    with torch.no_grad():
        model.fc2.weight.zero_()
        model.fc2.bias.fill_(50.0)
    return model


@pytest.mark.parametrize(
    "scale, bidirectional, total",
    [("linear", True, 9_862_857), ("linear", False, 5_280_457),
     ("mel", True, 5_225_280), ("mel", False, 2_908_480)],
)  # fmt: skip
def test_paper_size_parameter_counts(scale, bidirectional, total):
    model = VoiceFilter(scale=scale, bidirectional=bidirectional, pretrained_dvector=False)
    # the frozen d-vector (1,423,616 weights) is not trained
    assert count_parameters(model) == total
    assert count_parameters(model.speaker_encoder, trainable_only=False) == 1_423_616
    assert len(model.convs.layers) == 8 and model.classifier is None
    assert model.stride == 160 and model.convs.receptive_frames == 131


@pytest.mark.parametrize("scale", ["linear", "mel"])
@pytest.mark.parametrize("batch, mix_len, ref_len", [(1, 1, 1), (2, 159, 3000), (3, 4321, 17)])
def test_output_shapes_and_mask_range(scale, batch, mix_len, ref_len):
    model = tiny_model(scale).eval()
    with torch.no_grad():
        out = model(torch.randn(batch, mix_len), torch.randn(batch, ref_len))
    frames = mix_len // 160 + 1
    assert out["est"].shape == (batch, mix_len)
    assert out["est_scales"].shape == (batch, 1, mix_len)
    assert out["mask"].shape == out["est_mag"].shape == (batch, 257, frames)
    assert out["spk_emb"].shape == (batch, 256) and out["spk_logits"] is None
    assert torch.isfinite(out["est"]).all()
    assert 0.0 <= float(out["mask"].min()) and float(out["mask"].max()) <= 1.0


@pytest.mark.parametrize("scale", ["linear", "mel"])
def test_all_ones_mask_gives_back_the_mixture(scale):
    model = full_mask(tiny_model(scale)).eval()
    mix = torch.randn(2, 7777) * 0.1
    with torch.no_grad():
        out = model(mix, torch.randn(2, 8000), mix_lens=torch.tensor([1.0, 0.6]))
    assert torch.allclose(out["mask"][0], torch.ones(257, 49), atol=1e-6)
    assert (out["est"][0] - mix[0]).abs().max() < 1e-5
    length = round(0.6 * 7777)
    assert (out["est"][1, :length] - mix[1, :length]).abs().max() < 1e-5
    assert out["est"][1, length:].abs().max() == 0


@pytest.mark.parametrize("scale, bidirectional", [("linear", True), ("mel", False)])
def test_zero_padding_leaves_each_item_unchanged(scale, bidirectional):
    """With mix_lens, a padded batch gives each item what it gives alone (BN in eval)."""
    model = tiny_model(scale, bidirectional=bidirectional).eval()
    torch.manual_seed(1)
    short, long = torch.randn(3333) * 0.1, torch.randn(8000) * 0.1
    mix = torch.zeros(2, 8000)
    mix[0, :3333], mix[1] = short, long
    emb = torch.rand(2, 256)
    with torch.no_grad():
        together = model.extract(mix, emb, torch.tensor([3333 / 8000, 1.0]))["est"]
        alone = model.extract(short[None], emb[:1])["est"][0]
        full = model.extract(long[None], emb[1:])["est"][0]
        unaware = model.extract(mix, emb)["est"]  # without lengths, padding leaks in
    assert torch.allclose(together[0, :3333], alone, atol=1e-5)
    assert torch.allclose(together[1], full, atol=1e-5)
    assert together[0, 3333:].abs().max() == 0
    assert not torch.allclose(unaware[0, :3333], alone, atol=1e-5)


def test_forward_is_embed_then_extract():
    model = tiny_model(reference_encoder="lstm", num_speakers=4).eval()
    mix, ref, lens = torch.randn(2, 1600), torch.randn(2, 20000), torch.tensor([1.0, 0.4])
    with torch.no_grad():
        out = model(mix, ref, lens)
        emb, logits = model.embed_reference(ref, lens)
        extracted = model.extract(mix, emb)
    assert logits.shape == (2, 4)
    assert torch.equal(out["spk_emb"], emb) and torch.equal(out["spk_logits"], logits)
    assert torch.equal(out["est"], extracted["est"])


def test_reference_encoders_and_classifier():
    frozen = tiny_model(num_speakers=4)
    assert frozen.classifier is None  # a frozen d-vector has nothing to learn from the CE
    assert not any(p.requires_grad for p in frozen.speaker_encoder.parameters())
    for kind in ("lstm", "dvector_finetune"):
        model = tiny_model(reference_encoder=kind, num_speakers=4)
        assert model.classifier.out_features == 4
        assert all(p.requires_grad for p in model.speaker_encoder.parameters())
    with pytest.raises(ValueError, match="reference_encoder"):
        tiny_model(reference_encoder="xvector")
    with pytest.raises(ValueError, match="scale"):
        tiny_model(scale="bark")


def test_missing_dvector_weights_say_what_to_do(monkeypatch):
    def absent():
        raise DVectorUnavailable("the pretrained d-vector needs the resemblyzer wheel")

    monkeypatch.setattr(modules.dvector, "resemblyzer_weights", absent)
    with pytest.raises(DVectorUnavailable, match="reference_encoder=lstm") as error:
        build_speaker_encoder("dvector")
    assert "pip install" in str(error.value)
    assert build_speaker_encoder("dvector", pretrained=False) is not None
    assert build_speaker_encoder("lstm").trainable


def test_mel_bands_map_masks_convexly():
    bands = MelBands(257, 80)
    assert torch.allclose(bands.spread.sum(dim=1), torch.ones(257))  # each bin: convex weights
    assert torch.allclose(bands.pool.sum(dim=1), torch.ones(80))  # each band: a weighted mean
    assert float(bands.spread.min()) >= 0 and float(bands.pool.min()) >= 0
    mask = torch.rand(2, 80, 7)
    linear = bands.to_linear(mask)
    assert float(linear.min()) >= float(mask.min()) - 1e-6
    assert float(linear.max()) <= float(mask.max()) + 1e-6
    with pytest.raises(ValueError, match="too many"):
        MelBands(65, 128)


def test_spectral_loss_ignores_padding_and_is_zero_for_the_target():
    torch.manual_seed(0)
    loss_fn = VoiceFilterLoss("spectral")
    target = torch.randn(2, 3200)
    real, imag = loss_fn.stft(target)
    exact = torch.sqrt(real**2 + imag**2)
    outputs = {"est_scales": target[:, None], "est_mag": exact, "spk_logits": None}
    assert float(loss_fn(outputs, target)["loss"]) < 1e-6
    # changing frames past the second item's length changes nothing
    lens = torch.tensor([1.0, 0.5])
    noisy = exact + torch.rand_like(exact)
    base = loss_fn({**outputs, "est_mag": noisy}, target, lens)["loss"]
    frames = 1600 // 160 + 1
    changed = noisy.clone()
    changed[1, :, frames:] = 100.0
    assert torch.allclose(loss_fn({**outputs, "est_mag": changed}, target, lens)["loss"], base)
    changed[1, :, frames - 1] = 100.0
    assert not torch.allclose(loss_fn({**outputs, "est_mag": changed}, target, lens)["loss"], base)
    with pytest.raises(ValueError, match="STFT sizes"):
        VoiceFilterLoss("spectral", n_fft=400)(outputs, target)


def test_si_snr_loss_and_speaker_ce():
    torch.manual_seed(0)
    target = torch.randn(3, 1600)
    est = target + 0.3 * torch.randn(3, 1600)
    logits = torch.randn(3, 5)
    outputs = {"est_scales": est[:, None], "est_mag": None, "spk_logits": logits}
    plain = VoiceFilterLoss("si_snr")(outputs, target, None, torch.tensor([0, 1, 2]))
    assert plain["ce"] > 0  # reported, not trained with (ce_weight 0)
    assert torch.allclose(plain["loss"], -plain["si_sdr"].mean())
    assert VoiceFilterLoss("si_snr")(outputs, target)["ce"] is None  # no speaker index
    with_ce = VoiceFilterLoss("si_snr", ce_weight=0.5)(
        outputs, target, None, torch.tensor([0, 1, 2])
    )
    assert torch.allclose(with_ce["loss"], plain["loss"] + 0.5 * with_ce["ce"])
    with pytest.raises(ValueError, match="loss"):
        VoiceFilterLoss("l1")


@pytest.mark.parametrize("scale, loss", [("linear", "spectral"), ("mel", "si_snr")])
def test_short_training_run_improves(scale, loss):
    """A few dozen steps on one fixed batch: the loss and the SI-SDR improve."""
    torch.manual_seed(0)
    model = tiny_model(scale, seed=3)
    loss_fn = VoiceFilterLoss(loss)
    t = torch.arange(4800) / 16000
    target = torch.stack(
        [0.3 * torch.sin(2 * torch.pi * 440 * t), 0.3 * torch.sin(2 * torch.pi * 1200 * t)]
    )
    mix = target + 0.3 * torch.randn(2, 4800)
    ref = torch.randn(2, 8000) * 0.1
    lens = torch.tensor([1.0, 0.8])
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    history = []
    for _ in range(40):
        result = loss_fn(model(mix, ref, None, lens), target, lens)
        optimiser.zero_grad()
        result["loss"].backward()
        optimiser.step()
        history.append((float(result["loss"]), float(result["si_sdr"].mean())))
    assert history[-1][0] < history[0][0] - 0.1 * abs(history[0][0])
    assert history[-1][1] > history[0][1] + 1.0


def test_traced_graphs_hold_for_other_lengths():
    model = tiny_model("mel").eval().requires_grad_(False)  # traced functions: weights as constants
    emb = model.embed_reference(torch.randn(1, 9000))[0]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        embed = torch.jit.trace(lambda ref: model.embed_reference(ref)[0], (torch.randn(1, 30000),))
        extract = torch.jit.trace(
            lambda mix, e: model.extract(mix, e)["est"], (torch.randn(1, 20000), emb)
        )
        for length in (800, 50000):
            mix, ref = torch.randn(1, length), torch.randn(1, length + 1234)
            assert torch.allclose(embed(ref), model.embed_reference(ref)[0], atol=1e-6)
            assert torch.allclose(extract(mix, emb), model.extract(mix, emb)["est"], atol=1e-5)
