"""SpEx+: time-domain target speaker extraction (Ge et al., Interspeech 2020).

The model has four parts:

* a twin **multi-scale speech encoder** (:class:`MultiScaleEncoder`), shared by
  the mixture and the reference: three ``Conv1d(1, N)`` branches with short,
  middle and long windows and a common stride, ReLU;
* a **speaker encoder** (:class:`SpeakerEncoder`): cLN, 1x1 conv, ResNet blocks
  with max-pooling, 1x1 conv to the embedding, mean over the valid frames;
* a **speaker extractor**: cLN, 1x1 conv, ``R`` stacks of ``X`` TCN blocks (the
  first block of each stack conditioned on the embedding), three ReLU masks;
* a **multi-scale decoder**: one ``ConvTranspose1d(N, 1)`` per scale.

``SpExPlus.forward`` (:class:`modules.extractor_model.ExtractorModel`) is
:meth:`SpExPlus.embed_reference` followed by
:meth:`SpExPlus.extract`; long-audio inference can call the two separately and
reuse one embedding for every chunk.

Example
-------
>>> import torch
>>> model = SpExPlus(n_filters=16, bottleneck_channels=16, hidden_channels=32,
...                  blocks_per_stack=2, num_stacks=1, speaker_channels=(16, 32),
...                  embedding_dim=16, num_speakers=5).eval()
>>> out = model(torch.randn(2, 1000), torch.randn(2, 1500), torch.tensor([1.0, 0.6]))
>>> out["est"].shape, out["est_scales"].shape, out["spk_logits"].shape, out["spk_emb"].shape
(torch.Size([2, 1000]), torch.Size([2, 3, 1000]), torch.Size([2, 5]), torch.Size([2, 16]))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules.dvector import DVectorEncoder
from modules.extractor_model import ExtractorModel
from modules.init_args import records_init_args
from modules.losses import absolute_lengths, length_mask
from modules.norms import ChannelLayerNorm
from modules.tcn import TCNStack

#: Choices of :class:`SpExPlus`'s ``reference_encoder``.
REFERENCE_ENCODERS = ("native", "dvector", "dvector_finetune", "native+dvector")


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``.

    Arguments
    ---------
    module : torch.nn.Module
        Any module.
    trainable_only : bool
        Count only parameters with ``requires_grad``.

    Returns
    -------
    int

    Example
    -------
    >>> count_parameters(torch.nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class MultiScaleEncoder(nn.Module):
    """Twin multi-scale speech encoder: three strided ``Conv1d(1, N)`` + ReLU.

    All three branches share the stride ``short_kernel // 2`` and give the same
    number of frames: the input is zero-padded on the right so that the short
    branch covers every sample (at least one frame), and each longer branch
    sees that input plus ``L_i - L_1`` more zeros, so frame ``k`` of every
    branch starts at sample ``k * stride``. For ``T`` samples the frame count is
    ``ceil(max(T - L1, 0) / stride) + 1`` (see :meth:`num_frames`).

    Arguments
    ---------
    n_filters : int
        Filters per branch (``N``).
    short_kernel, middle_kernel, long_kernel : int
        Window lengths in samples (``L1 <= L2 <= L3``); 40, 160, 320 are 2.5, 10
        and 20 ms at 16 kHz.

    Example
    -------
    >>> import torch
    >>> encoder = MultiScaleEncoder(8, 4, 8, 16)
    >>> w1, w2, w3 = encoder(torch.randn(3, 21))
    >>> w1.shape, w2.shape, w3.shape
    (torch.Size([3, 8, 10]), torch.Size([3, 8, 10]), torch.Size([3, 8, 10]))
    >>> encoder.num_frames(torch.tensor([1, 4, 5, 21]))
    tensor([ 1,  1,  2, 10])
    """

    def __init__(
        self,
        n_filters: int = 256,
        short_kernel: int = 40,
        middle_kernel: int = 160,
        long_kernel: int = 320,
    ):
        super().__init__()
        if not 2 <= short_kernel <= middle_kernel <= long_kernel:
            raise ValueError(
                "need 2 <= short_kernel <= middle_kernel <= long_kernel, got "
                f"{short_kernel}, {middle_kernel}, {long_kernel}"
            )
        self.n_filters = n_filters
        self.short_kernel = short_kernel
        self.middle_kernel = middle_kernel
        self.long_kernel = long_kernel
        self.stride = short_kernel // 2
        self.short = nn.Conv1d(1, n_filters, short_kernel, stride=self.stride)
        self.middle = nn.Conv1d(1, n_filters, middle_kernel, stride=self.stride)
        self.long = nn.Conv1d(1, n_filters, long_kernel, stride=self.stride)

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Frames given by ``num_samples`` samples (integer tensor, any shape)."""
        excess = (num_samples - self.short_kernel).clamp(min=0)
        # ceil division without floats
        return (excess + self.stride - 1) // self.stride + 1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode a batch of waveforms at three scales.

        Arguments
        ---------
        x : torch.Tensor
            ``[B, T]`` waveforms, ``T >= 1``.

        Returns
        -------
        w1, w2, w3 : torch.Tensor
            ``[B, N, T']`` each (after ReLU), ``T' = ceil(max(T - L1, 0) / stride) + 1``.
        """
        num_samples = x.shape[-1]
        excess = num_samples - self.short_kernel
        # max(excess, 0) without a Python branch, so that a trace stays valid for any T
        excess = (excess + abs(excess)) // 2
        num_frames = (excess + self.stride - 1) // self.stride + 1
        covered = (num_frames - 1) * self.stride  # samples before the last frame's start
        # [B, T] -> [B, 1, covered + L3]
        padded = F.pad(x, (0, covered + self.long_kernel - num_samples)).unsqueeze(1)
        # [B, 1, covered + L_i] -> [B, N, T'] for each branch
        w1 = F.relu(self.short(padded[..., : covered + self.short_kernel]))
        w2 = F.relu(self.middle(padded[..., : covered + self.middle_kernel]))
        w3 = F.relu(self.long(padded))
        return w1, w2, w3


class OverlapAddDecoder(nn.ConvTranspose1d):
    """Strided transposed ``Conv1d(N, 1)`` without bias, computed as a GEMM plus overlap-add.

    Each frame's ``N`` coefficients give a window of ``kernel_size`` samples
    (one matrix product for all frames), and ``F.fold`` adds the windows
    ``stride`` samples apart: the same numbers as ``nn.ConvTranspose1d``, whose
    CPU kernel for one output channel is several times slower forward and
    backward at SpEx+'s sizes (kernel 40-320, stride 20). Parameters and state-dict keys
    are the layer's. ONNX export (opset 17 has no ``Col2Im``) runs the layer.

    Arguments
    ---------
    n_filters : int
        Coefficients per frame (``N``).
    kernel_size : int
        Window length in samples.
    stride : int
        Hop between windows in samples.

    Example
    -------
    >>> import torch
    >>> decoder = OverlapAddDecoder(8, kernel_size=6, stride=3)
    >>> frames = torch.randn(2, 8, 5)
    >>> decoder(frames).shape
    torch.Size([2, 1, 18])
    >>> layer = nn.ConvTranspose1d.forward(decoder, frames)  # the plain layer
    >>> bool(torch.allclose(decoder(frames), layer, atol=1e-6))
    True
    """

    def __init__(self, n_filters: int, kernel_size: int, stride: int):
        super().__init__(n_filters, 1, kernel_size, stride=stride, bias=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, N, T']`` -> ``[B, 1, (T' - 1) * stride + kernel_size]``."""
        if not torch.jit.is_scripting():  # (TorchScript skips this block)
            if torch.onnx.is_in_onnx_export():
                return super().forward(frames)
        kernel, stride = self.kernel_size[0], self.stride[0]
        num_samples = (frames.shape[-1] - 1) * stride + kernel
        # [L, N] @ [B, N, T'] -> [B, L, T']: one window per frame
        windows = torch.matmul(self.weight[:, 0].t(), frames)
        # [B, L, T'] -> [B, 1, 1, num_samples]: windows added stride samples apart
        out = F.fold(windows, (1, num_samples), kernel_size=(1, kernel), stride=(1, stride))
        return out.view(frames.shape[0], 1, num_samples)


class SpeakerResBlock(nn.Module):
    """ResNet block of the SpEx+ speaker encoder, with max-pooling by 3.

    ``conv1x1 -> BN -> PReLU -> conv1x1 -> BN -> + shortcut -> PReLU -> MaxPool1d(3)``;
    the shortcut is a 1x1 projection when ``in_channels != out_channels``.

    Arguments
    ---------
    in_channels : int
        Input channels.
    out_channels : int
        Output channels.
    pool_size : int
        Max-pooling window and stride (3 in the paper).

    Example
    -------
    >>> import torch
    >>> SpeakerResBlock(8, 16)(torch.randn(2, 8, 10)).shape
    torch.Size([2, 16, 3])
    """

    def __init__(self, in_channels: int, out_channels: int, pool_size: int = 3):
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.norm1 = nn.BatchNorm1d(out_channels)
        self.act1 = nn.PReLU()
        self.conv2 = nn.Conv1d(out_channels, out_channels, 1, bias=False)
        self.norm2 = nn.BatchNorm1d(out_channels)
        if in_channels != out_channels:
            self.shortcut = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        else:
            self.shortcut = nn.Identity()
        self.act2 = nn.PReLU()
        self.pool = nn.MaxPool1d(pool_size)
        self.pool_size = pool_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Arguments
        ---------
        x : torch.Tensor
            ``[B, C_in, T]``.

        Returns
        -------
        torch.Tensor
            ``[B, C_out, T // pool_size]``.
        """
        # [B, C_in, T] -> [B, C_out, T]
        y = self.act1(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        y = self.act2(y + self.shortcut(x))
        # [B, C_out, T] -> [B, C_out, T // pool_size]
        return self.pool(y)


class SpeakerEncoder(nn.Module):
    """SpEx+ speaker encoder: multi-scale features to one embedding per reference.

    ``cLN -> 1x1 conv (3N -> C1) -> ResBlocks (C1 -> C1 -> C2 -> ...) -> 1x1 conv (-> D)``,
    then the mean over the valid frames only (frames ``< valid_frames`` after
    the max-pools), so zero padding in a batch leaves the embedding unchanged.

    Arguments
    ---------
    in_channels : int
        Channels of the concatenated encoder output (``3N``).
    speaker_channels : tuple of int
        ``(C1, ..., Ck)``: the output width of each of the ``k >= 1`` ResNet
        blocks (the same list as :class:`SpExPlus`'s ``speaker_channels``). The
        1x1 projection before them has the first block's width ``C1``, so
        ``(256, 512, 512)`` gives the paper's blocks 256->256, 256->512, 512->512.
    embedding_dim : int
        Embedding size ``D``.

    Example
    -------
    >>> import torch
    >>> encoder = SpeakerEncoder(12, (8, 16), embedding_dim=4).eval()
    >>> encoder(torch.randn(2, 12, 40), torch.tensor([40, 20])).shape
    torch.Size([2, 4])
    >>> encoder.pooled_frames(torch.tensor([40, 20, 5]))
    tensor([4, 2, 1])
    """

    def __init__(self, in_channels: int, speaker_channels=(256, 512, 512), embedding_dim=256):
        super().__init__()
        speaker_channels = tuple(int(c) for c in speaker_channels)
        if len(speaker_channels) < 1:
            raise ValueError("speaker_channels needs the width of at least one ResNet block")
        # the projection has the first block's width: (C1, C1, C2, ..., Ck)
        widths = (speaker_channels[0], *speaker_channels)
        self.norm = ChannelLayerNorm(in_channels)
        self.proj = nn.Conv1d(in_channels, widths[0], 1)
        self.blocks = nn.ModuleList(
            [
                SpeakerResBlock(c_in, c_out)
                for c_in, c_out in zip(widths[:-1], speaker_channels, strict=True)
            ]
        )
        self.out_conv = nn.Conv1d(speaker_channels[-1], embedding_dim, 1)
        self.embedding_dim = embedding_dim
        self.pool_sizes = [block.pool_size for block in self.blocks]
        #: Encoder frames needed for one pooled frame.
        self.min_frames = 1
        for size in self.pool_sizes:
            self.min_frames *= size

    def pooled_frames(self, valid_frames: torch.Tensor) -> torch.Tensor:
        """Valid frames left after the max-pools (at least 1), integer tensor."""
        count = valid_frames
        for size in self.pool_sizes:
            count = count // size
        return count.clamp(min=1)

    def forward(self, feats: torch.Tensor, valid_frames: torch.Tensor) -> torch.Tensor:
        """Embed references.

        Arguments
        ---------
        feats : torch.Tensor
            ``[B, 3N, T']`` encoder output; ``T' >= min_frames``.
        valid_frames : torch.Tensor
            ``[B]`` integer count of encoder frames that belong to each reference.

        Returns
        -------
        torch.Tensor
            ``[B, D]`` embeddings.
        """
        # [B, 3N, T'] -> [B, C0, T']
        y = self.proj(self.norm(feats))
        for block in self.blocks:
            # [B, C_i, T] -> [B, C_i+1, T // 3]
            y = block(y)
        # [B, Ck, T''] -> [B, D, T'']
        y = self.out_conv(y)
        count = self.pooled_frames(valid_frames)
        # [T''] < [B, 1] -> [B, 1, T'']
        mask = torch.arange(y.shape[-1], device=y.device).unsqueeze(0) < count.unsqueeze(1)
        mask = mask.unsqueeze(1).to(y.dtype)
        # [B, D, T''] -> [B, D]
        return (y * mask).sum(dim=-1) / count.unsqueeze(1).to(y.dtype)


class SpExPlus(ExtractorModel):
    """SpEx+ target speaker extraction network.

    The defaults are the paper's configuration at 16 kHz (windows 2.5, 10, 20 ms,
    ``N = B = 256``, ``H = 512``, ``P = 3``, ``X = 8``, ``R = 4``, ``D = 256``):
    11,245,894 parameters without the speaker classifier (add
    ``257 * num_speakers``).

    Arguments
    ---------
    n_filters : int
        Encoder filters per scale (``N``).
    bottleneck_channels : int
        TCN input/output channels (``B``).
    hidden_channels : int
        Channels inside each TCN block (``H``).
    kernel_size : int
        Depthwise kernel of the TCN blocks (``P``).
    blocks_per_stack : int
        TCN blocks per stack (``X``); dilations ``1 .. 2**(X-1)``.
    num_stacks : int
        TCN stacks (``R``); the first block of each is speaker-conditioned.
    short_kernel, middle_kernel, long_kernel : int
        Encoder/decoder windows in samples (``L1, L2, L3``); stride ``L1 // 2``.
    speaker_channels : tuple of int
        Output channels of the speaker-encoder ResNet blocks (see
        :class:`SpeakerEncoder`, which takes the same list); the 1x1 projection
        before them has ``speaker_channels[0]`` channels, so ``(256, 512, 512)``
        gives the paper's blocks 256->256, 256->512, 512->512. Each block
        max-pools by 3.
    embedding_dim : int
        Speaker embedding size (``D``).
    num_speakers : int
        Training speakers for the speaker classifier; ``0`` builds no classifier
        (``spk_logits`` is then ``None``). No classifier is built either when
        the reference encoder has nothing to train (``"dvector"``).
    reference_encoder : str
        How the reference becomes the conditioning vector:
        ``"native"``: the paper's ResNet speaker encoder on the shared
        multi-scale encoder, trained jointly (``D = embedding_dim``);
        ``"dvector"``: the pretrained GE2E d-vector (:mod:`modules.dvector`),
        frozen (``D = 256``); ``"dvector_finetune"``: the same, trained jointly;
        ``"native+dvector"``: both, concatenated (``D = embedding_dim + 256``,
        the d-vector frozen). The classifier sees the conditioning vector.
    pretrained_dvector : bool
        Load the d-vector's pretrained weights at construction (``False`` when
        a checkpoint will overwrite them, or in tests).

    Example
    -------
    >>> import torch
    >>> model = SpExPlus(n_filters=8, bottleneck_channels=8, hidden_channels=16,
    ...                  blocks_per_stack=2, num_stacks=2, speaker_channels=(8, 16),
    ...                  embedding_dim=8).eval()
    >>> emb, logits = model.embed_reference(torch.randn(1, 3000))
    >>> emb.shape, logits is None
    (torch.Size([1, 8]), True)
    >>> model.extract(torch.randn(1, 777), emb)["est"].shape
    torch.Size([1, 777])
    """

    @records_init_args  # model directories are written from the model (modules.model_dir)
    def __init__(
        self,
        n_filters: int = 256,
        bottleneck_channels: int = 256,
        hidden_channels: int = 512,
        kernel_size: int = 3,
        blocks_per_stack: int = 8,
        num_stacks: int = 4,
        short_kernel: int = 40,
        middle_kernel: int = 160,
        long_kernel: int = 320,
        speaker_channels=(256, 512, 512),
        embedding_dim: int = 256,
        num_speakers: int = 0,
        reference_encoder: str = "native",
        pretrained_dvector: bool = True,
    ):
        super().__init__()
        if num_stacks < 1:
            raise ValueError(f"num_stacks must be >= 1, got {num_stacks}")
        if reference_encoder not in REFERENCE_ENCODERS:
            raise ValueError(
                f"reference_encoder must be one of {REFERENCE_ENCODERS}, got {reference_encoder!r}"
            )
        self.n_filters = n_filters
        self.reference_encoder = reference_encoder

        self.encoder = MultiScaleEncoder(n_filters, short_kernel, middle_kernel, long_kernel)
        self.stride = self.encoder.stride

        # Reference -> conditioning vector: the native speaker encoder on the
        # reference's multi-scale encoding, the pretrained d-vector, or both.
        self.speaker_encoder = None
        self.dvector = None
        cond_dim = 0
        if reference_encoder in ("native", "native+dvector"):
            self.speaker_encoder = SpeakerEncoder(3 * n_filters, speaker_channels, embedding_dim)
            cond_dim += embedding_dim
        if "dvector" in reference_encoder:
            self.dvector = DVectorEncoder(
                pretrained=pretrained_dvector, trainable=reference_encoder == "dvector_finetune"
            )
            cond_dim += self.dvector.embedding_dim
        self.embedding_dim = embedding_dim
        #: Size ``D`` of the conditioning vector given to the TCN stacks.
        self.condition_dim = cond_dim
        trains_reference_path = reference_encoder != "dvector"
        self.num_speakers = num_speakers if trains_reference_path else 0
        if self.num_speakers > 0:
            self.classifier = nn.Linear(cond_dim, self.num_speakers)
        else:
            self.classifier = None

        # Speaker extractor on the mixture's encoder output.
        self.norm = ChannelLayerNorm(3 * n_filters)
        self.proj = nn.Conv1d(3 * n_filters, bottleneck_channels, 1)
        self.stacks = nn.ModuleList(
            [
                TCNStack(
                    bottleneck_channels,
                    hidden_channels,
                    kernel_size=kernel_size,
                    num_blocks=blocks_per_stack,
                    embedding_dim=cond_dim,
                )
                for _ in range(num_stacks)
            ]
        )
        self.mask_short = nn.Conv1d(bottleneck_channels, n_filters, 1)
        self.mask_middle = nn.Conv1d(bottleneck_channels, n_filters, 1)
        self.mask_long = nn.Conv1d(bottleneck_channels, n_filters, 1)

        # Multi-scale decoder. No bias: the estimates are made zero-mean anyway
        # (the loss is zero-mean SI-SDR, so any DC would drift untrained).
        self.decoder_short = OverlapAddDecoder(n_filters, short_kernel, self.stride)
        self.decoder_middle = OverlapAddDecoder(n_filters, middle_kernel, self.stride)
        self.decoder_long = OverlapAddDecoder(n_filters, long_kernel, self.stride)

        tcn_frames = 1 + num_stacks * (self.stacks[0].receptive_field - 1)
        #: Mixture samples that one TCN output frame depends on through the
        #: convolutions (gLN aside): ``(frames - 1) * stride + L3``. 41,120 samples
        #: (2.57 s) for the defaults.
        self.receptive_field = (tcn_frames - 1) * self.stride + long_kernel
        #: Shortest mixture (samples) inference accepts: one window of the longest
        #: encoder filter.
        self.min_input_samples = long_kernel
        #: Shortest reference (samples) that fills one frame after the
        #: speaker encoder's max-pools; shorter references are zero-padded to it.
        self.min_reference_length = short_kernel
        if self.speaker_encoder is not None:
            self.min_reference_length += (self.speaker_encoder.min_frames - 1) * self.stride

    def embed_reference(
        self, ref: torch.Tensor, ref_lens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Speaker embedding (and classifier logits) of each reference.

        Samples past each reference's length are zeroed and the mean is taken
        over that reference's valid frames only, so padding has no effect (with
        BatchNorm in eval mode; in train mode batch statistics see padding).

        Arguments
        ---------
        ref : torch.Tensor
            ``[B, Tr]`` reference waveforms, any ``Tr >= 1``.
        ref_lens : torch.Tensor or None
            ``[B]`` lengths relative to ``Tr``, in ``(0, 1]`` (SpeechBrain
            convention); ``None`` means every reference is ``Tr`` samples long.

        Returns
        -------
        emb : torch.Tensor
            ``[B, D]``.
        logits : torch.Tensor or None
            ``[B, num_speakers]``, or ``None`` without a classifier.
        """
        num_samples = ref.shape[-1]
        abs_lens = absolute_lengths(ref_lens, num_samples, ref)
        # [B, Tr]: zero whatever lies past each length
        ref = ref * length_mask(ref_lens, num_samples, ref)
        parts = []
        if self.speaker_encoder is not None:
            # [B, Tr] -> [B, max(Tr, min_reference_length)] (branch-free, for tracing)
            missing = self.min_reference_length - num_samples
            padded = F.pad(ref, (0, (missing + abs(missing)) // 2))
            # [B, Tr] -> 3 x [B, N, T']
            w1, w2, w3 = self.encoder(padded)
            # 3 x [B, N, T'] -> [B, 3N, T'] -> [B, D_native]
            parts.append(
                self.speaker_encoder(
                    torch.cat([w1, w2, w3], dim=1), self.encoder.num_frames(abs_lens)
                )
            )
        if self.dvector is not None:
            # [B, Tr] -> [B, 256]
            parts.append(self.dvector(ref, ref_lens).to(ref.dtype))
        # -> [B, D]
        emb = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        logits: torch.Tensor | None = None
        if self.classifier is not None:
            # [B, D] -> [B, num_speakers]
            logits = self.classifier(emb)
        return emb, logits

    def extract(
        self, mix: torch.Tensor, emb: torch.Tensor, mix_lens: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Extract the speaker given by ``emb`` from ``mix``.

        With ``mix_lens``, every item of a zero-padded batch gets the output it
        would get alone: normalisation statistics skip the padding and the
        temporal convolutions see zeros there. Each estimate is zero-mean over
        its valid samples (and zero past them): the graded SI-SDR is not
        zero-mean, so a DC offset would count as error.

        Arguments
        ---------
        mix : torch.Tensor
            ``[B, T]`` mixtures, any ``T >= 1``.
        emb : torch.Tensor
            ``[B, D]`` speaker embeddings (:meth:`embed_reference`).
        mix_lens : torch.Tensor or None
            ``[B]`` mixture lengths relative to ``T`` (``None``: all full).

        Returns
        -------
        dict
            ``"est"``: ``[B, T]`` short-scale estimate ``s1``;
            ``"est_scales"``: ``[B, 3, T]`` estimates ``(s1, s2, s3)``.
        """
        num_samples = mix.shape[-1]
        # [B, T] 0/1 valid samples
        sample_mask = length_mask(mix_lens, num_samples, mix)
        padded = mix_lens is not None and bool((sample_mask[:, -1] == 0).any())
        if padded:
            mix = mix * sample_mask
        # [B, T] -> 3 x [B, N, T']
        w1, w2, w3 = self.encoder(mix)
        frame_mask: torch.Tensor | None = None
        if padded:
            valid_frames = self.encoder.num_frames(sample_mask.sum(dim=-1).long())
            # [T'] < [B, 1] -> [B, 1, T']
            frames = torch.arange(w1.shape[-1], device=mix.device)
            frame_mask = (frames.unsqueeze(0) < valid_frames.unsqueeze(1)).unsqueeze(1)
            frame_mask = frame_mask.to(w1.dtype)
        # 3 x [B, N, T'] -> [B, 3N, T'] -> [B, B_ch, T']
        y = self.proj(self.norm(torch.cat([w1, w2, w3], dim=1)))
        for stack in self.stacks:
            # [B, B_ch, T'] -> [B, B_ch, T']
            y = stack(y, emb, frame_mask)
        # [B, B_ch, T'] -> [B, N, T'] masks applied to each scale's encoding
        s1 = w1 * F.relu(self.mask_short(y))
        s2 = w2 * F.relu(self.mask_middle(y))
        s3 = w3 * F.relu(self.mask_long(y))
        if frame_mask is not None:
            # padded frames would reach the last valid samples through the decoders
            s1, s2, s3 = s1 * frame_mask, s2 * frame_mask, s3 * frame_mask
        # [B, N, T'] -> [B, 1, (T' - 1) * stride + L_i] -> [B, T] (every L_i output covers T)
        est1 = self.decoder_short(s1)[:, 0, :num_samples]
        est2 = self.decoder_middle(s2)[:, 0, :num_samples]
        est3 = self.decoder_long(s3)[:, 0, :num_samples]
        # 3 x [B, T] -> [B, 3, T], zero-mean over the valid samples
        est_scales = torch.stack([est1, est2, est3], dim=1)
        sample_mask = sample_mask.unsqueeze(1)
        mean = (est_scales * sample_mask).sum(dim=-1, keepdim=True) / sample_mask.sum(
            dim=-1, keepdim=True
        )
        est_scales = (est_scales - mean) * sample_mask
        return {"est": est_scales[:, 0], "est_scales": est_scales}
