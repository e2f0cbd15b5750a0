"""RMP-VI against the exact posterior mean of a linear-Gaussian problem (ALGORITHMS.md)."""

from __future__ import annotations

import pytest
import torch

from medrecon.errors import NumericalError
from medrecon.operators.base import MatrixOperator
from medrecon.priors.gaussian import GaussianPrior
from medrecon.solvers.likelihood import gaussian_likelihood
from medrecon.solvers.problem import Problem
from medrecon.solvers.rmpvi import rmpvi
from medrecon.solvers.schedules import geometric

F64 = torch.float64
N, M, SIGMA_Y = 64, 24, 0.05


@pytest.fixture(scope="module")
def gaussian_case():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(M, N, generator=g, dtype=F64) / M**0.5
    prior = GaussianPrior(0.3 * torch.randn(N, generator=g, dtype=F64), 1.0)
    x0 = prior.sample(1, g)[0]
    y = A @ x0 + SIGMA_Y * torch.randn(M, generator=g, dtype=F64)
    problem = Problem(MatrixOperator(A), y, SIGMA_Y)
    return problem, prior, prior.posterior(problem.operator, y, SIGMA_Y).mean


def _error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x - ref) / torch.linalg.vector_norm(ref))


def mean_recursion(problem: Problem, prior: GaussianPrior, sigmas: torch.Tensor) -> torch.Tensor:
    """``mu_k = E[x_k | x_{k+1} = mu_{k+1}, y]`` in closed form (joint Gaussian conditioning)."""
    A, y = problem.operator.matrix, problem.y
    m, c = prior.mean, prior.variance[0]
    eye_n, eye_m = torch.eye(N, dtype=F64), torch.eye(M, dtype=F64)
    mu = torch.zeros(N, dtype=F64)
    levels = sigmas.tolist()
    for s_next, s in zip(levels[:-1], levels[1:]):
        cov_k = (c + s**2) * eye_n                        # Cov(x_k, x_k) = Cov(x_k, x_{k+1})
        cross = torch.cat([cov_k, c * A.T], dim=1)       # Cov(x_k, [x_{k+1}; y])
        joint = torch.cat([torch.cat([(c + s_next**2) * eye_n, c * A.T], 1),
                           torch.cat([c * A, c * A @ A.T + SIGMA_Y**2 * eye_m], 1)], 0)
        z = torch.cat([mu - m, y - A @ m])
        mu = m + cross @ torch.linalg.solve(joint, z)
    return mu


def test_closed_form_mean_recursion_reaches_the_posterior_mean(gaussian_case):
    problem, prior, exact = gaussian_case
    assert _error(mean_recursion(problem, prior, geometric(1e-3, 100.0, 31)), exact) < 1e-4


def test_rmpvi_at_the_mean_with_exact_likelihood(gaussian_case):
    problem, prior, exact = gaussian_case
    result = rmpvi(problem, prior, geometric(1e-3, 100.0, 31), inner_iter=50, n_particles=0,
                   zeta=None, gamma=1.0, likelihood=gaussian_likelihood(problem, prior))
    assert _error(result.image, exact) < 1e-3
    assert result.nfe == 30 * 50 and result.residual.shape == ()


def test_rmpvi_with_one_particle(gaussian_case):
    problem, prior, exact = gaussian_case
    result = rmpvi(problem, prior, geometric(1e-3, 100.0, 31), inner_iter=200, n_particles=1,
                   s1=0.01, zeta=None, gamma=1.0, likelihood=gaussian_likelihood(problem, prior),
                   generator=torch.Generator().manual_seed(1))
    assert _error(result.image, exact) < 0.15


def test_default_cg_step_is_exact(gaussian_case):
    """The default data step (the likelihood by CG, the Gaussian Jacobian with the exact
    A A^H) is exact for this prior once CG has converged (measured: 3.8e-5; with the
    default 5 CG iterations 9.9e-4)."""
    problem, prior, exact = gaussian_case
    result = rmpvi(problem, prior, geometric(1e-3, 100.0, 31), inner_iter=20, cg_iter=30)
    assert _error(result.image, exact) < 1e-3
    assert result.nfe == 30 * 20 and result.info["data_step"] == "cg"


def test_gradient_step_default_likelihood_gets_close(gaussian_case):
    """The gradient step's default strategy (DPS approximation with inflated variance,
    gamma = 1) is biased (it replaces A A^H by ||A||^2 I) but close: 0.13 against 0.81 for
    the prior mean."""
    problem, prior, exact = gaussian_case
    result = rmpvi(problem, prior, geometric(1e-3, 100.0, 31), inner_iter=20,
                   data_step="gradient")
    prior_only = _error(prior.mean, exact)
    assert _error(result.image, exact) < 0.2 * prior_only


def test_precision_update_runs_and_stays_accurate(gaussian_case):
    problem, prior, exact = gaussian_case
    result = rmpvi(problem, prior, geometric(1e-3, 100.0, 31), inner_iter=30, zeta=None,
                   likelihood=gaussian_likelihood(problem, prior), update_precision=True,
                   data_step="gradient", generator=torch.Generator().manual_seed(2))
    assert _error(result.image, exact) < 1e-2
    assert result.nfe == 30 * 30 * 2


def test_batch_items_are_independent(gaussian_case):
    problem, prior, _ = gaussian_case
    y2 = torch.stack([problem.y, 2 * problem.y])
    batched = rmpvi(Problem(problem.operator, y2, SIGMA_Y), prior, geometric(1e-2, 10.0, 8),
                    inner_iter=5)
    single = rmpvi(Problem(problem.operator, 2 * problem.y, SIGMA_Y), prior,
                   geometric(1e-2, 10.0, 8), inner_iter=5)
    torch.testing.assert_close(batched.image[1], single.image)


def test_bad_schedules_and_nan_prior(gaussian_case):
    problem, prior, _ = gaussian_case
    with pytest.raises(ValueError, match="decreasing"):
        rmpvi(problem, prior, torch.tensor([1.0, 2.0], dtype=F64))

    class Broken(GaussianPrior):
        def __call__(self, x, sigma):
            return super().__call__(x, sigma) * float("nan")

    with pytest.raises(NumericalError, match="step 0"):
        rmpvi(problem, Broken(prior.mean, 1.0), geometric(1e-2, 10.0, 4), inner_iter=2)


class Expanding(GaussianPrior):
    """A bad network: the exact denoiser reflected about the noisy input, ``2 x - D(x)``
    (Jacobian eigenvalues above 1, as an under-trained network can have)."""

    def __call__(self, x, sigma):
        return 2 * x - super().__call__(x, sigma)


def test_backtracking_keeps_a_bad_prior_finite(gaussian_case):
    problem, prior, _ = gaussian_case
    sigmas = geometric(1e-2, 10.0, 8)
    bad = Expanding(prior.mean, 1.0)
    plain = rmpvi(problem, bad, sigmas, inner_iter=20, backtrack=None)
    guarded = rmpvi(problem, bad, sigmas, inner_iter=20)
    assert not bool(torch.isfinite(plain.image).all()) or plain.image.abs().max() > 1e6
    assert guarded.image.abs().max() < 100 and guarded.info["rejected_steps"] > 0


@pytest.mark.parametrize("data_step", ["cg", "gradient"])
def test_backtracking_never_triggers_on_an_exact_prior(gaussian_case, data_step):
    problem, prior, _ = gaussian_case
    result = rmpvi(problem, prior, geometric(1e-3, 100.0, 31), inner_iter=20,
                   data_step=data_step)
    assert result.info["rejected_steps"] == 0


def test_pigdm_likelihood_without_backpropagation(gaussian_case):
    """The Gaussian-Jacobian (Pi-GDM) likelihood is exact in J for this prior; with its
    known curvature bounding the step, a large gamma stays finite."""
    problem, prior, exact = gaussian_case
    sigmas = geometric(1e-3, 100.0, 31)
    result = rmpvi(problem, prior, sigmas, inner_iter=20, jacobian="gaussian",
                   data_step="gradient")
    assert _error(result.image, exact) < 0.2 * _error(prior.mean, exact)
    heavy = rmpvi(problem, prior, sigmas, inner_iter=20, jacobian="gaussian", gamma=1e3,
                  backtrack=None, data_step="gradient")
    assert bool(torch.isfinite(heavy.image).all()) and heavy.image.abs().max() < 10
    with pytest.raises(ValueError, match="jacobian"):
        rmpvi(problem, prior, sigmas, jacobian="exact")
