"""Third-party readers kept quiet: their loggers and warnings never reach the user.

pydicom, PIL, the JPEG-LS plugin and nibabel log (sometimes whole tracebacks) or warn
on corrupt files before raising; with the root logger configured by the command line,
that text would precede medrecon's one-line error. :func:`quiet` disables the named
loggers and records warnings while a file is read; the reader then reports a problem
itself, as one :class:`~medrecon.errors.InputError`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

#: loggers of the libraries that read image files
LIBRARY_LOGGERS = ("pydicom", "PIL", "jpeg_ls", "pyjpegls", "pylibjpeg", "libjpeg",
                   "openjpeg", "rle", "nibabel", "nibabel.global", "h5py", "tifffile")


@contextmanager
def quiet(*names: str) -> Iterator[list[warnings.WarningMessage]]:
    """Disable the loggers ``names`` (default :data:`LIBRARY_LOGGERS`) and record
    warnings instead of printing them, for the duration of the block; yields the
    recorded warnings."""
    loggers = [logging.getLogger(name) for name in (names or LIBRARY_LOGGERS)]
    previous = [logger.disabled for logger in loggers]
    for logger in loggers:
        logger.disabled = True
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        for logger, disabled in zip(loggers, previous):
            logger.disabled = disabled
