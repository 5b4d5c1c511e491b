"""modules.stft: equal to torch.stft / torch.istft, exact for zero-padded batches."""

import pytest
import torch

from modules.stft import STFT


@pytest.mark.parametrize("n_fft, win_length, hop_length", [(512, 400, 160), (400, 400, 160)])
@pytest.mark.parametrize("length", [1, 159, 160, 3001, 16000])
def test_matches_torch_stft_and_istft(n_fft, win_length, hop_length, length):
    torch.manual_seed(0)
    stft = STFT(n_fft, win_length, hop_length)
    wav = torch.randn(2, length)
    window = torch.hann_window(win_length)
    reference = torch.stft(
        wav, n_fft, hop_length, win_length, window, center=True, pad_mode="constant",
        return_complex=True,
    )  # fmt: skip
    real, imag = stft(wav)
    assert real.shape == reference.shape == (2, n_fft // 2 + 1, length // hop_length + 1)
    scale = float(reference.abs().max())
    assert (real - reference.real).abs().max() < 1e-5 * max(scale, 1.0)
    assert (imag - reference.imag).abs().max() < 1e-5 * max(scale, 1.0)
    # any spectrum, not only one of a signal: compare with torch.istft
    gain = torch.rand_like(real)
    if length >= win_length // 2:  # torch.istft refuses windows that do not cover the ends
        expected = torch.istft(
            torch.complex(real * gain, imag * gain), n_fft, hop_length, win_length, window,
            center=True, length=length,
        )  # fmt: skip
        assert (stft.inverse(real * gain, imag * gain, length) - expected).abs().max() < 1e-5
    assert (stft.inverse(real, imag, length) - wav).abs().max() < 1e-5


def test_inverse_of_a_padded_batch_equals_each_item_alone():
    torch.manual_seed(1)
    stft = STFT(512, 400, 160)
    short, long = torch.randn(2345), torch.randn(4000)
    batch = torch.zeros(2, 4000)
    batch[0, :2345], batch[1] = short, long
    real, imag = stft(batch)
    gain = torch.rand_like(real)
    frame_mask = stft.frame_mask(torch.tensor([2345 / 4000, 1.0]), 4000, real.shape[-1])
    together = stft.inverse(real * gain, imag * gain, 4000, frame_mask)
    n = int(stft.num_frames(torch.tensor(2345)))
    assert frame_mask.sum(dim=1).tolist() == [n, real.shape[-1]]
    r, i = stft(short[None])
    alone = stft.inverse(r * gain[:1, :, :n], i * gain[:1, :, :n], 2345)
    assert torch.allclose(together[0, :2345], alone[0], atol=1e-5)
    # samples no valid frame covers are exactly zero
    assert together[0, 2345 + 256 :].abs().max() == 0


def test_state_dict_is_empty_and_sizes_are_checked():
    assert STFT().state_dict() == {}
    with pytest.raises(ValueError, match="hop_length"):
        STFT(n_fft=256, win_length=400, hop_length=160)
