"""Gaussian mixture prior ``x0 ~ sum_k w_k N(m_k, C_k)``: exact denoiser and posterior.

Noising each component by ``sigma`` gives ``N(m_k, C_k + sigma^2 I)``, so

    D(x, sigma) = sum_k pi_k(x) [m_k + C_k (C_k + sigma^2 I)^{-1} (x - m_k)],
    pi_k(x) ∝ w_k N(x; m_k, C_k + sigma^2 I),

and for ``y = A x0 + N(0, sigma_y^2 I)`` the posterior is again a mixture,

    p(x0 | y) = sum_k pi_k N(mu_k, S_k),  pi_k ∝ w_k N(y; A m_k, G_k),
    G_k = A C_k A^T + sigma_y^2 I,  mu_k = m_k + C_k A^T G_k^{-1} (y - A m_k),
    S_k = C_k - C_k A^T G_k^{-1} A C_k

(the product of a mixture and a linear-Gaussian likelihood). Real images; the
image is flattened to ``n = prod(shape)`` values, so keep ``n`` small (tests use
2 and 16). This is the ground truth for sampler tests (Chung et al. 2023, DPS,
Sec. 5 and Boys et al. 2023 use the same construction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from medrecon.operators.base import LinearOperator
from medrecon.priors.base import sigma_like
from medrecon.priors.gaussian import operator_matrix


def _log_normal(d: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """``log N(d; 0, L L^T)`` for ``d (..., n)`` and Cholesky factors ``L (..., n, n)``."""
    z = torch.linalg.solve_triangular(chol, d.unsqueeze(-1), upper=False).squeeze(-1)
    log_det = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * ((z**2).sum(-1) + log_det + d.shape[-1] * math.log(2 * math.pi))


@dataclass(frozen=True)
class MixturePosterior:
    """``sum_k weights[k] N(means[k], covariances[k])`` over the flattened image."""

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact posterior draws ``(n, dim)``."""
        return _sample(self.weights, self.means, self.covariances, n, generator)


def _sample(weights, means, covariances, n, generator):
    k = torch.multinomial(weights.cpu(), n, replacement=True, generator=generator)
    z = torch.randn((n, means.shape[-1]), dtype=means.dtype, generator=generator)
    chol = torch.linalg.cholesky(covariances)
    k, z = k.to(means.device), z.to(means.device)
    return means[k] + (chol[k] @ z.unsqueeze(-1)).squeeze(-1)


class GaussianMixturePrior:
    """``sum_k w_k N(m_k, C_k)`` on images of ``shape``.

    Args:
        weights: ``(K,)`` positive (normalised here).
        means: ``(K, *shape)``.
        covariances: ``(K, n, n)`` symmetric positive definite, or ``(K,)`` variances
            (isotropic components), with ``n = prod(shape)``.
    """

    is_complex = False
    scale = 1.0
    offset = 0.0

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor):
        if weights.ndim != 1 or means.shape[0] != weights.shape[0] or not bool((weights > 0).all()):
            raise ValueError("weights must be (K,) positive and means (K, *shape)")
        self.shape = tuple(means.shape[1:])
        n = math.prod(self.shape)
        if covariances.ndim == 1:
            covariances = covariances[:, None, None] * torch.eye(n, dtype=means.dtype,
                                                                   device=means.device)
        if covariances.shape != (weights.shape[0], n, n):
            raise ValueError(f"covariances must be (K,) or (K, {n}, {n})")
        self.weights = weights / weights.sum()
        self.means = means.reshape(-1, n)
        self.covariances = covariances
        self._eye = torch.eye(n, dtype=means.dtype, device=means.device)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The one image shape this prior is defined on (a network has none)."""
        return self.shape

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        batch = x.shape[: x.ndim - len(self.shape)]
        v = x.reshape(-1, 1, self.means.shape[-1])                     # (B, 1, n)
        s2 = sigma_like(sigma, x).reshape(-1, 1, 1, 1) ** 2             # (B or 1, 1, 1, 1)
        noisy = self.covariances + s2 * self._eye                       # (B, K, n, n)
        chol = torch.linalg.cholesky(noisy)
        d = v - self.means                                              # (B, K, n)
        log_w = torch.log(self.weights) + _log_normal(d, chol)
        pi = torch.softmax(log_w, dim=-1)                               # (B, K)
        solved = torch.cholesky_solve(d.unsqueeze(-1), chol)            # (C+s2 I)^{-1} d
        means = self.means + (self.covariances @ solved).squeeze(-1)
        return (pi.unsqueeze(-1) * means).sum(-2).reshape(*batch, *self.shape)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws from the prior, ``(n, *shape)``."""
        draws = _sample(self.weights, self.means, self.covariances, n, generator)
        return draws.reshape(n, *self.shape)

    def posterior(self, operator: LinearOperator, y: torch.Tensor,
                  sigma_y: float) -> MixturePosterior:
        """Exact posterior of ``y = A x0 + N(0, sigma_y^2 I)`` (one unbatched ``y``)."""
        A = operator_matrix(operator).to(self.means.dtype)
        ac = A @ self.covariances                                       # (K, m, n)
        gram = ac @ A.T + sigma_y**2 * torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
        chol = torch.linalg.cholesky(gram)
        d = y.reshape(-1) - self.means @ A.T                            # (K, m)
        log_w = torch.log(self.weights) + _log_normal(d, chol)
        gain = torch.cholesky_solve(ac, chol).mT                        # C A^T G^{-1}
        means = self.means + (gain @ d.unsqueeze(-1)).squeeze(-1)
        covariances = self.covariances - gain @ ac
        covariances = 0.5 * (covariances + covariances.mT)
        return MixturePosterior(torch.softmax(log_w, 0), means, covariances)
