"""Accelerated MRI: simulation of k-space files and reconstruction slice by slice.

Simulation (``medrecon simulate mri``): a complex image ``x`` (any phase) is seen
by ``coils`` birdcage coils (``sigpy.mri.birdcage_maps``, normalised to a root
sum of squares of 1 inside the field of view), transformed with the centred
orthonormal FFT (Cartesian patterns) or the NUFFT (radial, spiral), sampled, and
given complex Gaussian noise of standard deviation ``sigma`` per real component.
The file is in the fastMRI layout (:mod:`medrecon.data.kspace`) with ``|x|`` as
``reconstruction_rss`` reference.

Reconstruction (``medrecon recon mri``): per slice, coil maps by ESPIRiT from the
fully sampled calibration region (from the gridded centre for non-Cartesian
data), a SENSE operator (Cartesian or NUFFT, single coil without maps), the
solver, the magnitude set to zero outside the maps' support (where no coil sees
the object, so the data say nothing and a sparsity prior would only leak into
it), cropped to the header's reconstruction matrix as fastMRI
does, and the metrics of :mod:`medrecon.metrics` with fastMRI's conventions
(data range = the reference volume's maximum).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import sigpy.mri
import torch

from medrecon.data.kspace import FastMRIFile
from medrecon.data.volume import Volume
from medrecon.diffusion_setup import DIFFUSION_METHODS, diffusion_params, mri_prior
from medrecon.errors import InputError
from medrecon.metrics import nmse, psnr, ssim
from medrecon.operators.coils import espirit_maps, espirit_maps_noncartesian
from medrecon.operators.mri import CartesianMRI, fft2c
from medrecon.operators.nufft import NonCartesianMRI
from medrecon.operators.sampling import (
    equispaced_mask,
    poisson_mask,
    radial_trajectory,
    random_mask,
    spiral_trajectory,
)
from medrecon.operators.wavelet import Wavelet2D
from medrecon.priors.base import Denoiser
from medrecon.solvers import solve
from medrecon.solvers.problem import Callback, Problem, Reconstruction

PATTERNS = ("random", "equispaced", "poisson", "radial", "spiral")
MRI_METHODS = ("zf", "cgsense", "l1wavelet", "tv", *DIFFUSION_METHODS)
DEFAULT_CALIBRATION = 24
MIN_CALIBRATION = 12  # a 6x6 ESPIRiT kernel on fewer lines gives unusable maps
RELATIVE_WEIGHTS = {"cgsense": 1e-2, "l1wavelet": 1e-5, "tv": 3e-3}
"""Default regularisation weights relative to the data (see :func:`solver_params`)."""
DEFAULT_ITERATIONS = {"cgsense": 30, "l1wavelet": 100, "tv": 100}


# --------------------------------------------------------------------------- simulation
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


# ------------------------------------------------------------------------ reconstruction
@dataclass(frozen=True)
class MRIResult:
    """A reconstructed MR magnitude volume, its per-slice solver records and metrics;
    ``std`` is the samples' standard deviation map of a sampler (same units) and
    ``reference`` the file's reference, cropped like the volume."""

    volume: Volume
    reconstructions: list[Reconstruction]
    metrics: dict[str, float]
    std: Volume | None = None
    reference: np.ndarray | None = None


def kspace_noise(y: torch.Tensor, radius: torch.Tensor, fraction: float = 0.05) -> float:
    """Noise standard deviation per real component of k-space data ``y``, from the
    ``fraction`` of its samples farthest from the centre (``radius``, broadcast against
    ``y``; unsampled zeros are ignored), where the object's signal has died out: their
    magnitude is Rayleigh distributed, with median ``sigma sqrt(2 ln 2)``."""
    radius = torch.broadcast_to(radius, y.shape)
    sampled = y != 0
    values, r = y[sampled], radius[sampled]
    if values.numel() == 0:
        return 0.0
    count = max(1, int(fraction * values.numel()))
    outer = values[torch.topk(r.flatten(), count).indices].abs()
    return float(outer.median()) / math.sqrt(2 * math.log(2))


def _kspace_radius(f: FastMRIFile, device: torch.device) -> torch.Tensor:
    """Distance of each sample from the k-space centre (grid units or radians)."""
    if f.trajectory is not None:
        return torch.linalg.vector_norm(f.trajectory.to(device), dim=0)
    h, w = f.shape[-2:]
    ky = torch.arange(h, device=device, dtype=torch.float32) - h // 2
    kx = torch.arange(w, device=device, dtype=torch.float32) - w // 2
    return torch.hypot(ky[:, None] / h, kx[None, :] / w)


def calibration_width(mask: torch.Tensor | None, shape: tuple[int, ...]) -> int:
    """Width of the fully sampled centre of a mask (columns of a 1D mask, the square
    block of a 2D one); the whole matrix without a mask."""
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


def slice_operator(kspace: torch.Tensor, f: FastMRIFile, device: torch.device,
                   calibration: int | None) -> CartesianMRI | NonCartesianMRI:
    """The SENSE operator of one slice, with ESPIRiT maps for multi-coil data."""
    coils = kspace.shape[0]
    if f.trajectory is None:
        width = calibration or calibration_width(f.mask, f.shape)
        if coils > 1 and width < MIN_CALIBRATION:
            raise InputError(f.path, "mask", f"the fully sampled centre is {width} lines wide; "
                             f"ESPIRiT needs at least {MIN_CALIBRATION} (simulate with a larger "
                             "--center-fraction)")
        maps = espirit_maps(kspace, width) if coils > 1 else None
        return CartesianMRI(f.shape, mask=f.mask, maps=maps, device=device)
    traj = f.trajectory.to(device)
    width = calibration or max(MIN_CALIBRATION, min(DEFAULT_CALIBRATION,
                                                    2 * (min(f.image_shape) // 8)))
    maps = None
    if coils > 1:
        try:
            maps = espirit_maps_noncartesian(kspace, traj, f.image_shape, width)
        except ValueError as exc:
            raise InputError(f.path, "trajectory", f"ESPIRiT calibration: {exc}") from None
    return NonCartesianMRI(f.image_shape, traj, maps, device=device)


def solver_params(method: str, problem: Problem, *, weight: float | None = None,
                  iterations: int | None = None) -> dict[str, object]:
    """Keyword arguments of ``method`` with defaults scaled to the data.

    The data are normalised to ``max |y| = 1`` before the solve and the SENSE
    operators here have ``||A|| <= 1``, so cgsense's Tikhonov weight is used as
    is; the L1-wavelet weight is ``weight * max |W A^H y|`` (the weight above which
    the solution is zero) and the TV weight ``2 * weight * max |A^H y|``. Defaults:
    :data:`RELATIVE_WEIGHTS`, tuned on the 8-coil 256 x 256 phantom simulation at
    R = 4 and 8.
    """
    if method == "zf":
        return {}
    relative = RELATIVE_WEIGHTS[method] if weight is None else weight
    n_iter = DEFAULT_ITERATIONS[method] if iterations is None else iterations
    if method == "cgsense":
        return {"weight": relative, "n_iter": n_iter}
    adjoint = problem.operator.H(problem.y)
    if method == "l1wavelet":
        shape = problem.operator.domain_shape
        w = Wavelet2D(shape, dtype=adjoint.dtype, device=adjoint.device)
        return {"weight": relative * float(w(adjoint).abs().max()), "n_iter": n_iter}
    if method == "tv":
        return {"weight": relative * 2 * float(adjoint.abs().max()), "n_iter": n_iter}
    raise ValueError(f"unknown MRI method {method!r}")


def centre_crop(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The centred ``shape`` crop (fastMRI's ``center_crop``); no crop if larger."""
    h, w = image.shape[-2:]
    th, tw = min(shape[0], h), min(shape[1], w)
    top, left = (h - th) // 2, (w - tw) // 2
    return image[..., top:top + th, left:left + tw]


def fastmri_metrics(volume: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """NMSE, PSNR and SSIM of a volume with fastMRI's conventions (data range = the
    reference volume's maximum, SSIM 7x7 per slice averaged)."""
    x = torch.as_tensor(volume, dtype=torch.float64)
    ref = torch.as_tensor(reference, dtype=torch.float64)
    data_range = float(ref.max())
    return {"psnr": float(psnr(x, ref, data_range=data_range)),
            "ssim": float(ssim(x, ref, data_range=data_range)),
            "nmse": float(nmse(x, ref))}


def reconstruct_kspace_file(path: str | Path, method: str, *, weight: float | None = None,
                            iterations: int | None = None, calibration: int | None = None,
                            device: torch.device | str = "cpu",
                            progress: Callable[[int, int], Callback | None] | None = None,
                            prior: Denoiser | None = None,
                            diffusion: dict[str, object] | None = None,
                            generator: torch.Generator | None = None) -> MRIResult:
    """Reconstruct every slice of a k-space file with ``method`` (see module docstring).

    ``progress(slice, n_slices)`` may return a solver callback for that slice.
    Diffusion methods need ``prior`` (an MRI prior, rescaled per slice by
    :func:`medrecon.diffusion_setup.mri_prior`), take ``diffusion`` keywords of
    :func:`medrecon.diffusion_setup.diffusion_params` and use the noise level of
    :func:`kspace_noise`.
    """
    if method not in MRI_METHODS:
        raise InputError(None, "--method", f"unknown MRI method {method!r}")
    if method in DIFFUSION_METHODS and prior is None:
        raise InputError(None, "prior", f"{method} needs a prior")
    device = torch.device(device)
    slices, records, references, stds = [], [], [], []
    with FastMRIFile(path) as f:
        recon_matrix = _recon_matrix(f)
        for i in range(f.num_slices):
            kspace = f.read_slice(i, device)
            operator = slice_operator(kspace, f, device, calibration)
            y = kspace if f.multicoil else kspace[0]
            scale = float(y.abs().max()) or 1.0
            if method in DIFFUSION_METHODS:
                sigma_y = kspace_noise(y, _kspace_radius(f, device)) / scale
                problem = Problem(operator, y / scale, sigma_y=sigma_y)
                params = diffusion_params(method, problem, mri_prior(prior, problem),
                                          generator=generator, modality="mri",
                                          **(diffusion or {}))
            else:
                problem = Problem(operator, y / scale)
                params = solver_params(method, problem, weight=weight, iterations=iterations)
            callback = progress(i, f.num_slices) if progress is not None else None
            result = solve(method, problem, callback=callback, **params)
            support = (operator.maps.abs().pow(2).sum(0) > 0) if operator.maps is not None \
                else None  # the coils do not see outside their support
            image = _magnitude(result.image.detach(), scale, support, recon_matrix)
            slices.append(image)
            if result.std is not None:
                stds.append(_magnitude(result.std.detach(), scale, support, recon_matrix))
            records.append(result)
            if f.references:
                references.append(f.read_reference(i).cpu().numpy())
        spacing = _pixel_spacing(f, recon_matrix)
    array = np.stack(slices)
    metrics, reference = {}, None
    if references:
        reference = np.stack(references)
        if reference.shape != array.shape:
            reference = centre_crop(torch.from_numpy(reference), array.shape[-2:]).numpy()
        metrics = fastmri_metrics(array, reference)
    rows, cols = array.shape[-2:]
    origin = (-(cols - 1) / 2 * spacing[2], -(rows - 1) / 2 * spacing[1], 0.0)
    volume = Volume(array=array, spacing=spacing, origin=origin, orientation=np.eye(3),
                    modality="MR", units="a.u.")
    std = replace(volume, array=np.stack(stds)) if stds else None
    return MRIResult(volume, records, metrics, std, reference)


def _magnitude(image: torch.Tensor, scale: float, support: torch.Tensor | None,
               matrix: tuple[int, int]) -> np.ndarray:
    """``|image| * scale``, zero outside ``support``, cropped to ``matrix`` (float32)."""
    image = image.abs() * scale
    if support is not None:
        image = image * support
    return centre_crop(image, matrix).cpu().numpy().astype(np.float32)


def _recon_matrix(f: FastMRIFile) -> tuple[int, int]:
    if f.header is not None:
        x, y = f.header.recon_matrix[:2]
        return (int(x), int(y))
    return tuple(f.image_shape)


def _pixel_spacing(f: FastMRIFile, matrix: tuple[int, int]) -> tuple[float, float, float]:
    if f.header is None:
        return (1.0, 1.0, 1.0)
    fov, size = f.header.recon_fov_mm, f.header.recon_matrix
    row = fov[0] / size[0] if size[0] else 1.0
    col = fov[1] / size[1] if size[1] else 1.0
    thickness = fov[2] if fov[2] > 0 else 1.0
    return (float(thickness), float(row), float(col))
