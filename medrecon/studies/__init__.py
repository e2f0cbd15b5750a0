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
KIND_NAMES = {"sinogram": "a CT sinogram", "kspace": "an MRI k-space file"}
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
    units, with the operator norm and the rough image computed at most once."""

    modality: str

    def __init__(self, problem: Problem, sigma_y: float | None = None):
        self.problem = problem
        self.sigma_y = sigma_y
        self._norm: float | None = None
        self._rough: torch.Tensor | None = None

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
        return self.sigma_y if self.sigma_y is not None else self.estimated_noise()

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
    except (OSError, ValueError):
        return None
    return None


def std_volume(volume: Volume, array: np.ndarray) -> Volume:
    """A standard-deviation map laid out like ``volume``."""
    from dataclasses import replace

    return replace(volume, array=np.asarray(array, dtype=np.float32).reshape(
        volume.array.shape))


def problem_of(operator, y: torch.Tensor) -> Problem:
    from medrecon.solvers.problem import Problem

    return Problem(operator, y)
