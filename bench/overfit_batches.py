#!/usr/bin/env python3
"""Sanity check: can a training configuration fit a few fixed batches of real mixtures?

A model that cannot lower its loss on 3 fixed batches (24 mixtures at the CPU
sizes) has a defect (gradients, masking, conditioning); one that fits them but
does not gain on unseen speakers within a budget is slow, not broken. The
batches come from the recipe's own online mixer (``bench_train.Case``,
``premixed`` mode), the steps from its ``ExtractionBrain.fit_batch``; every
``--every`` steps the SI-SDRi (zero-mean, as trained) of the model in eval mode
on those batches is printed.

::

    python bench/overfit_batches.py --data data/real --config vf_cpu --steps 60 \\
        --set loss_type=spectral --set scale=linear

``--config`` is one of ``bench_train.CONFIGS``; ``--set KEY=VALUE`` overrides an
hparam (YAML value). A table is printed and written as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import bench_train  # this folder is on sys.path when run as a script
import torch
import yaml

from modules.losses import batch_si_sdr


def batch_si_sdri(model, batches) -> float:
    """Mean SI-SDRi (dB, zero-mean) of ``model`` over the items of ``batches``."""
    model.eval()
    gains = []
    with torch.no_grad():
        for batch in batches:
            mix, mix_lens = batch.mix
            ref, ref_lens = batch.ref
            target, lens = batch.target
            est = model(mix, ref, ref_lens, mix_lens)["est"]
            gains.append(batch_si_sdr(est, target, lens) - batch_si_sdr(mix, target, lens))
    model.train()
    return float(torch.cat(gains).mean())


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=bench_train.REPO_ROOT / "data" / "real")
    parser.add_argument("--config", choices=sorted(bench_train.CONFIGS), default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", type=Path, default=None, help="JSON report")
    args = parser.parse_args(argv)

    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    case_args = bench_train.fixed_case_args(args.data, args.seed)
    with tempfile.TemporaryDirectory() as workdir:
        case = bench_train.Case(bench_train.load_recipe(), case_args, args.config, "premixed",
                                "1+0", "vectorised", False, Path(workdir), overrides)  # fmt: skip
        batches = case._batches()
        next(batches)  # mixes the fixed batches
        model = case.brain.modules.model
        rows = [{"step": 0, "loss": None, "si_sdri": batch_si_sdri(model, case.premixed)}]
        losses = []
        for step in range(1, args.steps + 1):
            losses.append(float(case.brain.fit_batch(next(batches))))
            if step % args.every == 0 or step == args.steps:
                rows.append({"step": step, "loss": statistics.mean(losses[-args.every :]),
                             "si_sdri": batch_si_sdri(model, case.premixed)})  # fmt: skip
    print(
        f"{args.config} {' '.join(args.set)}: {len(case.premixed)} fixed batches of "
        f"{case.batch_size} x {case.segment_seconds} s"
    )
    print(f"{'step':>5} {'train loss':>11} {'SI-SDRi dB':>11}")
    for row in rows:
        loss = "-" if row["loss"] is None else f"{row['loss']:.4g}"
        print(f"{row['step']:>5} {loss:>11} {row['si_sdri']:>11.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"config": args.config, "set": args.set, "rows": rows,
                                        "losses": losses}, indent=1))  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
