"""Graphs of a model for export, and its ``extract`` run by ONNX Runtime.

The wrappers (:class:`FullWrapper`, :class:`EmbedWrapper`,
:class:`ExtractWrapper`) are the graphs ``export_model.py`` writes; the last one
is also what ``runtime: onnxruntime`` of inference.yaml runs.

:class:`OnnxExtract` exports ``model.extract(mix, emb)["est"]`` (batch 1, any
length; the graph ``export_model.py`` writes as ``extract.onnx``) to ONNX in
memory and runs it with ONNX Runtime's CPU provider. It computes the same
function as the PyTorch model (within 1e-3 of the output peak; in practice
about 1e-4) and is faster on CPU, mostly from the graph optimisations
(convolutions fused with their activations). The reference embedding is
computed once per input, so it stays in PyTorch.

Example
-------
>>> import torch
>>> from modules.spex_plus import SpExPlus
>>> model = SpExPlus(n_filters=8, bottleneck_channels=8, hidden_channels=16,
...                  blocks_per_stack=2, num_stacks=1, speaker_channels=(8, 16),
...                  embedding_dim=8).eval()
>>> emb = model.embed_reference(torch.randn(1, 4000))[0]
>>> mix = torch.randn(1, 3001)
>>> fast = OnnxExtract(model, emb.shape[-1])
>>> bool(torch.allclose(fast(mix, emb), model.extract(mix, emb)["est"], atol=1e-4))
True
"""

from __future__ import annotations

import io
import logging
import warnings

import torch

logger = logging.getLogger(__name__)

#: Traced lengths (samples at 16 kHz), deliberately unlike common file lengths;
#: any length runs afterwards.
TRACE_MIX_SAMPLES = 68_111
TRACE_REF_SAMPLES = 50_021
ONNX_OPSET = 17


class FullWrapper(torch.nn.Module):
    """``(mix [1, T], ref [1, Tr]) -> est [1, T]``: embed the reference, extract."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, mix: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        emb = self.model.embed_reference(ref)[0]
        return self.model.extract(mix, emb)["est"]


class EmbedWrapper(torch.nn.Module):
    """``ref [1, Tr] -> emb [1, D]``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ref: torch.Tensor) -> torch.Tensor:
        return self.model.embed_reference(ref)[0]


class ExtractWrapper(torch.nn.Module):
    """``(mix [1, T], emb [1, D]) -> est [1, T]``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, mix: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.model.extract(mix, emb)["est"]


class OnnxExtract:
    """``model.extract`` exported to ONNX and run by ONNX Runtime on the CPU.

    Arguments
    ---------
    model : torch.nn.Module
        A model with ``extract(mix [B, T], emb [B, D]) -> {"est": [B, T]}``, in eval mode.
    embedding_dim : int
        ``D``, the size of the embeddings it will be given.
    threads : int or None
        ONNX Runtime intra-op threads; ``None``: ``torch.get_num_threads()``.
    """

    def __init__(self, model: torch.nn.Module, embedding_dim: int, threads: int | None = None):
        import onnxruntime

        graph = io.BytesIO()
        example = (torch.zeros(1, TRACE_MIX_SAMPLES), torch.zeros(1, int(embedding_dim)))
        # every non-trivial input, so that no branch is traced at a degenerate case
        example[0].normal_(generator=torch.Generator().manual_seed(0))
        example[1].normal_(generator=torch.Generator().manual_seed(1))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                ExtractWrapper(model).eval(), example, graph,
                input_names=["mix", "emb"], output_names=["est"],
                dynamic_axes={"mix": {1: "time"}, "est": {1: "time"}},
                opset_version=ONNX_OPSET, dynamo=False,
            )  # fmt: skip
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self.session = onnxruntime.InferenceSession(
            graph.getvalue(), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, mix: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``mix [1, T]``, ``emb [1, D]`` (CPU float32) -> ``est [1, T]``."""
        feeds = {
            "mix": mix.detach().float().cpu().contiguous().numpy(),
            "emb": emb.detach().float().cpu().contiguous().numpy(),
        }
        return torch.from_numpy(self.session.run(None, feeds)[0])
