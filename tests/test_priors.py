"""Priors: exact denoisers (Tweedie), exact posteriors, and the network adapters."""

from __future__ import annotations

import math

import pytest
import torch

from medrecon.errors import OperatorShapeError
from medrecon.operators.base import MatrixOperator
from medrecon.priors.base import check_fits, prior_space, score, standard_noise
from medrecon.priors.gaussian import GaussianPrior, operator_matrix
from medrecon.priors.mixture import GaussianMixturePrior
from medrecon.priors.network import EDMDenoiser, TinyDenoiserNet, VPEpsDenoiser
from medrecon.solvers.problem import Problem
from medrecon.solvers.schedules import vp_alpha_bar, vp_sigmas

F64 = torch.float64


def _mixture(dim: int, k: int = 3, seed: int = 0) -> GaussianMixturePrior:
    g = torch.Generator().manual_seed(seed)
    factors = torch.randn(k, dim, dim, generator=g, dtype=F64) * 0.4
    covs = factors @ factors.mT + 0.05 * torch.eye(dim, dtype=F64)
    return GaussianMixturePrior(torch.rand(k, generator=g, dtype=F64) + 0.2,
                                2 * torch.randn(k, dim, generator=g, dtype=F64), covs)


def _noisy_log_density(prior: GaussianMixturePrior, x: torch.Tensor, sigma: float):
    n = prior.means.shape[-1]
    total = 0.0
    for w, m, c in zip(prior.weights, prior.means, prior.covariances):
        dist = torch.distributions.MultivariateNormal(m, c + sigma**2 * torch.eye(n, dtype=F64))
        total = total + w * dist.log_prob(x).exp()
    return total.log()


@pytest.mark.parametrize("dim", [2, 16])
@pytest.mark.parametrize("sigma", [0.05, 0.7, 5.0])
def test_mixture_denoiser_is_tweedie(dim, sigma):
    """D(x, s) = x + s^2 grad log p_s(x), with p_s the noised mixture (autograd)."""
    prior = _mixture(dim)
    x = (prior.sample(4, torch.Generator().manual_seed(1)) +
         sigma * torch.randn(4, dim, generator=torch.Generator().manual_seed(2), dtype=F64))
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(_noisy_log_density(prior, x, sigma).sum(), x)
    torch.testing.assert_close(prior(x.detach(), sigma), x.detach() + sigma**2 * grad)
    torch.testing.assert_close(score(prior, x.detach(), sigma), grad)


def test_gaussian_denoiser_and_mixture_of_one_agree():
    mean = torch.randn(5, dtype=F64)
    variance = torch.rand(5, dtype=F64) + 0.5
    gaussian = GaussianPrior(mean, variance)
    mixture = GaussianMixturePrior(torch.ones(1, dtype=F64), mean[None], torch.diag(variance)[None])
    x = torch.randn(3, 5, dtype=F64)
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=F64)
    torch.testing.assert_close(gaussian(x, sigma), mixture(x, sigma))


@pytest.mark.parametrize("dtype", [F64, torch.complex128])
def test_gaussian_posterior_matches_bayes_rule(dtype):
    g = torch.Generator().manual_seed(3)
    A = torch.randn(4, 6, generator=g, dtype=dtype)
    prior = GaussianPrior(torch.randn(6, generator=g, dtype=dtype), 2.0)
    y = torch.randn(4, generator=g, dtype=dtype)
    post = prior.posterior(MatrixOperator(A), y, 0.3)
    # information form: precision = A^H A / s_y^2 + I / c, mean = cov (A^H y / s_y^2 + m / c)
    precision = A.mH @ A / 0.09 + torch.eye(6, dtype=dtype) / 2.0
    mean = torch.linalg.solve(precision, A.mH @ y / 0.09 + prior.mean / 2.0)
    torch.testing.assert_close(post.mean, mean)
    torch.testing.assert_close(post.covariance, torch.linalg.inv(precision))


def test_mixture_posterior_against_importance_sampling():
    prior = _mixture(2, seed=4)
    A = torch.tensor([[1.0, 0.5]], dtype=F64)
    y, sigma_y = torch.tensor([0.7], dtype=F64), 0.4
    post = prior.posterior(MatrixOperator(A), y, sigma_y)
    draws = prior.sample(400_000, torch.Generator().manual_seed(5))
    weights = torch.exp(-0.5 * ((draws @ A.T - y) ** 2).sum(-1) / sigma_y**2)
    weights = weights / weights.sum()
    torch.testing.assert_close(post.mean, (weights[:, None] * draws).sum(0), atol=0.02, rtol=0)
    exact_draws = post.sample(200_000, torch.Generator().manual_seed(6))
    torch.testing.assert_close(exact_draws.mean(0), post.mean, atol=0.02, rtol=0)


def test_operator_matrix():
    m = torch.randn(3, 4, dtype=F64)
    torch.testing.assert_close(operator_matrix(MatrixOperator(m)), m)


def test_standard_noise_convention():
    z = standard_noise(torch.zeros(200_000, dtype=torch.complex128),
                       torch.Generator().manual_seed(0))
    assert abs(float(z.real.var()) - 1) < 0.02 and abs(float(z.imag.var()) - 1) < 0.02


def test_prior_space_maps_units():
    A = MatrixOperator(torch.randn(3, 2, dtype=F64))
    x_data = torch.tensor([100.0, -40.0], dtype=F64)
    problem = Problem(A, A(x_data))

    class Scaled(GaussianPrior):
        scale, offset = 50.0, 10.0

    space = prior_space(problem, Scaled(torch.zeros(2, dtype=F64), 1.0))
    x_prior = space.to_prior(x_data)
    torch.testing.assert_close(space.problem.operator(x_prior), space.problem.y)
    torch.testing.assert_close(space.to_data(x_prior), x_data)


def test_layout_mismatch_is_refused():
    real_prior = GaussianPrior(torch.zeros(2, dtype=F64), 1.0)
    with pytest.raises(OperatorShapeError, match="real"):
        check_fits(real_prior, MatrixOperator(torch.randn(3, 2, dtype=torch.complex128)))


# --------------------------------------------------------------------- network adapters
class _GaussianEps(torch.nn.Module):
    """The exact eps-prediction of a VP model for a zero-mean Gaussian prior N(0, c)."""

    def __init__(self, c: float, alpha_bar: torch.Tensor):
        super().__init__()
        self.c, self.alpha_bar = c, alpha_bar
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, x_t, t):
        t0 = t.floor().long().clamp(max=len(self.alpha_bar) - 2)
        frac = (t - t0).reshape(-1, 1, 1, 1)
        log_s = 0.5 * torch.log((1 - self.alpha_bar) / self.alpha_bar)
        s2 = torch.exp(2 * ((1 - frac) * log_s[t0].reshape(-1, 1, 1, 1) +
                            frac * log_s[t0 + 1].reshape(-1, 1, 1, 1)))
        a = 1 / (1 + s2)                                  # abar at this sigma
        return (1 - a).sqrt() * x_t / (a * self.c + 1 - a)


def test_vp_adapter_is_exact_for_an_exact_eps_network():
    c = 0.7
    alpha_bar = vp_alpha_bar()
    denoiser = VPEpsDenoiser(_GaussianEps(c, alpha_bar), is_complex=False)
    gaussian = GaussianPrior(torch.zeros(4, 4, dtype=F64), c)
    x = torch.randn(3, 4, 4, dtype=F64)
    for sigma in vp_sigmas(7).tolist() + [0.37, 12.0]:
        torch.testing.assert_close(denoiser(x, sigma), gaussian(x, sigma))


class _GaussianEDMNet(torch.nn.Module):
    """The raw F that EDM preconditioning turns into the exact Gaussian denoiser."""

    def __init__(self, c: float, sigma_data: float):
        super().__init__()
        self.c, self.sd = c, sigma_data
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, x_in, c_noise):
        s = torch.exp(4 * c_noise).reshape(-1, 1, 1, 1)
        x = x_in * (s**2 + self.sd**2).sqrt()
        exact = self.c / (self.c + s**2) * x
        c_skip = self.sd**2 / (s**2 + self.sd**2)
        c_out = s * self.sd / (s**2 + self.sd**2).sqrt()
        return (exact - c_skip * x) / c_out


@pytest.mark.parametrize("is_complex", [False, True])
def test_edm_adapter_is_exact_for_an_exact_network(is_complex):
    c = 1.3
    denoiser = EDMDenoiser(_GaussianEDMNet(c, 0.5), is_complex=is_complex)
    dtype = torch.complex128 if is_complex else F64
    gaussian = GaussianPrior(torch.zeros(5, 6, dtype=dtype), c)
    x = torch.randn(2, 5, 6, dtype=dtype)
    for sigma in (0.01, 0.5, 30.0):
        torch.testing.assert_close(denoiser(x, sigma), gaussian(x, sigma))


def test_tiny_network_prior_keeps_layout():
    denoiser = EDMDenoiser(TinyDenoiserNet(2), is_complex=True)
    x = torch.randn(2, 3, 8, 8, dtype=torch.complex64)
    out = denoiser(x, torch.tensor(0.5))
    assert out.shape == x.shape and out.dtype == x.dtype and bool(torch.isfinite(out).all())
    with pytest.raises(OperatorShapeError):
        denoiser(x.real, 0.5)
    assert math.isclose(denoiser.sigma_data, 0.5)
