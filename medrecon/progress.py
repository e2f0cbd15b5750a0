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
        self.bar.update(step + 1 - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
