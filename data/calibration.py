"""Coil calibration limits and coil processing choices of MRI (torch-free, so that the
command line and the protocol schema can state them without loading torch).

fastMRI's narrowest setting, R = 8 with a 4 % centre, gives 10 fully sampled centre
lines at width 256 and 15 at width 368.
"""

from __future__ import annotations

from typing import Any

DEFAULT_CALIBRATION = 24
"""The calibration width of a file without a mask (every line sampled)."""

MIN_CALIBRATION = 4
"""The narrowest calibration region (fully sampled centre lines) of a Cartesian file,
of ``recon mri --calibration`` and of the protocol's ``acquisition.calibration``: one
limit."""

PREWHITEN = ("auto", "noise", "off")
"""Prewhitening choices: ``auto`` whitens with the file's noise scan when it has one,
``noise`` requires one, ``off`` never whitens."""

MIN_ESPIRIT_CALIBRATION = 6
"""The narrowest region ESPIRiT calibrates on (with the 3 x 3 to 5 x 5 kernel that
:func:`medrecon.operators.coils.espirit_kernel_width` picks there). Narrower regions fall
back to low-resolution maps (:func:`medrecon.operators.coils.lowres_maps`)."""


def calibration_width(mask: Any, shape: tuple[int, ...]) -> int:
    """Width of the fully sampled centre of a mask (a torch or numpy 0/1 array; columns of
    a 1D mask, the square block of a 2D one), counted in pairs of lines centred on
    ``n // 2`` as ESPIRiT takes them; :data:`DEFAULT_CALIBRATION` (at most the matrix)
    without a mask.

    >>> import numpy as np
    >>> calibration_width(np.array([0, 1, 1, 1, 1, 1, 0, 0]), (8, 8))  # 5 lines: 4 used
    4
    """
    if mask is None:
        return min(DEFAULT_CALIBRATION, *shape[-2:])
    centre = [n // 2 for n in mask.shape]
    width = 0
    while True:
        half = (width + 2) // 2
        lo = [c - half for c in centre]
        hi = [c - half + width + 2 for c in centre]
        if min(lo) < 0 or any(h > n for h, n in zip(hi, mask.shape)):
            break
        block = mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
        if not bool(block.all()):
            break
        width += 2
    return width
