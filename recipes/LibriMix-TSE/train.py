#!/usr/bin/env python3
"""Train a target speaker extraction model (SpEx+) on LibriSpeech-style mixtures.

    python train.py hparams/spex_plus.yaml --data_folder MIXTURES
    torchrun --nproc_per_node=2 train.py hparams/tiny.yaml --data_folder MIXTURES \
        --distributed_backend=gloo

MIXTURES is what ``mixing/make_mixtures.py`` writes. Training mixes online from
the training speakers (fresh mixtures every epoch, deterministic in seed, epoch
and item) or reads the static ``train.csv``; validation always uses the fixed
``valid.csv``. The model, loss, optimiser, scheduler, loggers and checkpointer
are all declared in the yaml; this file holds only the Brain and the data
pipeline. After training, the best checkpoint (by valid SI-SDR) is written as a
model directory for ``evaluate.py`` and ``extract.py``.
"""

import contextlib
import csv
import dataclasses
import io
import logging
import os
import shutil
import sys
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.run_opts import RunOptions
from torch.nn.parallel import DistributedDataParallel

from mixing.corpus import audio_problem, find_noise_files
from mixing.online import OnlineMixer, load_speakers_json
from modules.cli import BadInput, check_device, entry_point, parse_hparams_args, resolve_hparams
from modules.dataio import manifest_dataset
from modules.losses import absolute_lengths
from modules.metrics import MetricSummary, compute_metrics
from modules.model_dir import write_model_dir
from modules.norms import convert_batchnorm
from modules.plots import log_examples, plot_train_log
from modules.tcn import compile_training
from modules.training import sum_over_processes, world_size

logger = logging.getLogger(__name__)


class ExtractionBrain(sb.Brain):
    """SpEx+ training: multi-scale SI-SDR plus speaker classification."""

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        mix, mix_lens = batch.mix
        ref, ref_lens = batch.ref
        # {"est": [B, T], "est_scales": [B, 3, T], "spk_logits": [B, S], "spk_emb": [B, D]}
        return self.modules.model(mix, ref, ref_lens, mix_lens)

    def compute_objectives(self, predictions, batch, stage):
        target, lens = batch.target
        # Speaker classification only on training speakers (validation speakers are unseen).
        speaker_index = batch.speaker_index.data[:, 0] if stage == sb.Stage.TRAIN else None
        objectives = self.hparams.loss(predictions, target, lens, speaker_index)
        if stage == sb.Stage.TRAIN:
            # online mixing redraws crops with too little speech: count them
            self.redraws += int(sum(getattr(batch, "redraws", [])))
        else:
            self._score_valid_batch(predictions, batch)
        return objectives["loss"]

    def _score_valid_batch(self, predictions, batch):
        """Graded metrics per utterance on the unpadded signals."""
        mix, mix_lens = batch.mix
        target, lens = batch.target
        lengths = absolute_lengths(lens, target.shape[-1], target).tolist()
        ref, ref_lens = batch.ref
        ref_lengths = absolute_lengths(ref_lens, ref.shape[-1], ref).tolist()
        for i, utt_id in enumerate(batch.id):
            length = lengths[i]
            est = predictions["est"][i, :length].float().cpu()
            metrics = ("si_sdr", "si_sdri")
            if self.valid_items_scored < self.hparams.valid_pesq_items:
                metrics += ("pesq",)
            scores = compute_metrics(
                est, target[i, :length].cpu(), mix[i, :length].cpu(), metrics=metrics
            )
            self.valid_summary.add(scores)
            if self.valid_items_scored < self.hparams.num_audio_examples:
                mixture = mix[i, :length].cpu()
                # The loss is scale-invariant: play the estimate at the mixture's level.
                level = mixture.norm() / est.norm().clamp_min(1e-8)
                self.audio_examples[utt_id] = {
                    "mixture": mixture,
                    "reference": ref[i, :ref_lengths[i]].cpu(),
                    "estimate": est * level,
                    "target": target[i, :length].cpu(),
                }
            self.valid_items_scored += 1

    def _compile(self):
        # --compile: SpEx+ compiles its TCN blocks' training steps only (fixed shapes;
        # whole-model compilation with dynamic shapes did not finish in 15 minutes on
        # 2 CPU cores); a model without TCN blocks is compiled whole by speechbrain.
        if self.compile and self.compile_module_keys is None and not self.jit:
            if compile_training(self.modules.model):
                logger.info("torch.compile: the model's training steps of fixed shape")
                return
        super()._compile()

    def _wrap_distributed(self):
        # speechbrain turns every BatchNorm into SyncBatchNorm, which runs on GPUs only:
        # on CPU (torchrun + gloo) the BatchNorms sync through gloo instead, so that
        # N processes x batch B train as one process x batch N * B (to rounding).
        if not (self.distributed_launch and torch.device(self.device).type == "cpu"):
            return super()._wrap_distributed()
        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.modules[name] = DistributedDataParallel(
                    convert_batchnorm(module), find_unused_parameters=self.find_unused_parameters
                )

    def _train_loader_specifics(self, dataset, loader_kwargs):
        # speechbrain's DDP sampler shuffles unless `hparams.sorting` says otherwise:
        # make the loader's `shuffle` decide under DDP as it does in one process.
        self.hparams.sorting = "random" if loader_kwargs.get("shuffle") else "index"
        return super()._train_loader_specifics(dataset, loader_kwargs)

    @property
    def _optimizer_step_limit_exceeded(self):
        # speechbrain ends the epoch (then validates, checkpoints and stops) when this
        # is true: a wall-clock budget makes variants comparable at equal training time.
        # Under DDP every process asks before each batch and their clocks disagree near
        # the end: all follow the main process (one that stepped alone would wait
        # forever for the others' gradients).
        exhausted = sb.utils.distributed.ddp_broadcast(self.hparams.train_budget.exhausted())
        return super()._optimizer_step_limit_exceeded or exhausted

    def on_stage_start(self, stage, epoch=None):
        self.redraws = 0
        if stage != sb.Stage.TRAIN:
            self.valid_summary = MetricSummary()
            self.valid_items_scored = 0
            self.audio_examples = {}

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            # Under DDP each process trained on its share of the batches: log them all.
            loss, nonfinite, redraws = sum_over_processes(
                [stage_loss, self.nonfinite_count, self.redraws]
            ).tolist()
            self.train_stats = {
                "loss": loss / world_size(),
                "nonfinite_steps": int(nonfinite),
                "silent_crop_redraws": int(redraws),
            }
            return
        stats = {"loss": stage_loss, **self.valid_summary.means()}
        if stage == sb.Stage.VALID:
            # ReduceLROnPlateau minimises, so it watches -SI-SDR. It only returns the
            # rates: the optimiser is changed here. `lr` in the log is the rate this
            # epoch trained with; the next epoch uses `next_lr`.
            lr, next_lr = self.hparams.lr_scheduler([self.optimizer], epoch, -stats["si_sdr"])
            sb.nnet.schedulers.update_learning_rate(self.optimizer, next_lr)
            self.hparams.epoch_counter.update_metric(stats["si_sdr"])
            meta = {
                "epoch": epoch,
                "lr": lr,
                "next_lr": next_lr,
                "train_minutes": round(self.hparams.train_budget.elapsed_minutes(), 2),
            }
            for train_logger in (self.hparams.text_logger, self.hparams.train_logger):
                train_logger.log_stats(meta, train_stats=self.train_stats, valid_stats=stats)
            if sb.utils.distributed.if_main_process():
                log_examples(
                    self.audio_examples,
                    self.hparams.samples_folder,
                    epoch,
                    self.hparams.sample_rate,
                    wandb_run=self.hparams.train_logger.run,
                )
            self.checkpointer.save_and_keep_only(
                meta={"si_sdr": stats["si_sdr"], "epoch": epoch},
                max_keys=["si_sdr"],
                num_to_keep=self.hparams.keep_checkpoints,
            )
        else:
            self.hparams.text_logger.log_stats(
                {"Epoch loaded": self.hparams.epoch_counter.current}, test_stats=stats
            )
            self.test_stats = stats


def dataio_prepare(hparams):
    """Train set (online mixing or static manifest) and the fixed valid set."""
    speakers = load_speakers_json(hparams["train_speakers"])
    label_encoder = hparams["label_encoder"]
    label_encoder.load_or_create(
        path=f"{hparams['save_folder']}/label_encoder.txt",
        from_iterables=[sorted(speakers)],
    )
    label_encoder.expect_len(len(speakers))

    @sb.utils.data_pipeline.takes("target_speaker")
    @sb.utils.data_pipeline.provides("speaker_index")
    def speaker_pipeline(target_speaker):
        return label_encoder.encode_label_torch(target_speaker)

    if hparams["online_mixing"]:
        noise_folder = hparams["noise_folder"]
        online_mixer = OnlineMixer(
            speakers,
            hparams["mixer"],
            segment_seconds=hparams["segment_seconds"],
            ref_seconds=hparams["reference_seconds"],
            seed=hparams["seed"],
            noise_files=find_noise_files(Path(noise_folder)) if noise_folder else None,
        )
        epoch_counter = hparams["epoch_counter"]
        items = {f"online_{i:07d}": {"index": i} for i in range(hparams["online_items_per_epoch"])}
        train_set = sb.dataio.dataset.DynamicItemDataset(items)

        # Fresh mixtures every epoch; the same (seed, epoch, index) gives the same mixture,
        # so a resumed epoch replays exactly what it would have seen.
        @sb.utils.data_pipeline.takes("index")
        @sb.utils.data_pipeline.provides("mix", "ref", "target", "target_speaker", "redraws")
        def online_pipeline(index):
            item = online_mixer.mix(index, epoch=epoch_counter.current)
            yield item["mix"]
            yield item["ref"]
            yield item["target"]
            yield item["target_speaker"]
            yield item["redraws"]

        train_set.add_dynamic_item(online_pipeline)
        output_keys = ["id", "mix", "ref", "target", "speaker_index", "redraws"]
    else:
        train_set = manifest_dataset(hparams["train_csv"], hparams["sample_rate"])
        output_keys = ["id", "mix", "ref", "target", "speaker_index"]
    train_set.add_dynamic_item(speaker_pipeline)
    train_set.set_output_keys(output_keys)

    valid_set = manifest_dataset(hparams["valid_csv"], hparams["sample_rate"])
    valid_set.set_output_keys(["id", "mix", "ref", "target"])
    return train_set, valid_set


def parse_command_line(argv):
    """``HPARAMS.yaml --key value ...`` -> (hparams file, SpeechBrain run options, overrides).

    Any top-level key of the yaml is an override, checked before anything is built
    (unknown keys, a number expected); the other options are SpeechBrain's run
    options (``--device``, ``--precision``, ...), parsed by ``sb.parse_arguments``.
    """
    run_options = [field.name for field in dataclasses.fields(RunOptions)]
    hparams_file, overrides, rest = parse_hparams_args(
        argv, __doc__, string_keys=("data_folder", "output_folder", "noise_folder"),
        passthrough=run_options,
    )
    # Yaml keys that are also run options (--precision, ...) go through SpeechBrain's
    # parser as well, so their values are checked the same way (flags excepted).
    checked = [token for key, value in overrides.items()
               if key in run_options and not isinstance(value, bool)
               for token in (f"--{key}", str(value))]
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            sb.parse_arguments([str(hparams_file), *checked])
            _, run_opts, _ = sb.parse_arguments([str(hparams_file), *rest])
    except SystemExit:
        lines = captured.getvalue().strip().splitlines() or ["bad run option"]
        raise BadInput(lines[-1].split("error: ", 1)[-1]) from None
    if run_opts["device"] is not None:
        check_device(run_opts["device"])
    return hparams_file, run_opts, overrides


#: Numeric hparams that must be > 0, and >= 0 (checked when present in the yaml).
POSITIVE_HPARAMS = ("batch_size", "valid_batch_size", "online_items_per_epoch",
                    "number_of_epochs", "segment_seconds", "reference_seconds", "lr")
NON_NEGATIVE_HPARAMS = ("num_workers", "max_train_minutes", "ce_weight",
                        "early_stop_patience", "lr_patience", "min_active_fraction")


def check_inputs(hparams_file, overrides) -> None:
    """Refuse, in one line each and before any model is built, what would stop training.

    A missing data folder, ``valid.csv``, ``train.csv`` or ``speakers.json``, a
    ``speakers.json`` with fewer than two speakers, a noise folder that does not exist,
    and any source file that cannot be decoded or is silent (each file is decoded once,
    about 3,000x real time).

    Raises
    ------
    modules.cli.BadInput
    """
    hparams = resolve_hparams(hparams_file, overrides)
    for key in (*POSITIVE_HPARAMS, *NON_NEGATIVE_HPARAMS):
        value = hparams.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # absent, null or built by a tag
        if value < 0 or (value == 0 and key in POSITIVE_HPARAMS):
            bound = "> 0" if key in POSITIVE_HPARAMS else ">= 0"
            raise BadInput(f"--{key} must be {bound}, got {value} ({hparams_file})")
    data = Path(str(hparams["data_folder"]))
    hint = "make it with mixing/make_mixtures.py, see the README"
    if not data.is_dir():
        raise BadInput(f"{data}: data folder not found ({hint})")
    valid_csv = Path(str(hparams["valid_csv"]))
    if not valid_csv.is_file():
        raise BadInput(f"{valid_csv}: no validation manifest (make_mixtures.py --num_valid N "
                       "--num_valid_speakers M writes it)")
    files = set()
    if hparams["online_mixing"]:
        speakers_json = Path(str(hparams["train_speakers"]))
        speakers = load_speakers_json(speakers_json)  # a FileError is a BadInput
        if len(speakers) < 2 or max(len(segments) for segments in speakers.values()) < 2:
            raise BadInput(
                f"{speakers_json}: {len(speakers)} training speaker(s), the most segments of "
                f"one {max(map(len, speakers.values()), default=0)}; online mixing needs at "
                "least 2 speakers (interferers are other training speakers), and one with 2 "
                "segments (a target and a reference)"
            )
        files |= {segment.path for segments in speakers.values() for segment in segments}
    elif not Path(str(hparams["train_csv"])).is_file():
        raise BadInput(f"{hparams['train_csv']}: no training manifest (--online_mixing False "
                       "reads it; make_mixtures.py --num_train N writes it)")
    noise = hparams.get("noise_folder")
    if noise and not Path(str(noise)).is_dir():
        raise BadInput(f"{noise}: noise folder not found")
    manifests = [valid_csv] + ([] if hparams["online_mixing"] else [Path(hparams["train_csv"])])
    for manifest in manifests:
        with open(manifest, encoding="utf-8", newline="") as stream:
            reader = csv.DictReader(stream)
            rows = list(reader)
        missing = {"ID", "mix_wav", "ref_wav", "target_wav"} - set(reader.fieldnames or ())
        if missing:
            raise BadInput(f"{manifest}: not a mixing manifest (no {', '.join(sorted(missing))} "
                           "column); mixing/make_mixtures.py writes one")
        if not rows:
            raise BadInput(f"{manifest}: no items")
        files |= {row[column] for row in rows for column in ("mix_wav", "ref_wav", "target_wav")
                  if row.get(column)}
    logger.info("Checking %d audio files before training", len(files))
    for path in sorted(files):
        problem = audio_problem(path) if Path(path).is_file() else "file not found"
        if problem:
            raise BadInput(f"{path}: {problem}")


def check_compiler(compile_requested: bool, device: str) -> None:
    """``--compile`` on CPU builds C++ kernels: refuse in one line when TorchInductor's
    compiler (``$CXX``, else ``g++``) is missing, instead of failing at the first step.

    Raises
    ------
    modules.cli.BadInput
    """
    compiler = os.environ.get("CXX", "g++")
    if compile_requested and torch.device(device).type == "cpu" and not shutil.which(compiler):
        raise BadInput(f"--compile True on CPU needs a C++ compiler for TorchInductor: "
                       f"{compiler} not found (install g++, set CXX or drop --compile)")


def _main(argv):
    # Denormal floats appear as the weights train and slow CPU convolutions >10x.
    torch.set_flush_denormal(True)
    hparams_file, run_opts, overrides = parse_command_line(argv)
    check_inputs(hparams_file, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)  # no-op without torchrun
    with open(hparams_file, encoding="utf-8") as fin:
        try:
            hparams = load_hyperpyyaml(fin, overrides)
        except ValueError as error:  # a class built by the yaml refused one of its values
            raise BadInput(f"{hparams_file}: {error}") from None
    # before the experiment folder is made (the Brain resolves these again later):
    # --compile is a yaml key (an override), --device usually a run option
    check_compiler(bool(hparams.get("compile") or run_opts.get("compile")),
                   run_opts.get("device") or hparams.get("device") or "cpu")  # fmt: skip
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    train_set, valid_set = dataio_prepare(hparams)

    brain = ExtractionBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        brain.hparams.epoch_counter,
        train_set,
        valid_set,
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    # Score the best checkpoint once more and publish it as a model directory.
    brain.evaluate(
        valid_set, max_key="si_sdr", test_loader_kwargs=hparams["valid_dataloader_opts"]
    )
    if sb.utils.distributed.if_main_process():
        plot_train_log(hparams["train_log"], f"{hparams['output_folder']}/curves.png")
        write_model_dir(
            brain.modules.model,  # write_model_dir unwraps DDP
            hparams["model_dir"],  # architecture: what the model recorded when built
            train_hparams_path=f"{hparams['output_folder']}/hyperparams.yaml",
            metrics={"valid": brain.test_stats},
        )
        logger.info("Model written to %s", hparams["model_dir"])


main = entry_point(_main, "train.py")


if __name__ == "__main__":
    sys.exit(main())
