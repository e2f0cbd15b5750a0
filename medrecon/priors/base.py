"""The denoiser contract: a prior is ``D(x, sigma) ~= E[x0 | x0 + sigma * eps = x]``.

Every diffusion solver in medrecon sees a prior only through this contract, in
the variance-exploding (VE, EDM) parametrisation ``x_sigma = x0 + sigma * eps``
(Karras, Aittala, Aila, Laine, "Elucidating the design space of diffusion-based
generative models", NeurIPS 2022, Table 1). The score follows by Tweedie's
formula (Efron 2011, eq. 2.8):

    s(x, sigma) = grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2.

A prior works in its own intensity space. It carries the map to the data's
units, ``data = scale * x + offset`` (e.g. HU or attenuation to the [-1, 1]
range a network was trained on); the solvers apply it (:func:`prior_space`), so
``sigma`` means the same at every scan and callers pass data in its own units.
Images are tensors of the operator's domain layout: real ``(*batch, H, W)`` for
CT, complex ``(*batch, H, W)`` for MRI; a network prior turns complex images into
two real channels itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

from medrecon.errors import NumericalError, OperatorShapeError
from medrecon.operators.base import LinearOperator

if TYPE_CHECKING:  # the solvers import this module; Problem is imported where it is used
    from medrecon.solvers.problem import Problem


@runtime_checkable
class Denoiser(Protocol):
    """The prior contract (see the module docstring).

    Attributes:
        is_complex: whether images are complex (MRI) or real (CT).
        scale, offset: ``data = scale * x + offset`` maps prior space to data units.

    A prior defined on one image shape only (the closed-form Gaussian and mixture
    priors) says so with an ``image_shape`` attribute; a convolutional network has none
    and takes any shape.
    """

    is_complex: bool
    scale: float
    offset: float

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """``E[x0 | x_sigma = x]`` for a batch ``x`` at noise level ``sigma`` (a scalar or
        one value per batch item)."""
        ...


def score(denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Prior score ``(D(x, sigma) - x) / sigma^2`` (Tweedie)."""
    sigma = torch.as_tensor(sigma, dtype=x.real.dtype, device=x.device)
    return (denoiser(x, sigma) - x) / sigma_like(sigma, x) ** 2


def sigma_like(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """``sigma`` (a scalar or ``(*batch,)``) shaped to broadcast against ``x``."""
    sigma = torch.as_tensor(sigma, dtype=x.real.dtype, device=x.device)
    if sigma.ndim == 0:
        return sigma
    return sigma.reshape(*sigma.shape, *(1,) * (x.ndim - sigma.ndim))


def standard_noise(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Unit Gaussian noise shaped like ``like``, drawn on the generator's device.

    Complex images get unit variance in the real and in the imaginary part (as a
    two-channel network sees them), i.e. ``E|z|^2 = 2``: ``sigma`` is the noise
    level of each real channel for real and complex images alike.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    z = torch.randn(like.shape, dtype=like.dtype, device=gen_device, generator=generator)
    if like.is_complex():
        z = z * 2**0.5
    return z.to(like.device)


def denoise_checked(denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor | float,
                    step: int) -> torch.Tensor:
    """``D(x, sigma)``, refusing NaN or infinite output (names the step and sigma)."""
    out = denoiser(x, sigma)
    if not bool(torch.isfinite(out).all()):
        raise NumericalError(f"the prior returned NaN or infinite values at step {step} "
                             f"(sigma {float(torch.as_tensor(sigma).max()):.4g})")
    return out


def check_fits(denoiser: Denoiser, operator: LinearOperator) -> None:
    """Refuse a prior whose image layout does not fit the operator's domain."""
    if bool(denoiser.is_complex) != operator.dtype.is_complex:
        kind = "complex (two-channel)" if denoiser.is_complex else "real (one-channel)"
        raise OperatorShapeError(
            f"the prior takes {kind} images but {operator.name} acts on {operator.dtype} images")


@dataclass(frozen=True)
class PriorSpace:
    """A problem mapped into a prior's intensity space and the way back.

    With ``x_data = scale * x + offset`` the measurement model becomes
    ``y - A(offset) = (scale A) x + n``; ``to_data`` maps an estimate back.
    """

    problem: Problem
    scale: float
    offset: float

    def to_data(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + self.offset

    def to_prior(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.offset) / self.scale


def prior_space(problem: Problem, denoiser: Denoiser) -> PriorSpace:
    """Map ``problem`` into ``denoiser``'s intensity space (checks the layout first)."""
    A = problem.operator
    check_fits(denoiser, A)
    scale, offset = float(denoiser.scale), float(denoiser.offset)
    if not scale > 0:
        raise ValueError(f"a prior's scale must be positive, got {scale}")
    y = problem.y
    if offset != 0.0:
        y = y - A(torch.full(A.domain_shape, offset, dtype=A.dtype, device=A.device))
    operator = A if scale == 1.0 else scale * A
    return PriorSpace(dataclasses.replace(problem, operator=operator, y=y), scale, offset)

