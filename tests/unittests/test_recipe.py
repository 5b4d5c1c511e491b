"""The recipe's Brain on tiny tensors: a non-finite loss never reaches the weights."""

import importlib.util
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch

from modules.losses import SpExPlusLoss
from modules.spex_plus import SpExPlus

TRAIN_PY = Path(__file__).resolve().parents[2] / "recipes" / "LibriMix-TSE" / "train.py"


def load_recipe():
    spec = importlib.util.spec_from_file_location("tse_train_recipe", TRAIN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_brain():
    recipe = load_recipe()
    model = SpExPlus(
        n_filters=8, bottleneck_channels=8, hidden_channels=16, blocks_per_stack=2,
        num_stacks=1, speaker_channels=(8, 16), embedding_dim=8, num_speakers=3,
    )  # fmt: skip
    brain = recipe.ExtractionBrain(
        modules={"model": model},
        opt_class=lambda params: torch.optim.Adam(params, lr=1e-2),
        hparams={"loss": SpExPlusLoss()},
        run_opts={"device": "cpu", "skip_nonfinite_grads": True, "nonfinite_patience": 3},
    )
    brain.init_optimizers()
    brain.on_stage_start(sb.Stage.TRAIN)
    return brain


def batch(mix_scale=1.0):
    generator = torch.Generator().manual_seed(0)
    items = [
        {
            "id": f"utt{i}",
            "mix": torch.randn(1600, generator=generator) * mix_scale,
            "ref": torch.randn(2400, generator=generator),
            "target": torch.randn(1600, generator=generator),
            "speaker_index": torch.tensor([i]),
        }
        for i in range(2)
    ]
    return PaddedBatch(items)


def test_finite_batch_updates_weights():
    brain = tiny_brain()
    before = [p.detach().clone() for p in brain.modules.parameters()]
    loss = brain.fit_batch(batch())
    assert torch.isfinite(loss)
    after = list(brain.modules.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))


def test_nonfinite_loss_skips_the_step_and_is_counted():
    brain = tiny_brain()
    brain.nonfinite_count = 0
    before = [p.detach().clone() for p in brain.modules.parameters()]
    loss = brain.fit_batch(batch(mix_scale=float("nan")))
    assert not torch.isfinite(loss)
    assert brain.nonfinite_count == 1
    for b, a in zip(before, brain.modules.parameters(), strict=True):
        assert torch.equal(b, a)
    # Training goes on with finite weights afterwards.
    assert torch.isfinite(brain.fit_batch(batch()))


class _NoLogger:
    run = None

    def log_stats(self, *args, **kwargs):
        pass


class _Means:
    def __init__(self, si_sdr):
        self.si_sdr = si_sdr

    def means(self):
        return {"si_sdr": self.si_sdr}


def test_stalled_validations_halve_the_optimiser_rate(tmp_path):
    """ReduceLROnPlateau only returns rates: the recipe must apply them and log the rate used."""
    from speechbrain.utils.checkpoints import Checkpointer
    from speechbrain.utils.epoch_loop import EpochCounterWithStopper
    from speechbrain.utils.train_logger import FileTrainLogger

    from modules.training import TrainBudget

    brain = tiny_brain()
    patience = 2
    log = tmp_path / "train_log.txt"
    brain.hparams.lr_scheduler = sb.nnet.schedulers.ReduceLROnPlateau(
        lr_min=1e-5, factor=0.5, patience=patience, dont_halve_until_epoch=1
    )
    brain.hparams.epoch_counter = EpochCounterWithStopper(20, 20, 1, "max")
    brain.hparams.text_logger = FileTrainLogger(str(log))
    brain.hparams.train_logger = _NoLogger()
    brain.hparams.train_budget = TrainBudget(None)
    brain.hparams.samples_folder = str(tmp_path / "samples")
    brain.hparams.sample_rate = 16000
    brain.hparams.keep_checkpoints = 1
    brain.checkpointer = Checkpointer(tmp_path / "save", {"model": brain.modules.model})
    brain.train_stats = {"loss": 0.0}
    brain.audio_examples = {}
    rates = []
    # Valid SI-SDR improves twice, then stalls: `patience` stalled validations are
    # tolerated and the next one halves the rate.
    for epoch, si_sdr in enumerate([1.0, 2.0] + [1.5] * (patience + 1), start=1):
        brain.valid_summary = _Means(si_sdr)
        brain.on_stage_end(sb.Stage.VALID, 0.0, epoch)
        rates.append(brain.optimizer.param_groups[0]["lr"])
    assert rates == [1e-2] * (2 + patience) + [5e-3]
    lines = log.read_text().splitlines()
    assert "lr: 1.00e-02" in lines[-1] and "next_lr: 5.00e-03" in lines[-1], lines[-1]


def test_compile_on_cpu_without_a_compiler_is_refused_in_one_line(monkeypatch):
    recipe = load_recipe()
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    try:
        recipe.check_compiler(True, "cpu")
    except recipe.BadInput as error:
        assert "no-such-compiler-xyz not found" in str(error)
    else:
        raise AssertionError("no BadInput")
    recipe.check_compiler(False, "cpu")  # eager training needs no compiler
    recipe.check_compiler(True, "cuda:0")  # GPU kernels are Triton's, not C++
    monkeypatch.setenv("CXX", "sh")  # any executable passes the check
    recipe.check_compiler(True, "cpu")
