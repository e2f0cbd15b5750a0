"""Diffusion solvers on real problems: a prior mapped to the problem's units, and the
solver's keyword arguments with defaults that hold across geometries and scans.

Priors live in their own intensity space (:mod:`medrecon.priors.base`); the problems
do not: CT problems are in attenuation (1/mm), MRI problems in k-space normalised to
``max |y| = 1``. :func:`ct_prior` and :func:`mri_prior` re-express a prior's
normalisation in those units, so that ``sigma`` keeps its meaning (noise in the
prior's space) on every scan.

Defaults (:func:`diffusion_params`), all in the prior's space:

- noise levels: the EDM schedule (Karras et al. 2022, eq. 5, rho 7) from
  ``sigma_max`` to ``sigma_min`` (:data:`DEFAULTS`);
- DDS (Chung, Lee, Ye, ICLR 2024, eq. 13): the data-consistency weight is given
  relative to the operator, ``gamma = gamma_rel / ||A'||^2`` with ``A'`` the operator
  in prior space, so one number serves every geometry;
- RMP-VI: the Pi-GDM likelihood (:func:`medrecon.solvers.likelihood.pigdm_likelihood`:
  a Gaussian prior's Jacobian instead of back-propagation through the network, whose
  Jacobian at a mean image is unreliable) evaluated at the mean, weighted by ``gamma``,
  with the step bounded by its known curvature; ``steps`` noise levels and
  ``inner_iter`` iterations each, started from a rough reconstruction
  (:func:`rough_image`) rather than the note's constant ``mu_T``: at a constant image
  the group normalisation of a UNet divides by a near-zero variance, and its Jacobian
  there is 10^5 times that at any real image;
- DPS (Chung et al., ICLR 2023, Algorithm 1): step ``zeta / ||y - A D(x)||``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medrecon.priors.base import Denoiser
from medrecon.solvers.problem import Problem
from medrecon.solvers.schedules import karras

DIFFUSION_METHODS = ("dds", "rmpvi", "dps")
DEFAULTS: dict[str, dict[str, float | int]] = {
    "dds": {"steps": 50, "sigma_max": 10.0, "sigma_min": 0.02, "eta": 1.0, "gamma": 100.0,
            "cg_iter": 5, "n_samples": 1},
    "rmpvi": {"steps": 21, "sigma_max": 10.0, "sigma_min": 0.005, "inner_iter": 10,
              "gamma": 30.0, "v_x0": 1.0, "n_particles": 0},
    "dps": {"steps": 100, "sigma_max": 10.0, "sigma_min": 0.005, "zeta": 10.0,
            "n_samples": 1},
}
"""Default parameters per method (``gamma`` of DDS and RMP-VI relative, see the module
docstring), tuned on one held-out CT phantom slice (seed 10000, 60 views) with the
default CT prior. DDS: eta 1 (full re-noising), gamma 100, sigma_min 0.02 gave 32.0 dB /
0.857 against 30.1 dB / 0.776 for eta 0.5, gamma 30, sigma_min 0.005. RMP-VI: the
Pi-GDM likelihood at the mean (L = 0) with gamma 30 (stable for any gamma with its known
curvature; 1 gives 19 dB, 100 over-weights the data) and 21 levels of 10 iterations
(200 evaluations: 28.3 dB; 11 x 5: 25.9 dB). DPS: zeta 10 (1: 11.9 dB, 10: 21.5 dB at
50 steps) and 100 steps (200 steps: 24.2 dB)."""
MODALITY_DEFAULTS: dict[str, dict[str, dict[str, float | int]]] = {
    "ct": {},
    "mri": {"dds": {"sigma_min": 0.005, "eta": 0.5, "gamma": 1000.0, "cg_iter": 15}},
}
"""Where a modality's best differs: MRI's CG steps cost an FFT, not two projections, and
on a held-out brain slice at R = 8 DDS gained 1 dB from 15 CG iterations, a smaller
final sigma and a stronger data weight (28.9 dB against 27.5 with the CT defaults)."""


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


def ct_prior(denoiser: Denoiser, mu_water: float) -> MappedPrior:
    """A CT prior trained on HU (``HU = scale x + offset``) mapped to attenuation
    ``mu = mu_water (1 + HU / 1000)`` (1/mm), the unknown of CT problems."""
    return MappedPrior(denoiser, mu_water * denoiser.scale / 1000.0,
                       mu_water * (1.0 + denoiser.offset / 1000.0))


def mri_prior(denoiser: Denoiser, problem: Problem, *, quantile: float = 0.99,
              n_iter: int = 10) -> MappedPrior:
    """An MRI prior trained on images divided by the 99th percentile of their magnitude,
    mapped to this problem's units: the percentile of a rough reconstruction (``n_iter``
    CG iterations on the normal equations) becomes the prior's scale."""
    rough = rough_image(problem, 1.0, n_iter)  # ||A|| <= 1 for the SENSE operators
    reference = float(torch.quantile(rough.abs().flatten().double(), quantile))
    return MappedPrior(denoiser, (reference or 1.0) * denoiser.scale,
                       reference * denoiser.offset)


def rough_image(problem: Problem, operator_norm: float, n_iter: int = 10) -> torch.Tensor:
    """``n_iter`` CG iterations on ``(A^H A + 0.01 ||A||^2 I) x = A^H y`` from zero (data units)."""
    from medrecon.solvers.cgsense import cgsense

    return cgsense(problem, n_iter=n_iter, weight=1e-2 * operator_norm**2).image


def diffusion_params(method: str, problem: Problem, prior: Denoiser, *,
                     steps: int | None = None, sigma_max: float | None = None,
                     sigma_min: float | None = None, gamma: float | None = None,
                     eta: float | None = None, cg_iter: int | None = None,
                     inner_iter: int | None = None, zeta: float | None = None,
                     n_samples: int | None = None, v_x0: float | None = None,
                     n_particles: int | None = None,
                     operator_norm: float | None = None, modality: str = "ct",
                     generator: torch.Generator | None = None) -> dict[str, object]:
    """Keyword arguments of ``solve(method, problem, **params)`` for a diffusion method,
    with :data:`DEFAULTS` (and :data:`MODALITY_DEFAULTS` of ``modality``) for whatever
    is ``None``. ``operator_norm`` is ``||A||`` in the
    problem's units (power iteration when needed and ``None``)."""
    if method not in DIFFUSION_METHODS:
        raise ValueError(f"unknown diffusion method {method!r}")
    given = {"steps": steps, "sigma_max": sigma_max, "sigma_min": sigma_min, "gamma": gamma,
             "eta": eta, "cg_iter": cg_iter, "inner_iter": inner_iter, "zeta": zeta,
             "n_samples": n_samples, "v_x0": v_x0, "n_particles": n_particles}
    values = {**DEFAULTS[method], **MODALITY_DEFAULTS[modality].get(method, {}),
              **{k: v for k, v in given.items() if v is not None and k in DEFAULTS[method]}}
    sigmas = karras(values.pop("sigma_min"), values.pop("sigma_max"), int(values.pop("steps")))
    params: dict[str, object] = {"denoiser": prior, "sigmas": sigmas, "generator": generator}
    if method != "dps":
        if operator_norm is None:
            operator_norm = problem.operator.norm(generator=torch.Generator().manual_seed(0))
        if method == "dds":
            values["gamma"] = values["gamma"] / (operator_norm * prior.scale) ** 2
        else:
            params["operator_norm"] = operator_norm
            params["zeta"] = None
            params["x_init"] = rough_image(problem, operator_norm)
            params["jacobian"] = "gaussian"
    return {**params, **values}
