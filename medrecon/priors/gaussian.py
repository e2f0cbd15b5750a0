"""Gaussian prior ``x0 ~ N(m, diag(c))``: exact denoiser and exact posterior.

For ``x = x0 + sigma * eps`` the conditional mean is linear (the Wiener filter):

    D(x, sigma) = m + c / (c + sigma^2) * (x - m),

and for ``y = A x0 + n``, ``n ~ N(0, sigma_y^2 I)``, the posterior is Gaussian with

    mean = m + C A^H G^{-1} (y - A m),   cov = C - C A^H G^{-1} A C,
    G = A C A^H + sigma_y^2 I

(e.g. Bishop, *Pattern Recognition and Machine Learning*, 2006, eqs. 2.113-2.117),
which holds for ``sigma_y = 0`` too when ``A C A^H`` is invertible. These exact
answers are the ground truth the diffusion solvers are tested against. Complex
images are supported (circular Gaussian); as everywhere in medrecon, variances
of complex values are per real component, and the posterior covariance is given
in those units (half of ``E[(x - mean)(x - mean)^H]``).

Example:
    >>> import torch
    >>> prior = GaussianPrior(torch.zeros(3), 4.0)
    >>> prior(torch.ones(3), 2.0)
    tensor([0.5000, 0.5000, 0.5000])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medrecon.operators.base import LinearOperator
from medrecon.priors.base import sigma_like, standard_noise


def operator_matrix(operator: LinearOperator) -> torch.Tensor:
    """The dense matrix ``(prod(range), prod(domain))`` of a (small) operator."""
    n = 1
    for d in operator.domain_shape:
        n *= d
    basis = torch.eye(n, dtype=operator.dtype, device=operator.device)
    columns = operator(basis.reshape(n, *operator.domain_shape))
    return columns.reshape(n, -1).T


@dataclass(frozen=True)
class GaussianPosterior:
    """``N(mean, covariance)`` over the flattened image."""

    mean: torch.Tensor
    covariance: torch.Tensor


class GaussianPrior:
    """``x0 ~ N(mean, diag(variance))``; ``variance`` a scalar (isotropic) or one per pixel."""

    scale = 1.0
    offset = 0.0

    def __init__(self, mean: torch.Tensor, variance: float | torch.Tensor):
        self.mean = mean
        self.variance = torch.as_tensor(variance, dtype=mean.real.dtype, device=mean.device)
        if not bool((self.variance > 0).all()):
            raise ValueError("prior variances must be positive")
        self.variance = self.variance.expand(mean.shape)
        self.is_complex = mean.is_complex()

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The one image shape this prior is defined on (a network has none)."""
        return tuple(self.mean.shape)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        s2 = sigma_like(sigma, x) ** 2
        return self.mean + self.variance / (self.variance + s2) * (x - self.mean)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws from the prior, ``(n, *mean.shape)``."""
        z = standard_noise(self.mean.expand(n, *self.mean.shape), generator)
        return self.mean + self.variance.sqrt() * z

    def posterior(self, operator: LinearOperator, y: torch.Tensor,
                  sigma_y: float) -> GaussianPosterior:
        """Exact posterior of ``y = A x0 + N(0, sigma_y^2 I)`` (one unbatched ``y``)."""
        A = operator_matrix(operator)
        m, c = self.mean.reshape(-1), self.variance.reshape(-1).to(A.dtype)
        ac = A * c                                   # A C
        gram = ac @ A.mH + sigma_y**2 * torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
        gain = torch.linalg.solve(gram, ac).mH       # C A^H G^{-1}
        mean = m + gain @ (y.reshape(-1) - A @ m)
        covariance = torch.diag(c) - gain @ ac
        return GaussianPosterior(mean.reshape(self.mean.shape), covariance)
