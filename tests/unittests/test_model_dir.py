"""Unit tests of modules/model_dir.py: written from the model, old directories still load."""

from __future__ import annotations

import pytest
import torch
import yaml

import modules.dvector
from modules.dvector import DVectorUnavailable
from modules.inference import TargetSpeakerExtractor
from modules.init_args import init_args
from modules.model_dir import (
    INFERENCE_DEFAULTS,
    TEMPLATE_PATH,
    ModelDirError,
    write_model_dir,
)
from modules.spex_plus import SpExPlus
from modules.voicefilter import VoiceFilter

#: inference.yaml as written before models recorded their arguments (one top-level key
#: per argument, a ``model: !new:`` block, the hook named in modules.inference).
OLD_FORMAT = """sample_rate: 16000
{arch}
num_speakers: 0  # trained with 3; not needed at inference
trained_num_speakers: 3
chunk_seconds: 4.0
hop_seconds: 2.0
max_whole_seconds: 30.0
model: !new:modules.spex_plus.SpExPlus
{refs}
modules:
    model: !ref <model>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        model: !ref <model>
    custom_hooks:
        model: !name:modules.inference.load_model_state
"""


@pytest.fixture(scope="module")
def tiny_model(tiny_args):
    torch.manual_seed(0)
    return SpExPlus(**tiny_args, num_speakers=3).eval()


def test_written_from_the_model_alone(tiny_model, tmp_path):
    dest = write_model_dir(tiny_model, tmp_path / "model")
    text = (dest / "inference.yaml").read_text()
    assert "model_class: modules.spex_plus.SpExPlus" in text and "!PLACEHOLDER" not in text
    loaded = TargetSpeakerExtractor.from_hparams(dest, run_opts={"device": "cpu"})
    assert init_args(loaded.model) == dict(
        init_args(tiny_model), num_speakers=0, pretrained_dvector=False
    )
    assert loaded.hparams.trained_args == {"num_speakers": 3, "pretrained_dvector": True}


def test_old_format_still_loads(tiny_model, tmp_path):
    args = {key: value for key, value in init_args(tiny_model).items() if key != "num_speakers"}
    old = tmp_path / "old"
    old.mkdir()
    torch.save(tiny_model.state_dict(), old / "model.ckpt")
    (old / "inference.yaml").write_text(OLD_FORMAT.format(
        arch="\n".join(f"{key}: {yaml.safe_dump(value, default_flow_style=True).strip()}"
                       .replace("\n...", "") for key, value in args.items()),
        refs="\n".join(f"    {key}: !ref <{key}>" for key in [*args, "num_speakers"]),
    ))
    loaded = TargetSpeakerExtractor.from_hparams(old, run_opts={"device": "cpu"})
    new = TargetSpeakerExtractor.from_model(tiny_model)
    mix, ref = torch.randn(8000), torch.randn(9000)
    torch.testing.assert_close(loaded.extract(mix, ref), new.extract(mix, ref))


def _dvector_model(kind: str, tiny_args: dict) -> torch.nn.Module:
    """A d-vector model as training builds it (pretrained_dvector true), without the weights."""
    torch.manual_seed(0)
    if kind == "spex_plus":
        model = SpExPlus(**dict(tiny_args, reference_encoder="dvector", pretrained_dvector=False))
    else:
        model = VoiceFilter(conv_channels=4, time_dilations=(1, 2), lstm_units=8, fc_units=8,
                           pretrained_dvector=False)
    model.init_args["pretrained_dvector"] = True  # what the training yaml records
    return model.eval()


@pytest.mark.parametrize("kind", ["spex_plus", "voicefilter"])
@pytest.mark.parametrize("written", ["now", "before_the_override"])
def test_dvector_model_dir_loads_without_the_resemblyzer_weights(
    kind, written, tiny_args, tmp_path, monkeypatch
):
    """model.ckpt holds every weight: building never reads resemblyzer's pretrained.pt."""
    model = _dvector_model(kind, tiny_args)
    dest = write_model_dir(model, tmp_path / "model")
    text = (dest / "inference.yaml").read_text()
    assert "pretrained_dvector: false" in text and "pretrained_dvector: true" in text
    if written == "before_the_override":  # model_args still say true
        text = text.replace("pretrained_dvector: false", "pretrained_dvector: true")
        (dest / "inference.yaml").write_text(text)

    def unavailable():
        raise DVectorUnavailable("resemblyzer weights unavailable (test)")

    monkeypatch.setattr(modules.dvector, "resemblyzer_weights", unavailable)
    with pytest.raises(DVectorUnavailable):  # the patch bites: a pretrained build would fail
        modules.dvector.DVectorEncoder(pretrained=True)
    loaded = TargetSpeakerExtractor.from_hparams(dest, run_opts={"device": "cpu"})
    assert init_args(loaded.model)["pretrained_dvector"] is False
    mix, ref = torch.randn(8000), torch.randn(9000)
    expected = TargetSpeakerExtractor.from_model(model).extract(mix, ref)
    torch.testing.assert_close(loaded.extract(mix, ref), expected)


def test_template_defaults_match_code():
    template = yaml.load(TEMPLATE_PATH.read_text(), Loader=yaml.BaseLoader)
    for key, value in INFERENCE_DEFAULTS.items():
        parsed = yaml.safe_load(template[key]) if template[key] != "null" else None
        assert parsed == value, key


def test_model_dir_errors(tiny_model, tmp_path):
    model_dir = write_model_dir(tiny_model, tmp_path / "tiny")
    with pytest.raises(ModelDirError, match="model directory not found"):
        TargetSpeakerExtractor.from_hparams(source=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelDirError, match="inference.yaml and model.ckpt missing"):
        TargetSpeakerExtractor.from_hparams(source=tmp_path / "empty")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "model.ckpt").write_bytes((model_dir / "model.ckpt").read_bytes())
    text = (model_dir / "inference.yaml").read_text().replace("n_filters: 64", "n_filters: 24")
    (wrong / "inference.yaml").write_text(text)
    with pytest.raises(ModelDirError, match="does not match the model built from inference.yaml"):
        TargetSpeakerExtractor.from_hparams(source=wrong, run_opts={"device": "cpu"})


def test_write_model_dir_is_atomic_and_replaces(tiny_model, tmp_path):
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    hparams = tmp_path / "train.yaml"
    hparams.write_text("lr: 0.001\n")
    write_model_dir(tiny_model, dest, hparams)
    assert (dest / "train_hparams.yaml").read_text() == "lr: 0.001\n"
    assert not (dest / "stale.txt").exists()
    before = (dest / "model.ckpt").read_bytes()
    hidden = tiny_model.init_args["hidden_channels"]
    tiny_model.init_args["hidden_channels"] = hidden + 8  # not what built it: verify fails
    try:
        with pytest.raises(ModelDirError):
            write_model_dir(tiny_model, dest)
    finally:
        tiny_model.init_args["hidden_channels"] = hidden
    assert (dest / "model.ckpt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "train.yaml"]


def test_a_model_that_does_not_record_its_arguments_is_refused(tmp_path):
    with pytest.raises(TypeError, match="records_init_args"):
        write_model_dir(torch.nn.Linear(2, 2), tmp_path / "linear")
