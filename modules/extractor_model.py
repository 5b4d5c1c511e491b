"""The forward contract every target speaker extraction model of the project follows.

A model embeds the reference, then extracts that speaker from the mixture;
training, evaluation, chunked and streaming inference and export all go
through these three methods (:class:`modules.spex_plus.SpExPlus`,
:class:`modules.voicefilter.VoiceFilter`):

* ``embed_reference(ref [B, Tr], ref_lens) -> (emb [B, D], logits [B, S] | None)``
* ``extract(mix [B, T], emb [B, D], mix_lens) -> {"est": [B, T], "est_scales": [B, K, T], ...}``
* ``forward(mix, ref, ref_lens, mix_lens)``: both, plus ``"spk_logits"`` and ``"spk_emb"``.

Example
-------
>>> import torch
>>> class Scale(ExtractorModel):
...     def embed_reference(self, ref, ref_lens=None):
...         return ref.abs().mean(dim=-1, keepdim=True), None
...     def extract(self, mix, emb, mix_lens=None):
...         est = mix * emb
...         return {"est": est, "est_scales": est.unsqueeze(1)}
>>> out = Scale()(torch.ones(2, 5), torch.full((2, 3), 0.5))
>>> out["est"][0, 0].item(), out["spk_logits"], out["spk_emb"].shape
(0.5, None, torch.Size([2, 1]))
"""

from __future__ import annotations

import torch
from torch import nn


class ExtractorModel(nn.Module):
    """Base class: ``forward`` is :meth:`embed_reference` followed by :meth:`extract`."""

    def embed_reference(
        self, ref: torch.Tensor, ref_lens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B, Tr]`` references (relative lengths ``[B]``) -> ``([B, D], logits or None)``."""
        raise NotImplementedError

    def extract(
        self, mix: torch.Tensor, emb: torch.Tensor, mix_lens: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``[B, T]`` mixtures and ``[B, D]`` embeddings -> ``{"est": [B, T], ...}``."""
        raise NotImplementedError

    def forward(
        self,
        mix: torch.Tensor,
        ref: torch.Tensor,
        ref_lens: torch.Tensor | None = None,
        mix_lens: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Embed the reference and extract its speaker from the mixture.

        Arguments
        ---------
        mix : torch.Tensor
            ``[B, T]`` mixtures.
        ref : torch.Tensor
            ``[B, Tr]`` references.
        ref_lens : torch.Tensor or None
            ``[B]`` reference lengths relative to ``Tr`` (``None``: all full).
        mix_lens : torch.Tensor or None
            ``[B]`` mixture lengths relative to ``T`` (``None``: all full).

        Returns
        -------
        dict
            :meth:`extract`'s outputs (``"est"`` ``[B, T]``, ``"est_scales"``
            ``[B, K, T]``, ...) plus ``"spk_logits"`` ``[B, num_speakers]`` or
            ``None`` and ``"spk_emb"`` ``[B, D]``.
        """
        emb, logits = self.embed_reference(ref, ref_lens)
        outputs: dict[str, torch.Tensor | None] = {}
        for key, value in self.extract(mix, emb, mix_lens).items():
            outputs[key] = value
        outputs["spk_logits"] = logits
        outputs["spk_emb"] = emb
        return outputs
