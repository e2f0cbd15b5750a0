"""Likelihood scores ``grad_x log p(y | x_sigma = x)``: strategies for RMP-VI (and tests).

A likelihood score is a callable ``score(x, denoised, sigma) -> gradient``
where ``denoised = D(x, sigma)`` was computed from ``x`` with autograd enabled,
so a strategy may differentiate through the network.

- :func:`dps_likelihood`: the DPS approximation ``p(y | x_sigma) ~= p(y | D(x, sigma))``
  (Chung, Kim, McCann, Klasky, Ye, "Diffusion posterior sampling for general noisy
  inverse problems", ICLR 2023, eq. 10), gradient
  ``-grad_x ||y - A D(x, sigma)||^2 / (2 sigma_y^2)`` by back-propagation through ``D``.
  With ``sigma_y = 0`` the factor ``1 / sigma_y^2`` is dropped (use a balance that
  rescales it, as RMP-VI's ``zeta`` does), or the variance is inflated by the
  denoiser's uncertainty (``v_x0``, see :func:`dps_likelihood`).
- :func:`pigdm_likelihood`: the same residual with the network's Jacobian replaced by
  that of a Gaussian prior of variance ``v_x0``, ``J = v_x0 / (v_x0 + sigma^2) I``, and
  the variance inflated the same way (Pi-GDM's isotropic form: Song, Vahdat, Mardani,
  Kautz, ICLR 2023, eq. 7 with ``r^2 = v_x0 sigma^2 / (v_x0 + sigma^2)``):
  ``J A^H (y - A D(x, sigma)) / (sigma_y^2 + r^2 ||A||^2)``. No back-propagation
  (a third of the cost), and a curvature known in advance (``score.curvature(sigma)``,
  which RMP-VI's step uses); a trained network's own
  Jacobian is unreliable where it is evaluated at a mean image rather than at a noisy
  one (off the distribution it was trained on).
- :func:`gaussian_likelihood`: the exact score for a Gaussian prior ``N(m, diag(c))``
  (ALGORITHMS.md, "How its correctness is known"):
  ``J A^H (sigma_y^2 I + A R^2 A^H)^{-1} (y - A D(x, sigma))`` with
  ``J = c / (c + sigma^2)`` and ``R^2 = c sigma^2 / (c + sigma^2)``; dense, for tests.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from medrecon.priors.gaussian import GaussianPrior, operator_matrix
from medrecon.solvers.linalg import sq_norm
from medrecon.solvers.problem import Problem

LikelihoodScore = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def dps_likelihood(problem: Problem, *, v_x0: float | None = None,
                   operator_norm: float | None = None) -> LikelihoodScore:
    """The DPS-approximate likelihood score for ``problem`` (see module docstring).

    With ``v_x0`` the Gaussian's variance is inflated by the denoiser's own
    uncertainty, ``sigma_y^2 + r^2 ||A||^2`` with ``r^2 = v_x0 sigma^2 / (v_x0 + sigma^2)``
    (the exact Gaussian-prior form with ``A A^H`` replaced by ``||A||^2 I``, as
    Pi-GDM does: Song, Vahdat, Mardani, Kautz, ICLR 2023, eq. 7). Plain DPS
    (``v_x0 = None``) weighs the residual by ``1 / sigma_y^2`` at every sigma, which is
    over-confident at large sigma: its curvature ``||A||^2 / sigma_y^2`` makes a
    fixed-weight natural-gradient step unstable. ``operator_norm`` is ``||A||``
    (power iteration when ``None``).
    """
    A, y = problem.operator, problem.y
    norm2 = 0.0
    if v_x0 is not None:
        norm2 = (operator_norm if operator_norm is not None else
                 A.norm(n_iter=30, generator=torch.Generator().manual_seed(0))) ** 2

    def score(x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
        r2 = 0.0 if v_x0 is None else v_x0 * sigma**2 / (v_x0 + sigma**2)
        variance = problem.sigma_y**2 + r2 * norm2
        weight = 1.0 / variance if variance > 0 else 1.0
        loss = 0.5 * weight * sq_norm(y - A(denoised))
        (gradient,) = torch.autograd.grad(loss, x)
        # for complex x torch returns d/d(re) + i d/d(im) of the real loss: the
        # steepest-ascent direction in both cases, so the score is its negative
        return -gradient

    return score


def pigdm_likelihood(problem: Problem, *, v_x0: float = 1.0,
                     operator_norm: float | None = None) -> LikelihoodScore:
    """The likelihood score with a Gaussian prior's Jacobian (see the module docstring);
    ``operator_norm`` is ``||A||`` (power iteration when ``None``). Needs no autograd."""
    A, y = problem.operator, problem.y
    norm2 = (operator_norm if operator_norm is not None else
             A.norm(n_iter=30, generator=torch.Generator().manual_seed(0))) ** 2

    def weight(sigma: float) -> tuple[float, float]:
        jacobian = v_x0 / (v_x0 + sigma**2)
        return jacobian, jacobian / (problem.sigma_y**2 + jacobian * sigma**2 * norm2)

    def score(x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
        with torch.no_grad():
            return weight(sigma)[1] * A.H(y - A(denoised.detach()))

    def curvature(sigma: float) -> float:
        """Largest curvature of ``-log p(y | x_sigma)``: ``J^2 ||A||^2 / variance``."""
        jacobian, scale = weight(sigma)
        return jacobian * scale * norm2

    score.curvature = curvature
    return score


def gaussian_likelihood(problem: Problem, prior: GaussianPrior) -> LikelihoodScore:
    """The exact likelihood score of a Gaussian prior (unbatched ``y``; small problems)."""
    A = operator_matrix(problem.operator)
    c = prior.variance.reshape(-1).to(A.dtype)
    y = problem.y.reshape(-1)
    shape = prior.mean.shape
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)

    def score(x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
        s2 = float(sigma) ** 2
        jac, r2 = c / (c + s2), c * s2 / (c + s2)
        gram = problem.sigma_y**2 * eye + (A * r2) @ A.mH
        d = denoised.detach().reshape(*denoised.shape[: denoised.ndim - len(shape)], -1)
        residual = y - d @ A.T
        solved = torch.linalg.solve(gram, residual.unsqueeze(-1)).squeeze(-1)
        return (jac * (solved @ A.conj())).reshape(denoised.shape)

    return score
