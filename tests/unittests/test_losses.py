"""Tests for modules.losses."""

import torch

from modules.losses import SpExPlusLoss, absolute_lengths, batch_si_sdr, length_mask


def scales_of(signal):
    return signal.unsqueeze(1).repeat(1, 3, 1)


def test_si_sdr_perfect_and_scale_invariant():
    torch.manual_seed(0)
    target = torch.randn(3, 1000)
    assert (batch_si_sdr(target, target) > 60).all()
    assert (batch_si_sdr(3.0 * target, target) > 60).all()
    noisy = target + torch.randn(3, 1000)
    assert torch.allclose(batch_si_sdr(noisy, target), batch_si_sdr(0.1 * noisy, target), atol=1e-3)
    assert (batch_si_sdr(noisy, target) < 5).all()


def test_si_sdr_matches_closed_form():
    torch.manual_seed(0)
    target = torch.randn(1, 500)
    noise = torch.randn(1, 500)
    noise = noise - noise.mean()
    target = target - target.mean()
    noise = noise - (noise * target).sum() / (target * target).sum() * target
    est = target + 0.5 * noise
    expected = 10 * torch.log10((target**2).sum() / ((0.5 * noise) ** 2).sum())
    assert torch.allclose(batch_si_sdr(est, target), expected.view(1), atol=1e-3)


def test_si_sdr_ignores_padding_and_keeps_inputs():
    torch.manual_seed(0)
    target = torch.randn(2, 800)
    est = target + 0.3 * torch.randn(2, 800)
    lens = torch.tensor([1.0, 0.5])
    est_copy, target_copy = est.clone(), target.clone()
    base = batch_si_sdr(est, target, lens)
    assert torch.equal(est, est_copy) and torch.equal(target, target_copy)
    est2, target2 = est.clone(), target.clone()
    est2[1, 400:] = 7.0
    target2[1, 400:] = -3.0
    assert torch.allclose(batch_si_sdr(est2, target2, lens), base, atol=1e-5)
    alone = batch_si_sdr(est[1:, :400], target[1:, :400])
    assert torch.allclose(base[1], alone[0], atol=1e-4)


def test_loss_perfect_estimate_strongly_negative():
    target = torch.randn(2, 600)
    result = SpExPlusLoss()({"est_scales": scales_of(target), "spk_logits": None}, target)
    assert (result["si_sdr"] > 60).all()
    assert result["loss"] < -60
    assert result["ce"] is None


def test_loss_ignores_padding():
    torch.manual_seed(0)
    target = torch.randn(2, 800)
    est = scales_of(target) + 0.2 * torch.randn(2, 3, 800)
    lens = torch.tensor([0.75, 1.0])
    loss_fn = SpExPlusLoss()
    base = loss_fn({"est_scales": est}, target, lens)["loss"]
    est2, target2 = est.clone(), target.clone()
    est2[0, :, 600:] = torch.randn(3, 200)
    target2[0, 600:] = 9.0
    assert torch.allclose(loss_fn({"est_scales": est2}, target2, lens)["loss"], base, atol=1e-5)


def test_loss_weights_scales():
    torch.manual_seed(0)
    target = torch.randn(1, 500)
    est = scales_of(target) + torch.randn(1, 3, 500) * torch.tensor([0.1, 1.0, 2.0]).view(1, 3, 1)
    scores = torch.stack([batch_si_sdr(est[:, i], target) for i in range(3)], dim=1)
    result = SpExPlusLoss(scale_weights=(0.8, 0.1, 0.1))({"est_scales": est}, target)
    expected = -(0.8 * scores[:, 0] + 0.1 * scores[:, 1] + 0.1 * scores[:, 2]).mean()
    assert torch.allclose(result["loss"], expected, atol=1e-4)
    assert torch.allclose(result["si_sdr"], scores[:, 0], atol=1e-5)


def test_cross_entropy_term():
    torch.manual_seed(0)
    target = torch.randn(3, 400)
    logits = torch.randn(3, 4, requires_grad=True)
    outputs = {"est_scales": scales_of(target + 0.1 * torch.randn(3, 400)), "spk_logits": logits}
    loss_fn = SpExPlusLoss(ce_weight=0.5)
    without = loss_fn(outputs, target)
    assert without["ce"] is None

    index = torch.tensor([0, -1, 2])
    with_ce = loss_fn(outputs, target, speaker_index=index)
    expected_ce = torch.nn.functional.cross_entropy(logits[[0, 2]], index[[0, 2]])
    assert torch.allclose(with_ce["ce"], expected_ce)
    assert torch.allclose(with_ce["loss"], without["loss"] + 0.5 * expected_ce)
    with_ce["loss"].backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0

    all_ignored = loss_fn(outputs, target, speaker_index=torch.full((3,), -1))
    assert torch.isfinite(all_ignored["loss"]) and all_ignored["ce"] == 0


def test_absolute_lengths_of_padded_batch_and_mask():
    """Relative lengths from a padded batch give back each item's sample count."""
    counts = torch.tensor([37, 100, 1, 64])
    rel = counts.float() / 100  # SpeechBrain's PaddedBatch convention (float32)
    batch = torch.zeros(4, 100)
    assert absolute_lengths(rel, 100, batch).tolist() == counts.tolist()
    assert length_mask(rel, 100, batch).sum(dim=-1).long().tolist() == counts.tolist()
    assert absolute_lengths(None, 100, batch).tolist() == [100] * 4
    # never empty, never past the end
    assert absolute_lengths(torch.tensor([0.0, 1.5]), 100, batch[:2]).tolist() == [1, 100]
