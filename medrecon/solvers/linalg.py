"""Batched linear algebra shared by the solvers: inner products and conjugate gradients.

Tensors carry leading batch dimensions followed by ``ndim`` trailing "vector"
dimensions (an image, a sinogram, k-space); every scalar of an iteration (step
length, residual norm) is a tensor over the batch, so each item runs its own
iteration in one vectorised loop. Complex tensors use the conjugated inner
product ``<a, b> = sum(conj(a) b)``.

Example:
    >>> import torch
    >>> from medrecon.solvers.linalg import conjugate_gradient
    >>> M = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    >>> b = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64)  # two systems
    >>> x, n, history = conjugate_gradient(lambda v: v @ M, b, torch.zeros_like(b),
    ...                                    n_iter=10, tol=1e-12, ndim=1)
    >>> torch.allclose(x @ M, b), n, tuple(history.shape)
    (True, 2, (2, 2))
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from medrecon.operators.base import inner


def batched_dot(a: torch.Tensor, b: torch.Tensor, ndim: int) -> torch.Tensor:
    """``sum(conj(a) * b)`` over the last ``ndim`` dimensions, one value per batch item."""
    return inner(a, b, ndim)


def batched_norm(a: torch.Tensor, ndim: int) -> torch.Tensor:
    """Euclidean norm over the last ``ndim`` dimensions (real, one value per batch item)."""
    return torch.linalg.vector_norm(a, dim=tuple(range(-ndim, 0)))


def expand_to(scalar: torch.Tensor, ndim: int) -> torch.Tensor:
    """A per-item scalar ``(*batch)`` reshaped to broadcast against ``(*batch, *vector)``."""
    return scalar.reshape(*scalar.shape, *(1,) * ndim)


def safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` where ``den > 0``, else 0 (stalled or converged batch items)."""
    positive = den > 0
    return torch.where(positive, num / torch.where(positive, den, torch.ones_like(den)),
                       torch.zeros_like(num))


def conjugate_gradient(apply: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
                       x0: torch.Tensor, *, n_iter: int, tol: float = 0.0, ndim: int,
                       on_iteration: Callable[[int, torch.Tensor], None] | None = None
                       ) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Solve ``apply(x) = b`` for Hermitian positive-definite ``apply`` by conjugate gradients.

    Hestenes & Stiefel (1952), "Methods of conjugate gradients for solving linear
    systems", J. Res. Nat. Bur. Standards 49(6), the algorithm of Section 3
    (eqs. 3:1a-3:1f), run per batch item: ``apply`` maps ``(*batch, *vector)`` to the
    same shape and acts on each item separately (each item may have its own
    matrix); step lengths ``alpha = <r, r> / <p, A p>`` and ``beta`` are real per item.
    An item whose relative residual ``||r|| / ||b||`` is at most ``tol`` keeps its
    iterate (its steps are masked to zero); the loop ends when every item has
    converged (checked only when ``tol > 0``, one host synchronisation per
    iteration) or after ``n_iter`` iterations.

    Args:
        apply: the Hermitian positive-definite map, batched.
        b: right-hand side ``(*batch, *vector)``; ``vector`` has ``ndim`` dimensions.
        x0: initial guess of the same shape (not modified).
        n_iter: maximum number of iterations.
        tol: relative residual at which an item stops.
        ndim: number of trailing vector dimensions.
        on_iteration: called as ``(k, x_k)`` after iteration ``k`` (1-based).

    Returns:
        ``(x, n_iterations_run, residual_history)``; the history holds ``||r_k|| / ||b||``
        after each iteration, shape ``(n_iterations_run, *batch)``, real.
    """
    x = x0.clone()
    r = b - apply(x)
    p = r.clone()
    rr = batched_dot(r, r, ndim).real
    b_norm = batched_norm(b, ndim).clamp_min(torch.finfo(rr.dtype).tiny)
    active = rr.sqrt() / b_norm > tol
    history = []
    for _ in range(n_iter):
        if tol > 0 and not bool(active.any()):
            break
        # step along p (zero for converged items)
        ap = apply(p)
        alpha = torch.where(active, safe_divide(rr, batched_dot(p, ap, ndim).real), 0.0)
        x = x + expand_to(alpha, ndim) * p
        r = r - expand_to(alpha, ndim) * ap
        # new conjugate direction
        rr_new = batched_dot(r, r, ndim).real
        beta = torch.where(active, safe_divide(rr_new, rr), 0.0)
        p = r + expand_to(beta, ndim) * p
        rr = torch.where(active, rr_new, rr)
        relative = rr.sqrt() / b_norm
        history.append(relative)
        active = active & (relative > tol)
        if on_iteration is not None:
            on_iteration(len(history), x)
    residuals = torch.stack(history) if history else rr.new_zeros((0, *rr.shape))
    return x, len(history), residuals
