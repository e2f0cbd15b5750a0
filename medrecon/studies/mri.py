"""An MRI study: a fastMRI-layout k-space file, opened once, reconstructed slice by slice.

Per slice: coil maps by ESPIRiT from the fully sampled calibration region (from the
gridded centre for non-Cartesian data; the kernel width chosen from the calibration data
by :func:`medrecon.operators.coils.espirit_kernel_width`, so that a 12 x 12 centre keeps
an object that fills the field of view inside the maps' support), a SENSE operator
(Cartesian or NUFFT, single coil without maps), data normalised to ``max |y| = 1``, the
method, the magnitude set to zero outside the maps' support (where no coil sees the
object, so the data say nothing and a sparsity prior would only leak into it), cropped
to the header's reconstruction
matrix as fastMRI does, and the metrics of :mod:`medrecon.metrics` with fastMRI's
conventions (data range = the reference volume's maximum).

The noise level of a slice (what the noise-aware weights of :mod:`medrecon.methods` and
the plausibility warnings of :func:`medrecon.studies.plausibility_warnings` read) is
estimated from the data: the smaller of the k-space periphery's (:func:`kspace_noise`)
and, for Cartesian data, the empty image rows' (:func:`background_noise`). The
periphery alone read 1.2 times the noise on a brain slice at 1e-3 and 14 to 19 times it
on the sharp-edged body phantoms; the empty rows read it within 1 %.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medrecon.data.calibration import (
    DEFAULT_CALIBRATION,
    MIN_CALIBRATION,
    MIN_ESPIRIT_CALIBRATION,
    PREWHITEN,
    calibration_width,
)
from medrecon.errors import InputError
from medrecon.studies import (
    BaseTask,
    MappedPrior,
    Study,
    StudyResult,
    plausibility_warnings,
    problem_of,
    std_volume,
)

if TYPE_CHECKING:
    from medrecon.data.kspace import FastMRIFile, IsmrmrdFile
    from medrecon.methods import Method, Params
    from medrecon.operators.mri import CartesianMRI
    from medrecon.operators.nufft import NonCartesianMRI
    from medrecon.priors.base import Denoiser
    from medrecon.solvers.problem import Problem
    from medrecon.studies.mri_resolution import PriorGridTask

logger = logging.getLogger(__name__)

NONCARTESIAN_MIN_CALIBRATION = 12
"""The smallest default gridded calibration region of non-Cartesian data."""
PRIOR_QUANTILE = 0.99
"""The MRI prior was trained on images divided by this percentile of their magnitude."""


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


QUIET_ROWS = 0.1
"""Fraction of the image rows, the quietest, that :func:`background_noise` starts from."""


def sampled_columns(mask: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The k-space columns a Cartesian mask samples in full along the first image axis
    (fastMRI's readout), as a boolean ``(W,)``: a ``(W,)`` column mask, a 2D mask whose
    sampled columns are complete, or every column without a mask; ``None`` for a 2D
    mask that samples no whole column (a Poisson-disc pattern)."""
    width = shape[-1]
    if mask is None:
        return torch.ones(width, dtype=torch.bool)
    mask = mask.to(torch.bool)
    if mask.ndim == 1 or mask.shape[-2] == 1:
        return mask.reshape(-1).clone()
    columns = mask.all(dim=-2)
    if not bool(columns.any()) or bool((mask.any(dim=-2) & ~columns).any()):
        return None
    return columns


def background_noise(y: torch.Tensor, columns: torch.Tensor,
                     quiet: float = QUIET_ROWS) -> float | None:
    """Noise standard deviation per real component of Cartesian k-space ``y`` (``(coils,
    H, W)`` or ``(H, W)``) from the image rows where nothing is: the sampled
    ``columns`` are complete along ``H``, so their inverse FFT along ``H`` (orthonormal:
    the noise keeps its level) is the image, row by row, in the hybrid space of ``(row,
    k_x)``, and a row that crosses no object (above and below the head, the readout's
    oversampled margin) holds only noise, whatever the object's fine structure (which
    fills the k-space periphery of sharp-edged anatomy and fools :func:`kspace_noise`).
    The mean power per sample of the rows is taken over those within 4 standard errors
    of the median of the ``quiet`` fraction of quietest rows (those consistent with
    pure noise); ``None`` without a sampled column. Where no row is empty the estimate
    is too high, never too low (up to the noise of the estimate itself)."""
    if y.ndim == 2:
        y = y[None]
    columns = columns.to(y.device)
    if not bool(columns.any()):
        return None
    lines = y[..., columns]
    rows = torch.fft.fftshift(torch.fft.ifft(torch.fft.ifftshift(lines, dim=-2), dim=-2,
                                             norm="ortho"), dim=-2)
    power = rows.abs().pow(2).double().mean(dim=(0, 2))  # per row, 2 sigma^2 if empty
    count = max(1, int(quiet * power.numel()))
    floor = float(torch.topk(power, count, largest=False).values.median())
    dof = 2 * lines.shape[0] * lines.shape[-1]  # real components per row
    empty = power[power <= floor * (1 + 4 * math.sqrt(2 / dof))]
    return math.sqrt(float(empty.mean()) / 2)


def kspace_radius(f: FastMRIFile, device: torch.device) -> torch.Tensor:
    """Distance of each sample from the k-space centre (grid units or radians)."""
    if f.trajectory is not None:
        return torch.linalg.vector_norm(f.trajectory.to(device), dim=0)
    h, w = f.shape[-2:]
    ky = torch.arange(h, device=device, dtype=torch.float32) - h // 2
    kx = torch.arange(w, device=device, dtype=torch.float32) - w // 2
    return torch.hypot(ky[:, None] / h, kx[None, :] / w)


SUPPORT_ENERGY = 0.98
"""The fraction of the low-resolution coil images' energy that the ESPIRiT support of a
narrow calibration region (below :data:`NARROW_ESPIRIT` lines) must hold before its crop
(0.95) is relaxed to 0.9 (:func:`coil_maps`)."""
NARROW_ESPIRIT = 8
"""Calibration regions narrower than this (ESPIRiT's 3 x 3 kernel) have their support
checked (:data:`SUPPORT_ENERGY`); wider ones kept at least 0.99 of the energy in the
tests (7 to 10 lines of a 64 x 256 and a 128 x 128 phantom) and are left as they are."""


def support_energy(kspace: torch.Tensor, width: int, maps: torch.Tensor) -> float:
    """The fraction of the energy of the low-resolution coil images of ``kspace``'s central
    ``width`` lines (:func:`medrecon.operators.coils.lowres_images`) inside the support of
    ``maps`` (where they are not zero)."""
    from medrecon.operators.coils import lowres_images

    energy = lowres_images(kspace, width).abs().pow(2).sum(0)
    inside = maps.abs().pow(2).sum(0) > 0
    total = float(energy.sum())
    return float(energy[inside.to(energy.device)].sum()) / total if total > 0 else 1.0


def coil_maps(kspace: torch.Tensor, width: int, path: Path, field: str
              ) -> tuple[torch.Tensor, bool]:
    """Coil maps of Cartesian multi-coil ``kspace`` ``(coils, H, W)`` from its central
    ``width`` lines, and whether they are ESPIRiT's: ESPIRiT from
    :data:`MIN_ESPIRIT_CALIBRATION` lines up, below it the low-resolution fall-back
    (:func:`medrecon.operators.coils.lowres_maps`). ESPIRiT's support (eigenvalue above
    0.95) can miss part of the object on the narrowest regions (6 lines of a 64 x 256
    matrix kept 95 % of the low-resolution image's energy there, and CG-SENSE fell from
    22 to 13.5 dB); where it keeps less than :data:`SUPPORT_ENERGY`
    (:func:`support_energy`) on fewer than :data:`NARROW_ESPIRIT` lines, the maps are
    recomputed with a crop of 0.9 (Uecker et al., MRM 71:990-1001, 2014, crop the
    eigenvalue map between 0.8 and 0.95). A calibration that cannot be done
    (an unsampled line in the region, a region wider than the matrix) raises
    :class:`InputError` naming ``path`` and ``field``."""
    from medrecon.operators.coils import SECOND_SET_CROP, espirit_maps, lowres_maps

    if width < MIN_CALIBRATION:
        raise InputError(path, field, f"the calibration region is {width} lines wide; at "
                         f"least {MIN_CALIBRATION} are needed (simulate with a larger "
                         "--center-fraction)")
    try:
        if width >= MIN_ESPIRIT_CALIBRATION:
            maps = espirit_maps(kspace, width)
            kept = support_energy(kspace, width, maps) if width < NARROW_ESPIRIT else 1.0
            if kept < SUPPORT_ENERGY:
                logger.info("%s: the ESPIRiT support on %d lines holds %.3f of the "
                            "low-resolution image's energy: crop relaxed to %g", path.name,
                            width, kept, SECOND_SET_CROP)
                maps = espirit_maps(kspace, width, crop=SECOND_SET_CROP)
            return maps, True
        logger.info("%s: %d calibration lines, fewer than ESPIRiT's %d: low-resolution "
                    "coil maps", path.name, width, MIN_ESPIRIT_CALIBRATION)
        return lowres_maps(kspace, width), False
    except ValueError as exc:
        raise InputError(path, field, f"coil calibration on {width} lines: {exc}") from None


def slice_operator(kspace: torch.Tensor, f: FastMRIFile, device: torch.device,
                   calibration: int | None) -> CartesianMRI | NonCartesianMRI:
    """The SENSE operator of one slice, with coil maps for multi-coil data
    (:func:`coil_maps`; ``calibration`` forces the width, default the mask's centre)."""
    return _slice_operator(kspace, f, device, calibration)[0]


def _slice_operator(kspace: torch.Tensor, f: FastMRIFile, device: torch.device,
                    calibration: int | None, unwhiten: torch.Tensor | None = None
                    ) -> tuple[CartesianMRI | NonCartesianMRI, int | None]:
    """:func:`slice_operator` and the ESPIRiT calibration width (``None`` without
    ESPIRiT maps of Cartesian data: single coil, low-resolution maps, non-Cartesian).
    ``unwhiten`` (:meth:`MRIStudy.coil_data`) maps the coils of prewhitened ``kspace``
    back to the receiver's; the maps are then rescaled by :func:`whitened_maps`."""
    from medrecon.operators.coils import espirit_maps_noncartesian
    from medrecon.operators.mri import CartesianMRI
    from medrecon.operators.nufft import NonCartesianMRI

    coils = kspace.shape[0]
    if f.trajectory is None:
        if coils == 1:
            return CartesianMRI(f.shape, mask=f.mask, maps=None, device=device), None
        width = calibration or calibration_width(f.mask, f.shape)
        maps, espirit = coil_maps(kspace, width, f.path,
                                  "acquisition.calibration" if calibration else "mask")
        if unwhiten is not None:
            maps = whitened_maps(maps, unwhiten)
        operator = CartesianMRI(f.shape, mask=f.mask, maps=maps, device=device)
        return operator, (width if espirit else None)
    traj = f.trajectory.to(device)
    width = calibration or max(NONCARTESIAN_MIN_CALIBRATION,
                               min(DEFAULT_CALIBRATION, 2 * (min(f.image_shape) // 8)))
    maps = None
    if coils > 1:
        try:
            maps = espirit_maps_noncartesian(kspace, traj, f.image_shape, width)
        except ValueError as exc:
            raise InputError(f.path, "trajectory", f"ESPIRiT calibration: {exc}") from None
        if unwhiten is not None:
            maps = whitened_maps(maps, unwhiten)
    return NonCartesianMRI(f.image_shape, traj, maps, device=device), None


def whitened_maps(maps: torch.Tensor, unwhiten: torch.Tensor) -> torch.Tensor:
    """Coil maps of prewhitened data in the image units of the receiver coils.

    Maps estimated from whitened data ``T y`` (``T = L^{-1}``, or ``A L^{-1}`` after coil
    compression ``A``) have a root sum of squares of 1 in the whitened coils, ``S_w =
    T S / ||T S||`` for the receiver maps ``S`` (``||S|| = 1``, as ESPIRiT and
    :func:`medrecon.operators.coils.lowres_maps` give them), so that a SENSE image of
    ``T y`` would be ``||T S|| x``: the object weighted by the local SNR gain of the
    array (Kellman & McVeigh, "Image reconstruction in SNR units", MRM 54:1439-1447,
    2005), not the object. With ``unwhiten = T^+`` (``L``, or ``L A^H``) the receiver
    maps are ``S = T^+ S_w / ||T^+ S_w||``, and the maps of the whitened model ``T y = F
    (T S) x`` are ``T S = S_w / ||T^+ S_w||`` (Pruessmann et al., MRM 46:638-651, 2001:
    SENSE with the noise covariance is SENSE of the whitened data with whitened maps).
    Zero where ``maps`` are."""
    receiver = torch.einsum("ij,j...->i...", unwhiten.to(maps.device, torch.complex128),
                            maps.to(torch.complex128))
    norm = receiver.abs().pow(2).sum(0).sqrt()
    gain = torch.where(norm > 0, 1 / norm.clamp_min(1e-30), torch.zeros_like(norm))
    return (maps * gain.to(maps.real.dtype)).to(maps.dtype)


def centre_crop(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The centred ``shape`` crop (fastMRI's ``center_crop``); no crop if larger."""
    h, w = image.shape[-2:]
    th, tw = min(shape[0], h), min(shape[1], w)
    top, left = (h - th) // 2, (w - tw) // 2
    return image[..., top:top + th, left:left + tw]


def fastmri_metrics(volume: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """NMSE, PSNR and SSIM of a volume with fastMRI's conventions (data range = the
    reference volume's maximum, SSIM 7x7 per slice averaged)."""
    from medrecon.metrics import nmse, psnr, ssim

    x = torch.as_tensor(volume, dtype=torch.float64)
    ref = torch.as_tensor(reference, dtype=torch.float64)
    data_range = float(ref.max())
    return {"psnr": float(psnr(x, ref, data_range=data_range)),
            "ssim": float(ssim(x, ref, data_range=data_range)),
            "nmse": float(nmse(x, ref))}


def mri_prior(denoiser: Denoiser, rough: torch.Tensor) -> MappedPrior:
    """An MRI prior trained on images divided by the :data:`PRIOR_QUANTILE` of their
    magnitude, mapped to a problem's units: that percentile of a rough reconstruction
    of the problem becomes the prior's scale."""
    reference = float(torch.quantile(rough.abs().flatten().double(), PRIOR_QUANTILE))
    return MappedPrior(denoiser, (reference or 1.0) * denoiser.scale,
                       reference * denoiser.offset)


class MRITask(BaseTask):
    """One slice, in k-space normalised to ``max |y| = 1``.

    ``columns``: the k-space columns sampled in full along the readout (Cartesian data,
    :func:`sampled_columns`), for :func:`background_noise`; ``None`` where there are
    none (non-Cartesian, Poisson-disc)."""

    modality = "mri"

    def __init__(self, problem, radius: torch.Tensor, scale: float,
                 columns: torch.Tensor | None = None, calibration: int | None = None, *,
                 whitened: bool = False):
        super().__init__(problem)
        self.whitened = whitened
        """Whether the data were prewhitened (the maps are :func:`whitened_maps`)."""
        self.radius = radius
        self.scale = scale
        self.columns = columns
        self.calibration = calibration
        self._baseline: torch.Tensor | None = None
        self._soft: Problem | bool | None = None
        self._density: torch.Tensor | bool | None = None
        self.prior_grid: PriorGridTask | None = None
        """The task on the prior's grid a diffusion method last ran on (or ``None``)."""

    def prior_grid_task(self, denoiser: Denoiser) -> PriorGridTask | None:
        """This task as a diffusion prior solves it (:mod:`medrecon.studies.mri_resolution`:
        on the prior's finer grid where the image is under half the prior's training
        size, with both map sets where there are two), else ``None``; kept in
        :attr:`prior_grid` so that :meth:`MRIStudy.reconstruct` brings the solution
        back."""
        from medrecon.studies.mri_resolution import prior_grid_task

        fine = prior_grid_task(self, denoiser)
        if fine is None or self.prior_grid is None or \
                self.prior_grid.problem.operator.domain_shape != fine.problem.operator.domain_shape:
            self.prior_grid = fine
        return self.prior_grid

    def soft_sense_problem(self) -> Problem | None:
        """The problem with both ESPIRiT map sets (:mod:`medrecon.studies.mri_sets`) for
        Cartesian multi-coil data with a ``calibration`` width, where the second set is
        not empty inside the first's support; ``None`` otherwise (computed once). Its
        solution is ``(2 H, W)``; :meth:`MRIStudy.reconstruct` combines it."""
        if self._soft is None:
            self._soft = False
            op = self.problem.operator
            if self.calibration and self._cartesian and op.maps is not None:
                from medrecon.operators.coils import espirit_second_set
                from medrecon.operators.map_sets import SoftSENSE

                second = espirit_second_set(self.problem.y, self.calibration, op.maps)
                if self.whitened:  # the first set's gain (whitened_maps) on the second
                    second = second * op.maps.abs().pow(2).sum(0).sqrt().to(second.dtype)
                if bool(second.abs().amax() > 0):
                    self._soft = problem_of(SoftSENSE(op, second), self.problem.y)
        return self._soft or None

    def density(self) -> torch.Tensor | None:
        """Density compensation weights ``(K,)`` of non-Cartesian data (Pipe & Menon's
        iteration, :func:`medrecon.operators.nufft.pipe_menon_density`, scaled as ``1 /
        density``), for zero-filling; ``None`` for Cartesian data (computed once)."""
        if self._density is None:
            self._density = False
            operator = self.problem.operator
            if not self._cartesian:
                from medrecon.operators.nufft import pipe_menon_density

                self._density = pipe_menon_density(operator.ktraj, operator.domain_shape[-2:])
        return self._density if self._density is not False else None

    def estimated_noise(self) -> float:
        """The smaller of :func:`kspace_noise` (the k-space periphery) and, for Cartesian
        data, :func:`background_noise` (the empty image rows): the object's signal can
        only raise either, so the smaller is the nearer."""
        estimates = [kspace_noise(self.problem.y, self.radius)]
        if self.columns is not None and self.problem.y.ndim >= 2:
            background = background_noise(self.problem.y, self.columns)
            if background is not None:
                estimates.append(background)
        return min(estimates)

    def prior_in_units(self, denoiser: Denoiser) -> Denoiser:
        return mri_prior(denoiser, self.rough_image())

    @property
    def baseline_name(self) -> str:
        return "zero-filling" if self._cartesian else "the rough CG-SENSE image"

    @property
    def _cartesian(self) -> bool:
        from medrecon.operators.mri import CartesianMRI

        return isinstance(self.problem.operator, CartesianMRI)

    def baseline_image(self) -> torch.Tensor:
        """Cartesian data: the zero-filled image (the orthonormal FFT keeps the scale;
        :func:`medrecon.solvers.zero_filled.zero_filled`, ``A^H y`` normalised by the
        maps' ``sum_c |S_c|^2``, 1 but for prewhitened data); other operators (an adjoint
        NUFFT without density compensation has any scale): :meth:`rough_image`.
        Computed once."""
        if self._baseline is None:
            from medrecon.solvers.zero_filled import zero_filled

            self._baseline = zero_filled(self.problem).image if self._cartesian \
                else self.rough_image()
        return self._baseline


class MRIStudy(Study):
    """An open k-space file (:class:`medrecon.data.kspace.FastMRIFile`, or an ISMRMRD raw
    file as :class:`medrecon.data.kspace.IsmrmrdFile`), validated once.

    ``calibration`` forces the coil calibration width (default: the mask's fully
    sampled centre). ``prewhiten`` (:data:`PREWHITEN`) decorrelates the coils with the
    noise scan's covariance ``Psi`` (:func:`medrecon.operators.coils.prewhiten`, Pruessmann
    et al., MRM 46:638-651, 2001), scaled to a mean diagonal of 1 so that the data keep
    their units. ``compress`` then keeps that many virtual coils per slice
    (:func:`medrecon.operators.coils.coil_compress`, Buehrer et al., MRM 57:1131-1139,
    2007) before the coil maps are estimated."""

    modality = "mri"

    def __init__(self, path: Path, file: FastMRIFile | IsmrmrdFile,
                 calibration: int | None = None, *,
                 compress: int | None = None, prewhiten: str = "auto"):
        super().__init__(path)
        self.file = file
        self.calibration = calibration
        self.compress = compress
        self.whitening = self._covariance(prewhiten)
        if compress is not None and not 1 <= compress <= file.coils:
            raise InputError(path, "compress", f"{compress} virtual coils, but the file has "
                             f"{file.coils} coil{'s' if file.coils != 1 else ''}")

    def _covariance(self, prewhiten: str) -> torch.Tensor | None:
        """The normalised noise covariance to whiten with, or ``None``."""
        from medrecon.operators.coils import noise_covariance

        if prewhiten not in PREWHITEN:
            raise InputError(self.path, "prewhiten", f"expected one of {', '.join(PREWHITEN)}, "
                             f"got {prewhiten!r}")
        noise = getattr(self.file, "noise", None)
        if prewhiten == "off" or (noise is None and prewhiten == "auto"):
            return None
        if noise is None:
            raise InputError(self.path, "prewhiten", "the file has no noise scan to whiten "
                             "with (only ISMRMRD files carry one)")
        try:
            psi = noise_covariance(noise.to(torch.complex128))
        except ValueError as exc:
            raise InputError(self.path, "noise scan", str(exc)) from None
        scale = float(psi.diagonal().real.mean())
        if not scale > 0 or torch.linalg.cholesky_ex(psi)[1] != 0:
            raise InputError(self.path, "noise scan", "the noise covariance is not positive "
                             "definite (a silent coil?)")
        return psi / scale

    @classmethod
    def open(cls, path: Path, *, calibration: int | None = None, compress: int | None = None,
             prewhiten: str = "auto") -> MRIStudy:
        from medrecon.data.kspace import open_kspace

        file = open_kspace(path)
        try:
            return cls(path, file, calibration, compress=compress, prewhiten=prewhiten)
        except BaseException:
            file.close()
            raise

    def close(self) -> None:
        self.file.close()

    @property
    def trajectory(self) -> str:
        """``cartesian``; ``radial``/``spiral`` from the file's ``pattern`` attribute,
        else ``non-cartesian``."""
        if self.file.trajectory is None:
            return "cartesian"
        value = self.file.attrs.get("pattern")
        return value if value in ("radial", "spiral") else "non-cartesian"

    @property
    def dicom_source(self) -> Any:
        return self.file.dicom_source

    @property
    def facts(self) -> dict[str, Any]:
        facts = {"trajectory": self.trajectory, "coils": self.file.coils,
                 "image_shape": list(self.file.image_shape)}
        if getattr(self.file, "format", None) == "ISMRMRD":
            facts["format"] = "ISMRMRD"
        if self.whitening is not None:
            facts["prewhitened"] = True
        if self.compress is not None:
            facts["virtual_coils"] = self.compress
        return facts

    def coil_data(self, kspace: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One slice's k-space ``(coils, ...)`` prewhitened and compressed as the study
        was opened to (unchanged by default), and ``T^+``, the matrix that takes the coils
        of the result back to the receiver's when prewhitened (``L`` of the noise
        covariance ``L L^H``, times ``A^H`` after compression ``A``; ``None`` without
        prewhitening), for :func:`whitened_maps`."""
        from medrecon.operators.coils import coil_compress, prewhiten

        unwhiten = None
        if self.whitening is not None:
            kspace = prewhiten(kspace, self.whitening)
            unwhiten = torch.linalg.cholesky(self.whitening.to(kspace.device))
        if self.compress is not None and self.compress < kspace.shape[0]:
            compressed = coil_compress(kspace, self.compress)
            kspace = compressed.kspace
            if unwhiten is not None:
                unwhiten = unwhiten @ compressed.matrix.to(unwhiten.dtype).mH
        return kspace, unwhiten

    def check(self, acquisition: Any) -> None:
        trajectory, coils = self.trajectory, self.file.coils
        expected = acquisition.trajectory
        if expected is not None and trajectory != expected and not (
                expected != "cartesian" and trajectory == "non-cartesian"):
            raise InputError(self.path, "acquisition.trajectory", f"the k-space is "
                             f"{trajectory}, the protocol expects {expected}")
        if acquisition.coils is not None and coils != acquisition.coils:
            raise InputError(self.path, "acquisition.coils", f"the k-space has {coils} coils, "
                             f"the protocol expects {acquisition.coils}")

    def tasks(self, device: torch.device):
        """``(task, support)`` per slice: the slice's problem and the coils' support."""
        f = self.file
        radius = kspace_radius(f, device)
        columns = None if f.trajectory is not None else sampled_columns(f.mask, f.shape)
        for i in range(f.num_slices):
            kspace, unwhiten = self.coil_data(f.read_slice(i, device))
            operator, width = _slice_operator(kspace, f, device, self.calibration, unwhiten)
            y = kspace if kspace.shape[0] > 1 else kspace[0]  # one coil: no coil axis
            scale = float(y.abs().max()) or 1.0
            support = (operator.maps.abs().pow(2).sum(0) > 0) if operator.maps is not None \
                else None  # the coils do not see outside their support
            yield MRITask(problem_of(operator, y / scale), radius, scale, columns,
                          width, whitened=unwhiten is not None), support

    def reconstruct(self, method: Method, params: Params, *, prior: Denoiser | None = None,
                    device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None,
                    label: str | None = None) -> StudyResult:
        from medrecon.data.volume import Volume
        from medrecon.progress import SliceProgress

        device = torch.device(device)
        f = self.file
        matrix = _recon_matrix(f)
        slices, records, stds, warnings = [], [], [], []
        with SliceProgress(label or f"{method.name} {self.path.name}") as progress:
            for i, (task, support) in enumerate(self.tasks(device)):
                record = method.run(task, params, prior=prior, generator=generator,
                                    callback=progress(i, f.num_slices))
                fine = task.prior_grid
                if fine is not None and \
                        tuple(record.image.shape[-2:]) == fine.problem.operator.domain_shape:
                    record = fine.to_coarse(record)  # solved as the prior sees the task
                height = task.problem.operator.domain_shape[0]
                if record.image.shape[-2] == 2 * height:  # soft SENSE: two map sets
                    from medrecon.studies.mri_sets import combine_record

                    record = combine_record(record, height)
                warnings += plausibility_warnings(
                    task, record, fits_data=method.fits_data,
                    where=f"slice {i}: " if f.num_slices > 1 else "", support=support)
                slices.append(_magnitude(record.image.detach(), task.scale, support, matrix))
                if record.std is not None:
                    stds.append(_magnitude(record.std.detach(), task.scale, support, matrix))
                records.append(record)
        array = np.stack(slices)
        reference = self._reference(array.shape)
        metrics = {} if reference is None else fastmri_metrics(array, reference)
        spacing = _pixel_spacing(f)
        rows, cols = array.shape[-2:]
        origin = (-(cols - 1) / 2 * spacing[2], -(rows - 1) / 2 * spacing[1], 0.0)
        volume = Volume(array=array, spacing=spacing, origin=origin, orientation=np.eye(3),
                        modality="MR", units="a.u.")
        std = std_volume(volume, np.stack(stds)) if stds else None
        return StudyResult(volume, reference, std, metrics, records, self.facts,
                           tuple(warnings))

    def _reference(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """The file's reference, cropped like the reconstruction (``None`` without one)."""
        f = self.file
        if not f.references:
            return None
        reference = np.stack([f.read_reference(i).cpu().numpy() for i in range(f.num_slices)])
        if reference.shape != shape:
            reference = centre_crop(torch.from_numpy(reference), shape[-2:]).numpy()
        return reference


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


def _pixel_spacing(f: FastMRIFile) -> tuple[float, float, float]:
    if f.header is None:
        return (1.0, 1.0, 1.0)
    fov, size = f.header.recon_fov_mm, f.header.recon_matrix
    row = fov[0] / size[0] if size[0] else 1.0
    col = fov[1] / size[1] if size[1] else 1.0
    thickness = fov[2] if fov[2] > 0 else 1.0
    return (float(thickness), float(row), float(col))
