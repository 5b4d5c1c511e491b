"""Windowed overlap-add of a per-chunk function: long inputs and streams.

Chunks of ``chunk`` samples every ``hop`` samples (``hop <= chunk``), the last
chunk aligned to the end of the signal (so every chunk is full length and none
is zero-padded), each chunk output multiplied by a strictly positive Hann window
and the sum divided by the sum of the windows at each sample. The division makes
the reconstruction exact for any hop (a signal that every chunk reproduces is
reproduced), and a chunk that covers the whole input gives exactly the
whole-input output. :class:`ChunkedOverlapAdd` consumes a stream piece by piece;
:func:`overlap_add` runs it over a whole signal with bounded extra memory.

Example
-------
>>> import torch
>>> signal = torch.randn(5000)
>>> out = overlap_add(lambda chunk: 2 * chunk, signal, chunk=1000, hop=300)
>>> torch.allclose(out, 2 * signal, atol=1e-5)
True
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def ola_window(length: int) -> torch.Tensor:
    """Strictly positive Hann window ``[length]`` used for overlap-add.

    The symmetric Hann window of ``length + 2`` points without its two zero end
    points: it never vanishes, so the per-sample normalisation by the sum of
    windows is defined for every hop up to the chunk length.

    Example
    -------
    >>> w = ola_window(4)
    >>> bool((w > 0).all()), round(float(w.max()), 3)
    (True, 0.905)
    """
    return torch.hann_window(length + 2, periodic=False, dtype=torch.float64)[1:-1].float()


class ChunkedOverlapAdd:
    """Windowed overlap-add of a per-chunk function over a stream of samples.

    Regular chunks start at ``0, hop, 2 hop, ...`` and run as soon as their
    ``chunk`` samples have arrived; at :meth:`flush` one more chunk aligned to
    the end of the signal covers any remainder (a signal no longer than one
    chunk is processed whole, without a window). Samples more than ``chunk``
    samples behind the newest input can no longer change and are returned.
    Memory is bounded: the last ``chunk`` input samples and at most about
    ``chunk + hop`` output accumulators are kept.
    """

    def __init__(self, process: Callable, chunk: int, hop: int, min_samples: int):
        if not 0 < hop <= chunk:
            raise ValueError(f"need 0 < hop <= chunk, got hop={hop}, chunk={chunk} samples")
        self.process, self.chunk, self.hop, self.min_samples = process, chunk, hop, min_samples
        self.window = ola_window(chunk)
        self._input = torch.zeros(0)  # input samples [_input_start, received)
        self._input_start = 0
        self.received = 0
        self._next = 0  # start of the next regular chunk
        self._processed_end = 0  # end of the last processed chunk
        self._num = torch.zeros(0)  # accumulators for output samples [_emitted, ...)
        self._den = torch.zeros(0)
        self._emitted = 0
        self._flushed = False

    def _add(self, start: int, out: torch.Tensor, window: torch.Tensor) -> None:
        end = start + out.shape[-1]
        need = end - self._emitted
        if need > self._num.shape[0]:
            grow = need - self._num.shape[0]
            self._num = torch.cat([self._num, torch.zeros(grow)])
            self._den = torch.cat([self._den, torch.zeros(grow)])
        offset = start - self._emitted
        self._num[offset : offset + out.shape[-1]] += out * window
        self._den[offset : offset + out.shape[-1]] += window
        self._processed_end = max(self._processed_end, end)

    def _segment(self, start: int, end: int) -> torch.Tensor:
        return self._input[start - self._input_start : end - self._input_start]

    def _emit(self, upto: int) -> torch.Tensor:
        count = max(0, upto - self._emitted)
        out = self._num[:count] / self._den[:count]
        self._num, self._den = self._num[count:], self._den[count:]
        self._emitted += count
        return out

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        """Add input samples ``[n]``; return the output samples that are now final ``[m]``."""
        if self._flushed:
            raise RuntimeError("push() after flush(): start a new stream")
        samples = torch.as_tensor(samples, dtype=torch.float32).detach().cpu().reshape(-1)
        self._input = torch.cat([self._input, samples])
        self.received += samples.shape[0]
        while self._next + self.chunk <= self.received:
            start = self._next
            out = self.process(self._segment(start, start + self.chunk))
            self._add(start, out, self.window)
            self._next += self.hop
        # Every later chunk starts at or after received - chunk.
        ready = self.received - self.chunk
        keep_from = max(0, ready)
        self._input = self._input[keep_from - self._input_start :]
        self._input_start = keep_from
        return self._emit(min(ready, self._processed_end))

    def flush(self) -> torch.Tensor:
        """End the signal; return the remaining output samples."""
        if self._flushed:
            return torch.zeros(0)
        self._flushed = True
        total = self.received
        if total == 0:
            return torch.zeros(0)
        if total < self.min_samples:
            raise ValueError(
                f"mixture is {total} samples long; the model needs at least "
                f"{self.min_samples} samples"
            )
        if self._processed_end == 0:  # shorter than one chunk: one whole pass
            self._add(0, self.process(self._segment(0, total)), torch.ones(total))
        elif self._processed_end < total:
            start = total - self.chunk
            self._add(start, self.process(self._segment(start, total)), self.window)
        out = self._emit(total)
        self._input = torch.zeros(0)
        return out


def overlap_add(
    process: Callable, signal: torch.Tensor, chunk: int, hop: int, min_samples: int = 1
) -> torch.Tensor:
    """Apply ``process`` to a whole ``[T]`` signal in overlapping chunks; ``[T]`` out.

    Chunk-sized views are pushed through a :class:`ChunkedOverlapAdd` into a
    preallocated output: memory is the input, the output and one chunk's
    processing, whatever the length.

    Arguments
    ---------
    process : callable
        ``[n] -> [n]`` for one chunk (``n = chunk``, or the whole signal when it is
        shorter than one chunk).
    signal : torch.Tensor
        ``[T]`` input.
    chunk, hop : int
        Chunk length and hop in samples (``0 < hop <= chunk``).
    min_samples : int
        Shortest signal accepted.

    Returns
    -------
    torch.Tensor
        ``[T]``.
    """
    signal = torch.as_tensor(signal, dtype=torch.float32).reshape(-1)
    ola = ChunkedOverlapAdd(process, chunk, hop, min_samples)
    out = torch.empty_like(signal)
    position = 0
    for piece in [*signal.split(chunk), None]:
        ready = ola.flush() if piece is None else ola.push(piece)
        out[position : position + ready.shape[0]] = ready
        position += ready.shape[0]
    assert position == signal.shape[0], (position, signal.shape[0])
    return out
