#!/usr/bin/env python3
"""Export a trained model to TorchScript and ONNX for use without this toolkit.

::

    python export_model.py --model_dir MODEL_DIR --out EXPORT_DIR [--format torchscript onnx]

Three graphs are written for each format (inputs are 16 kHz mono float32, batch 1,
any length):

============  ================================  ===================
name          inputs                            output
============  ================================  ===================
``tse``       ``mix [1, T]``, ``ref [1, Tr]``   ``est [1, T]``
``embed``     ``ref [1, Tr]``                   ``emb [1, D]``
``extract``   ``mix [1, T]``, ``emb [1, D]``    ``est [1, T]``
============  ================================  ===================

``embed`` + ``extract`` let an application embed the reference once and run
the extractor chunk by chunk (see ``modules/inference.py`` for the overlap-add).
Files: ``tse.ts``, ``embed.ts``, ``extract.ts`` (load with ``torch.jit.load``),
``tse.onnx``, ``embed.onnx``, ``extract.onnx`` (opset 17, dynamic time axes;
run with onnxruntime), and ``export_info.json`` (sample rate, shapes, the
largest difference to the PyTorch model found by the check).

TorchScript graphs are traced (``torch.jit.trace``): the model's Python control
flow is fixed at the traced case, which holds for every reference of at least
``min_ref_seconds`` (inference.yaml) and every mixture of at least
``min_mix_seconds``. ONNX uses the TorchScript-based exporter
(``dynamo=False``), which needs no extra packages.

After export every graph is run on inputs of other lengths than the traced
ones (white noise, or ``--check_mix`` / ``--check_ref`` files) and compared
with the PyTorch model; a difference above ``--tolerance`` (relative to the
output peak) is an error and nothing is left at ``--out``.

Exit status (every command-line tool of the project): 0 done, 2 bad input or
usage (model directory, check files, an ``--out`` that is a file or cannot be
written: checked before the model is loaded; one line
``export_model.py: error: ...``), 1 failure (an export that does not match the
model, a bug).
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import torch

from modules.cli import (
    ArgumentParser,
    BadInput,
    check_writable_dir,
    entry_point,
    is_inside,
)
from modules.onnx_runtime import (
    ONNX_OPSET,
    TRACE_MIX_SAMPLES,
    TRACE_REF_SAMPLES,
    EmbedWrapper,
    ExtractWrapper,
    FullWrapper,
)

logger = logging.getLogger("export_model")

# Checked lengths (samples at 16 kHz), unlike the traced ones and common file lengths.
CHECK_MIX_SAMPLES = 43_205
CHECK_REF_SAMPLES = 30_407


class ExportMismatch(Exception):
    """An exported graph that does not compute what the PyTorch model computes."""


GRAPHS = {
    "tse": (FullWrapper, ("mix", "ref"), "est"),
    "embed": (EmbedWrapper, ("ref",), "emb"),
    "extract": (ExtractWrapper, ("mix", "emb"), "est"),
}
DYNAMIC_AXES = {"mix": {1: "time"}, "ref": {1: "ref_time"}, "est": {1: "time"}}


def _inputs(model, mix: torch.Tensor, ref: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        emb = model.embed_reference(ref)[0]
    return {"mix": mix, "ref": ref, "emb": emb}


def export_torchscript(model, out_dir: Path, example: dict) -> dict[str, Path]:
    """Trace the three graphs; returns ``{name: path}``."""
    paths = {}
    for name, (wrapper, inputs, _) in GRAPHS.items():
        module = wrapper(model).eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, tuple(example[i] for i in inputs), check_trace=False)
        paths[name] = out_dir / f"{name}.ts"
        traced.save(str(paths[name]))
    return paths


def export_onnx(model, out_dir: Path, example: dict) -> dict[str, Path]:
    """Export the three graphs to ONNX (opset 17, dynamic time axes)."""
    paths = {}
    for name, (wrapper, inputs, output) in GRAPHS.items():
        paths[name] = out_dir / f"{name}.onnx"
        axes = {key: DYNAMIC_AXES[key] for key in (*inputs, output) if key in DYNAMIC_AXES}
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper(model).eval(),
                tuple(example[i] for i in inputs),
                str(paths[name]),
                input_names=list(inputs),
                output_names=[output],
                dynamic_axes=axes,
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
    return paths


def check_exports(model, paths: dict, check: dict, tolerance: float) -> dict[str, float]:
    """Run every exported graph on ``check`` inputs; max |difference| / peak per file.

    Raises
    ------
    ExportMismatch
        A graph differs from the PyTorch model by more than ``tolerance``.
    """
    errors = {}
    for (fmt, name), path in paths.items():
        wrapper, inputs, _ = GRAPHS[name]
        args = tuple(check[i] for i in inputs)
        with torch.no_grad():
            expected = wrapper(model).eval()(*args)
        if fmt == "torchscript":
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = torch.jit.load(str(path))(*args)
        else:
            import onnxruntime

            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            feeds = {key: value.numpy() for key, value in zip(inputs, args, strict=True)}
            got = torch.from_numpy(session.run(None, feeds)[0])
        if got.shape != expected.shape:
            raise ExportMismatch(
                f"{path.name}: output shape {tuple(got.shape)} for inputs "
                f"{[tuple(a.shape) for a in args]}, expected {tuple(expected.shape)}"
            )
        scale = max(float(expected.abs().max()), 1.0)
        error = float((got - expected).abs().max()) / scale
        errors[path.name] = error
        if error > tolerance:
            raise ExportMismatch(
                f"{path.name} differs from the PyTorch model by {error:.2e} (relative to the "
                f"peak) at input lengths {[a.shape[-1] for a in args]} (tolerance {tolerance:g})"
            )
    return errors


def _load_check_signal(path, extractor, samples: int, generator) -> torch.Tensor:
    if path is not None:
        from modules.audio import load_audio

        wav, _, notes = load_audio(path, sample_rate=extractor.sample_rate, mono="mix")
        for note in notes:
            logger.info("notice: %s", note)
        return wav[None]
    return 0.1 * torch.randn(1, samples, generator=generator)


def export_model(
    model_dir,
    out,
    formats=("torchscript", "onnx"),
    check_mix=None,
    check_ref=None,
    tolerance: float = 1e-4,
) -> dict:
    """Export a model directory; returns the ``export_info.json`` content.

    The graphs are written to a temporary directory, checked, then moved to
    ``out`` (replacing it), so a failed export leaves nothing behind.
    """
    from modules.files import atomic_dir
    from modules.inference import TargetSpeakerExtractor

    extractor = TargetSpeakerExtractor.from_hparams(source=model_dir, run_opts={"device": "cpu"})
    model = extractor.model.eval()
    generator = torch.Generator().manual_seed(0)
    rate = extractor.sample_rate
    trace_mix = 0.1 * torch.randn(1, TRACE_MIX_SAMPLES, generator=generator)
    trace_ref = 0.1 * torch.randn(1, TRACE_REF_SAMPLES, generator=generator)
    check_mix_wav = _load_check_signal(check_mix, extractor, CHECK_MIX_SAMPLES, generator)
    check_ref_wav = _load_check_signal(check_ref, extractor, CHECK_REF_SAMPLES, generator)
    if check_mix_wav.shape[-1] == TRACE_MIX_SAMPLES:  # the check must use another length
        check_mix_wav = check_mix_wav[..., :-1001]
    if check_ref_wav.shape[-1] == TRACE_REF_SAMPLES:
        check_ref_wav = check_ref_wav[..., :-1001]
    example = _inputs(model, trace_mix, trace_ref)
    check = _inputs(model, check_mix_wav, check_ref_wav)

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    with atomic_dir(out) as tmp:
        paths = {}
        if "torchscript" in formats:
            for name, path in export_torchscript(model, tmp, example).items():
                paths["torchscript", name] = path
        if "onnx" in formats:
            for name, path in export_onnx(model, tmp, example).items():
                paths["onnx", name] = path
        errors = check_exports(model, paths, check, tolerance)
        info = {
            "model_dir": str(Path(model_dir).resolve()),
            "sample_rate": rate,
            "embedding_dim": int(example["emb"].shape[-1]),
            "min_mix_samples": extractor.min_mix_samples,
            "min_ref_samples": extractor.min_ref_samples,
            "graphs": {
                name: {"inputs": list(inputs), "output": output}
                for name, (_, inputs, output) in GRAPHS.items()
            },
            "files": sorted(path.name for path in paths.values()),
            "onnx_opset": ONNX_OPSET if "onnx" in formats else None,
            "traced_lengths": [trace_mix.shape[-1], trace_ref.shape[-1]],
            "checked_lengths": [check_mix_wav.shape[-1], check_ref_wav.shape[-1]],
            "max_relative_error": errors,
            "torch_version": torch.__version__,
        }
        with open(tmp / "export_info.json", "w", encoding="utf-8") as handle:
            json.dump(info, handle, indent=2)
            handle.write("\n")
    return info


def _main(argv) -> int:
    parser = ArgumentParser(prog="export_model.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, help="model directory to export")
    parser.add_argument("--out", required=True, help="output directory (replaced)")
    parser.add_argument(
        "--format", nargs="+", choices=["torchscript", "onnx"], default=["torchscript", "onnx"]
    )
    parser.add_argument("--check_mix", help="audio file for the equivalence check (mixture)")
    parser.add_argument("--check_ref", help="audio file for the equivalence check (reference)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max relative difference")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logger.setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:  # SpeechBrain's INFO messages are noise here
        handler.addFilter(
            lambda record: record.levelno >= logging.WARNING
            or not record.name.startswith("speechbrain")
        )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out}: --out exists and is not a directory")
    if is_inside(out, args.model_dir) or is_inside(args.model_dir, out):
        raise BadInput(f"{out}: --out would replace or lie inside the model directory "
                       f"{args.model_dir}: choose another folder")
    check_writable_dir(out.parent, "--out")
    for path in (args.check_mix, args.check_ref):
        if path is not None and not Path(path).is_file():
            raise BadInput(f"{path}: file not found")
    try:
        info = export_model(
            args.model_dir, args.out, args.format, args.check_mix, args.check_ref, args.tolerance
        )
    except ExportMismatch as error:
        print(f"export_model.py: error: {error}; nothing written", file=sys.stderr)
        return 1
    worst = max(info["max_relative_error"].values(), default=0.0)
    print(f"wrote {', '.join(info['files'])} to {args.out} (max relative error {worst:.1e})")
    return 0


main = entry_point(_main, "export_model.py")


if __name__ == "__main__":
    sys.exit(main())
