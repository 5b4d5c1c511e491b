#!/usr/bin/env python3
"""Table of the CPU experiments: one row per variant trained by run_cpu_experiment.sh.

    python recipes/LibriMix-TSE/compare_results.py results/cpu_experiment native dvector ...

Reads, for each variant NAME under the results folder, the test-set
``NAME/eval_model/summary.json`` (and ``NAME/eval_mixture`` for the mixture
row), the training log and the last checkpoint's step count, then prints a
markdown table and writes ``comparison.json`` beside them.
"""

import argparse
import json
import re
from pathlib import Path

import yaml
from hyperpyyaml import load_hyperpyyaml

from modules.spex_plus import count_parameters as count_trainable

COLUMNS = ("si_sdr", "si_sdri", "pesq", "stoi")


def last_checkpoint(save_folder: Path) -> Path | None:
    checkpoints = sorted(save_folder.glob("CKPT+*"), key=lambda p: p.stat().st_mtime)
    return checkpoints[-1] if checkpoints else None


def count_parameters(model_dir: Path) -> tuple[int, int] | tuple[None, None]:
    """(trained, frozen) weights of the model a model directory builds."""
    if not (model_dir / "inference.yaml").is_file():
        return None, None
    with open(model_dir / "inference.yaml", encoding="utf-8") as handle:
        model = load_hyperpyyaml(handle)["model"]
    trained = count_trainable(model)
    return trained, count_trainable(model, trainable_only=False) - trained


def variant_row(folder: Path) -> dict:
    """Scores, parameters and training throughput of one trained variant."""
    summary = json.loads((folder / "eval_model" / "summary.json").read_text())
    row = {"name": folder.name, **{m: summary["means"].get(m) for m in COLUMNS}}
    row["parameters"], row["frozen_parameters"] = count_parameters(folder / "train" / "model")
    log = (folder / "train" / "train_log.txt").read_text()
    minutes = re.findall(r"train_minutes: ([0-9.e+-]+)", log)
    row["train_minutes"] = float(minutes[-1]) if minutes else None
    valid = re.findall(r"valid si_sdri: ([0-9.e+-]+)", log)
    row["valid_si_sdri"] = [float(v) for v in valid]
    checkpoint = last_checkpoint(folder / "train" / "save")
    if checkpoint is not None:
        brain = yaml.safe_load((checkpoint / "brain.ckpt").read_text())
        row["steps"] = int(brain["optimizer_step"])
    return row


def audio_per_second(row: dict, batch_size: int, segment_seconds: float) -> float | None:
    if not row.get("steps") or not row.get("train_minutes"):
        return None
    return row["steps"] * batch_size * segment_seconds / (row["train_minutes"] * 60)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--segment_seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    rows = []
    for name in args.variants:
        folder = args.results / name
        if not (folder / "eval_model" / "summary.json").is_file():
            print(f"{name}: no evaluation yet ({folder}/eval_model/summary.json)")
            continue
        row = variant_row(folder)
        row["audio_per_second"] = audio_per_second(row, args.batch_size, args.segment_seconds)
        rows.append(row)
    mixture = next(
        (args.results / n / "eval_mixture" / "summary.json" for n in args.variants
         if (args.results / n / "eval_mixture" / "summary.json").is_file()),
        None,
    )

    def fmt(value, digits=2):
        return "-" if value is None else f"{value:.{digits}f}"

    print("| variant | params | steps | train min | audio s/s | SI-SDR | SI-SDRi | PESQ | STOI |")
    print("|---|---|---|---|---|---|---|---|---|")
    if mixture is not None:
        means = json.loads(mixture.read_text())["means"]
        print(f"| mixture | - | - | - | - | {fmt(means.get('si_sdr'))} | "
              f"{fmt(means.get('si_sdri'))} | {fmt(means.get('pesq'), 3)} | "
              f"{fmt(means.get('stoi'), 3)} |")
    for row in rows:
        params = "-" if not row.get("parameters") else f"{row['parameters'] / 1e6:.2f} M"
        if row.get("frozen_parameters"):
            params += f" (+{row['frozen_parameters'] / 1e6:.2f} M frozen)"
        print(f"| {row['name']} | {params} | {row.get('steps', '-')} | "
              f"{fmt(row['train_minutes'], 1)} | {fmt(row['audio_per_second'], 1)} | "
              f"{fmt(row['si_sdr'])} | {fmt(row['si_sdri'])} | {fmt(row['pesq'], 3)} | "
              f"{fmt(row['stoi'], 3)} |")
    (args.results / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
