#!/usr/bin/env python3
"""What a trained VoiceFilter's masks look like: constant (a plateau) or shaped?

For each model directory, on the first ``--items`` mixtures of a test
directory (``mix/ID-mixed.wav`` with ``refs/ID-ref.wav``): the mean mask, the
standard deviation of the mask within an item (near 0: the mask only scales
the mixture, which scores exactly as the mixture on scale-invariant metrics),
and how many units of the first fully connected layer ever fire (ReLU > 0).

::

    python bench/voicefilter_masks.py data/real/test results/cpu_experiment/vf_*/train/model
"""

import argparse
from pathlib import Path

import torch

from modules.dataio import CustomDirDataset
from modules.inference import TargetSpeakerExtractor


def mask_stats(model_dir: Path, test_dir: Path, items: int) -> dict:
    model = TargetSpeakerExtractor.from_hparams(str(model_dir)).model
    fired = []
    hook = model.fc1.register_forward_hook(lambda module, inputs, output: fired.append(output > 0))
    means, stds = [], []
    test_set = CustomDirDataset(test_dir, use_targets=False)
    count = min(items, len(test_set))
    with torch.no_grad():
        for index in range(count):
            item = test_set[index]
            mask = model(item["mix"][None], item["ref"][None], None, None)["mask"]
            means.append(float(mask.mean()))
            stds.append(float(mask.std()))
    hook.remove()
    # [B, N, units] per item -> units that fired on any frame of any item
    ever = torch.stack([f.flatten(0, -2).any(dim=0) for f in fired]).any(dim=0)
    return {"model": str(model_dir), "items": count, "mask_mean": sum(means) / len(means),
            "within_item_std": sum(stds) / len(stds), "fc1_units_fired": int(ever.sum()),
            "fc1_units": int(ever.numel())}  # fmt: skip


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("test_dir", type=Path)
    parser.add_argument("model_dirs", type=Path, nargs="+")
    parser.add_argument("--items", type=int, default=10)
    args = parser.parse_args(argv)
    rows = [mask_stats(model_dir, args.test_dir, args.items) for model_dir in args.model_dirs]
    print(f"{'model':<60} {'mask mean':>9} {'std in item':>11} {'FC1 fired':>10}")
    for row in rows:
        print(f"{row['model']:<60} {row['mask_mean']:>9.3f} {row['within_item_std']:>11.4f} "
              f"{row['fc1_units_fired']:>5}/{row['fc1_units']}")  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
