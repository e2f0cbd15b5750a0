"""Studies: a measurement file opened and validated once, reconstructed by any method.

:func:`open_study` reads a file into a :class:`Study` of its modality
(:class:`medrecon.studies.ct.CTStudy` for sinograms, :class:`medrecon.studies.mri.MRIStudy`
for k-space); the study knows its acquisition (:attr:`Study.facts`), checks it against
a protocol's expectations (:meth:`Study.check`), builds the solver problem(s) (one
:class:`BaseTask` per CT volume or MRI slice) and turns the solutions into an image
volume in the file's units with metrics against its reference
(:meth:`Study.reconstruct`). The command line's ``recon`` and the runner share this one
path; the file is opened once per study.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medrecon.errors import InputError

if TYPE_CHECKING:
    from medrecon.data.volume import Volume
    from medrecon.methods import Method, Params
    from medrecon.priors.base import Denoiser
    from medrecon.solvers.problem import Problem, Reconstruction

logger = logging.getLogger(__name__)

KINDS = {"ct": "sinogram", "mri": "kspace"}
RESIDUAL_BELOW_NOISE = 1 / 3
"""A final data residual below this fraction of the noise's own norm (``sqrt(m) sigma``)
fits the noise (see :func:`plausibility_warnings`): 30 CGLS iterations on the bundled
60-view CT sample leave 0.25 of it (26.1 dB against TV's 29.2), DDS 0.44 (33.8 dB)."""
RESIDUAL_ABOVE_NOISE = 2.5
"""A final data residual above this many times the noise's norm, and above
:data:`RESIDUAL_NOTICEABLE`, does not fit the data."""
RESIDUAL_NOTICEABLE = 0.05
"""The relative residual below which a misfit is never warned of: at low noise a
regularised image legitimately leaves many times the noise (its bias), not 5 % of the
data."""
NOT_FITTING = 0.5
"""A relative data residual above this leaves most of the data unexplained, whatever the
noise level (the image ``x = 0`` has residual 1)."""
BRIGHTER = 1.3
"""An image whose root mean square is this many times the baseline image's (zero-filled
for Cartesian MRI, FBP for CT) or more has amplified noise: noise adds energy, and a
reconstruction that recovers the unsampled k-space adds only a few per cent to the
zero-filled image's (measured 1.00 .. 1.09 for the methods' defaults, 1.45 and 1.6 for
CG-SENSE without damping at R = 4 and 8 after 100 iterations, 6 dB below zero-filling)."""
DARKER = 1.5
"""An image whose root mean square is this many times below the baseline's is shrunk
towards zero (e.g. a Tikhonov or L1 weight far too large)."""
KIND_NAMES = {"sinogram": "a CT sinogram", "kspace": "an MRI k-space file"}
IMAGE_QUANTILE = 0.99
"""The quantile of the rough image's magnitude that is its level (:meth:`BaseTask.image_level`;
the MRI prior is scaled by the same)."""
NORM_SEED = 0
"""Seed of the power iteration behind every operator norm: a study's settings never
depend on the sampler's seed."""


@dataclass(frozen=True)
class StudyResult:
    """A study's reconstruction in image units, ready to be written.

    ``records`` are the solver's results (one per CT volume, one per MRI slice); the
    method that ran is ``records[0].method``."""

    volume: Volume
    reference: np.ndarray | None
    std: Volume | None
    metrics: dict[str, float]
    records: list[Reconstruction]
    facts: dict[str, object] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    """What looks implausible in the result (:func:`plausibility_warnings`) and what the
    solver itself warned of (``record.info["warnings"]``), one line each; for reports."""

    @property
    def method(self) -> str:
        return self.records[0].method

    @property
    def data_residual(self) -> float | None:
        """The worst final relative data residual ``||A x - y|| / ||y||`` over the records."""
        values = [float(r.residual.max()) for r in self.records if r.residual is not None
                  and r.residual.numel()]
        return max(values) if values else None


@dataclass(frozen=True)
class MappedPrior:
    """A denoiser whose ``data = scale * x + offset`` map is replaced (same network)."""

    denoiser: Denoiser
    scale: float
    offset: float

    @property
    def is_complex(self) -> bool:
        return self.denoiser.is_complex

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        return self.denoiser(x, sigma)


class BaseTask(ABC):
    """One solve of a study (see :class:`medrecon.methods.Task`): the problem in solver
    units, with the operator norm, the noise estimate and the rough image computed at most
    once."""

    modality: str

    def __init__(self, problem: Problem, sigma_y: float | None = None):
        self.problem = problem
        self.sigma_y = sigma_y
        self._norm: float | None = None
        self._noise: float | None = None
        self._rough: torch.Tensor | None = None
        self._level: float | None = None

    def operator_norm(self) -> float:
        if self._norm is None:
            A = self.problem.operator
            generator = torch.Generator(device=A.device).manual_seed(NORM_SEED)
            self._norm = float(A.norm(generator=generator))
        return self._norm

    def rough_image(self) -> torch.Tensor:
        """10 CG iterations on ``(A^H A + 0.01 ||A||^2 I) x = A^H y`` from zero."""
        if self._rough is None:
            from medrecon.solvers.cgsense import cgsense

            self._rough = cgsense(self.problem, n_iter=10,
                                  weight=1e-2 * self.operator_norm() ** 2).image
        return self._rough

    def noise_level(self) -> float:
        """``sigma_y`` if given, else :meth:`estimated_noise` (computed once)."""
        if self.sigma_y is not None:
            return self.sigma_y
        if self._noise is None:
            self._noise = self.estimated_noise()
        return self._noise

    def image_level(self) -> float:
        """The image's bright-tissue level: the :data:`IMAGE_QUANTILE` of ``|x|`` of
        :meth:`rough_image` (computed once; 1 for an all-zero image)."""
        if self._level is None:
            rough = self.rough_image().detach().abs().flatten().double()
            self._level = float(torch.quantile(rough, IMAGE_QUANTILE)) or 1.0
        return self._level

    def relative_noise(self) -> float:
        """``nu = sigma / (||A|| q)``: the data's noise carried to the image (an
        orthonormal-like ``A / ||A||`` keeps it) relative to the image level ``q``
        (:meth:`image_level`), whatever the units; 1e-3 for the README's benchmark."""
        return self.noise_level() / (self.operator_norm() * self.image_level())

    def noise_floor(self) -> torch.Tensor | None:
        """The relative data residual of the truth, ``||n|| / ||y|| = sqrt(m) sigma /
        ||y||`` per batch item (``m`` the real components measured: twice the sampled
        entries of complex data), from :meth:`noise_level`; ``None`` without noise."""
        sigma = self.noise_level()
        if not sigma > 0:
            return None
        problem = self.problem
        y = problem.y
        if y.is_complex():
            m = 2 * (y != 0).sum(dim=problem.range_dims)
        else:
            m = torch.full(problem.batch_shape, math.prod(problem.operator.range_shape))
        return sigma * m.to(problem.y_norm.device, problem.y_norm.dtype).sqrt() / problem.y_norm

    def baseline_image(self) -> torch.Tensor | None:
        """The method-free image results are compared with (``None``: none)."""
        return None

    @abstractmethod
    def estimated_noise(self) -> float:
        """The noise level of ``problem.y`` estimated from the data."""

    @abstractmethod
    def prior_in_units(self, denoiser: Denoiser) -> Denoiser:
        """``denoiser`` re-expressed in this task's units."""


class Study(ABC):
    """A measurement file, opened and validated once (see the module docstring)."""

    modality: str

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    @abstractmethod
    def facts(self) -> dict[str, Any]:
        """The acquisition as the file describes it (for reports and checks)."""

    @property
    def dicom_source(self) -> Any:
        """The DICOM source the measurement file carries
        (:class:`medrecon.data.dicom_source.DicomSource`: ``medrecon simulate`` from DICOM
        keeps it), read when the file was opened; ``None`` without one."""
        return None

    @abstractmethod
    def check(self, acquisition: Any) -> None:
        """Raise :class:`InputError` naming the file and ``acquisition.FIELD`` where the
        study differs from ``acquisition``'s expectations (``None`` accepts anything)."""

    @abstractmethod
    def reconstruct(self, method: Method, params: Params, *, prior: Denoiser | None = None,
                    device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None,
                    label: str | None = None) -> StudyResult:
        """Reconstruct the whole study with ``method``; ``label`` shows progress."""

    def close(self) -> None:  # noqa: B027 - a no-op where the study holds no open file
        """Release the file."""

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_study(path: str | Path, modality: str, **options: Any) -> Study:
    """The study of ``path`` for ``modality`` (``ct``: a sinogram, ``mri``: k-space).

    ``options`` go to the modality's study (CT: ``geometry`` and ``image_units`` for
    NPY/TIFF sinograms, ``sigma_y``; MRI: ``calibration``, ``device``). A file of the
    other modality is refused naming ``input.kind``.
    """
    path = Path(path)
    if modality == "ct":
        from medrecon.studies.ct import CTStudy as kind
    elif modality == "mri":
        from medrecon.studies.mri import MRIStudy as kind
    else:
        raise InputError(path, "modality", f"expected ct or mri, got {modality!r}")
    try:
        return kind.open(path, **options)
    except InputError as exc:
        other = _other_kind(path, modality)
        if other is not None:
            raise InputError(path, "input.kind", f"is {KIND_NAMES[other]}, but this is a "
                             f"{modality.upper()} reconstruction ({KIND_NAMES[KINDS[modality]]})"
                             ) from exc
        raise


def _other_kind(path: Path, modality: str) -> str | None:
    """The kind of the other modality when ``path`` (an HDF5 file that its own reader
    refused) holds it, else ``None``."""
    import h5py

    wanted = KINDS[modality]
    try:
        with h5py.File(path, "r") as f:
            for kind in KINDS.values():
                if kind != wanted and kind in f and wanted not in f:
                    return kind
    except Exception:  # noqa: BLE001 - a corrupt file (h5py raises RuntimeError, KeyError,
        return None  # ...): the reader's own error stands
    return None


def plausibility_warnings(task: BaseTask, record: Reconstruction, *, fits_data: bool = True,
                          where: str = "", support: torch.Tensor | None = None) -> list[str]:
    """What is implausible about ``record``, the solution of ``task``, one line each
    (prefixed by ``where``, e.g. ``"slice 3: "``):

    - non-finite values in the image;
    - for a method that fits the data (``fits_data``; not zero-filling or FBP), a final
      relative data residual ``||A x - y|| / ||y||`` below :data:`RESIDUAL_BELOW_NOISE`
      times the noise floor ``sqrt(m) sigma / ||y||`` (it fits the noise: the truth
      itself leaves the noise as residual), or above :data:`RESIDUAL_ABOVE_NOISE` times
      it or above :data:`NOT_FITTING` (it does not fit the data: regularisation too
      strong, or a solver that went astray; never below :data:`RESIDUAL_NOTICEABLE`);
    - an image whose root mean square is more than :data:`BRIGHTER` times that of the
      task's baseline image (zero-filled, FBP), or :data:`DARKER` times less: amplified
      noise makes it brighter, a regularisation that shrinks it to zero darker (in
      overdetermined multi-coil MRI the residual of a noise-fitting solution stays near
      ``sqrt(1 - n / m)`` of the noise's, so the brightness is the telling sign there);
    - the solver's own warnings, ``record.info["warnings"]``.

    ``support`` (broadcast against the image) restricts the brightness to where the
    output keeps the image (MRI: where the coils see the object; a prior may paint
    outside it, where no data constrain the image).
    """
    warnings = [f"{where}{w}" for w in record.info.get("warnings", []) or []]
    image = record.image
    bad = int((~torch.isfinite(image)).sum())
    if bad:
        return [*warnings, f"{where}{record.method}: the image has {bad} NaN or infinite "
                           f"values of {image.numel()}"]
    if fits_data and record.residual is not None and record.residual.numel():
        residual = record.residual.detach().double().cpu()
        floor = task.noise_floor()
        worst = float(residual.max())
        if worst > NOT_FITTING:
            warnings.append(f"{where}{record.method}: data residual {worst:.3g} (relative): the "
                            "reconstruction leaves most of the data unexplained (a "
                            "regularisation weight far too large?)")
        elif floor is not None:
            ratio = residual / floor.detach().double().cpu().reshape(residual.shape)
            high, low = float(ratio.max()), float(ratio.min())
            level = float(floor.max())
            if high > RESIDUAL_ABOVE_NOISE and worst > RESIDUAL_NOTICEABLE:
                warnings.append(f"{where}{record.method}: data residual {worst:.3g} is {high:.1f} "
                                f"times the noise level ({level:.3g}): the reconstruction does "
                                "not fit the data (regularisation too strong?)")
            if low < RESIDUAL_BELOW_NOISE:
                warnings.append(f"{where}{record.method}: data residual "
                                f"{float(residual.min()):.3g} is {low:.2f} of the noise level "
                                f"({float(floor.min()):.3g}): the reconstruction fits the noise "
                                "(regularisation too weak, or too many iterations?)")
    baseline = task.baseline_image()
    if baseline is not None and baseline.shape == image.shape:
        dims = tuple(range(-len(task.problem.operator.domain_shape), 0))
        image, baseline = image.detach().abs().double(), baseline.detach().abs().double()
        if support is not None:
            weight = support.to(image.device, image.dtype)
            image, baseline = image * weight, baseline * weight
        rms = image.pow(2).mean(dim=dims).sqrt().flatten()
        base = baseline.pow(2).mean(dim=dims).sqrt().flatten()
        keep = base > 0
        if bool(keep.any()):
            ratio = rms[keep] / base[keep]
            high, low = float(ratio.max()), float(ratio.min())
            name = getattr(task, "baseline_name", "the baseline")
            if high > BRIGHTER:
                warnings.append(f"{where}{record.method}: the image is {high:.2f} times as bright "
                                f"as {name} (root mean square): amplified noise (regularisation "
                                "too weak, or too many iterations)?")
            if low < 1 / DARKER:
                warnings.append(f"{where}{record.method}: the image is {1 / low:.2f} times darker "
                                f"than {name} (root mean square): over-regularised?")
    return warnings


def std_volume(volume: Volume, array: np.ndarray) -> Volume:
    """A standard-deviation map laid out like ``volume``."""
    from dataclasses import replace

    return replace(volume, array=np.asarray(array, dtype=np.float32).reshape(
        volume.array.shape))


def problem_of(operator, y: torch.Tensor) -> Problem:
    from medrecon.solvers.problem import Problem

    return Problem(operator, y)
