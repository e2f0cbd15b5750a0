"""CG-SENSE: Tikhonov-regularised least squares by conjugate gradients.

Solves ``min_x ||A x - y||^2 + weight ||x||^2``, i.e. the normal equations

    (A^H A + weight I) x = A^H y,

by the conjugate gradient method on the (Hermitian positive-definite) normal
operator. With ``weight = 0`` this is CG-SENSE: Pruessmann, Weiger, Börnert &
Boesiger, "Advances in sensitivity encoding with arbitrary k-space trajectories",
MRM 46:638-651, 2001 (conjugate gradients on ``E^H E x = E^H m`` for the encoding
matrix ``E``; the paper's density compensation and intensity correction are left
to the operator, here they are identities). ``weight > 0`` adds Tikhonov damping
towards a zero image, which bounds the noise amplification of poorly conditioned
(highly accelerated) problems. ``A`` is any
:class:`~medrecon.operators.base.LinearOperator`; for SENSE it is ``mask * FFT *
coil maps`` or a NUFFT with coil maps, and its ``normal`` (a Toeplitz or mask closed
form) is used where the operator has one.

The iteration is :func:`medrecon.solvers.linalg.conjugate_gradient` (batched,
conjugated complex inner products): each batch item of ``y`` runs its own step
lengths and stops once ``||A^H y - (A^H A + weight I) x_k|| <= tol ||A^H y||``.

Example:
    >>> import torch
    >>> from medrecon.operators.base import MatrixOperator
    >>> from medrecon.solvers.cgsense import cgsense
    >>> from medrecon.solvers.problem import Problem
    >>> A = MatrixOperator(torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 1.0]],
    ...                                 dtype=torch.float64))
    >>> y = torch.tensor([4.0, 1.0, 3.0], dtype=torch.float64)
    >>> cgsense(Problem(A, y), weight=2.0).image     # (A^T A + 2 I)^-1 A^T y = [8/6, 4/4]
    tensor([1.3333, 1.0000], dtype=torch.float64)
"""

from __future__ import annotations

import math

import torch

from medrecon.solvers.linalg import conjugate_gradient
from medrecon.solvers.problem import Callback, Problem, Reconstruction


def cgsense(problem: Problem, *, weight: float = 0.0, n_iter: int = 30, tol: float = 1e-6,
            x0: torch.Tensor | None = None,
            callback: Callback | None = None) -> Reconstruction:
    """Solve ``(A^H A + weight I) x = A^H y`` by conjugate gradients (see module docstring).

    Args:
        problem: ``y = A x + n``; every leading dimension of ``y`` is an independent problem.
        weight: Tikhonov weight ``>= 0`` (0: plain CG-SENSE, the least-squares solution
            of minimum norm in the span of ``A^H`` when started from zero).
        n_iter: maximum number of CG iterations, ``>= 0``.
        tol: relative normal-equation residual at which an item stops, ``>= 0``.
        x0: initial image, broadcastable to ``(*batch, *domain_shape)`` (not modified).
        callback: called after each CG iteration as ``(k, n_iter, x_k)``.

    Returns:
        A :class:`Reconstruction` with ``iterations`` the CG iterations run;
        ``residual`` ``(*batch)`` the final relative data residual ``||A x - y|| / ||y||``
        (the one product with ``A`` outside the normal operator);
        ``info["cg_residuals"]`` ``(iterations, *batch)`` the relative normal-equation
        residual after each iteration (which CG maintains anyway); ``info["stopped"]``
        ``"tolerance"`` or ``"max_iter"``.

    Raises:
        ValueError: a negative or non-finite ``weight``, ``n_iter`` or ``tol``, or an
            ``x0`` that does not fit.
    """
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"cgsense: weight must be a finite number >= 0, got {weight}")
    if int(n_iter) != n_iter or n_iter < 0:
        raise ValueError(f"cgsense: n_iter must be an integer >= 0, got {n_iter}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"cgsense: tol must be a finite number >= 0, got {tol}")
    A = problem.operator
    nd = len(A.domain_shape)
    b = A.adjoint(problem.y)
    # from zero the initial residual is b itself: no product for it
    start = None if x0 is None else problem.start(x0)

    def normal_operator(v: torch.Tensor) -> torch.Tensor:
        return torch.add(A.normal(v), v, alpha=weight) if weight > 0 else A.normal(v)

    record = None if callback is None else (lambda k, x_k: callback(k, int(n_iter), x_k))
    x, iterations, history = conjugate_gradient(normal_operator, b, start, n_iter=int(n_iter),
                                                tol=tol, ndim=nd, on_iteration=record)
    converged = iterations < n_iter or (iterations > 0 and bool((history[-1] <= tol).all()))
    return Reconstruction(image=x, method="cgsense", iterations=iterations,
                          residual=problem.residual(x),
                          info={"weight": weight, "cg_residuals": history,
                                "stopped": "tolerance" if converged else "max_iter"})
