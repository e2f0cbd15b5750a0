"""An MR-like complex test image made from the procedural CT phantom.

:func:`mr_phantom` takes a slice of :func:`medrecon.data.phantom.ct_phantom`
(the same patient for the same seed), keeps the body (the largest connected
region above -500 HU once opened to cut the thin table shell, holes filled: the
CT table disappears) and maps Hounsfield
units to a T1-weighted-like magnitude by a piecewise-linear table:

=============================  ==========  =========================
tissue                         HU          magnitude
=============================  ==========  =========================
air, bowel gas, lung           <= -700     0 .. 0.05
fat                            -110 .. -60 1.0 (bright on T1)
fluid (bile, urine, CSF)       0 .. 20     0.25
muscle, organs                 40 .. 120   0.45 .. 0.65
enhanced blood, marrow         150 .. 400  0.55
cortical bone, calcium         >= 700      0.03 (no signal)
=============================  ==========  =========================

The magnitude is then given a smooth phase, ``exp(i phi)`` with ``phi`` a random
2D polynomial of degree 2 over the field of view (at most ``max_phase`` radians),
as B0 inhomogeneity and receive phase give a real scan. The result is a
complex64 ``(size, size)`` image with magnitude in [0, 1] (up to complex64 rounding:
the maximum can be 1 + 1e-7); deterministic in the seed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medrecon.data.phantom import ct_phantom

__all__ = ["body_mask", "mr_phantom", "smooth_phase"]

# (HU, magnitude) knots of the T1-like lookup, increasing in HU
_T1_KNOTS = (
    (-1000.0, 0.0), (-700.0, 0.05), (-300.0, 0.6), (-110.0, 1.0), (-60.0, 1.0),
    (-20.0, 0.4), (0.0, 0.25), (20.0, 0.25), (40.0, 0.45), (120.0, 0.65),
    (150.0, 0.55), (400.0, 0.55), (700.0, 0.03), (3071.0, 0.03),
)


def smooth_phase(shape: tuple[int, int], rng: np.random.Generator,
                 max_phase: float = np.pi / 2) -> np.ndarray:
    """A smooth phase map (radians): a random quadratic polynomial of the normalised
    coordinates, scaled so that its largest absolute value is ``max_phase``."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]),
                         indexing="ij")
    terms = (np.ones_like(xx), xx, yy, xx * yy, xx**2, yy**2)
    phase = sum(rng.standard_normal() * t for t in terms)
    peak = float(np.abs(phase).max())
    return phase * (max_phase / peak) if peak > 0 else phase


def body_mask(hu: np.ndarray, pixel_size: float) -> np.ndarray:
    """The body: the largest region above -500 HU after an opening of about 4 mm that
    cuts it from the thin table shell, holes filled, grown back within the threshold."""
    above = hu > -500.0
    radius = max(1, round(2.0 / pixel_size))
    opened = ndimage.binary_opening(above, iterations=radius)
    labels, count = ndimage.label(opened)
    if count == 0:
        return np.zeros(hu.shape, bool)
    sizes = ndimage.sum_labels(np.ones_like(hu), labels, index=np.arange(1, count + 1))
    body = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    return ndimage.binary_dilation(body, iterations=radius) & (above | body)


def mr_phantom(size: int = 256, *, seed: int = 0, region: str = "abdomen",
               max_phase: float = np.pi / 2) -> np.ndarray:
    """A complex64 ``(size, size)`` T1-like slice with smooth phase (see module docstring).

    >>> image = mr_phantom(64, seed=1)
    >>> image.dtype, image.shape, float(abs(image).max()) <= 1.0 + 1e-6  # complex64 rounding
    (dtype('complex64'), (64, 64), True)
    """
    phantom = ct_phantom(size, seed=seed, region=region)
    hu = phantom.image.astype(np.float64)
    knots_hu, knots_value = np.array(_T1_KNOTS).T
    magnitude = np.interp(hu, knots_hu, knots_value) * body_mask(hu, phantom.pixel_size)
    rng = np.random.default_rng([seed, 1])
    phase = smooth_phase(hu.shape, rng, max_phase)
    return (magnitude * np.exp(1j * phase)).astype(np.complex64)
