"""Training helpers that speechbrain does not provide.

:class:`TrainBudget` is a wall-clock training budget that survives a resume:
the recipe stops (after validating and checkpointing) once it is spent, so
variants can be compared at equal training time on the same machine.
:func:`world_size` and :func:`sum_over_processes` are DDP's process count and
sum, and what they are without DDP (1, the values themselves).

Example
-------
>>> budget = TrainBudget(minutes=None)
>>> budget.exhausted()
False
>>> TrainBudget(minutes=0.0).exhausted()
True
>>> world_size(), sum_over_processes([2.0, 3.0]).tolist()
(1, [2.0, 3.0])
"""

from __future__ import annotations

import time

import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.distributed import ddp_all_reduce, is_distributed_initialized


def world_size() -> int:
    """Number of DDP processes (1 without DDP)."""
    return torch.distributed.get_world_size() if is_distributed_initialized() else 1


def sum_over_processes(values: list[float]) -> torch.Tensor:
    """``values`` as a float64 tensor, summed over the DDP processes."""
    return ddp_all_reduce(torch.tensor(values, dtype=torch.float64), torch.distributed.ReduceOp.SUM)


@register_checkpoint_hooks
class TrainBudget:
    """Wall-clock minutes spent training, saved and restored with the checkpoints.

    The clock starts when the object is built (the recipe's start) and adds
    the time recorded in the checkpoint it resumes from; time between the last
    checkpoint and a kill is not counted.

    Arguments
    ---------
    minutes : float or None
        Budget; ``None``: unlimited (the clock is still kept and logged).

    Example
    -------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "budget.txt"
    >>> first = TrainBudget(minutes=30)
    >>> first.spent_before = 12.5 * 60
    >>> first.save(path)
    >>> resumed = TrainBudget(minutes=30)
    >>> resumed.load(path)
    >>> 12.5 <= resumed.elapsed_minutes() < 12.6, resumed.exhausted()
    (True, False)
    """

    def __init__(self, minutes: float | None = None):
        if minutes is not None and minutes < 0:
            raise ValueError(f"the training budget must be >= 0 minutes, got {minutes}")
        self.minutes = minutes
        self.spent_before = 0.0
        self.started = time.monotonic()

    def elapsed_minutes(self) -> float:
        """Minutes spent so far, over every resumed run."""
        return (self.spent_before + time.monotonic() - self.started) / 60

    def exhausted(self) -> bool:
        """Whether the budget is spent."""
        return self.minutes is not None and self.elapsed_minutes() >= self.minutes

    @mark_as_saver
    def save(self, path) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"{self.elapsed_minutes() * 60:.3f}\n")

    @mark_as_loader
    def load(self, path, end_of_epoch=False) -> None:
        del end_of_epoch  # the same either way
        with open(path, encoding="utf-8") as handle:
            self.spent_before = float(handle.read())
        self.started = time.monotonic()
