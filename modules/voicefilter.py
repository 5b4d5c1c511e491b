"""VoiceFilter: speaker-conditioned spectrogram masking (Wang et al., Interspeech 2019).

The model has five parts:

* a **short-time Fourier transform** (:class:`STFT`) of the mixture at 16 kHz:
  25 ms Hann window (400 samples), 10 ms hop (160), ``n_fft`` 512 (257 bins);
  optionally pooled to Mel bands (:class:`MelBands`);
* a **speaker encoder** giving one d-vector per reference
  (:func:`build_speaker_encoder`): by default the pretrained, frozen GE2E
  d-vector of :mod:`modules.dvector`, like the paper's separately trained
  speaker encoder;
* a **stack of 2-D convolutions** (:class:`DilatedConvStack`) over the
  (time, frequency) plane of the power-law compressed magnitude: ``1x7``,
  ``7x1``, five ``5x5`` with time dilations 1, 2, 4, 8, 16, and a ``1x1`` to 8
  channels, each followed by batch norm and ReLU;
* the d-vector **repeated over time and concatenated** to every frame of the
  flattened convolution output, then an **LSTM** (uni- or bidirectional);
* **two fully connected layers** (ReLU, then sigmoid) giving a soft mask in
  ``[0, 1]`` per time-frequency bin. The mask multiplies the mixture's complex
  STFT (the mixture's phase is kept) and the inverse STFT gives the waveform,
  trimmed to the mixture's length.

:meth:`VoiceFilter.forward` is :meth:`VoiceFilter.embed_reference` followed by
:meth:`VoiceFilter.extract`, the interface of :class:`modules.spex_plus.SpExPlus`,
so training, evaluation, chunked and streaming inference and export use either
model unchanged.

Example
-------
>>> import torch
>>> model = VoiceFilter(conv_channels=4, lstm_units=8, fc_units=8,
...                     reference_encoder="lstm").eval()
>>> out = model(torch.randn(2, 4000), torch.randn(2, 8000), torch.tensor([1.0, 0.6]))
>>> out["est"].shape, out["est_scales"].shape, out["mask"].shape, out["spk_emb"].shape
(torch.Size([2, 4000]), torch.Size([2, 1, 4000]), torch.Size([2, 257, 26]), torch.Size([2, 256]))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from modules.audio import SAMPLE_RATE
from modules.dvector import INSTALL_HINT, DVectorEncoder, DVectorUnavailable
from modules.extractor_model import ExtractorModel
from modules.init_args import records_init_args
from modules.losses import SpExPlusLoss, length_mask
from modules.stft import STFT

#: Reference (speaker) encoders :class:`VoiceFilter` can use (:func:`build_speaker_encoder`).
REFERENCE_ENCODERS = ("dvector", "dvector_finetune", "lstm")
#: Frequency scales of the mask (see :class:`VoiceFilter`).
SCALES = ("linear", "mel")


class MelBands(nn.Module):
    """Linear-frequency bins to Mel bands and a Mel-band mask back to bins.

    Built on one triangular filterbank ``W`` (``[F, M]``, Slaney Mel scale,
    0 Hz to Nyquist; bins that no triangle reaches, DC and Nyquist, are given to
    the nearest band):

    * features: ``W`` normalised over bins (each band's column sums to 1), so a
      band is the weighted *mean* of the magnitudes of its bins and has the
      scale of a linear bin, whatever its width;
    * mask: ``W`` normalised over bands (each bin's row sums to 1), so a bin's
      mask is a *convex combination* of the masks of the (at most two) bands
      that cover it. It stays in ``[0, 1]``, varies smoothly across band
      edges, and a constant band mask gives the same constant for every bin.

    A least-squares inverse (the pseudo-inverse of ``W``) would instead give
    negative weights and ringing across bins, so a mask mapped through it
    leaves ``[0, 1]`` and needs clipping; the convex mapping needs none.

    Arguments
    ---------
    num_bins : int
        Linear bins ``F`` (``n_fft // 2 + 1``).
    n_mels : int
        Mel bands ``M``.
    sample_rate : int
        Sampling rate in Hz.

    Example
    -------
    >>> import torch
    >>> bands = MelBands(257, 40)
    >>> bands.to_mel(torch.ones(2, 257, 5)).shape
    torch.Size([2, 40, 5])
    >>> linear = bands.to_linear(torch.full((2, 40, 5), 0.3))
    >>> linear.shape, bool(torch.allclose(linear, torch.tensor(0.3)))
    (torch.Size([2, 257, 5]), True)
    """

    def __init__(self, num_bins: int, n_mels: int = 80, sample_rate: int = SAMPLE_RATE):
        super().__init__()
        if n_mels < 1:
            raise ValueError(f"n_mels must be >= 1, got {n_mels}")
        # [F, M]
        fbank = torchaudio.functional.melscale_fbanks(
            num_bins, 0.0, sample_rate / 2, n_mels, sample_rate, norm=None, mel_scale="slaney"
        ).double()
        if bool((fbank.sum(dim=0) == 0).any()):
            raise ValueError(
                f"{n_mels} Mel bands are too many for {num_bins} bins: some bands are empty"
            )
        freqs = torch.linspace(0, sample_rate / 2, num_bins, dtype=torch.float64)
        centres = (fbank * freqs.unsqueeze(1)).sum(dim=0) / fbank.sum(dim=0)
        for index in torch.nonzero(fbank.sum(dim=1) == 0).flatten().tolist():
            fbank[index, int((centres - freqs[index]).abs().argmin())] = 1.0
        self.n_mels = n_mels
        # [M, F] mean over each band's bins; [F, M] convex weights of the bands of each bin
        self.register_buffer(
            "pool", (fbank / fbank.sum(dim=0, keepdim=True)).T.float(), persistent=False
        )
        self.register_buffer(
            "spread", (fbank / fbank.sum(dim=1, keepdim=True)).float(), persistent=False
        )

    def to_mel(self, spec: torch.Tensor) -> torch.Tensor:
        """``[B, F, N]`` linear magnitudes -> ``[B, M, N]`` Mel-band magnitudes."""
        return torch.matmul(self.pool, spec)

    def to_linear(self, mask: torch.Tensor) -> torch.Tensor:
        """``[B, M, N]`` Mel-band mask -> ``[B, F, N]`` linear-bin mask."""
        return torch.matmul(self.spread, mask)


class DilatedConvStack(nn.Module):
    """The VoiceFilter convolutions over ``[B, C, N (time), F (frequency)]`` planes.

    ``1x7`` (frequency), ``7x1`` (time), one ``5x5`` per time dilation, and a
    ``1x1`` to ``out_channels``; "same" zero padding, each conv followed by
    BatchNorm2d and ReLU. With ``frame_mask`` the activations of padding frames
    are zeroed after every layer, so that padding acts exactly like the
    convolutions' own zero padding at the end of a shorter input.

    Arguments
    ---------
    channels : int
        Channels of every layer but the last (64 in the paper).
    out_channels : int
        Channels of the last (``1x1``) layer (8 in the paper).
    time_dilations : tuple of int
        One ``5x5`` layer per entry, dilated in time by it (1, 2, 4, 8, 16).

    Example
    -------
    >>> import torch
    >>> stack = DilatedConvStack(4, 2, (1, 2)).eval()
    >>> stack(torch.randn(3, 1, 10, 33)).shape
    torch.Size([3, 2, 10, 33])
    >>> stack.receptive_frames
    19
    """

    def __init__(self, channels: int = 64, out_channels: int = 8, time_dilations=(1, 2, 4, 8, 16)):
        super().__init__()
        # (kernel (time, freq), dilation (time, freq)) of each layer
        specs = [((1, 7), (1, 1)), ((7, 1), (1, 1))]
        specs += [((5, 5), (int(d), 1)) for d in time_dilations]
        specs.append(((1, 1), (1, 1)))
        layers = []
        in_channels = 1
        for index, (kernel, dilation) in enumerate(specs):
            width = out_channels if index == len(specs) - 1 else channels
            padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
            layers.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, width, kernel, dilation=dilation, padding=padding),
                    nn.BatchNorm2d(width),
                    nn.ReLU(),
                )
            )
            in_channels = width
        self.layers = nn.ModuleList(layers)
        self.out_channels = out_channels
        #: Frames one output frame depends on.
        self.receptive_frames = 1 + sum(dilation[0] * (kernel[0] - 1) for kernel, dilation in specs)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, 1, N, F] -> [B, out_channels, N, F]``; ``frame_mask`` ``[B, 1, N, 1]`` or None."""
        for layer in self.layers:
            x = layer(x)
            if frame_mask is not None:
                x = x * frame_mask
        return x


def build_speaker_encoder(kind: str = "dvector", pretrained: bool = True) -> DVectorEncoder:
    """The speaker encoder named by ``kind``: ``[B, Tr], lengths -> [B, 256]``.

    All three are the GE2E d-vector network of :class:`modules.dvector.DVectorEncoder`
    (40 mels, 3-layer LSTM of 256, 256-d output):

    * ``"dvector"``: pretrained and frozen, the paper's setup (a separately
      trained speaker encoder);
    * ``"dvector_finetune"``: pretrained, then trained with the extractor;
    * ``"lstm"``: trained from a random initialisation with the extractor
      (and with the speaker-classification loss, through the classifier that
      :class:`VoiceFilter` adds): the fallback where the pretrained weights are
      not installed.

    Arguments
    ---------
    kind : str
        One of :data:`REFERENCE_ENCODERS`.
    pretrained : bool
        Load the pretrained weights for the ``dvector`` kinds. ``False`` for a
        model whose checkpoint carries them (inference, tests).

    Raises
    ------
    DVectorUnavailable
        A ``dvector`` kind with ``pretrained`` and no weights installed; the
        message names the two ways out.

    Example
    -------
    >>> encoder = build_speaker_encoder("lstm")
    >>> encoder.trainable, encoder.embedding_dim
    (True, 256)
    """
    if kind not in REFERENCE_ENCODERS:
        raise ValueError(f"reference_encoder must be one of {REFERENCE_ENCODERS}, got {kind!r}")
    if kind == "lstm":
        return DVectorEncoder(pretrained=False, trainable=True)
    try:
        return DVectorEncoder(pretrained=pretrained, trainable=kind == "dvector_finetune")
    except DVectorUnavailable as error:
        raise DVectorUnavailable(
            f"reference_encoder={kind!r} needs the pretrained d-vector weights ({error}). "
            f"Install them ({INSTALL_HINT}) or train with reference_encoder=lstm "
            "(a jointly trained LSTM d-vector)"
        ) from None


class VoiceFilter(ExtractorModel):
    """VoiceFilter target speaker extraction network.

    The defaults are the paper's sizes (conv 64 channels, 8 output channels,
    time dilations 1-16, LSTM 400, FC 600) with ``n_fft = 512`` (257 bins)
    instead of the paper's wider FFT: the 25 ms window (400 samples) fits in
    512, the next power of two, which keeps every bin of the window's
    resolution, and the convolutions, whose cost grows with the number of bins,
    are 2.3 times cheaper than with 601 bins. ``n_fft`` is an argument like
    every other size.

    Frequency scale (``scale``):

    * ``"linear"``: the network sees and masks the ``F`` STFT bins;
    * ``"mel"``: the magnitudes are pooled into ``n_mels`` Mel bands
      (:class:`MelBands`), the network estimates one mask value per band, and
      each linear bin takes the convex combination of the masks of the bands
      covering it. The mask still multiplies the full-resolution complex
      mixture STFT, so the waveform keeps the mixture's fine spectral detail
      and phase; only the mask is smooth across frequency (coarser at high
      frequencies, like the Mel scale). Training losses compare the same
      linear-frequency outputs in both cases, so the two scales are compared on
      equal terms.

    Network input: the power-law compressed magnitude ``|X| ** input_compression``
    (0.3, as the paper's loss), which brings quiet and loud bins into a range
    convolutions handle without a log's singularity at 0.

    Arguments
    ---------
    n_fft, win_length, hop_length : int
        STFT sizes in samples (512, 400 = 25 ms, 160 = 10 ms at 16 kHz).
    scale : str
        ``"linear"`` or ``"mel"``.
    n_mels : int
        Mel bands for ``scale="mel"``.
    conv_channels : int
        Channels of the convolutions (64).
    conv_out_channels : int
        Channels of the last 1x1 convolution (8).
    time_dilations : tuple of int
        Time dilations of the 5x5 convolutions (1, 2, 4, 8, 16).
    lstm_units : int
        LSTM units per direction (400).
    bidirectional : bool
        Bidirectional LSTM (whole-utterance context) or unidirectional (causal
        in the LSTM; the convolutions still see 65 frames ahead).
    fc_units : int
        Units of the first fully connected layer (600).
    reference_encoder : str
        ``"dvector"`` (pretrained, frozen), ``"dvector_finetune"`` or
        ``"lstm"`` (trained from scratch); see :func:`build_speaker_encoder`.
    pretrained_dvector : bool
        Load the pretrained d-vector at construction (training); ``False`` when
        a checkpoint will provide every weight (inference).
    num_speakers : int
        Training speakers for a speaker classifier on the embedding; built only
        for a trainable speaker encoder (``lstm``, ``dvector_finetune``), where
        the classification loss can teach it. ``0``: none.
    input_compression : float
        Exponent of the input magnitudes.
    sample_rate : int
        :data:`modules.audio.SAMPLE_RATE` (the d-vector's rate).

    Example
    -------
    >>> import torch
    >>> model = VoiceFilter(scale="mel", n_mels=40, conv_channels=4, time_dilations=(1, 2),
    ...                     lstm_units=8, fc_units=8, reference_encoder="lstm",
    ...                     num_speakers=3).eval()
    >>> emb, logits = model.embed_reference(torch.randn(1, 9000))
    >>> emb.shape, logits.shape
    (torch.Size([1, 256]), torch.Size([1, 3]))
    >>> out = model.extract(torch.randn(1, 777), emb)
    >>> out["est"].shape, out["mask"].shape, bool(out["mask"].min() >= 0)
    (torch.Size([1, 777]), torch.Size([1, 257, 5]), True)
    """

    @records_init_args  # model directories are written from the model (modules.model_dir)
    def __init__(
        self,
        n_fft: int = 512,
        win_length: int = 400,
        hop_length: int = 160,
        scale: str = "linear",
        n_mels: int = 80,
        conv_channels: int = 64,
        conv_out_channels: int = 8,
        time_dilations=(1, 2, 4, 8, 16),
        lstm_units: int = 400,
        bidirectional: bool = True,
        fc_units: int = 600,
        reference_encoder: str = "dvector",
        pretrained_dvector: bool = True,
        num_speakers: int = 0,
        input_compression: float = 0.3,
        sample_rate: int = SAMPLE_RATE,
    ):
        super().__init__()
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"VoiceFilter works at {SAMPLE_RATE} Hz, got {sample_rate}")
        self.scale = scale
        self.input_compression = float(input_compression)
        self.stft = STFT(n_fft, win_length, hop_length)
        self.mel = MelBands(self.stft.num_bins, n_mels, sample_rate) if scale == "mel" else None
        mask_bins = n_mels if scale == "mel" else self.stft.num_bins

        self.speaker_encoder = build_speaker_encoder(reference_encoder, pretrained_dvector)
        self.embedding_dim = self.speaker_encoder.embedding_dim
        if num_speakers > 0 and self.speaker_encoder.trainable:
            self.classifier = nn.Linear(self.embedding_dim, num_speakers)
        else:
            self.classifier = None

        self.convs = DilatedConvStack(conv_channels, conv_out_channels, tuple(time_dilations))
        self.lstm = nn.LSTM(
            conv_out_channels * mask_bins + self.embedding_dim,
            lstm_units,
            batch_first=True,
            bidirectional=bidirectional,
        )
        self.fc1 = nn.Linear(lstm_units * (2 if bidirectional else 1), fc_units)
        self.fc2 = nn.Linear(fc_units, mask_bins)

        #: Samples between frame starts.
        self.stride = hop_length
        #: Mixture samples that one output frame depends on through the
        #: convolutions (the LSTM aside, which sees the whole input):
        #: ``(frames - 1) * hop + n_fft``, 21,312 samples (1.33 s) for the defaults.
        self.receptive_field = (self.convs.receptive_frames - 1) * hop_length + n_fft
        #: Shortest mixture (samples) inference accepts: one analysis window.
        self.min_input_samples = win_length
        #: Shortest reference (samples): one analysis window of the d-vector
        #: (shorter ones are zero-padded inside the speaker encoder).
        self.min_reference_length = win_length

    def embed_reference(
        self, ref: torch.Tensor, ref_lens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """d-vector (and classifier logits) of each reference.

        Arguments
        ---------
        ref : torch.Tensor
            ``[B, Tr]`` reference waveforms.
        ref_lens : torch.Tensor or None
            ``[B]`` lengths relative to ``Tr``; ``None``: all full. Padding does
            not change an embedding.

        Returns
        -------
        emb : torch.Tensor
            ``[B, D]`` (``D = 256``).
        logits : torch.Tensor or None
            ``[B, num_speakers]``, or ``None`` without a classifier.
        """
        emb = self.speaker_encoder(ref, ref_lens)
        logits = self.classifier(emb) if self.classifier is not None else None
        return emb, logits

    def extract(
        self, mix: torch.Tensor, emb: torch.Tensor, mix_lens: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Extract the speaker given by ``emb`` from ``mix``.

        Arguments
        ---------
        mix : torch.Tensor
            ``[B, T]`` mixtures, any ``T >= 1``.
        emb : torch.Tensor
            ``[B, D]`` d-vectors (:meth:`embed_reference`).
        mix_lens : torch.Tensor or None
            ``[B]`` lengths relative to ``T``. With them, zero padding past a
            mixture's end changes nothing before it (BatchNorm in eval mode):
            padding frames are masked after every convolution, the LSTM runs
            on packed sequences, and the inverse STFT uses each item's frames
            only. ``None``: every item is ``T`` samples long.

        Returns
        -------
        dict
            ``"est"``: ``[B, T]`` estimate (zero past each length);
            ``"est_scales"``: ``[B, 1, T]`` the same, for losses written for
            multi-scale models; ``"mask"``: ``[B, F, N]`` linear-bin mask in
            ``[0, 1]``; ``"est_mag"``: ``[B, F, N]`` masked magnitude (what the
            spectral loss compares), ``N = T // hop_length + 1``.
        """
        num_samples = mix.shape[-1]
        # [B, T] -> [B, F, N] x 2
        real, imag = self.stft(mix)
        magnitude = torch.sqrt(real.pow(2) + imag.pow(2) + 1e-12)
        frame_mask, conv_mask = None, None
        if mix_lens is not None:
            # [B, N]; [B, 1, N, 1] for the convolutions
            frame_mask = self.stft.frame_mask(mix_lens.to(mix.device), num_samples, real.shape[-1])
            conv_mask = frame_mask.to(mix.dtype)[:, None, :, None]
        # [B, F, N] -> [B, F', N] (F' = F or n_mels)
        features = self.mel.to_mel(magnitude) if self.mel is not None else magnitude
        features = features.pow(self.input_compression)
        # [B, F', N] -> [B, 1, N, F']
        x = features.transpose(1, 2).unsqueeze(1)
        if conv_mask is not None:
            x = x * conv_mask
        # [B, 1, N, F'] -> [B, C, N, F'] -> [B, N, C * F']
        x = self.convs(x, conv_mask)
        batch, channels, frames, bins = x.shape
        x = x.permute(0, 2, 1, 3).reshape(batch, frames, channels * bins)
        # [B, D] -> [B, N, D]; concatenated to every frame: [B, N, C * F' + D]
        x = torch.cat([x, emb.unsqueeze(1).expand(-1, frames, -1).to(x.dtype)], dim=-1)
        if frame_mask is not None:
            packed = nn.utils.rnn.pack_padded_sequence(
                x, frame_mask.sum(dim=1).long().cpu(), batch_first=True, enforce_sorted=False
            )
            x, _ = self.lstm(packed)
            x, _ = nn.utils.rnn.pad_packed_sequence(x, batch_first=True, total_length=frames)
        else:
            x, _ = self.lstm(x)
        # [B, N, H] -> [B, N, fc] -> [B, N, F'] -> [B, F', N]
        mask = torch.sigmoid(self.fc2(F.relu(self.fc1(x)))).transpose(1, 2)
        if self.mel is not None:
            # [B, M, N] -> [B, F, N]
            mask = self.mel.to_linear(mask)
        # The mask scales the mixture's complex STFT: its phase is kept.
        est = self.stft.inverse(mask * real, mask * imag, num_samples, frame_mask)
        if mix_lens is not None:
            est = est * length_mask(mix_lens, num_samples, est)
        return {
            "est": est,
            "est_scales": est.unsqueeze(1),
            "mask": mask,
            "est_mag": mask * magnitude,
        }


class VoiceFilterLoss(nn.Module):
    """VoiceFilter training loss: spectral (the paper's) or SI-SNR, plus speaker CE.

    * ``"spectral"``: mean squared error between power-law compressed
      magnitudes, ``mean((|S_est| ** p - |S| ** p) ** 2)`` over the valid
      frames and every linear bin (``p = 0.3``), ``|S_est|`` the masked
      mixture magnitude (``outputs["est_mag"]``) and ``|S|`` the target's, with
      the model's STFT sizes;
    * ``"si_snr"``: minus the zero-mean SI-SDR (= SI-SNR) of the waveform after
      the inverse STFT, over the valid samples.

    The waveform SI-SDR and the speaker cross-entropy (added when the model has
    a classifier and ``speaker_index`` is given: trainable speaker encoders)
    are :class:`modules.losses.SpExPlusLoss` with one scale, weighted 1 for
    ``"si_snr"`` and 0 for ``"spectral"``.

    Arguments
    ---------
    loss : str
        ``"spectral"`` or ``"si_snr"``.
    n_fft, win_length, hop_length : int
        The model's STFT sizes (spectral loss).
    compression : float
        Power-law exponent ``p`` of the spectral loss.
    ce_weight : float
        Weight of the speaker cross-entropy.
    ignore_index : int
        Speaker index excluded from the CE.

    Example
    -------
    >>> import torch
    >>> target = torch.randn(2, 1600)
    >>> real, imag = STFT()(target)
    >>> outputs = {"est": target, "est_scales": target[:, None],
    ...            "est_mag": torch.sqrt(real ** 2 + imag ** 2), "spk_logits": None}
    >>> result = VoiceFilterLoss("spectral")(outputs, target, torch.tensor([1.0, 0.5]))
    >>> float(result["loss"]) < 1e-6, result["si_sdr"].shape, result["ce"]
    (True, torch.Size([2]), None)
    >>> float(VoiceFilterLoss("si_snr")(outputs, target)["loss"]) < -60
    True
    """

    LOSSES = ("spectral", "si_snr")

    def __init__(
        self,
        loss: str = "spectral",
        n_fft: int = 512,
        win_length: int = 400,
        hop_length: int = 160,
        compression: float = 0.3,
        ce_weight: float = 0.0,
        ignore_index: int = -1,
    ):
        super().__init__()
        if loss not in self.LOSSES:
            raise ValueError(f"loss must be one of {self.LOSSES}, got {loss!r}")
        self.loss = loss
        self.stft = STFT(n_fft, win_length, hop_length)
        self.compression = float(compression)
        self.waveform_loss = SpExPlusLoss(
            scale_weights=(1.0 if loss == "si_snr" else 0.0,),
            ce_weight=ce_weight,
            ignore_index=ignore_index,
        )

    def spectral(
        self, est_mag: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor | None
    ) -> torch.Tensor:
        """Compressed-magnitude MSE, ``[B, F, N]`` and ``[B, T]`` -> scalar."""
        if self.stft.analysis.device != target.device:
            self.stft.to(target.device)  # the loss is not among the Brain's modules
        real, imag = self.stft(target.to(est_mag.dtype))
        target_mag = torch.sqrt(real.pow(2) + imag.pow(2) + 1e-12)
        if target_mag.shape != est_mag.shape:
            raise ValueError(
                f"est_mag {tuple(est_mag.shape)} does not match the target's spectrogram "
                f"{tuple(target_mag.shape)}: are the loss's STFT sizes the model's?"
            )
        p = self.compression
        # [B, F, N]
        error = ((est_mag + 1e-8).pow(p) - (target_mag + 1e-8).pow(p)).pow(2)
        if lengths is None:
            return error.mean()
        # [B, 1, N]
        valid = self.stft.frame_mask(lengths.to(target.device), target.shape[-1], error.shape[-1])
        valid = valid.to(error.dtype).unsqueeze(1)
        return (error * valid).sum() / (valid.sum() * error.shape[1])

    def forward(self, outputs: dict, target, lengths=None, speaker_index=None) -> dict:
        """Compute the loss: the contract of :meth:`modules.losses.SpExPlusLoss.forward`.

        ``outputs`` also needs ``"est_mag"`` ``[B, F, N]`` for the spectral
        loss; ``"si_sdr"`` in the result is that of the waveform.
        """
        result = self.waveform_loss(outputs, target, lengths, speaker_index)
        if self.loss == "spectral":
            result["loss"] = result["loss"] + self.spectral(outputs["est_mag"], target, lengths)
        return result
