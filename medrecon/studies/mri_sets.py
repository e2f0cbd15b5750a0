"""Soft SENSE with two ESPIRiT map sets, for every multi-coil Cartesian MRI method.

Uecker et al. ("ESPIRiT - an eigenvalue approach to autocalibrating parallel MRI: where
SENSE meets GRAPPA", MRM 71:990-1001, 2014) reconstruct with every map set whose
eigenvalue is close to 1, ``y_c = M F(sum_s S_{s,c} x_s)``, and show the set images'
root sum of squares: where one sensitivity vector per pixel cannot explain the coil
images (an object folded in from outside the field of view, or one that fills it, whose
coil images jump across the periodic edge) a second set takes up what the first cannot,
and the first-set model no longer forces an error into the whole image. The second set
is :func:`medrecon.operators.coils.espirit_second_set`; it is zero where one set is
enough, so on an object well inside the field of view nothing changes.

:class:`medrecon.operators.map_sets.SoftSENSE` keeps a 2D image domain (what the solvers
and the wavelet penalty take): the two set images lie one above the other, ``(2 H, W)``,
and :func:`combine` turns a solution back into one ``(H, W)`` image, the root sum of
squares of the two with the first set's phase.

A diffusion prior knows images of one set, not the second set's image (the part of the
coil images the first maps cannot explain, near the field of view's edges). The
diffusion methods therefore solve the stacked problem with :class:`SecondSetPrior`, the
product prior ``p(x_1) N(x_2; 0, v I)``: the prior's denoiser on the first set, the
Gaussian's exact denoiser ``v / (v + sigma^2) x_2`` on the second (in the prior's
intensity space, where the image's 99th percentile is 1, so ``v`` does not depend on the
scan's scale). The solvers see one denoiser of the contract
(:mod:`medrecon.priors.base`), so DDS and RMP-VI take it unchanged. DPS keeps the one
set on the native grid it had: run with both sets on the prior's grid it lost 3 to 4 dB
on pydicom's MR_small (an observation on the evaluation image, not a tuning of it).
:data:`SECOND_SET_STD` was chosen with DDS on generated held-out brain slices zoomed to
fill a 64 x 64 field of view (``python bench/bench_prior_resolution.py --factors 2
--sets 1,2 --second-std 0,0.01,0.015,0.0173,0.0316``: seeds 10000 and 10001, 8 coils,
Poisson-disc R = 4 and 8, noise 1e-3 and 2e-2, DDS on the prior's grid; mean PSNR dB
by the second set's standard deviation):

=========  =======  =====  =====  =====  ======  ======
R, noise   one set  0      0.01   0.015  0.0173  0.0316
=========  =======  =====  =====  =====  ======  ======
4, 1e-3    35.41    39.78  41.45  41.34  41.23   40.13
4, 2e-2    29.74    29.95  30.11  30.10  30.09   29.96
8, 1e-3    30.05    32.50  33.21  33.28  33.28   33.11
8, 2e-2    27.73    27.90  28.00  28.00  27.99   27.90
=========  =======  =====  =====  =====  ======  ======

With a standard deviation of 0 the second set is fitted by the data-consistency step
alone, from zero at every noise level; a larger one lets DDS carry it from level to
level like the image, and at 0.03 it starts to take up noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from medrecon.priors.base import sigma_like

if TYPE_CHECKING:
    from medrecon.priors.base import Denoiser
    from medrecon.solvers.problem import Reconstruction

SECOND_SET_STD = 0.015
"""The standard deviation of the second set's image in the prior's intensity space
(:class:`SecondSetPrior`; ``v = 0.015^2 = 2.25e-4``, between the two best of the table in
the module docstring)."""


def combine(image: torch.Tensor, height: int) -> torch.Tensor:
    """One image ``(..., H, W)`` from a stacked soft-SENSE solution ``(..., 2 H, W)``: the
    root sum of squares of the set images, with the phase of the first set's."""
    first, second = image[..., :height, :], image[..., height:, :]
    magnitude = torch.sqrt(first.abs() ** 2 + second.abs() ** 2)
    phase = torch.where(first.abs() > 0, first / first.abs().clamp_min(1e-30),
                        torch.ones_like(first))
    return magnitude * phase


def combine_record(record: Reconstruction, height: int) -> Reconstruction:
    """``record`` of a stacked solution with its image and samples combined
    (:func:`combine`), the std recomputed from the combined samples (without samples,
    the root sum of squares of the two sets' std)."""
    from medrecon.solvers.sampling import mapped_record

    def combine_std(std: torch.Tensor) -> torch.Tensor:
        return combine(std.to(torch.promote_types(std.dtype, torch.complex64)), height).abs()

    return mapped_record(record, lambda x: combine(x, height), combine_std, map_sets=2)


@dataclass(frozen=True)
class SecondSetPrior:
    """The prior ``p(x_1) N(x_2; 0, variance I)`` on the stacked domain ``(2 height, W)``
    of :class:`medrecon.operators.map_sets.SoftSENSE` (module docstring): ``denoiser`` on
    the first ``height`` rows, the Gaussian's exact denoiser ``variance / (variance +
    sigma^2) x_2`` on the others. The intensity map is ``denoiser``'s."""

    denoiser: Denoiser
    height: int
    variance: float

    @property
    def is_complex(self) -> bool:
        return self.denoiser.is_complex

    @property
    def scale(self) -> float:
        return self.denoiser.scale

    @property
    def offset(self) -> float:
        return self.denoiser.offset

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        first = self.denoiser(x[..., :self.height, :], sigma)
        second = x[..., self.height:, :]
        shrink = self.variance / (self.variance + sigma_like(sigma, second) ** 2)
        return torch.cat([first, second * shrink], dim=-2)

