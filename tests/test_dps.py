"""DPS and RMP-VI against the exact posterior of a Gaussian-mixture prior.

Measured numbers (README, "Exact-posterior results") are kept here as regression
guards with a margin; the exact-vs-exact sliced Wasserstein distance shows the
Monte Carlo floor.
"""

from __future__ import annotations

import pytest
import torch

from medrecon.metrics import sliced_wasserstein
from medrecon.operators.base import MatrixOperator
from medrecon.priors.mixture import GaussianMixturePrior
from medrecon.solvers.dps import dps
from medrecon.solvers.problem import Problem
from medrecon.solvers.rmpvi import rmpvi
from medrecon.solvers.schedules import geometric, karras

F64 = torch.float64
SIGMA_Y = 0.2


def mixture_problem(dim: int, measurements: int):
    g = torch.Generator().manual_seed(0)
    factors = torch.randn(3, dim, dim, generator=g, dtype=F64) * 0.4
    prior = GaussianMixturePrior(torch.rand(3, generator=g, dtype=F64) + 0.2,
                                 2 * torch.randn(3, dim, generator=g, dtype=F64),
                                 factors @ factors.mT + 0.05 * torch.eye(dim, dtype=F64))
    g = torch.Generator().manual_seed(1)
    A = torch.randn(measurements, dim, generator=g, dtype=F64) / measurements**0.5
    x0 = prior.sample(1, g)[0]
    y = A @ x0 + SIGMA_Y * torch.randn(measurements, generator=g, dtype=F64)
    problem = Problem(MatrixOperator(A), y, SIGMA_Y)
    return problem, prior, prior.posterior(problem.operator, y, SIGMA_Y)


def _sw(a, b) -> float:
    return sliced_wasserstein(a, b, generator=torch.Generator().manual_seed(0))


def _rel(x, ref) -> float:
    return float(torch.linalg.vector_norm(x - ref) / torch.linalg.vector_norm(ref))


# dim, measurements, DPS steps, chains, guard on SW, guard on mean error (measured: see README)
CASES = [(2, 1, 500, 2000, 0.25, 0.08), (16, 8, 1000, 400, 0.5, 0.06)]


@pytest.mark.parametrize("dim,m,steps,chains,sw_guard,mean_guard", CASES)
def test_dps_samples_against_exact_posterior(dim, m, steps, chains, sw_guard, mean_guard):
    problem, prior, post = mixture_problem(dim, m)
    exact = post.sample(chains, torch.Generator().manual_seed(2))
    result = dps(problem, prior, karras(0.01, 20.0, steps), zeta=1.0, n_samples=chains,
                 generator=torch.Generator().manual_seed(4))
    assert result.nfe == chains * steps and result.samples.shape == (chains, dim)
    prior_sw = _sw(prior.sample(chains, torch.Generator().manual_seed(3)), exact)
    dps_sw = _sw(result.samples, exact)
    assert dps_sw < sw_guard < prior_sw
    assert _rel(result.image, post.mean) < mean_guard
    torch.testing.assert_close(result.std, result.samples.std(0))


@pytest.mark.parametrize("dim,m,guard", [(2, 1, 0.05), (16, 8, 0.2)])
def test_rmpvi_mean_against_exact_posterior_mean(dim, m, guard):
    problem, prior, post = mixture_problem(dim, m)
    result = rmpvi(problem, prior, geometric(1e-3, 100.0, 31), inner_iter=20)
    assert _rel(result.image, post.mean) < guard
    assert result.nfe == 30 * 20
