"""DPS: diffusion posterior sampling (Chung, Kim, McCann, Klasky, Ye, ICLR 2023).

Algorithm 1 of the paper in the VE form of ALGORITHMS.md. For each step
``sigma_i -> sigma_{i-1}`` (the last going to 0):

1. ``x0 = D(x_i, sigma_i)`` with gradients on ``x_i``;
2. the unconditional ancestral step: mean
   ``(s'^2 / s^2) x_i + (1 - s'^2 / s^2) x0``, variance ``s'^2 (s^2 - s'^2) / s^2``;
3. guidance by the gradient of the residual *norm* (not its square, as the
   official code does): ``x_{i-1} = x' - zeta grad_{x_i} ||y - A x0||``.

The output is the last ``x0``. DPS is a sampler: ``n_samples`` independent chains
run as one batch and give the mean image, the samples and their standard
deviation. Paper settings: 1000 steps, ``zeta`` 0.3 to 1.0.

The final relative data residual of the mean image comes from the guidance of the
last step at no extra cost: in prior space ``y' - A' x0 = y - A(to_data(x0))``, and by
linearity the mean over the chains of these residual vectors is that of the mean
image. No step applies ``A`` beyond the guidance's one product.
"""

from __future__ import annotations

import torch

from medrecon.priors.base import Denoiser, denoise_checked, prior_space, standard_noise
from medrecon.solvers.linalg import norm
from medrecon.solvers.problem import Callback, Problem, Reconstruction
from medrecon.solvers.sampling import sample_statistics, start_noise
from medrecon.solvers.schedules import check_descending


def dps(problem: Problem, denoiser: Denoiser, sigmas: torch.Tensor, *, zeta: float = 0.5,
        n_samples: int = 1, generator: torch.Generator | None = None,
        callback: Callback | None = None) -> Reconstruction:
    """Posterior samples by DPS; ``sigmas`` descending (``len(sigmas)`` network evaluations
    per sample). The image is the mean of the ``n_samples`` samples, ``residual`` its
    relative data residual per batch item; ``callback(i, n, x0_i)`` gets each step's
    denoised estimate (prior space)."""
    check_descending(sigmas)
    space = prior_space(problem, denoiser)
    A, y = space.problem.operator, space.problem.y
    levels = [float(s) for s in sigmas] + [0.0]
    x = start_noise(space.problem, n_samples, levels[0], generator)
    dims = space.problem.range_dims
    n_steps = len(levels) - 1
    for i, (s, s_next) in enumerate(zip(levels[:-1], levels[1:])):
        x = x.detach().requires_grad_(True)
        x0 = denoise_checked(denoiser, x, s, i)
        # guidance: gradient of ||y - A x0|| per chain
        misfit = y - A(x0)
        (grad,) = torch.autograd.grad(norm(misfit, dims).sum(), x)
        # ancestral VE step from s to s_next
        ratio = s_next**2 / s**2
        with torch.no_grad():
            x = ratio * x + (1 - ratio) * x0
            if s_next > 0:
                x = x + (s_next**2 * (s**2 - s_next**2) / s**2) ** 0.5 * standard_noise(
                    x, generator)
            x = x - zeta * grad
        if callback is not None:
            callback(i + 1, n_steps, x0.detach())
    samples = space.to_data(x0.detach())
    mean, std = sample_statistics(samples)
    # y - A(mean image) = mean over the chains of the last step's misfits (A is linear)
    residual = problem.relative(misfit.detach().mean(0))
    return Reconstruction(image=mean, method="dps", iterations=n_steps,
                          residual=residual, nfe=n_samples * n_steps,
                          samples=samples, std=std, info={"zeta": zeta})
