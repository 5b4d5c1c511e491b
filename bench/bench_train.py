#!/usr/bin/env python3
"""Benchmark training throughput: seconds of training audio per wall-clock second.

Every case trains the recipe's own objects: the training yaml
(``recipes/LibriMix-TSE/hparams/*.yaml``) is loaded with a configuration's
overrides, the recipe's ``dataio_prepare`` makes the online-mixing dataset
(``OnlineMixer`` inside a ``DynamicItemDataset``), the recipe's
``ExtractionBrain`` makes the DataLoader and runs ``fit_batch`` (forward, loss,
backward, clipping, Adam; SpeechBrain's ``--precision`` and ``--compile``).
A case is one combination of

* ``config``: ``cpu`` (the reduced model of ``run_cpu_experiment.sh``, batch
  8 x 3 s, 4 s references), ``paper`` (``SpExPlus`` defaults, batch 4 x 3 s on
  CPU; ``--batch_size 16`` on a GPU), ``tiny`` (``tiny.yaml``, for tests),
  ``vf_cpu`` (VoiceFilter at the CPU experiment's sizes, batch 8 x 3 s);
* ``mode``: ``pipeline`` (online mixing in the loop, the loader's wait counted)
  or ``premixed`` (a few batches mixed beforehand and reused: compute only);
* ``split``: torch threads + loader worker processes, e.g. ``1+1`` (one
  compute thread, one loader process) or ``2+0`` (two compute threads, mixing
  in the training process);
* ``loudness``: ``pyloudnorm`` (the reference meter) or ``vectorised``
  (:func:`modules.levels.integrated_loudness`, the default) in the mixer;
* ``compile``: ``off`` or ``on`` (the recipe's ``--compile``: SpEx+ compiles its
  TCN blocks' training steps, VoiceFilter is compiled whole; the first steps
  compile, so give compiled cases enough ``--warmup``).

Started by ``torchrun --nproc_per_node=N`` every case is DDP over N processes
(gloo on CPU), each with the case's threads and workers and ``1/N`` of the
configuration's batch, so a step still trains the configuration's batch (the
recipe syncs BatchNorm statistics across the processes: the same function as
one process); the main process reports, audio/s counts all processes' items.

Cases are measured in interleaved rounds (case A, B, C, A, B, C, ...): each
round starts a fresh loader iterator, discards its first ``--warmup`` steps
and times ``--steps`` more; the medians over all rounds are reported, so a
machine whose load changes affects every case alike and the ratios stay
meaningful. ``wall`` is the loader wait plus the step; audio/s is
``batch x segment / wall``. ``act. MB`` is the memory of the tensors one
training forward pass keeps for backward (:func:`activation_mb`); on CUDA the
peak allocated memory of a step instead.

``--loss_steps N`` also trains N steps from the same seed with the plain and the
fast settings (pyloudnorm + eager vs vectorised loudness + ``--compile`` when
compile is among the cases), in-process loading, and prints both losses.

::

    python bench/bench_train.py --data data/real                  # cpu config, default cases
    python bench/bench_train.py --data data/real --configs paper --modes premixed \\
        --splits 1+0 2+0 --rounds 2
    python bench/bench_train.py --data DATA --configs paper --device cuda --precision bf16 \\
        --batch_size 16 --splits 1+8 --compile off on
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 bench/bench_train.py \\
        --data data/real --cases pipeline:1+0:vectorised:off     # 2 processes x 1 thread

DATA is a ``mixing/make_mixtures.py`` output (``train/speakers.json``,
``valid.csv``), e.g. ``recipes/LibriMix-TSE/make_cpu_data.sh``'s ``data/real``.
A table is printed and everything is written as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from modules import levels
from modules.training import world_size

REPO_ROOT = Path(__file__).resolve().parent.parent
RECIPE = REPO_ROOT / "recipes" / "LibriMix-TSE"

logger = logging.getLogger("bench_train")

#: The reduced model of the CPU experiments (run_cpu_experiment.sh).
CPU_SIZES = {
    "n_filters": 128, "bottleneck_channels": 128, "hidden_channels": 256, "num_stacks": 2,
    "embedding_dim": 128, "speaker_channels": [128, 256, 256],
}  # fmt: skip
#: (hparams file, overrides) of each configuration.
CONFIGS = {
    "cpu": ("spex_plus.yaml", {**CPU_SIZES, "batch_size": 8, "segment_seconds": 3.0,
                               "reference_seconds": 4.0}),
    "paper": ("spex_plus.yaml", {"batch_size": 4, "segment_seconds": 3.0,
                                 "reference_seconds": 4.0}),
    "tiny": ("tiny.yaml", {"batch_size": 2, "segment_seconds": 1.0, "reference_seconds": 2.0}),
    # VoiceFilter at run_cpu_experiment.sh's MODEL=voicefilter sizes
    "vf_cpu": ("voicefilter.yaml", {"conv_channels": 16, "lstm_units": 256, "fc_units": 300,
                                    "batch_size": 8, "segment_seconds": 3.0,
                                    "reference_seconds": 4.0}),
}  # fmt: skip


def load_recipe():
    """The recipe's ``train.py`` as a module (its folder name is not importable)."""
    spec = importlib.util.spec_from_file_location("librimix_tse_train", RECIPE / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- loudness meters -------------------------------------------------------------------

_VECTORISED = levels.integrated_loudness


def _pyloudnorm_loudness(data, sample_rate):
    with np.errstate(divide="ignore"):
        return float(levels._meter(sample_rate).integrated_loudness(data))


def use_loudness(name: str) -> None:
    """Make the mixers measure loudness with ``pyloudnorm`` or the ``vectorised`` meter."""
    levels.integrated_loudness = _VECTORISED if name == "vectorised" else _pyloudnorm_loudness


# ---- memory ------------------------------------------------------------------------------


def activation_mb(brain, batch) -> float:
    """Memory (MB) of the tensors a training forward pass keeps for backward (weights excluded).

    Counted with autograd's saved-tensor hooks on the eager model, each storage once:
    deterministic, unlike the resident memory of a process whose allocator keeps
    freed blocks.
    """
    model = brain.modules.model
    model = getattr(model, "_orig_mod", model)  # the eager module under torch.compile
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    batch = batch.to(brain.device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with brain.training_ctx:
            outputs = model(batch.mix.data, batch.ref.data, batch.ref.lengths, batch.mix.lengths)
            target, lens = batch.target
            brain.hparams.loss(outputs, target, lens, batch.speaker_index.data[:, 0])
    return sum(storages.values()) / 2**20


def fixed_case_args(data, seed: int = 1234) -> argparse.Namespace:
    """What :class:`Case` reads from the command line, for a tool of its own: CPU, fp32,
    the configuration's batch size, no noise."""
    return argparse.Namespace(batch_size=None, data=data, noise_folder=None, precision="fp32",
                              seed=seed, device="cpu")  # fmt: skip


# ---- one case --------------------------------------------------------------------------------


class Case:
    """One configuration x mode x split x loudness x compile, with its own Brain.

    ``extra_overrides`` (hparam: value) are applied last, on top of the configuration's.
    """

    def __init__(self, recipe, args, config, mode, split, loudness, compiled, workdir,
                 extra_overrides=None):  # fmt: skip
        from hyperpyyaml import load_hyperpyyaml

        self.config, self.mode, self.split = config, mode, split
        self.loudness, self.compiled = loudness, compiled
        self.threads, self.workers = (int(v) for v in split.split("+"))
        self.processes = world_size()
        hparams_name, overrides = CONFIGS[config]
        overrides = {
            **overrides,
            **({"batch_size": args.batch_size} if args.batch_size else {}),
            "data_folder": str(args.data), "output_folder": str(workdir / self.name),
            "noise_folder": str(args.noise_folder) if args.noise_folder else None,
            "num_workers": self.workers, "wandb_mode": "disabled", "precision": args.precision,
            "seed": args.seed, **(extra_overrides or {}),
        }  # fmt: skip
        with open(RECIPE / "hparams" / hparams_name, encoding="utf-8") as stream:
            self.hparams = load_hyperpyyaml(stream, overrides)
        self.batch_size = self.hparams["batch_size"]  # of all processes together
        if self.processes > 1:
            if self.batch_size % self.processes:
                raise ValueError(f"batch {self.batch_size} does not split over "
                                 f"{self.processes} processes")  # fmt: skip
            self.hparams["train_dataloader_opts"]["batch_size"] = (
                self.batch_size // self.processes
            )
        self.segment_seconds = self.hparams["segment_seconds"]
        self.train_set, _ = recipe.dataio_prepare(self.hparams)
        run_opts = {"device": args.device, "precision": args.precision, "compile": compiled}
        self.brain = recipe.ExtractionBrain(
            modules=self.hparams["modules"], opt_class=self.hparams["opt_class"],
            hparams=self.hparams, run_opts=run_opts, checkpointer=None,
        )  # fmt: skip
        self.brain.on_fit_start()
        self.brain.on_stage_start(_train_stage())
        self.brain.modules.train()
        self.loader_opts = dict(self.hparams["train_dataloader_opts"])
        self.premixed = None
        self.steps, self.waits, self.peaks, self.losses = [], [], [], []
        self.activations = None

    @property
    def name(self) -> str:
        ddp = f"{self.processes}x" if self.processes > 1 else ""
        return (f"{self.config}-{self.mode}-{ddp}{self.split}-{self.loudness}-"
                f"{'compile' if self.compiled else 'eager'}")  # fmt: skip

    def _loader(self, workers: int):
        opts = {**self.loader_opts, "num_workers": workers}
        return self.brain.make_dataloader(self.train_set, _train_stage(), **opts)

    def _batches(self):
        if self.mode == "pipeline":
            yield from self._loader(self.workers)
            return
        if self.premixed is None:
            use_loudness(self.loudness)
            self.premixed = list(itertools.islice(iter(self._loader(0)), 3))
        yield from itertools.cycle(self.premixed)

    def round(self, warmup: int, steps: int) -> None:
        """Run ``warmup`` untimed and ``steps`` timed training steps."""
        torch.set_num_threads(self.threads)
        use_loudness(self.loudness)
        batches = self._batches()
        for index in range(warmup + steps):
            start = time.perf_counter()
            batch = next(batches)
            waited = time.perf_counter() - start
            if self.activations is None:
                self.activations = activation_mb(self.brain, batch)
            if str(self.brain.device).startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            loss = self.brain.fit_batch(batch)
            _synchronize(self.brain.device)
            took = time.perf_counter() - start
            if index >= warmup:
                self.waits.append(waited)
                self.steps.append(took)
                if str(self.brain.device).startswith("cuda"):
                    self.peaks.append(torch.cuda.max_memory_allocated() / 2**20)
                self.losses.append(float(loss))
        del batches  # ends the loader's workers

    def summary(self) -> dict:
        step = statistics.median(self.steps)
        wait = statistics.median(self.waits)
        walls = [s + w for s, w in zip(self.steps, self.waits, strict=True)]
        wall = statistics.median(walls)
        return {
            "case": self.name, "config": self.config, "mode": self.mode, "split": self.split,
            "processes": self.processes,
            "torch_threads": self.threads, "loader_workers": self.workers,
            "loudness": self.loudness, "compile": self.compiled,
            "batch_size": self.batch_size, "segment_seconds": self.segment_seconds,
            "step_s": step, "wait_s": wait, "wall_s": wall,
            "audio_per_s": self.batch_size * self.segment_seconds / wall,
            "activations_mb": self.activations,
            "cuda_peak_mb": max(self.peaks) if self.peaks else None,
            "timed_steps": len(self.steps), "step_times_s": self.steps, "wait_times_s": self.waits,
        }  # fmt: skip


def _train_stage():
    import speechbrain as sb

    return sb.Stage.TRAIN


def _synchronize(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def loss_check(recipe, args, workdir, steps: int, fast_compile: bool) -> dict:
    """Loss after ``steps`` steps from one seed: plain vs fast settings, in-process loading."""
    results = {}
    for name, loudness, compiled in (("plain", "pyloudnorm", False),
                                     ("fast", "vectorised", fast_compile)):  # fmt: skip
        torch.manual_seed(args.seed)
        case = Case(recipe, args, args.configs[0], "pipeline", f"{args.splits[0].split('+')[0]}+0",
                    loudness, compiled, workdir / f"loss-{name}")  # fmt: skip
        torch.manual_seed(args.seed)
        case.round(0, steps)
        results[name] = {"loudness": loudness, "compile": compiled, "losses": case.losses}
    return results


def format_table(rows: list[dict]) -> str:
    """The results as a text table, ratios relative to the first case of each config."""
    lines = [f"{'case':<44} {'step s':>7} {'wait s':>7} {'audio/s':>8} {'ratio':>6} "
             f"{'act. MB':>8}"]  # fmt: skip
    first = {}
    for row in rows:
        base = first.setdefault(row["config"], row["audio_per_s"])
        peak = row["cuda_peak_mb"] if row["cuda_peak_mb"] is not None else row["activations_mb"]
        lines.append(f"{row['case']:<44} {row['step_s']:>7.3f} {row['wait_s']:>7.3f} "
                     f"{row['audio_per_s']:>8.2f} {row['audio_per_s'] / base:>6.2f} {peak:>8.0f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Command-line entry point; exit 0 done, 2 bad input."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "data" / "real",
                        help="make_mixtures.py output (train/speakers.json, valid.csv)")
    parser.add_argument("--noise_folder", type=Path, default=None)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["cpu"])
    parser.add_argument("--modes", nargs="+", choices=["premixed", "pipeline"],
                        default=["premixed", "pipeline"])
    parser.add_argument("--splits", nargs="+", default=["1+1", "2+0", "2+1"],
                        help="THREADS+WORKERS pairs; premixed cases use the threads only")
    parser.add_argument("--loudness", nargs="+", choices=["pyloudnorm", "vectorised"],
                        default=["pyloudnorm", "vectorised"],
                        help="meters of the pipeline cases (premixed: the last one)")
    parser.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off"])
    parser.add_argument("--cases", nargs="+", default=None, metavar="MODE:SPLIT:METER:COMPILE",
                        help="explicit cases instead of the product of --modes, --splits, "
                             "--loudness and --compile, e.g. pipeline:1+1:pyloudnorm:off")
    parser.add_argument("--batch_size", type=int, default=None, help="replaces the config's")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per round")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--loss_steps", type=int, default=0,
                        help="also compare the loss after N steps, plain vs fast settings")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results/bench/train.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    for needed in (args.data / "train" / "speakers.json", args.data / "valid.csv"):
        if not needed.is_file():
            print(f"bench_train.py: error: {needed} not found (make the data with "
                  "recipes/LibriMix-TSE/make_cpu_data.sh or mixing/make_mixtures.py)",
                  file=sys.stderr)  # fmt: skip
            return 2
    for case in args.cases or []:
        fields = case.split(":")
        if (len(fields) != 4 or fields[0] not in ("premixed", "pipeline")
                or fields[2] not in ("pyloudnorm", "vectorised") or fields[3] not in ("off", "on")):
            print(f"bench_train.py: error: --cases {case}: expected MODE:SPLIT:METER:COMPILE, "
                  "e.g. pipeline:1+1:pyloudnorm:off", file=sys.stderr)  # fmt: skip
            return 2
    for split in args.splits + [case.split(":")[1] for case in args.cases or []]:
        parts = split.split("+")
        if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[0]) < 1:
            print(f"bench_train.py: error: --splits {split}: expected THREADS+WORKERS, "
                  "e.g. 1+1", file=sys.stderr)  # fmt: skip
            return 2
    os.environ.setdefault("WANDB_MODE", "disabled")
    torch.set_flush_denormal(True)  # as train.py
    recipe = load_recipe()
    import speechbrain as sb

    sb.utils.distributed.ddp_init_group({"distributed_backend": "gloo"})  # no-op without torchrun
    if world_size() > 1 and (args.loss_steps or args.device != "cpu"):
        print("bench_train.py: error: under torchrun only CPU cases are measured "
              "(no --loss_steps, no --device)", file=sys.stderr)  # fmt: skip
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(sb.utils.distributed.ddp_broadcast(tmp))  # DDP: the main process's
        cases, seen = [], set()
        combinations = itertools.product(
            args.configs, args.modes, args.splits, args.loudness, args.compile
        )
        if args.cases:
            combinations = [(config, *case.split(":")) for config in args.configs
                            for case in args.cases]  # fmt: skip
        for config, mode, split, loudness, compiled in combinations:
            if mode == "premixed":  # no loader in the loop: workers and meter do not matter
                split = f"{split.split('+')[0]}+0"
                loudness = args.loudness[-1]
            key = (config, mode, split, loudness, compiled)
            if key in seen:
                continue
            seen.add(key)
            cases.append(Case(recipe, args, config, mode, split, loudness, compiled == "on",
                              workdir))  # fmt: skip
        for index in range(args.rounds):
            for case in cases:
                case.round(args.warmup, args.steps)
                logger.warning("round %d/%d: %s done", index + 1, args.rounds, case.name)
        rows = [case.summary() for case in cases]
        check = None
        if args.loss_steps:
            compiled = any(case.compiled for case in cases)
            check = loss_check(recipe, args, workdir, args.loss_steps, compiled)
    if not sb.utils.distributed.if_main_process():
        return 0
    print(format_table(rows))
    if check:
        for name, result in check.items():
            print(f"loss after {args.loss_steps} steps, {name} ({result['loudness']}, "
                  f"compile {result['compile']}): {result['losses'][-1]:.4f}")
    report = {
        "benchmark": "train",
        "command": " ".join(["bench_train.py", *(sys.argv[1:] if argv is None else argv)]),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "torch": torch.__version__, "machine": platform.machine(),
                 "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
                 "device": args.device,
                 "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None},
        "rounds": args.rounds, "warmup": args.warmup, "steps": args.steps,
        "precision": args.precision, "results": rows, "loss_check": check,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
