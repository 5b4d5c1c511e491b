"""Every hparams file loads, and training and inference build the same model."""

from pathlib import Path

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from mixing.online import save_speakers_json
from mixing.references import Segment
from modules.model_dir import write_model_dir

REPO = Path(__file__).resolve().parents[2]
TRAIN_YAMLS = sorted((REPO / "recipes" / "LibriMix-TSE" / "hparams").glob("*.yaml"))


@pytest.fixture
def data_folder(tmp_path):
    """A data folder with only what loading the yaml needs: train/speakers.json."""
    speakers = {f"c:{i}": [Segment("/x.flac", 0, 16000)] for i in range(3)}
    save_speakers_json(tmp_path / "train" / "speakers.json", speakers)
    return tmp_path


def load_train_hparams(path, data_folder, tmp_path):
    overrides = {
        "data_folder": str(data_folder),
        "output_folder": str(tmp_path / "out"),
        "wandb_mode": "disabled",
    }
    with open(path, encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, overrides)


@pytest.mark.parametrize("yaml_path", TRAIN_YAMLS, ids=lambda p: p.name)
def test_training_and_inference_yaml_build_same_shapes(yaml_path, data_folder, tmp_path):
    hparams = load_train_hparams(yaml_path, data_folder, tmp_path)
    assert hparams["num_speakers"] == 3  # counted from train/speakers.json
    model_dir = write_model_dir(hparams["model"], tmp_path / "model")  # from the model alone
    inference = load_hyperpyyaml((model_dir / "inference.yaml").read_text())
    train_shapes = {
        k: v.shape
        for k, v in hparams["model"].state_dict().items()
        if not k.startswith("classifier.")
    }
    infer_shapes = {k: v.shape for k, v in inference["model"].state_dict().items()}
    assert train_shapes == infer_shapes


def test_paper_config_size(data_folder, tmp_path):
    hparams = load_train_hparams(TRAIN_YAMLS[0].parent / "spex_plus.yaml", data_folder, tmp_path)
    params = sum(p.numel() for p in hparams["model"].parameters())
    classifier = sum(p.numel() for p in hparams["model"].classifier.parameters())
    assert 11.1e6 <= params - classifier <= 11.4e6


def test_test_yaml_loads():
    with open(REPO / "hparams" / "test.yaml", encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, {"test_dir": "/nowhere"})
    assert hparams["metrics"][0] == "si_sdr"


def test_command_line_override_reaches_the_model(data_folder, tmp_path):
    overrides = {"data_folder": str(data_folder), "n_filters": 8, "wandb_mode": "disabled"}
    with open(TRAIN_YAMLS[0].parent / "tiny.yaml", encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    assert hparams["model"](torch.randn(1, 800), torch.randn(1, 1600))["est"].shape == (1, 800)
    assert hparams["model"].init_args["n_filters"] == 8  # what the model directory records
