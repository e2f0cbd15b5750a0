"""Simulated multi-coil k-space (``medrecon simulate mri`` and the bundled MRI sample).

A complex image ``x`` (any phase) is seen by ``coils`` birdcage coils
(``sigpy.mri.birdcage_maps``, normalised to a root sum of squares of 1 inside the field
of view), transformed with the centred orthonormal FFT (Cartesian patterns) or the NUFFT
(radial, spiral), sampled, and given complex Gaussian noise of standard deviation
``sigma`` per real component. :func:`medrecon.data.kspace_write.write_kspace_file`
writes the result in the fastMRI layout (:mod:`medrecon.data.kspace`) with ``|x|`` as
``reconstruction_rss`` reference.

This module imports torch, sigpy and the NUFFT; readers of files do not need it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sigpy.mri
import torch

from medrecon.operators.mri import fft2c
from medrecon.operators.nufft import NonCartesianMRI
from medrecon.operators.sampling import (
    equispaced_mask,
    poisson_mask,
    radial_trajectory,
    random_mask,
    spiral_trajectory,
)

PATTERNS = ("random", "equispaced", "poisson", "radial", "spiral")


@dataclass(frozen=True)
class SimulatedKspace:
    """What :func:`simulate_kspace` makes, ready for ``write_kspace_file``."""

    kspace: np.ndarray
    mask: np.ndarray | None
    trajectory: np.ndarray | None
    reference: np.ndarray
    image_shape: tuple[int, int]


def coil_maps(coils: int, shape: tuple[int, int]) -> torch.Tensor:
    """Birdcage coil sensitivities ``(coils, H, W)`` with root sum of squares 1."""
    maps = torch.from_numpy(sigpy.mri.birdcage_maps((coils, *shape), r=1.2))
    return (maps / maps.abs().pow(2).sum(0).sqrt()).to(torch.complex64)


def sampling(pattern: str, shape: tuple[int, int], acceleration: float,
             center_fraction: float, seed: int) -> tuple[torch.Tensor | None,
                                                         torch.Tensor | None]:
    """``(mask, trajectory)`` of a pattern: a column or 2D mask, or a radian trajectory."""
    height, width = shape
    if pattern == "random":
        return random_mask(width, acceleration, center_fraction, seed), None
    if pattern == "equispaced":
        return equispaced_mask(width, acceleration, center_fraction, seed), None
    if pattern == "poisson":
        calib = max(2, round(center_fraction * min(shape)))
        return poisson_mask(shape, acceleration, calibration=(calib, calib), seed=seed), None
    if pattern == "radial":
        spokes = math.ceil(math.pi * max(shape) / acceleration)
        return None, radial_trajectory(spokes, max(shape), shape)
    if pattern == "spiral":
        if height != width:
            raise ValueError("spiral sampling needs a square image")
        interleaves = max(1, min(16, math.floor((width / 2 - 1) / acceleration)))
        return None, spiral_trajectory(width, interleaves, undersampling=acceleration)
    raise ValueError(f"unknown pattern {pattern!r}; choose from {', '.join(PATTERNS)}")


def simulate_kspace(image: np.ndarray, *, coils: int, pattern: str, acceleration: float,
                    center_fraction: float, sigma: float = 0.0, seed: int = 0
                    ) -> SimulatedKspace:
    """Multi-coil k-space of complex slices ``image (slices, H, W)`` (see module docstring)."""
    x = torch.as_tensor(np.asarray(image)).to(torch.complex64)
    shape = tuple(x.shape[-2:])
    maps = coil_maps(coils, shape)
    mask, traj = sampling(pattern, shape, acceleration, center_fraction, seed)
    coil_images = maps * x[:, None]
    if traj is None:
        kspace = fft2c(coil_images)
    else:
        op = NonCartesianMRI(shape, traj, maps, toeplitz=False)
        kspace = op(x)
    if sigma > 0:
        g = torch.Generator().manual_seed(seed + 1)
        noise = torch.randn(kspace.shape, dtype=torch.complex64, generator=g)
        kspace = kspace + sigma * math.sqrt(2) * noise
    if mask is not None:
        kspace = kspace * mask.to(torch.float32)
    return SimulatedKspace(kspace.numpy(), None if mask is None else mask.numpy(),
                           None if traj is None else traj.numpy().astype(np.float32),
                           np.abs(np.asarray(image)).astype(np.float32), shape)
