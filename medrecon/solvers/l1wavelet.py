"""L1-wavelet regularised least squares by FISTA: compressed-sensing MRI.

Solves

    min_x  1/2 ||A x - y||^2 + weight ||W x||_1

with ``W`` the orthonormal periodic wavelet transform
(:class:`~medrecon.operators.wavelet.Wavelet2D`, every coefficient penalised,
approximation included) and ``||c||_1 = sum |c_i|`` (the modulus for complex
coefficients): the sparsity-promoting reconstruction of Lustig, Donoho & Pauly,
"Sparse MRI: the application of compressed sensing for rapid MR imaging", MRM
58:1182-1195, 2007 (their data-consistency-constrained L1 problem in Lagrangian
form, with the wavelet term and without TV), solved by FISTA: Beck &
Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear inverse
problems", SIAM J. Imaging Sci. 2(1):183-202, 2009, Section 4 (FISTA with constant
step size ``1/L``, ``L = ||A||^2`` the Lipschitz constant of the gradient
``A^H (A x - y)``; ``||A||`` by power iteration unless given).

Because ``W`` is unitary, the proximal map of ``tau * weight ||W .||_1`` is
``W^H soft(W v, tau * weight)`` with the complex soft-thresholding
``soft(c, t) = sgn(c) max(|c| - t, 0)`` (the modulus shrinks, the phase stays).
With ``A = I`` the minimiser is exactly ``W^H soft(W y, weight)``, reached in one step.

Example:
    >>> import torch
    >>> from medrecon.operators.base import Identity
    >>> from medrecon.solvers.l1wavelet import l1wavelet
    >>> from medrecon.solvers.problem import Problem
    >>> y = torch.zeros(8, 8, dtype=torch.complex128)
    >>> y[2, 3] = 5j
    >>> x = l1wavelet(Problem(Identity((8, 8), torch.complex128), y), weight=0.1,
    ...               wavelet="haar", n_iter=3, operator_norm=1.0).image
    >>> bool(x.abs().max() < 5), torch.allclose(x.real, torch.zeros(8, 8, dtype=torch.float64))
    (True, True)
"""

from __future__ import annotations

import math

import torch

from medrecon.operators.wavelet import Wavelet2D
from medrecon.solvers.linalg import sq_norm
from medrecon.solvers.problem import Callback, Problem, Reconstruction


def soft_threshold(c: torch.Tensor, threshold: float) -> torch.Tensor:
    """``sgn(c) max(|c| - threshold, 0)`` elementwise: the proximal map of
    ``threshold * ||.||_1``; for complex ``c`` the modulus shrinks and the phase is kept."""
    magnitude = c.abs()
    shrink = (magnitude - threshold).clamp_min(0.0) / magnitude.clamp_min(
        torch.finfo(magnitude.dtype).tiny)
    return c * shrink


def l1wavelet_objective(problem: Problem, x: torch.Tensor, weight: float,
                        wavelet: str = "db4", levels: int | None = None) -> torch.Tensor:
    """``1/2 ||A x - y||^2 + weight ||W x||_1`` per batch item (what :func:`l1wavelet`
    minimises)."""
    A = problem.operator
    W = Wavelet2D(A.domain_shape, wavelet, levels, dtype=A.dtype, device=A.device)
    data = 0.5 * sq_norm(A(x) - problem.y, problem.range_dims)
    return data + weight * W(x).abs().sum(dim=(-2, -1))


def l1wavelet(problem: Problem, *, weight: float, n_iter: int = 100, wavelet: str = "db4",
              levels: int | None = None, x0: torch.Tensor | None = None,
              callback: Callback | None = None, operator_norm: float | None = None,
              generator: torch.Generator | None = None) -> Reconstruction:
    """Minimise ``1/2 ||A x - y||^2 + weight ||W x||_1`` by FISTA (see module docstring).

    Args:
        problem: ``y = A x + n`` with a 2D image domain; leading dimensions of ``y`` are
            independent problems (one shared step size ``1 / ||A||^2``).
        weight: the L1 weight, ``>= 0``, in the units of ``A^H y``.
        n_iter: FISTA iterations, ``>= 0``.
        wavelet: an orthogonal PyWavelets wavelet name.
        levels: wavelet levels (``None``: :func:`~medrecon.operators.wavelet.default_levels`).
        x0: initial image, broadcastable to ``(*batch, *domain_shape)`` (not modified).
        callback: called after each iteration with ``(k, n_iter, x_k)``.
        operator_norm: ``||A||`` if known; otherwise power iteration with ``generator``.
        generator: randomness of the power iteration's start vector.

    Returns:
        A :class:`Reconstruction` with ``residual`` ``(*batch)`` the final relative data
        residual (from the product ``A x`` the iteration has) and ``info`` the weight,
        operator norm, step, wavelet and levels.

    Raises:
        ValueError: a negative or non-finite ``weight``, a negative ``n_iter``, a
            non-positive ``operator_norm``, a domain that is not 2D or does not fit the
            wavelet, or an ``x0`` that does not fit.
    """
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"l1wavelet: weight must be a finite number >= 0, got {weight}")
    if int(n_iter) != n_iter or n_iter < 0:
        raise ValueError(f"l1wavelet: n_iter must be an integer >= 0, got {n_iter}")
    if operator_norm is not None and not (math.isfinite(operator_norm) and operator_norm > 0):
        raise ValueError(f"l1wavelet: operator_norm must be > 0, got {operator_norm}")
    A, y = problem.operator, problem.y
    if len(A.domain_shape) != 2:
        raise ValueError(f"l1wavelet: needs a 2D image domain, got {A.domain_shape}")
    W = Wavelet2D(A.domain_shape, wavelet, levels, dtype=A.dtype, device=A.device)
    norm = A.norm(generator=generator) if operator_norm is None else float(operator_norm)
    if not norm > 0:
        raise ValueError("l1wavelet: the operator is zero (norm 0)")
    step = 1.0 / norm**2
    x = problem.start(x0)
    ax = A(x)
    z, az, t = x, ax, 1.0
    for k in range(int(n_iter)):
        # gradient step on the data term at the extrapolated point z
        v = torch.sub(z, A.adjoint(az - y), alpha=step)
        # proximal step: wavelet soft-thresholding
        x_new = W.adjoint(soft_threshold(W(v), step * weight))
        ax_new = A(x_new)
        # momentum (Beck & Teboulle 2009, eqs. 4.2-4.3); A z by linearity
        t_new = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        momentum = (t - 1.0) / t_new
        z = torch.add(x_new, x_new - x, alpha=momentum)
        az = torch.add(ax_new, ax_new - ax, alpha=momentum)
        x, ax, t = x_new, ax_new, t_new
        if callback is not None:
            callback(k + 1, int(n_iter), x)
    return Reconstruction(image=x, method="l1wavelet", iterations=int(n_iter),
                          residual=problem.relative(ax - y),
                          info={"weight": weight, "operator_norm": norm, "step": step,
                                "wavelet": wavelet, "levels": W.levels})

