"""MRI sampling patterns: Cartesian masks and non-Cartesian trajectories.

Cartesian masks (torch ``float32`` tensors of zeros and ones, as fastMRI's mask
functions return) act on k-space laid out by :func:`medrecon.operators.mri.fft2c`, DC at
index ``W//2`` (columns) and ``(H//2, W//2)`` (2D):

- :func:`random_mask` and :func:`equispaced_mask`: 1D column masks with fastMRI's
  semantics (fastmri/data/subsample.py, ``RandomMaskFunc`` and
  ``EquispacedMaskFractionFunc``; Zbontar et al., "fastMRI: an open dataset and
  benchmarks for accelerated MRI", arXiv:1811.08839, Section 4.2). Of ``width`` columns,
  ``n_low = round(width * center_fraction)`` (Python's round, half to even) centred
  ones, starting at ``(width - n_low + 1) // 2``, are always sampled; the others so that
  the expected total is ``width / acceleration``.
- :func:`poisson_mask`: a 2D variable-density Poisson-disc mask (SigPy's
  ``sigpy.mri.poisson``).

Randomness: both 1D masks reproduce fastMRI's random stream (fastmri 0.3.0,
``MaskFunc.__call__(shape, seed=seed)`` with one centre fraction and one acceleration):
a private legacy ``numpy.random.RandomState(seed)`` (an ``int`` or a sequence of ints,
as fastMRI's data transforms pass ``tuple(map(ord, fname))``) first draws the setting
(``randint(1)``, which consumes nothing), then ``uniform(size=width)`` (random) or the
offset ``randint(0, round(a))`` (equispaced). The same seed and settings give the
fastMRI package's mask bit for bit (checked against masks stored from the package in
``tests/data/fastmri_masks.json``), and no global random state is touched.

Trajectories are in torchkbnufft's units, radians per pixel in ``[-pi, pi]``, as a
``float64`` tensor ``ktraj`` of shape ``(2, K)``; row ``d`` is the frequency along image
axis ``d`` (row 0: ``H``, row 1: ``W``). SigPy's generators (and ``sigpy.nufft``) use
cycles per field of view, ``k_d`` in ``[-N_d/2, N_d/2]``, as an array ``(..., 2)``
whose last axis is ordered like the image axes. The conversion is

    omega_d = 2 pi k_d / N_d        (:func:`sigpy_to_radians`, inverse :func:`radians_to_sigpy`).

Example:
    >>> from medrecon.operators.sampling import radial_trajectory, random_mask
    >>> mask = random_mask(368, acceleration=4, center_fraction=0.08, seed=0)
    >>> mask.shape, int(mask[184 - 14: 184 + 15].sum())           # 29 centre columns
    (torch.Size([368]), 29)
    >>> radial_trajectory(n_spokes=8, n_readout=32, image_shape=(64, 64)).shape
    torch.Size([2, 256])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import sigpy.mri
import torch
from sigpy.mri.samp import _poisson as _sigpy_poisson

Seed = int | Sequence[int]
"""A mask seed: an integer or a sequence of integers (fastMRI's ``RandomState`` seeds)."""


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _shape_2d(shape: Sequence[int], name: str = "image_shape") -> tuple[int, int]:
    if len(shape) != 2:
        raise ValueError(f"{name} must be (H, W), got {tuple(shape)}")
    return _positive_int(shape[0], name), _positive_int(shape[1], name)


def _centre_columns(width: int, acceleration: float, center_fraction: float) -> int:
    """Validate the 1D mask parameters; the number of fully sampled centre columns."""
    width = _positive_int(width, "width")
    if not math.isfinite(acceleration) or acceleration < 1:
        raise ValueError(f"acceleration must be a finite number >= 1, got {acceleration}")
    if not 0 < center_fraction < 1:
        raise ValueError(f"center_fraction must lie in (0, 1), got {center_fraction}")
    n_low = round(width * center_fraction)
    if n_low * acceleration >= width:
        raise ValueError(f"the {n_low} centre columns (center_fraction {center_fraction} of "
                         f"{width}) already reach acceleration {acceleration}: lower "
                         "center_fraction or acceleration")
    return n_low


def _with_centre(mask: np.ndarray, n_low: int) -> torch.Tensor:
    start = (mask.size - n_low + 1) // 2
    mask[start: start + n_low] = True
    return torch.from_numpy(mask.astype(np.float32))


def _fastmri_stream(seed: Seed) -> np.random.RandomState:
    """fastMRI's generator after ``choose_acceleration`` with one setting: a legacy
    ``RandomState(seed)`` (``rng.randint(1)`` there returns 0 without a draw; it is
    called here all the same so that the stream is theirs by construction)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer, Sequence)):
        raise ValueError(f"seed must be an integer or a sequence of integers, got {seed!r}")
    try:
        rng = np.random.RandomState(seed)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"seed {seed!r} is not a valid fastMRI seed ({exc})") from None
    rng.randint(1)
    return rng


def random_mask(width: int, acceleration: float, center_fraction: float,
                seed: Seed) -> torch.Tensor:
    """fastMRI's ``RandomMaskFunc`` column mask, shape ``(width,)``.

    Besides the ``n_low`` centre columns, each column is drawn independently with
    probability ``p = (width / acceleration - n_low) / (width - n_low)``, so the expected
    number of sampled columns is exactly ``width / acceleration``.
    """
    n_low = _centre_columns(width, acceleration, center_fraction)
    prob = (width / acceleration - n_low) / (width - n_low)
    mask = _fastmri_stream(seed).uniform(size=width) < prob
    return _with_centre(mask, n_low)


def equispaced_mask(width: int, acceleration: float, center_fraction: float, seed: Seed,
                    offset: int | None = None) -> torch.Tensor:
    """fastMRI's ``EquispacedMaskFractionFunc`` column mask, shape ``(width,)``.

    The centre columns plus columns ``round(offset + j * a)`` for ``j = 0, 1, ...`` below
    ``width - 1``, spaced by the adjusted acceleration

        a = acceleration (n_low - width) / (n_low acceleration - width),

    which makes ``n_low + (width - n_low) / a = width / acceleration``: the total matches
    the target up to rounding and overlap with the centre. ``offset`` (default: drawn
    uniformly from ``0 .. round(a) - 1`` with the seed, fastMRI's draw) shifts the
    pattern.
    """
    n_low = _centre_columns(width, acceleration, center_fraction)
    spacing = acceleration * (n_low - width) / (n_low * acceleration - width)
    if offset is None:
        offset = int(_fastmri_stream(seed).randint(0, high=round(spacing)))
    elif not 0 <= offset < width:
        raise ValueError(f"offset must lie in [0, {width}), got {offset}")
    mask = np.zeros(width, dtype=bool)
    mask[np.around(np.arange(offset, width - 1, spacing)).astype(np.int64)] = True
    return _with_centre(mask, n_low)


def _normalised_radius(shape: tuple[int, int], calib: tuple[int, int]) -> np.ndarray:
    """SigPy's radius for the Poisson-disc density: per axis the distance beyond the
    calibration half-width, ``max(|j - N/2| - c/2, 0)``, scaled to 1 at the edge."""
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    x = np.maximum(abs(x - nx / 2) - calib[1] / 2, 0)
    x /= x.max()
    y = np.maximum(abs(y - ny / 2) - calib[0] / 2, 0)
    y /= y.max()
    return np.sqrt(x**2 + y**2)


def poisson_mask(shape: Sequence[int], acceleration: float, *,
                 calibration: Sequence[int] = (0, 0), seed: int = 0,
                 crop_corner: bool = True, tolerance: float = 0.1,
                 max_attempts: int = 30) -> torch.Tensor:
    """2D variable-density Poisson-disc mask ``(H, W)``, SigPy's ``sigpy.mri.poisson``.

    Bridson's Poisson-disc sampler (Bridson, "Fast Poisson disk sampling in arbitrary
    dimensions", SIGGRAPH sketches 2007; SigPy's compiled ``sigpy.mri.samp._poisson``)
    with a minimum distance ``1 + s r`` (in pixels, at least 1; scaled per axis by
    ``N_axis / max(H, W)``), ``r`` the normalised radius of :func:`_normalised_radius`:
    zero inside the calibration block, 1 at the edges. The slope ``s`` is bisected on
    ``[0, max(H, W)]`` until ``H W / (number sampled)`` is within ``tolerance`` of
    ``acceleration``. This is SigPy's procedure step for step (the same mask for the
    same arguments), except that SigPy bisects without limit and never returns when no
    slope meets the tolerance (32 x 32 at acceleration 60 ran for over 10 minutes); here
    the bisection stops after 64 halvings with a ``ValueError``.

    The calibration region is the fully sampled centre block of ``calibration = (ch,
    cw)`` rows and columns, ``[int(H/2 - ch/2), int(H/2 + ch/2))`` by the same for
    columns (``(0, 0)``: none). ``crop_corner`` removes every sample with ``r >= 1``.
    ``seed`` seeds numba's generator inside the compiled sampler: a seed gives the same
    mask every time, and NumPy's global random state is not touched.
    """
    height, width = _shape_2d(shape, "shape")
    if not math.isfinite(acceleration) or acceleration <= 1:
        raise ValueError(f"acceleration must be a finite number > 1, got {acceleration}")
    if (len(calibration) != 2 or any(int(c) != c or c < 0 for c in calibration)
            or calibration[0] >= height or calibration[1] >= width):
        raise ValueError(f"calibration must be two non-negative integers smaller than the "
                         f"shape {(height, width)}, got {tuple(calibration)}")
    calib = (int(calibration[0]), int(calibration[1]))
    if not tolerance > 0:
        raise ValueError(f"tolerance must be positive, got {tolerance}")
    max_attempts = _positive_int(max_attempts, "max_attempts")
    radius = _normalised_radius((height, width), calib)
    low, high = 0.0, float(max(height, width))
    for _ in range(64):
        slope = (low + high) / 2
        radius_x = np.clip((1 + radius * slope) * width / max(width, height), 1, None)
        radius_y = np.clip((1 + radius * slope) * height / max(width, height), 1, None)
        mask = _sigpy_poisson(width, height, max_attempts, radius_x, radius_y, calib,
                              int(seed))
        if crop_corner:
            mask *= radius < 1
        achieved = height * width / max(float(mask.sum()), 1.0)
        if abs(achieved - acceleration) < tolerance:
            return torch.from_numpy(mask.astype(np.float32))
        low, high = (slope, high) if achieved < acceleration else (low, slope)
    raise ValueError(f"poisson_mask: no mask of shape {(height, width)} with calibration "
                     f"{calib} reaches acceleration {acceleration} within {tolerance} "
                     f"(last: {achieved:.3g})")


def sigpy_to_radians(coord: np.ndarray | torch.Tensor,
                     image_shape: Sequence[int]) -> torch.Tensor:
    """SigPy coordinates ``(..., 2)`` in cycles per FOV to ``ktraj (2, K)`` in radians,
    ``omega_d = 2 pi k_d / N_d`` (samples flattened in C order)."""
    shape = _shape_2d(image_shape)
    coord = torch.as_tensor(np.asarray(coord), dtype=torch.float64)
    if coord.ndim < 1 or coord.shape[-1] != 2:
        raise ValueError(f"coordinates must have shape (..., 2), got {tuple(coord.shape)}")
    scale = torch.tensor([2 * math.pi / n for n in shape], dtype=torch.float64)
    return (coord.reshape(-1, 2) * scale).T.contiguous()


def radians_to_sigpy(ktraj: torch.Tensor, image_shape: Sequence[int]) -> np.ndarray:
    """``ktraj (2, K)`` in radians to SigPy coordinates ``(K, 2)`` in cycles per FOV."""
    shape = _shape_2d(image_shape)
    if ktraj.ndim != 2 or ktraj.shape[0] != 2:
        raise ValueError(f"ktraj must have shape (2, K), got {tuple(ktraj.shape)}")
    scale = np.array([n / (2 * math.pi) for n in shape])
    return ktraj.detach().cpu().double().numpy().T * scale


def radial_trajectory(n_spokes: int, n_readout: int, image_shape: Sequence[int],
                      golden: bool = True) -> torch.Tensor:
    """Radial trajectory by ``sigpy.mri.radial``, in radians, shape ``(2, n_spokes *
    n_readout)``, spoke after spoke.

    SigPy's 2D spokes are centre-out half-spokes: sample ``j`` of spoke ``n`` is at radius
    ``j / (2 n_readout)`` of the matrix (``0 <= j < n_readout``, so ``|omega| < pi``) and
    angle ``n phi``, with the golden angle ``phi = pi (3 - sqrt 5)`` (about 137.5 degrees;
    Winkelmann et al., IEEE TMI 26:68-76, 2007) or ``phi = 2 pi / n_spokes``. A full
    diameter of ``2 n_readout`` samples is two half-spokes; Nyquist for an ``N x N``
    image needs about ``pi N`` half-spokes.
    """
    shape = _shape_2d(image_shape)
    n_spokes = _positive_int(n_spokes, "n_spokes")
    n_readout = _positive_int(n_readout, "n_readout")
    coord = sigpy.mri.radial((n_spokes, n_readout, 2), shape, golden=golden)
    return sigpy_to_radians(coord, shape)


def spiral_trajectory(image_size: int, n_interleaves: int, *, fov: float = 0.24,
                      undersampling: float = 1.0, readout_sampling: float = 1.0,
                      alpha: float = 1.0, max_gradient: float = 0.04,
                      max_slew: float = 150.0) -> torch.Tensor:
    """Variable-density spiral by ``sigpy.mri.spiral`` (Kim, Adalsteinsson & Spielman,
    "Simple analytic variable density spiral design", MRM 50:214-219, 2003), in radians,
    shape ``(2, K)``, interleave after interleave, for an ``image_size`` square image.

    SigPy returns k in 1/m for a field of view ``fov`` (m); ``k * fov`` is in cycles per
    FOV, within ``[-N/2, N/2]``, and :func:`sigpy_to_radians` maps it to ``[-pi, pi]``.
    ``undersampling`` is SigPy's ``R``, ``readout_sampling`` its ``f_sampling``,
    ``alpha`` the density exponent (1: uniform), ``max_gradient`` in T/m and ``max_slew``
    in T/m/s.
    """
    size = _positive_int(image_size, "image_size")
    n_interleaves = _positive_int(n_interleaves, "n_interleaves")
    for name, value in (("fov", fov), ("undersampling", undersampling),
                        ("readout_sampling", readout_sampling), ("alpha", alpha),
                        ("max_gradient", max_gradient), ("max_slew", max_slew)):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value}")
    if n_interleaves * undersampling >= size / 2:
        raise ValueError(f"n_interleaves * undersampling ({n_interleaves * undersampling}) "
                         f"must be below image_size / 2 ({size / 2})")
    k = np.asarray(sigpy.mri.spiral(fov, size, readout_sampling, undersampling, n_interleaves,
                                    alpha, max_gradient, max_slew))
    if k.size == 0 or not np.isfinite(k).all():
        raise ValueError("spiral_trajectory: SigPy's design gave no finite samples for "
                         "these parameters")
    return sigpy_to_radians(k * fov, (size, size))
