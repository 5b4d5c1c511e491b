#!/usr/bin/env python3
"""Spectrograms of one test item as every variant of a comparison estimates it.

    python recipes/LibriMix-TSE/plot_estimates.py results/cpu_experiment native vf_mel_sisnr ... \\
        --test_dir data/real/test --out docs/figures/comparison_item.png [--item ID]

Reads each variant's ``NAME/eval_model/estimates/ID-est.wav`` and
``per_utterance.csv`` (written by ``run_cpu_experiment.sh``) and stacks the
mixture, the target and each estimate, labelled with the item's SI-SDRi. The
default item is the one whose SI-SDRi is the median of the first variant's, so
the picture shows a typical case rather than a chosen one.
"""

import argparse
import csv
import io
from pathlib import Path

from PIL import Image

from modules.audio import load_audio
from modules.dataio import CustomDirDataset
from modules.plots import spectrogram_figure


def read_scores(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "eval_model" / "per_utterance.csv", newline="", encoding="utf-8") as handle:
        return {row["ID"]: row for row in csv.DictReader(handle)}


def median_item(scores: dict[str, dict[str, str]]) -> str:
    ranked = sorted(scores, key=lambda item: float(scores[item]["si_sdri"]))
    return ranked[len(ranked) // 2]


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="folder holding one sub-folder per variant")
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--test_dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--item", help="item ID (default: the first variant's median SI-SDRi)")
    args = parser.parse_args(argv)

    scores = {name: read_scores(args.results / name) for name in args.variants}
    item = args.item or median_item(scores[args.variants[0]])
    test_set = CustomDirDataset(args.test_dir)
    triplet = test_set[test_set.ids.index(item)]
    waves = {"mixture": triplet["mix"], "target": triplet["target"]}
    for name in args.variants:
        estimate = args.results / name / "eval_model" / "estimates" / f"{item}-est.wav"
        gain = float(scores[name][item]["si_sdri"])
        waves[f"{name}\n{gain:+.1f} dB"] = load_audio(estimate, allow_silent=True)[0]
    figure = spectrogram_figure(waves)
    figure.suptitle(f"test item {item}", fontsize=9)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=80)
    # a 256-colour palette: the magma spectrograms look the same at a fifth of the size
    image = Image.open(buffer).convert("RGB").quantize(256)
    image.save(args.out, optimize=True)
    print(f"wrote {args.out} (item {item})")
    return args.out


if __name__ == "__main__":
    main()
