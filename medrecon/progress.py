"""Progress of long work, wherever it runs: a tqdm bar in a terminal or a notebook
(``tqdm.auto``), and periodic plain lines through :mod:`logging` (logger
``medrecon.progress``, level INFO, at most one every :data:`LOG_INTERVAL` seconds per bar)
when standard error is a file or a pipe, as in batch logs."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import torch

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)  # progress lines reach the handlers even when the root is quieter

LOG_INTERVAL = 30.0
"""Seconds between two progress lines of one bar in a log."""


def interactive() -> bool:
    """Whether progress goes to a person (a terminal, or a Jupyter kernel) rather than a log."""
    if "ipykernel" in sys.modules:
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class LogProgress:
    """A bar's counterpart in a log: ``description: n/total unit (elapsed s)`` lines."""

    def __init__(self, total: int, description: str, unit: str,
                 interval: float | None = None):
        self.total, self.n, self.description, self.unit = total, 0, description, unit
        self.interval = LOG_INTERVAL if interval is None else interval
        self._start = self._last = time.monotonic()

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._line(now)

    def close(self) -> None:
        now = time.monotonic()
        if now - self._start >= self.interval:  # short work leaves no line
            self._line(now)

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self, now: float) -> None:
        logger.info("%s: %d/%d %s (%.0f s)", self.description, self.n, self.total, self.unit,
                    now - self._start)


def progress_bar(total: int, description: str, unit: str, *, leave: bool = True,
                 initial: int = 0) -> Any:
    """A ``tqdm.auto`` bar on standard error for a person, else a :class:`LogProgress`."""
    if interactive():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=description, unit=unit, leave=leave,
                    file=sys.stderr)
    bar = LogProgress(total, description, unit)
    bar.n = initial
    return bar


class ProgressBar:
    """Use as a solver ``callback(step, n_steps, x)``.

    >>> with ProgressBar("tv") as bar:  # doctest: +SKIP
    ...     solve("tv", problem, callback=bar, weight=1e-3)
    """

    def __init__(self, description: str):
        self.description = description
        self.bar: Any = None

    def __call__(self, step: int, total: int, x: torch.Tensor) -> None:
        if self.bar is None:
            self.bar = progress_bar(total, self.description, "it", leave=False)
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
        self.slices: Any = None
        self.solver: ProgressBar | None = None

    def __call__(self, index: int, total: int) -> ProgressBar:
        if self.slices is None:
            self.slices = progress_bar(total, self.description, "slice")
        self.slices.update(index - self.slices.n)
        if self.solver is not None:
            self.solver.close()
        self.solver = ProgressBar(f"{self.description}: slice {index + 1}/{total}")
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
