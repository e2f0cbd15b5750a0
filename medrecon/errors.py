"""Errors that end a command with one clear line instead of a library traceback."""

from __future__ import annotations

from os import PathLike


class MedreconError(Exception):
    """Base class of every error medrecon reports to a user as one line."""


class InputError(MedreconError):
    """Bad input: names the file (or argument) and the field that is wrong.

    >>> str(InputError("scan.h5", "sinogram", "contains NaN"))
    'scan.h5: sinogram: contains NaN'
    """

    def __init__(self, source: str | PathLike[str] | None, field: str | None, problem: str):
        self.source = None if source is None else str(source)
        self.field = field
        self.problem = problem
        parts = [p for p in (self.source, field, problem) if p]
        super().__init__(": ".join(parts))


class OperatorShapeError(MedreconError, ValueError):
    """A tensor does not fit an operator's domain or range (shape, dtype or device)."""


class DeviceUnavailableError(MedreconError, RuntimeError):
    """A code path needs a device (a CUDA GPU) that this machine does not have."""


class NumericalError(MedreconError, FloatingPointError):
    """A solver met NaN or infinite values (from a network, or by diverging) and stopped."""
