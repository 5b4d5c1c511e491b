"""Padding-aware SI-SDR and the SpEx+ multi-task training loss.

Example
-------
>>> import torch
>>> target = torch.randn(2, 800)
>>> bool((batch_si_sdr(target, target) > 60).all())
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def absolute_lengths(
    lengths: torch.Tensor | None, num_samples: int, like: torch.Tensor
) -> torch.Tensor:
    """``[B]`` sample counts (long) of a padded batch from its relative lengths.

    The one conversion of SpeechBrain's relative lengths in the project:
    ``round(lengths * num_samples)``, clamped to ``[1, num_samples]`` (an item is
    never empty). Tensor arithmetic only, so traced graphs keep it for any length.

    Arguments
    ---------
    lengths : torch.Tensor or None
        ``[B]`` lengths relative to ``num_samples``; ``None``: every item is full.
    num_samples : int
        ``T`` of the padded batch.
    like : torch.Tensor
        ``[B, ...]`` tensor giving the batch size and device.

    Returns
    -------
    torch.Tensor
        ``[B]`` integer lengths.

    Example
    -------
    >>> absolute_lengths(torch.tensor([1.0, 0.5, 0.0]), 4, torch.zeros(3, 4))
    tensor([4, 2, 1])
    >>> absolute_lengths(None, 4, torch.zeros(2, 4))
    tensor([4, 4])
    """
    if lengths is None:
        lengths = torch.ones(like.shape[0], device=like.device)
    return torch.round(lengths.to(like.device) * num_samples).long().clamp(1, num_samples)


def length_mask(lengths: torch.Tensor | None, num_samples: int, like: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` 0/1 mask (dtype of ``like``) of the samples inside each length.

    Arguments
    ---------
    lengths : torch.Tensor or None
        ``[B]`` lengths relative to ``num_samples`` (SpeechBrain convention);
        ``None``: everything is valid.
    num_samples : int
        ``T``.
    like : torch.Tensor
        ``[B, ...]`` tensor giving the batch size, dtype and device.

    Returns
    -------
    torch.Tensor
        ``[B, T]``.

    Example
    -------
    >>> length_mask(torch.tensor([1.0, 0.5]), 4, torch.zeros(2, 4))
    tensor([[1., 1., 1., 1.],
            [1., 1., 0., 0.]])
    """
    if lengths is None:
        return torch.ones(like.shape[0], num_samples, dtype=like.dtype, device=like.device)
    abs_lens = absolute_lengths(lengths, num_samples, like)
    # [T] < [B, 1] -> [B, T]
    mask = torch.arange(num_samples, device=like.device).unsqueeze(0) < abs_lens.unsqueeze(1)
    return mask.to(like.dtype)


def batch_si_sdr(
    est: torch.Tensor,
    target: torch.Tensor,
    lengths: torch.Tensor | None = None,
    zero_mean: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Scale-invariant SDR in dB of each item of a padded batch (the training convention).

    Zero-mean by default, unlike the graded number
    (:func:`modules.metrics.si_sdr_graded`, no mean removed). Samples past each
    item's length are masked out before the means and the energies, so their
    values do not matter. The inputs are not modified.

    Arguments
    ---------
    est : torch.Tensor
        ``[B, T]`` estimates.
    target : torch.Tensor
        ``[B, T]`` references.
    lengths : torch.Tensor or None
        ``[B]`` lengths relative to ``T`` in ``(0, 1]``; ``None``: all full.
    zero_mean : bool
        Remove each signal's mean (over its valid samples) first.
    eps : float
        Stabiliser added to the projection and residual energies.

    Returns
    -------
    torch.Tensor
        ``[B]`` SI-SDR in dB.

    Example
    -------
    >>> import torch
    >>> target = torch.randn(2, 1000)
    >>> est = target + 0.1 * torch.randn(2, 1000)
    >>> batch_si_sdr(est, target, torch.tensor([1.0, 0.5])).shape
    torch.Size([2])
    """
    if est.shape != target.shape or est.dim() != 2:
        raise ValueError(
            f"batch_si_sdr expects est and target of the same [B, T] shape, got "
            f"{tuple(est.shape)} and {tuple(target.shape)}"
        )
    # [B] -> [B, T]
    mask = length_mask(lengths, est.shape[-1], est)
    est = est * mask
    target = target * mask
    if zero_mean:
        # [B, T] -> [B, 1]
        count = mask.sum(dim=-1, keepdim=True)
        est = (est - est.sum(dim=-1, keepdim=True) / count) * mask
        target = (target - target.sum(dim=-1, keepdim=True) / count) * mask
    # [B, T] -> [B, 1]
    dot = (est * target).sum(dim=-1, keepdim=True)
    target_energy = target.pow(2).sum(dim=-1, keepdim=True)
    # [B, T]
    projection = dot / (target_energy + eps) * target
    residual = est - projection
    # [B, T] -> [B]
    ratio = (projection.pow(2).sum(dim=-1) + eps) / (residual.pow(2).sum(dim=-1) + eps)
    return 10 * torch.log10(ratio)


class SpExPlusLoss(nn.Module):
    """SpEx+ multi-task loss: weighted multi-scale SI-SDR plus speaker cross-entropy.

    ``loss = -mean_b(sum_i w_i * SI-SDR(s_i, target)) + ce_weight * CE``, where
    the CE term is added only when ``speaker_index`` is given and the model has
    a classifier (``outputs["spk_logits"]`` not ``None``). Items whose index is
    ``ignore_index`` (speaker not among the training speakers) do not count in
    the CE; if every item is ignored the CE is 0.

    Arguments
    ---------
    scale_weights : tuple of float
        Weights of the short, middle and long scale SI-SDR (``1 - a - b``, ``a``, ``b``).
    ce_weight : float
        Weight of the speaker classification cross-entropy (``gamma``).
    ignore_index : int
        Speaker index excluded from the CE.

    Example
    -------
    >>> import torch
    >>> target = torch.randn(2, 500)
    >>> outputs = {"est_scales": target.unsqueeze(1).repeat(1, 3, 1),
    ...            "spk_logits": torch.randn(2, 4)}
    >>> result = SpExPlusLoss()(outputs, target, torch.tensor([1.0, 0.8]), torch.tensor([3, -1]))
    >>> result["loss"].shape, result["si_sdr"].shape, result["ce"].shape
    (torch.Size([]), torch.Size([2]), torch.Size([]))
    >>> SpExPlusLoss()(outputs, target)["ce"] is None
    True
    """

    def __init__(self, scale_weights=(0.8, 0.1, 0.1), ce_weight: float = 0.5, ignore_index=-1):
        super().__init__()
        self.scale_weights = tuple(float(w) for w in scale_weights)
        self.ce_weight = float(ce_weight)
        self.ignore_index = int(ignore_index)

    def forward(
        self,
        outputs: dict,
        target: torch.Tensor,
        lengths: torch.Tensor | None = None,
        speaker_index: torch.Tensor | None = None,
    ) -> dict:
        """Compute the loss.

        Arguments
        ---------
        outputs : dict
            Model outputs: ``"est_scales"`` ``[B, S, T]`` (``S = len(scale_weights)``)
            and optionally ``"spk_logits"`` ``[B, num_speakers]`` or ``None``.
        target : torch.Tensor
            ``[B, T]`` clean target speech.
        lengths : torch.Tensor or None
            ``[B]`` relative lengths of ``target`` (``None``: all full).
        speaker_index : torch.Tensor or None
            ``[B]`` long training-speaker indices (``ignore_index`` for unknown
            speakers); ``None`` skips the CE (e.g. validation).

        Returns
        -------
        dict
            ``"loss"``: scalar to minimise; ``"si_sdr"``: ``[B]`` SI-SDR (dB,
            detached) of the short-scale estimate; ``"ce"``: detached scalar CE
            or ``None`` when it was skipped.
        """
        est_scales = outputs["est_scales"]
        batch, num_scales, num_samples = est_scales.shape
        if num_scales != len(self.scale_weights):
            raise ValueError(
                f"{num_scales} estimate scales but {len(self.scale_weights)} scale weights"
            )
        # [B, S, T] -> [B * S, T]; target and lengths repeated per scale
        flat_est = est_scales.reshape(batch * num_scales, num_samples)
        flat_target = target.unsqueeze(1).expand(-1, num_scales, -1).reshape(flat_est.shape)
        flat_lens = None if lengths is None else lengths.repeat_interleave(num_scales)
        # [B * S] -> [B, S]
        scores = batch_si_sdr(flat_est, flat_target, flat_lens).view(batch, num_scales)
        weights = torch.tensor(self.scale_weights, dtype=scores.dtype, device=scores.device)
        # [B, S] -> scalar
        loss = -(scores * weights).sum(dim=1).mean()

        ce = None
        logits = outputs.get("spk_logits")
        if speaker_index is not None and logits is not None:
            speaker_index = speaker_index.to(logits.device).long()
            if bool((speaker_index != self.ignore_index).any()):
                ce = F.cross_entropy(logits, speaker_index, ignore_index=self.ignore_index)
            else:
                ce = logits.sum() * 0.0
            loss = loss + self.ce_weight * ce
            ce = ce.detach()
        return {"loss": loss, "si_sdr": scores[:, 0].detach(), "ce": ce}
