"""Plots for training: spectrograms of validation examples and learning curves.

matplotlib is imported inside the functions (Agg backend) so importing this
module costs nothing where no plot is drawn.

Example
-------
>>> import tempfile, pathlib
>>> log = pathlib.Path(tempfile.mkdtemp()) / "train_log.txt"
>>> _ = log.write_text(
...     "epoch: 1, lr: 1.00e-03 - train loss: -1.50 - valid loss: -2.00, valid si_sdr: 2.10\\n"
...     "epoch: 2, lr: 1.00e-03 - train loss: -3.50 - valid loss: -4.00, valid si_sdr: 4.20\\n"
... )
>>> history = parse_train_log(log)
>>> history["valid si_sdr"]
[2.1, 4.2]
>>> plot_train_log(log, log.with_suffix(".png")).exists()
True
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from modules.audio import SAMPLE_RATE, save_audio

logger = logging.getLogger(__name__)


def parse_train_log(train_log) -> dict[str, list[float]]:
    """Reads speechbrain's ``FileTrainLogger`` text log into ``{"valid si_sdr": [...], ...}``.

    Lines look like ``epoch: 1, lr: 1.00e-03 - train loss: -3.2 - valid si_sdr: 5.1``.
    Only epoch lines are kept (the final ``Epoch loaded`` test line is skipped).
    """
    history: dict[str, list[float]] = {}
    for line in Path(train_log).read_text(encoding="utf-8").splitlines():
        if not line.startswith("epoch:"):
            continue
        for part in line.split(" - "):
            for item in part.split(", "):
                key, _, value = item.rpartition(": ")
                try:
                    history.setdefault(key.strip(), []).append(float(value))
                except ValueError:
                    continue
    return history


def plot_train_log(train_log, out_png) -> Path:
    """Plots losses, valid SI-SDR/SI-SDRi/PESQ and the learning rate per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = parse_train_log(train_log)
    epochs = history.get("epoch", [])
    panels = [
        ("loss", ["train loss", "valid loss"]),
        ("dB", ["valid si_sdr", "valid si_sdri"]),
        ("PESQ", ["valid pesq"]),
        ("learning rate", ["lr"]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for axis, (ylabel, keys) in zip(axes, panels, strict=True):
        for key in keys:
            values = history.get(key, [])
            if values:
                axis.plot(epochs[: len(values)], values, marker="o", label=key)
        axis.set_xlabel("epoch")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=8)
    axes[-1].set_yscale("log")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def spectrogram_figure(waves: dict[str, torch.Tensor], sample_rate: int = SAMPLE_RATE):
    """One log-magnitude spectrogram panel per ``[T]`` waveform, stacked vertically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(waves), 1, figsize=(8, 1.8 * len(waves)), squeeze=False)
    window = torch.hann_window(512)
    for axis, (name, wav) in zip(axes[:, 0], waves.items(), strict=True):
        spec = torch.stft(wav.float(), 512, 128, window=window, return_complex=True).abs()
        axis.imshow(
            20 * torch.log10(spec + 1e-5).numpy(),
            origin="lower",
            aspect="auto",
            extent=(0, wav.shape[-1] / sample_rate, 0, sample_rate / 2000),
            vmin=-80,
            vmax=20,
            cmap="magma",
        )
        axis.set_ylabel(f"{name}\nkHz")
    axes[-1, 0].set_xlabel("s")
    fig.tight_layout()
    return fig


def log_examples(examples, folder, epoch, sample_rate=SAMPLE_RATE, wandb_run=None):
    """Saves a few validation examples as wavs + spectrogram PNGs, and logs them to W&B.

    Arguments
    ---------
    examples : dict
        ``{utt_id: {"mixture": [T], "reference": [Tr], "estimate": [T], "target": [T]}}``.
    folder : str or Path
        Files go to ``folder/epoch_<epoch>/``.
    wandb_run : wandb run or None
        Where to log ``wandb.Audio`` and ``wandb.Image`` (skipped when None or disabled).
    """
    import matplotlib.pyplot as plt

    out = Path(folder) / f"epoch_{epoch}"
    logs = {}
    for utt_id, waves in examples.items():
        for name, wav in waves.items():
            save_audio(out / f"{utt_id}-{name}.wav", wav.clamp(-1, 1), sample_rate)
        fig = spectrogram_figure(waves, sample_rate)
        fig.savefig(out / f"{utt_id}-spectrograms.png", dpi=80)
        if wandb_run is not None:
            import wandb

            logs[f"examples/{utt_id}/spectrograms"] = wandb.Image(fig)
            for name, wav in waves.items():
                logs[f"examples/{utt_id}/{name}"] = wandb.Audio(
                    wav.numpy(), sample_rate=sample_rate
                )
        plt.close(fig)
    if wandb_run is not None and logs:
        wandb_run.log(logs, step=epoch)
