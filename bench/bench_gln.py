"""Benchmark gLN on padded batches: the module's path against masked elementwise statistics.

Usage (from the repository root)::

    python bench/bench_gln.py [--rounds 3] [--threads 1] [--out results/bench/gln.json]

A training batch with one item shorter than the others (online crops of short
utterances) makes every gLN of the TCN take its statistics over each item's
valid frames only. :class:`modules.norms.GlobalLayerNorm` runs the fused
``group_norm`` on each item's valid frames; the reference computes the masked
mean and variance elementwise (the formula the module replaced). Timed, in
interleaved rounds (medians): one norm's forward + backward at the TCN's width,
and a whole training step (forward + backward) of the reduced CPU configuration
of ``run_cpu_experiment.sh`` (batch 8 x 3 s, 4 s references, one item 2 s long).
Also prints the largest output difference between the two. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from modules.norms import GlobalLayerNorm
from modules.spex_plus import SpExPlus

FUSED = GlobalLayerNorm.forward


def masked_elementwise(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The reference: masked mean and variance written out elementwise."""
    if mask is None:
        return F.group_norm(x, 1, self.weight, self.bias, self.eps)
    count = mask.sum(dim=(1, 2), keepdim=True) * x.shape[1]
    mean = (x * mask).sum(dim=(1, 2), keepdim=True) / count
    var = ((x - mean) * mask).pow(2).sum(dim=(1, 2), keepdim=True) / count
    y = (x - mean) * torch.rsqrt(var + self.eps)
    return (y * self.weight.view(1, -1, 1) + self.bias.view(1, -1, 1)) * mask


IMPLEMENTATIONS = {"masked elementwise": masked_elementwise, "per-item fused (module)": FUSED}


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("results/bench/gln.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch, rate = args.batch_size, 16000
    model = SpExPlus(n_filters=128, bottleneck_channels=128, hidden_channels=256, num_stacks=2,
                     embedding_dim=128, speaker_channels=(128, 256, 256), num_speakers=225,
                     pretrained_dvector=False)
    mix, ref = torch.randn(batch, 3 * rate), torch.randn(batch, 4 * rate)
    mix_lens = torch.ones(batch)
    mix_lens[0] = 2 / 3
    norm = GlobalLayerNorm(256)
    frames = int(model.encoder.num_frames(torch.tensor(3 * rate)))
    features = torch.randn(batch, 256, frames, requires_grad=True)
    mask = torch.ones(batch, 1, frames)
    mask[0, :, 2 * frames // 3:] = 0

    def norm_step():
        norm(features, mask).sum().backward()

    def train_step():
        model.zero_grad()
        model(mix, ref, None, mix_lens)["est"].pow(2).mean().backward()

    times: dict[str, dict[str, list[float]]] = {
        name: {"norm": [], "step": []} for name in IMPLEMENTATIONS
    }
    outputs = {}
    for round_index in range(args.rounds + 1):  # round 0 warms up
        for name, forward in IMPLEMENTATIONS.items():
            GlobalLayerNorm.forward = forward
            norm_seconds, step_seconds = timed(norm_step), timed(train_step)
            if round_index:
                times[name]["norm"].append(norm_seconds)
                times[name]["step"].append(step_seconds)
            with torch.no_grad():
                outputs[name] = model(mix, ref, None, mix_lens)["est"]
    GlobalLayerNorm.forward = FUSED
    reference, module = outputs.values()
    result = {
        "threads": args.threads, "rounds": args.rounds, "batch": f"{batch} x 3 s, one item 2 s",
        "max_abs_diff": float((reference - module).abs().max()),
        "output_rms": float(reference.pow(2).mean().sqrt()),
        "median_seconds": {name: {k: statistics.median(v) for k, v in parts.items()}
                           for name, parts in times.items()},
    }
    print("| gLN on a padded batch | one norm fwd+bwd (s) | training step (s) |")
    print("|---|---|---|")
    for name, medians in result["median_seconds"].items():
        print(f"| {name} | {medians['norm']:.3f} | {medians['step']:.2f} |")
    print(f"max |difference| of the estimates: {result['max_abs_diff']:.2e} "
          f"(output RMS {result['output_rms']:.2f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
