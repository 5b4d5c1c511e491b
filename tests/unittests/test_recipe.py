"""The recipe's Brain on tiny tensors: a non-finite loss never reaches the weights."""

import importlib.util
from pathlib import Path

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
