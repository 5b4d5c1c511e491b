"""The model directory: what training writes and what the extractor loads.

::

    model_dir/
        inference.yaml      # hparams/inference.yaml filled with the trained model
        model.ckpt          # state_dict of the model (torch.save)
        train_hparams.yaml  # the training configuration (for the record)
        metrics.json        # final validation/test metrics (for the record)

:func:`write_model_dir` writes one from a trained model alone: the model's
class and the constructor arguments it recorded (:mod:`modules.init_args`) fill
the ``model_class``, ``model_args`` and ``trained_args`` keys of the template
``hparams/inference.yaml`` through HyperPyYAML (``resolve_references`` with
overrides), and the model is rebuilt from the written file and loaded before
the directory is published. :func:`check_model_dir` and :func:`load_model_state`
are what loading needs (:class:`modules.inference.TargetSpeakerExtractor`).

Speaker classifier: models trained with ``num_speakers > 0`` carry a speaker
classification head used only as a training loss. The model directory builds
the model with ``num_speakers: 0`` (the trained value is kept under
``trained_args``) and :func:`load_model_state` skips the weights of sub-modules
that the inference model does not have (the head); every weight the inference
model has must be in ``model.ckpt`` with the right shape, otherwise loading
fails. ``model.ckpt`` keeps the head, so a model directory can still be used to
resume or fine-tune with the classification loss.

Model directories written before the model recorded its arguments (a
``model: !new:CLASS`` block with one top-level key per argument) load as before.

Example
-------
>>> import tempfile, pathlib
>>> from modules.spex_plus import SpExPlus
>>> model = SpExPlus(n_filters=8, bottleneck_channels=8, hidden_channels=16,
...                  blocks_per_stack=1, num_stacks=1, speaker_channels=[8],
...                  embedding_dim=8, num_speakers=3)
>>> dest = write_model_dir(model, pathlib.Path(tempfile.mkdtemp()) / "model")
>>> sorted(path.name for path in dest.iterdir())
['inference.yaml', 'model.ckpt']
>>> from hyperpyyaml import load_hyperpyyaml
>>> hparams = load_hyperpyyaml((dest / HPARAMS_FILE).read_text())
>>> hparams["model_args"]["num_speakers"], hparams["trained_args"]
(0, {'num_speakers': 3, 'pretrained_dvector': True})
"""

from __future__ import annotations

import importlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from hyperpyyaml import load_hyperpyyaml, resolve_references

from modules.audio import SAMPLE_RATE
from modules.files import FileError, atomic_dir
from modules.init_args import init_args

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = REPO_ROOT / "hparams" / "inference.yaml"
HPARAMS_FILE = "inference.yaml"
CKPT_FILE = "model.ckpt"

#: Inference settings and their defaults (the values of ``hparams/inference.yaml``);
#: a model directory whose ``inference.yaml`` lacks one gets the default.
INFERENCE_DEFAULTS = {
    "sample_rate": SAMPLE_RATE,
    "chunk_seconds": 4.0,
    "hop_seconds": 2.0,
    "max_whole_seconds": 30.0,
    "min_ref_seconds": 0.5,
    "min_mix_seconds": 0.1,
    "silence_dbfs": -80.0,
    "input_lufs": -20.0,
    "target_lufs": None,
    "max_gain_db": 30.0,
    "peak_limit": 0.99,
    "runtime": "torch",
}

#: Constructor arguments forced when a model is built from a model directory, where a
#: model has them: the speaker classifier is not built (``num_speakers``), and no
#: pretrained weights are loaded at build time (``pretrained_dvector``: model.ckpt holds
#: every weight, so the resemblyzer package need not be installed to use the model).
INFERENCE_ARCH_OVERRIDES = {"num_speakers": 0, "pretrained_dvector": False}

_PLAIN = (type(None), bool, int, float, str)


class ModelDirError(FileError):
    """A model directory that cannot be written or loaded (``path``, ``problem``)."""


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def inference_args(model_args: dict) -> tuple[dict, dict]:
    """``model_args`` with :data:`INFERENCE_ARCH_OVERRIDES` applied, and what they replaced.

    Only the arguments the model has are overridden.

    Example
    -------
    >>> args, replaced = inference_args({"num_speakers": 3, "pretrained_dvector": True, "width": 8})
    >>> args
    {'num_speakers': 0, 'pretrained_dvector': False, 'width': 8}
    >>> replaced
    {'num_speakers': 3, 'pretrained_dvector': True}
    >>> inference_args({"width": 8})
    ({'width': 8}, {})
    """
    model_args, replaced = dict(model_args), {}
    for key, value in INFERENCE_ARCH_OVERRIDES.items():
        if key in model_args and model_args[key] != value:
            replaced[key] = model_args[key]
            model_args[key] = value
    return model_args, replaced


def build_model(model_class: str, model_args: dict) -> torch.nn.Module:
    """Import ``model_class`` (``"package.module.Class"``) and build it for inference.

    This is what ``inference.yaml`` calls (``!apply:modules.model_dir.build_model``).
    ``model_args`` get the :func:`inference_args` overrides, so a directory written
    before an override existed (``pretrained_dvector: true``) builds the same way.

    Example
    -------
    >>> build_model("torch.nn.Linear", {"in_features": 2, "out_features": 3}).weight.shape
    torch.Size([3, 2])
    """
    module_name, _, class_name = model_class.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**inference_args(model_args)[0])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """Strip DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, torch.nn.DataParallel | torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _strip_prefixes(state_dict: dict) -> dict:
    """Remove the ``module.`` / ``_orig_mod.`` prefixes that wrappers add to every key."""
    for prefix in ("module.", "_orig_mod."):
        if state_dict and all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
    return state_dict


def load_model_state(model: torch.nn.Module, path) -> None:
    """Load ``model.ckpt`` into ``model``: strict, except for sub-modules not built.

    This is the Pretrainer hook named in ``inference.yaml``. A weight whose
    owning sub-module does not exist in ``model`` (the speaker classifier of a
    model trained with ``num_speakers > 0`` and built with ``num_speakers=0``)
    is skipped (logged at debug level); a missing weight, a mis-shaped weight or an
    unknown weight of an existing sub-module is an error.

    Arguments
    ---------
    model : torch.nn.Module
        The freshly built inference model.
    path : str or Path
        A ``torch.save``'d state_dict.

    Raises
    ------
    ModelDirError
        The checkpoint does not fit the model built from ``inference.yaml``.

    Example
    -------
    >>> import tempfile, pathlib, torch
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.ckpt"
    >>> trained = torch.nn.ModuleDict({"net": torch.nn.Linear(2, 2), "head": torch.nn.Linear(2, 5)})
    >>> torch.save(trained.state_dict(), path)
    >>> inference = torch.nn.ModuleDict({"net": torch.nn.Linear(2, 2)})
    >>> load_model_state(inference, path)
    >>> torch.equal(inference["net"].weight, trained["net"].weight)
    True
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ModelDirError(path, "empty checkpoint file (0 bytes): copy or train it again")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelDirError(path, f"cannot read the checkpoint ({error})") from None
    if not isinstance(state_dict, dict):
        raise ModelDirError(path, f"expected a state_dict, found a {type(state_dict).__name__}")
    state_dict = _strip_prefixes(state_dict)
    expected = model.state_dict()
    skipped, unknown = [], []
    for key in list(state_dict):
        if key in expected:
            continue
        owner = key.rsplit(".", 1)[0] if "." in key else ""
        try:
            model.get_submodule(owner)
            unknown.append(key)
        except AttributeError:
            skipped.append(key)
            del state_dict[key]
    missing = [key for key in expected if key not in state_dict]
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"missing weights {_preview(missing)}")
        if unknown:
            problems.append(f"unexpected weights {_preview(unknown)}")
        raise ModelDirError(
            path,
            "checkpoint does not match the model built from inference.yaml ("
            + "; ".join(problems)
            + "): is the architecture in inference.yaml the trained one?",
        )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1].strip()
        raise ModelDirError(
            path, f"checkpoint does not match the model built from inference.yaml ({first})"
        ) from None
    if skipped:
        owners = sorted({key.split(".")[0] for key in skipped})
        logger.debug(
            "%s: skipped %d weights of modules not used at inference: %s",
            path.name,
            len(skipped),
            ", ".join(owners),
        )


def _preview(keys: list[str], count: int = 3) -> str:
    shown = ", ".join(keys[:count])
    return shown + (f" and {len(keys) - count} more" if len(keys) > count else "")


def check_model_dir(path) -> Path:
    """Check that ``path`` holds ``inference.yaml`` and ``model.ckpt``; return it.

    Raises
    ------
    ModelDirError
        Naming the directory and what is missing.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelDirError(path, "model directory not found")
    if not path.is_dir():
        raise ModelDirError(path, "not a directory (expected a model directory)")
    missing = [name for name in (HPARAMS_FILE, CKPT_FILE) if not (path / name).is_file()]
    if missing:
        raise ModelDirError(
            path,
            f"not a model directory: {' and '.join(missing)} missing (a model directory is "
            "written at the end of training or by download_model.py)",
        )
    return path


def model_args_from_hparams(hparams_file, key: str = "model") -> dict:
    """The constructor arguments a training yaml gives its model, read without building it.

    Each argument of the ``key:`` block that is a plain value, or a ``!ref`` to a
    top-level plain value, is returned; arguments computed at load time (an
    ``!apply:``, such as ``num_speakers`` counted from the data) are left out.
    Tests and benchmarks build their small models from ``tiny.yaml`` this way, so
    the sizes are written once.

    Example
    -------
    >>> args = model_args_from_hparams(REPO_ROOT / "recipes/LibriMix-TSE/hparams/tiny.yaml")
    >>> args["n_filters"], "num_speakers" in args
    (64, False)
    """
    import ruamel.yaml

    tree = ruamel.yaml.YAML().load(Path(hparams_file).read_text(encoding="utf-8"))
    args = {}
    for name, node in tree[key].items():
        tag = getattr(getattr(node, "tag", None), "value", None)
        if tag == "!ref" and str(node.value).startswith("<") and str(node.value).endswith(">"):
            node = tree.get(str(node.value)[1:-1])
            tag = getattr(getattr(node, "tag", None), "value", None)
        if tag is None or not tag.startswith("!"):
            args[name] = _plain(node)
    return args


def _plain(node):
    if isinstance(node, dict):
        return {str(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    return node


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def render_inference_yaml(
    model_class: str, model_args: dict, trained_args: dict | None = None, template_path=None
) -> str:
    """Fill the template ``hparams/inference.yaml`` with a model's class and arguments.

    The template's ``model_class``, ``model_args`` and ``trained_args`` are
    overridden through HyperPyYAML (``resolve_references``); its settings and
    comments are kept.

    Arguments
    ---------
    model_class : str
        Import path of the class, e.g. ``"modules.spex_plus.SpExPlus"``.
    model_args : dict
        Constructor keyword arguments (plain YAML values).
    trained_args : dict, optional
        Arguments that inference replaces (:data:`INFERENCE_ARCH_OVERRIDES`),
        with the values the model was trained with (for the record).
    template_path : str or Path, optional
        The template (default: ``hparams/inference.yaml`` of this repository).

    Returns
    -------
    str
        The text of a model directory's ``inference.yaml``.

    Example
    -------
    >>> text = render_inference_yaml("torch.nn.Identity", {"unused": 16})
    >>> "model_class: torch.nn.Identity" in text and "unused: 16" in text
    True
    """
    _check_plain(model_args, "model_args")
    _check_plain(trained_args or {}, "trained_args")
    template = Path(template_path or TEMPLATE_PATH).read_text(encoding="utf-8")
    overrides = {
        "model_class": model_class,
        "model_args": dict(model_args),
        "trained_args": dict(trained_args or {}),
    }
    return resolve_references(template, overrides).getvalue()


def _check_plain(value, where: str) -> None:
    """Refuse values that do not survive a YAML round trip unchanged."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a string")
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif not isinstance(value, _PLAIN):
        raise ValueError(
            f"{where} is a {type(value).__name__}: only plain YAML values (numbers, strings, "
            "booleans, None, lists, mappings) can be written to inference.yaml"
        )


def write_model_dir(
    model: torch.nn.Module,
    dest,
    train_hparams_path=None,
    metrics: dict | None = None,
    template_path=None,
    verify: bool = True,
) -> Path:
    """Write a loadable model directory from a trained model, atomically.

    The class and the recorded constructor arguments of ``model`` (see
    :mod:`modules.init_args`) go into ``inference.yaml``, with the inference
    overrides (:func:`inference_args`): ``num_speakers`` (if any) is written as 0
    (the classifier is not built at inference; its weights stay in ``model.ckpt``)
    and ``pretrained_dvector`` as false, the trained values under ``trained_args``. Files
    are written to a temporary folder beside ``dest`` that then replaces it.

    Arguments
    ---------
    model : torch.nn.Module
        The trained model (wrappers such as DataParallel or torch.compile are
        removed). Its class must be importable and record its arguments.
    dest : str or Path
        The model directory to create (replaced if it exists).
    train_hparams_path : str or Path, optional
        The training hparams file, copied as ``train_hparams.yaml``.
    metrics : dict, optional
        Written as ``metrics.json``.
    template_path : str or Path, optional
        The inference.yaml template (default ``hparams/inference.yaml``).
    verify : bool
        Build the model from the written inference.yaml and load model.ckpt into
        it before publishing the directory, so that a problem shows at the end
        of training rather than at the user's.

    Returns
    -------
    Path
        ``dest``.
    """
    dest = Path(dest)
    model = unwrap(model)
    cls = type(model)
    model_class = f"{cls.__module__}.{cls.__qualname__}"
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise ValueError(f"model class {model_class} is not importable: define it in a module")
    model_args, trained_args = inference_args(init_args(model))
    text = render_inference_yaml(model_class, model_args, trained_args, template_path)

    with atomic_dir(dest) as tmp:
        (tmp / HPARAMS_FILE).write_text(text, encoding="utf-8")
        state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
        torch.save(state_dict, tmp / CKPT_FILE)
        if train_hparams_path is not None:
            shutil.copyfile(train_hparams_path, tmp / "train_hparams.yaml")
        if metrics is not None:
            (tmp / "metrics.json").write_text(  # the whole folder is renamed into place
                json.dumps(metrics, indent=2, default=_json_default) + "\n", encoding="utf-8"
            )
        if verify:
            try:
                hparams = load_hyperpyyaml(text)
            except (ImportError, AttributeError, TypeError, ValueError) as error:
                raise ModelDirError(
                    dest / HPARAMS_FILE,
                    f"{model_class}({model_args}) cannot be rebuilt "
                    f"({type(error).__name__}: {error})",
                ) from None
            load_model_state(hparams["model"], tmp / CKPT_FILE)
    logger.info("wrote model directory %s (%s)", dest, model_class)
    return dest


def _json_default(value):
    if isinstance(value, torch.Tensor | np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to metrics.json")
