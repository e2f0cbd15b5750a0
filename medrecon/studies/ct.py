"""A CT study: a sinogram file read once, reconstructed as one batch of slices.

``sinogram -> operator + problem (attenuation, 1/mm) -> method -> image units (HU)
-> Volume (+ metrics against the reference when the file has one)``.
"""

from __future__ import annotations

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
    plausibility_warnings,
    problem_of,
    std_volume,
)

if TYPE_CHECKING:
    from medrecon.data.sinogram import Sinogram
    from medrecon.data.volume import Volume
    from medrecon.methods import Method, Params
    from medrecon.operators.ct_geometry import CTGeometry
    from medrecon.priors.base import Denoiser


def centred_volume(image: np.ndarray, geometry: CTGeometry, units: str) -> Volume:
    """A volume of axial slices centred on the isocentre, identity orientation (LPS)."""
    from medrecon.data.volume import Volume

    image = np.asarray(image, dtype=np.float32).reshape(-1, *geometry.image_shape)
    rows, cols = geometry.image_shape
    px = geometry.pixel_size
    origin = (-(cols - 1) / 2 * px, -(rows - 1) / 2 * px, 0.0)
    return Volume(array=image, spacing=(px, px, px), origin=origin, orientation=np.eye(3),
                  modality="CT", units=units)


METRICS_REGION = "field_of_view"
"""``facts["metrics_region"]`` of a study whose metrics are computed inside the
reference's field of view (:attr:`medrecon.data.sinogram.Sinogram.field_of_view`)."""


def image_metrics(image: np.ndarray, reference: np.ndarray,
                  mask: np.ndarray | None = None) -> dict[str, float]:
    """PSNR and SSIM with data range = max - min of the reference, and NMSE.

    With ``mask`` (bool, the reference's shape: a scanner's field of view) all three
    are computed inside it, the data range too: the squared errors and NMSE over its
    pixels, SSIM (Wang et al. 2004) over the 7x7 windows wholly inside it
    (:mod:`medrecon.metrics`). Padding outside a field of view is not tissue and must
    not count (it would inflate the data range, and with it PSNR and SSIM).
    """
    from medrecon.metrics import nmse, psnr, ssim

    x = torch.as_tensor(np.asarray(image, dtype=np.float64)).reshape(-1, *image.shape[-2:])
    ref = torch.as_tensor(np.asarray(reference, dtype=np.float64)).reshape(x.shape)
    m = None if mask is None else torch.as_tensor(np.asarray(mask, dtype=bool)).reshape(x.shape)
    return {"psnr": float(psnr(x, ref, mask=m)),  # data range: the reference's, in the mask
            "ssim": float(ssim(x, ref, mask=m)),
            "nmse": float(nmse(x, ref, mask=m))}


def sinogram_noise(sinogram: Sinogram) -> float:
    """Standard deviation of the noise in the line integrals, one number for all rays.

    From the record of a simulation when there is one: ``gaussian:SIGMA`` is ``SIGMA``;
    ``poisson:I0`` gives ``sqrt(mean(exp(p)) / I0)`` (the variance of ``-log`` of a
    Poisson count is about ``exp(p) / I0``); ``none`` is 0. For measured data, the median
    absolute deviation of differences between neighbouring detector cells (Donoho and
    Johnstone 1994: ``MAD / 0.6745``, over ``sqrt 2`` for a difference); the object's
    own edges add to it, so it over-estimates (0.016 on a noiseless 60-view phantom).
    """
    from medrecon.data.sinogram import parse_noise

    try:
        kind, level = parse_noise(sinogram.noise)
    except ValueError:
        diff = np.diff(np.asarray(sinogram.data, dtype=np.float64), axis=-1).ravel()
        return float(np.median(np.abs(diff - np.median(diff)))) / 0.6745 / 2**0.5
    if kind == "poisson":
        return float(np.sqrt(np.exp(np.asarray(sinogram.data, dtype=np.float64)).mean() / level))
    return level


def ct_prior(denoiser: Denoiser, mu_water: float) -> MappedPrior:
    """A CT prior trained on HU (``HU = scale x + offset``) mapped to attenuation
    ``mu = mu_water (1 + HU / 1000)`` (1/mm), the unknown of CT problems."""
    return MappedPrior(denoiser, mu_water * denoiser.scale / 1000.0,
                       mu_water * (1.0 + denoiser.offset / 1000.0))


class CTTask(BaseTask):
    """The batch of a sinogram's slices in attenuation (1/mm)."""

    modality = "ct"

    def __init__(self, problem, sinogram: Sinogram, sigma_y: float | None):
        super().__init__(problem, sigma_y)
        self.sinogram = sinogram
        self._baseline: torch.Tensor | None = None

    def estimated_noise(self) -> float:
        return sinogram_noise(self.sinogram)

    def prior_in_units(self, denoiser: Denoiser) -> Denoiser:
        return ct_prior(denoiser, self.sinogram.mu_water)

    baseline_name = "FBP"

    def baseline_image(self) -> torch.Tensor | None:
        """Filtered back-projection (ram-lak), computed once; ``None`` for an operator
        without one or a scan it cannot reconstruct (:func:`fan_fbp_support`)."""
        from medrecon.operators.ct import fan_fbp_support

        operator = self.problem.operator
        geometry = getattr(operator, "geometry", None)
        if (self._baseline is None and hasattr(operator, "fbp")
                and (geometry is None or fan_fbp_support(geometry) is None)):
            from medrecon.solvers.classical import fbp

            self._baseline = fbp(self.problem).image
        return self._baseline


class CTStudy(Study):
    """A sinogram with its geometry, read once (:func:`medrecon.data.sinogram.read_sinogram`).

    ``sigma_y`` is the noise level of the line integrals when the user knows it (CGLS
    then stops by the discrepancy principle; diffusion methods use it instead of the
    estimate of :func:`sinogram_noise`).
    """

    modality = "ct"

    def __init__(self, path: Path, sinogram: Sinogram, sigma_y: float | None = None):
        super().__init__(path)
        self.sinogram = sinogram
        self.sigma_y = sigma_y

    @classmethod
    def open(cls, path: Path, *, geometry: CTGeometry | None = None, image_units: str = "HU",
             sigma_y: float | None = None) -> CTStudy:
        from medrecon.data.sinogram import read_sinogram

        return cls(path, read_sinogram(path, geometry, image_units=image_units), sigma_y)

    @property
    def reference(self) -> np.ndarray | None:
        return self.sinogram.reference

    @property
    def dicom_source(self) -> Any:
        return self.sinogram.dicom_source

    @property
    def facts(self) -> dict[str, Any]:
        geometry = self.sinogram.geometry
        facts = {"geometry": geometry.beam, "views": geometry.n_views,
                 "image_shape": list(geometry.image_shape), "noise": self.sinogram.noise}
        if self.sinogram.reference is not None and self.sinogram.field_of_view is not None:
            facts["metrics_region"] = METRICS_REGION
        return facts

    def check(self, acquisition: Any) -> None:
        geometry = self.sinogram.geometry
        if acquisition.geometry is not None and geometry.beam != acquisition.geometry:
            raise InputError(self.path, "acquisition.geometry", f"the sinogram is "
                             f"{geometry.beam} beam, the protocol expects {acquisition.geometry}")
        if acquisition.views is not None and geometry.n_views != acquisition.views:
            raise InputError(self.path, "acquisition.views", f"the sinogram has "
                             f"{geometry.n_views} views, the protocol expects {acquisition.views}")

    def task(self, device: torch.device | str = "cpu") -> CTTask:
        """The problem of all slices: the projector on ``device`` and the line integrals."""
        from medrecon.operators.ct import CTProjector

        operator = CTProjector(self.sinogram.geometry, device=device)
        y = torch.as_tensor(self.sinogram.data, dtype=torch.float32).to(operator.device)
        return CTTask(problem_of(operator, y), self.sinogram, self.sigma_y)

    def reconstruct(self, method: Method, params: Params, *, prior: Denoiser | None = None,
                    device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None,
                    label: str | None = None) -> StudyResult:
        from medrecon.operators.ct import UnsupportedScanError
        from medrecon.progress import ProgressBar

        sinogram = self.sinogram
        task = self.task(device)
        try:
            with ProgressBar(label or f"{method.name} {self.path.name}") as progress:
                record = method.run(task, params, prior=prior, generator=generator,
                                    callback=progress)
        except UnsupportedScanError as exc:  # FBP of a scan it cannot reconstruct: raised
            raise InputError(self.path, "angles", str(exc)) from None  # before any work
        warnings = plausibility_warnings(task, record, fits_data=method.fits_data)
        image = sinogram.to_image_units(record.image.detach().cpu().numpy().astype(np.float64))
        volume = centred_volume(image, sinogram.geometry, sinogram.image_units)
        metrics = {} if sinogram.reference is None else image_metrics(
            volume.array, sinogram.reference, sinogram.field_of_view)
        std = None
        if record.std is not None:  # samplers with several samples
            hu_per_mu = float(sinogram.to_image_units(np.ones(1))[0]
                              - sinogram.to_image_units(np.zeros(1))[0])
            std = std_volume(volume, record.std.detach().cpu().numpy() * hu_per_mu)
        return StudyResult(volume, sinogram.reference, std, metrics, [record], self.facts,
                           tuple(warnings))
