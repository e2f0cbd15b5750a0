"""Progress bars for long work: a solver callback that drives tqdm on standard error."""

from __future__ import annotations

import sys

import torch
from tqdm import tqdm


class ProgressBar:
    """Use as a solver ``callback(step, n_steps, x)``; shown only on a terminal.

    >>> with ProgressBar("tv") as bar:  # doctest: +SKIP
    ...     solve("tv", problem, callback=bar, weight=1e-3)
    """

    def __init__(self, description: str):
        self.description = description
        self.bar: tqdm | None = None

    def __call__(self, step: int, total: int, x: torch.Tensor) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.description, unit="it", leave=False,
                            disable=None, file=sys.stderr)
        self.bar.update(step - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SliceProgress:
    """Progress over the slices of a volume, with a solver bar per slice.

    Called as ``progress(slice_index, n_slices)`` before each slice; returns the
    solver callback for that slice.
    """

    def __init__(self, description: str):
        self.description = description
        self.slices: tqdm | None = None
        self.solver: ProgressBar | None = None

    def __call__(self, index: int, total: int) -> ProgressBar:
        if self.slices is None:
            self.slices = tqdm(total=total, desc=self.description, unit="slice",
                               disable=None, file=sys.stderr)
        self.slices.update(index - self.slices.n)
        if self.solver is not None:
            self.solver.close()
        self.solver = ProgressBar(f"slice {index + 1}/{total}")
        return self.solver

    def close(self) -> None:
        if self.solver is not None:
            self.solver.close()
        if self.slices is not None:
            self.slices.update(self.slices.total - self.slices.n)
            self.slices.close()

    def __enter__(self) -> SliceProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
