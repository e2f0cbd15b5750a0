"""An MRI study: a fastMRI-layout k-space file, opened once, reconstructed slice by slice.

Per slice: coil maps by ESPIRiT from the fully sampled calibration region (from the
gridded centre for non-Cartesian data), a SENSE operator (Cartesian or NUFFT, single
coil without maps), data normalised to ``max |y| = 1``, the method, the magnitude set to
zero outside the maps' support (where no coil sees the object, so the data say nothing
and a sparsity prior would only leak into it), cropped to the header's reconstruction
matrix as fastMRI does, and the metrics of :mod:`medrecon.metrics` with fastMRI's
conventions (data range = the reference volume's maximum).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medrecon.errors import InputError
from medrecon.studies import (
    BaseTask,
    MappedPrior,
    Study,
    StudyResult,
    problem_of,
    std_volume,
)

if TYPE_CHECKING:
    from medrecon.data.kspace import FastMRIFile
    from medrecon.methods import Method, Params
    from medrecon.operators.mri import CartesianMRI
    from medrecon.operators.nufft import NonCartesianMRI
    from medrecon.priors.base import Denoiser

DEFAULT_CALIBRATION = 24
MIN_CALIBRATION = 12  # a 6x6 ESPIRiT kernel on fewer lines gives unusable maps
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


def kspace_radius(f: FastMRIFile, device: torch.device) -> torch.Tensor:
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
    from medrecon.operators.coils import espirit_maps, espirit_maps_noncartesian
    from medrecon.operators.mri import CartesianMRI
    from medrecon.operators.nufft import NonCartesianMRI

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
    """One slice, in k-space normalised to ``max |y| = 1``."""

    modality = "mri"

    def __init__(self, problem, radius: torch.Tensor, scale: float):
        super().__init__(problem)
        self.radius = radius
        self.scale = scale

    def estimated_noise(self) -> float:
        return kspace_noise(self.problem.y, self.radius)

    def prior_in_units(self, denoiser: Denoiser) -> Denoiser:
        return mri_prior(denoiser, self.rough_image())


class MRIStudy(Study):
    """An open k-space file (:class:`medrecon.data.kspace.FastMRIFile`), validated once.

    ``calibration`` forces the ESPIRiT calibration width (default: the mask's fully
    sampled centre)."""

    modality = "mri"

    def __init__(self, path: Path, file: FastMRIFile, calibration: int | None = None):
        super().__init__(path)
        self.file = file
        self.calibration = calibration

    @classmethod
    def open(cls, path: Path, *, calibration: int | None = None) -> MRIStudy:
        from medrecon.data.kspace import FastMRIFile

        return cls(path, FastMRIFile(path), calibration)

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
    def facts(self) -> dict[str, Any]:
        return {"trajectory": self.trajectory, "coils": self.file.coils,
                "image_shape": list(self.file.image_shape)}

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
        for i in range(f.num_slices):
            kspace = f.read_slice(i, device)
            operator = slice_operator(kspace, f, device, self.calibration)
            y = kspace if f.multicoil else kspace[0]
            scale = float(y.abs().max()) or 1.0
            support = (operator.maps.abs().pow(2).sum(0) > 0) if operator.maps is not None \
                else None  # the coils do not see outside their support
            yield MRITask(problem_of(operator, y / scale), radius, scale), support

    def reconstruct(self, method: Method, params: Params, *, prior: Denoiser | None = None,
                    device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None,
                    label: str | None = None) -> StudyResult:
        from medrecon.data.volume import Volume
        from medrecon.progress import SliceProgress

        device = torch.device(device)
        f = self.file
        matrix = _recon_matrix(f)
        slices, records, stds = [], [], []
        with SliceProgress(label or f"{method.name} {self.path.name}") as progress:
            for i, (task, support) in enumerate(self.tasks(device)):
                record = method.run(task, params, prior=prior, generator=generator,
                                    callback=progress(i, f.num_slices))
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
        return StudyResult(volume, reference, std, metrics, records, self.facts)

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
