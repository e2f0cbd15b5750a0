"""Prior-resolution matching: a diffusion method on a finer image grid for small MRI images.

The default MRI prior saw 64 x 64 crops of 256 x 256 MNI152 slices (200 mm field of
view, :data:`medrecon.priors.datasets.PHANTOM_SIZE`): anatomy at about 0.8 mm per pixel.
A 64 x 64 study (pydicom's ``MR_small.dcm``) shows a head in 64 pixels, four times
smaller than anything the prior was trained on. Here the method solves for an image
``x'`` of ``(f H, f W)`` pixels with the operator ``A' = A C``, ``C`` the k-space crop of
:class:`medrecon.operators.kspace_crop.KSpaceCrop` (the central ``H x W`` of ``x'``'s
k-space, intensity kept); the data fix ``C x'``, the prior fills the finer k-space, and
the solution comes back as ``C x'``. ``f`` is the power of two that brings
``max(H, W)`` closest (in ratio) to :data:`GRID_FRACTION` of the prior's training size
(128 for the default prior), so 128 x 128 and larger studies keep ``f = 1`` and are
untouched. On generated 64 x 64 slices (held-out MNI seeds 10000 and 10001 filling the
field of view, 8 coils, 2D Poisson-disc R = 4 and 8, noise 1e-3 and 2e-2;
bench/bench_prior_resolution.py) DDS gave 32.9 / 26.2 / 27.6 / 26.2 dB on the native
grid, 35.4 / 29.7 / 30.1 / 27.7 with f = 2 and 34.7 / 26.6 / 27.8 / 22.9 with f = 4 (the
training size itself: the head as large in pixels as in training, but the finer grid
lets the prior's noise into the band the data fix at high noise).

The fine task keeps the coarse task's noise level, image level and prior mapping (``C``
keeps the intensity; the 99th percentile of the coarse rough image maps the prior).
``||A'|| = ||A|| / f`` exactly (``C C^H = I / f^2``). DDS keeps the coarse task's data
weight (:func:`medrecon.methods.dds_gamma` of the coarse task): the weight is the
Bayesian ``r^2 / sigma_y^2`` of a denoised image of error ``r`` per pixel against data of
noise ``sigma_y``, neither of which depends on the grid, whereas ``relative_gamma /
||A'||^2`` would grow ``f^2`` times (measured on generated 64 x 64 slices at f = 4,
R = 4 and 8, noise 1e-3: 32.4 and 25.8 dB with it, against 32.9 and 27.6 on the native
grid).

Where the task has a second ESPIRiT map set (an object that fills the field of view,
:mod:`medrecon.studies.mri_sets`), the diffusion methods solve for both set images
(stacked, each on the finer grid, ``C`` cropping each), with the prior on the first and
:class:`medrecon.studies.mri_sets.SecondSetPrior`'s Gaussian on the second; this
applies at ``f = 1`` too. On the generated 64 x 64 slices above, DDS on the prior's grid
with both sets gave 41.3 / 30.1 / 33.3 / 28.0 dB against 35.4 / 29.7 / 30.1 / 27.7 with
one, and 38.3 / 26.5 / 31.9 / 26.8 on the native grid (the first set's maps alone force
an error into the whole image where they cannot explain the coil images).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from medrecon.studies import problem_of

if TYPE_CHECKING:
    from medrecon.operators.kspace_crop import KSpaceCrop
    from medrecon.priors.base import Denoiser
    from medrecon.solvers.problem import Problem, Reconstruction

PRIOR_TRAINING_SIZE = 256
"""The side of the slices the default priors' recipes draw their crops from
(``medrecon.priors.datasets.PHANTOM_SIZE``; a checkpoint records only the crop, 64).
A prior may say otherwise with a ``training_size`` attribute."""
GRID_FRACTION = 0.5
"""The fraction of the prior's training size the finer grid aims at (module docstring)."""
MAX_FACTOR = 8


def prior_training_size(denoiser: Denoiser | None) -> int:
    """The image side the prior was trained at: its ``training_size`` attribute where it
    has one (a mapped prior's base is read too), else :data:`PRIOR_TRAINING_SIZE`."""
    for candidate in (denoiser, getattr(denoiser, "denoiser", None)):
        size = getattr(candidate, "training_size", None)
        if isinstance(size, int) and size > 0:
            return size
    return PRIOR_TRAINING_SIZE


def resolution_factor(shape: tuple[int, ...], training_size: int,
                      fraction: float = GRID_FRACTION) -> int:
    """The power of two ``f >= 1`` (at most :data:`MAX_FACTOR`) for which ``f max(H, W)``
    is closest in ratio to ``fraction * training_size``; 1 for images at least that
    large.

    >>> resolution_factor((64, 64), 256), resolution_factor((256, 256), 256)
    (2, 1)
    >>> resolution_factor((64, 64), 256, fraction=1.0), resolution_factor((128, 128), 256)
    (4, 1)
    """
    side, target = max(shape[-2:]), fraction * training_size
    best, factor = 1, 1
    while factor <= MAX_FACTOR:
        if abs(math.log(factor * side / target)) < abs(math.log(best * side / target)):
            best = factor
        factor *= 2
    return best

class PriorGridTask:
    """An MRI task as a diffusion prior sees it (module docstring): on the ``factor``
    times finer grid, and with both ESPIRiT map sets where ``soft`` (the task's two-set
    problem, :meth:`medrecon.studies.mri.MRITask.soft_sense_problem`) is given; the
    problem ``(A C, y)`` (``A`` the two-set operator and ``C`` the crop of each set where
    ``soft`` is given); everything else from the coarse ``task``."""

    def __init__(self, task, factor: int, soft: Problem | None = None):
        from medrecon.operators.kspace_crop import KSpaceCrop
        from medrecon.operators.map_sets import SetwiseCrop

        A = task.problem.operator
        h, w = A.domain_shape
        self.base = task
        self.modality = task.modality
        self.sigma_y = task.sigma_y
        self.grid_factor = factor
        self.sets = 1 if soft is None else 2
        self.crop: KSpaceCrop = KSpaceCrop((factor * h, factor * w), (h, w), dtype=A.dtype,
                                           device=A.device)
        self._set_crop = self.crop if soft is None else SetwiseCrop(self.crop)
        """``C`` on this task's image: the crop, or the crop of each set."""
        operator = A if soft is None else soft.operator
        if factor > 1:
            operator = operator @ self._set_crop
        self.problem = problem_of(operator, task.problem.y)

    def operator_norm(self) -> float:
        """``||A C|| = ||A|| / f`` (``C C^H = I / f^2``; the two map sets are orthonormal
        per pixel, so they keep ``||A||``)."""
        return self.base.operator_norm() * self.crop.scale

    def noise_level(self) -> float:
        return self.base.noise_level()

    def image_level(self) -> float:
        return self.base.image_level()

    def relative_noise(self) -> float:
        return self.base.relative_noise()

    def prior_in_units(self, denoiser: Denoiser) -> Denoiser:
        """The coarse task's mapping of ``denoiser``; with two map sets, as the first
        set's prior of :class:`medrecon.studies.mri_sets.SecondSetPrior`."""
        from medrecon.studies import mri_sets

        mapped = self.base.prior_in_units(denoiser)
        return mapped if self.sets == 1 else mri_sets.SecondSetPrior(
            mapped, self.crop.fine_shape[0], variance=mri_sets.SECOND_SET_STD**2)

    def rough_image(self) -> torch.Tensor:
        """The coarse rough image, zero-filled onto the fine grid (the first set's; the
        second set's is zero)."""
        rough = self.crop.upsample(self.base.rough_image())
        return rough if self.sets == 1 else torch.cat([rough, torch.zeros_like(rough)], -2)

    def to_coarse(self, record: Reconstruction) -> Reconstruction:
        """``record`` of this task's problem as one image of the coarse task: each set
        brought back by ``C`` (samples cropped, the std recomputed from them), then the
        two sets combined (:func:`medrecon.studies.mri_sets.combine_record`)."""
        from medrecon.solvers.sampling import mapped_record
        from medrecon.studies.mri_sets import combine_record

        if self.grid_factor > 1:  # without samples: the band-limited std, intensity kept
            crop = self._set_crop
            record = mapped_record(record, crop, lambda std: crop(std.to(crop.dtype)).abs(),
                                   prior_grid=list(self.crop.fine_shape))
        return record if self.sets == 1 else combine_record(record, self.crop.shape[0])


def fixed_image_shape(denoiser: Denoiser) -> tuple[int, ...] | None:
    """The one image shape ``denoiser`` is defined on (its ``image_shape``, or its base's
    for a mapped prior), ``None`` for a network that takes any shape."""
    for candidate in (denoiser, getattr(denoiser, "denoiser", None)):
        shape = getattr(candidate, "image_shape", None)
        if shape is not None:
            return tuple(shape)
    return None


def prior_grid_task(task, denoiser: Denoiser | None) -> PriorGridTask | None:
    """The task a diffusion prior solves for an MRI ``task`` with a 2D image: on the
    prior's grid where the image is smaller than the prior's training size
    (:func:`resolution_factor` above 1; never for a prior defined on one image shape,
    :func:`fixed_image_shape`: a Gaussian prior on the study's grid has no finer grid to
    go to), with both map sets where the task has a second one (its
    ``soft_sense_problem``); ``None`` where neither applies."""
    if denoiser is None or getattr(task, "modality", None) != "mri":
        return None
    shape = task.problem.operator.domain_shape
    if len(shape) != 2:
        return None
    factor = 1 if fixed_image_shape(denoiser) is not None \
        else resolution_factor(shape, prior_training_size(denoiser))
    soft = getattr(task, "soft_sense_problem", None)
    soft = soft() if soft is not None else None
    return PriorGridTask(task, factor, soft) if factor > 1 or soft is not None else None
