"""The solver contract's types: a :class:`Problem` in, a :class:`Reconstruction` out.

Every solver in :mod:`medrecon.solvers` is a plain function
``solve(problem, [prior,] *, ..., generator=None, callback=None) -> Reconstruction``.
A ``callback(step, n_steps, x)`` is called after each iteration (the command
line turns it into a progress bar); solvers do not log or time themselves, and
compute no per-iteration diagnostics: a caller who wants one (a residual curve, an
objective) computes it from ``x`` in the callback. Every solver returns the final
relative data residual ``||A x - y|| / ||y||`` in :attr:`Reconstruction.residual`,
computed once, from products it already has where it can.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import torch

from medrecon.errors import OperatorShapeError
from medrecon.operators.base import LinearOperator
from medrecon.solvers.linalg import norm

Callback = Callable[[int, int, torch.Tensor], None]


@dataclass(frozen=True)
class Problem:
    """``y = A x0 + n`` with ``n ~ N(0, sigma_y^2 I)``; ``y`` is ``(*batch, *A.range_shape)``."""

    operator: LinearOperator
    y: torch.Tensor
    sigma_y: float = 0.0

    def __post_init__(self) -> None:
        A, y = self.operator, self.y
        if tuple(y.shape[y.ndim - len(A.range_shape):]) != A.range_shape or \
                y.ndim < len(A.range_shape):
            raise OperatorShapeError(
                f"measurement of shape {tuple(y.shape)} does not fit {A.name}, whose range is "
                f"(..., {', '.join(map(str, A.range_shape))})")
        if y.dtype != A.range_dtype:
            raise OperatorShapeError(f"measurement is {y.dtype}, {A.name} gives {A.range_dtype}")
        if not bool(torch.isfinite(y).all()):
            raise OperatorShapeError("measurement contains NaN or infinite values")
        if not self.sigma_y >= 0:
            raise OperatorShapeError(f"sigma_y must be >= 0, got {self.sigma_y}")

    @property
    def batch_shape(self) -> torch.Size:
        return self.y.shape[: self.y.ndim - len(self.operator.range_shape)]

    def image_like(self, fill: float = 0.0) -> torch.Tensor:
        """A constant image of the batch's shape on the operator's device and dtype."""
        return torch.full((*self.batch_shape, *self.operator.domain_shape), fill,
                          dtype=self.operator.dtype, device=self.operator.device)

    def start(self, x0: torch.Tensor | None = None) -> torch.Tensor:
        """The start of an iteration: zeros, or a copy of ``x0`` broadcast to
        ``(*batch, *domain_shape)`` (``x0`` itself is never modified nor returned),
        checked against the operator's dtype and device."""
        if x0 is None:
            return self.image_like()
        A = self.operator
        shape = (*self.batch_shape, *A.domain_shape)
        if x0.dtype != A.dtype or x0.device.type != A.device.type:
            raise ValueError(f"x0 must be {A.dtype} on {A.device}, got {x0.dtype} on "
                             f"{x0.device}")
        try:
            return x0.expand(shape).clone()
        except RuntimeError:
            raise ValueError(f"x0 of shape {tuple(x0.shape)} does not broadcast to "
                             f"{shape}") from None

    @cached_property
    def range_dims(self) -> tuple[int, ...]:
        """The trailing dimensions of ``y`` that one measurement spans."""
        return tuple(range(-len(self.operator.range_shape), 0))

    @cached_property
    def y_norm(self) -> torch.Tensor:
        """``||y||`` per batch item (real, at least the smallest positive normal float so
        that it divides safely); computed once per problem."""
        n = norm(self.y, self.range_dims)
        return n.clamp_min(torch.finfo(n.dtype).tiny)

    def relative(self, residual: torch.Tensor) -> torch.Tensor:
        """``||r|| / ||y||`` per batch item for a residual vector ``r`` (e.g. ``A x - y``)
        the caller already has."""
        return norm(residual, self.range_dims) / self.y_norm

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """Relative data residual ``||A x - y|| / ||y||`` per batch item (one product with
        ``A``)."""
        return self.relative(self.operator(x) - self.y)


@dataclass(frozen=True)
class Reconstruction:
    """What every solver returns.

    Attributes:
        image: the estimate, ``(*batch, *domain_shape)``.
        method: the solver's name.
        iterations: iterations (or sampling steps) run.
        residual: the final relative data residual ``||A x - y|| / ||y||`` of ``image``
            per batch item, shape ``batch``, real (``None`` only where a solver cannot
            give one). Per-iteration values are the caller's business: compute them
            from ``x`` in a ``callback``.
        nfe: network (denoiser) evaluations; 0 for classical methods.
        samples: posterior samples ``(n_samples, *batch, *domain)`` for samplers.
        std: pixelwise standard deviation of the samples (``None`` for one sample).
        timings: seconds per phase, filled by :func:`medrecon.solvers.solve`.
        info: small method-specific facts (e.g. ``{"stopped": "tolerance"}``).
    """

    image: torch.Tensor
    method: str
    iterations: int = 0
    residual: torch.Tensor | None = None
    nfe: int = 0
    samples: torch.Tensor | None = None
    std: torch.Tensor | None = None
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)
