"""The linear operator contract of medrecon.

A :class:`LinearOperator` maps tensors of shape ``(*batch, *domain_shape)`` to
``(*batch, *range_shape)``; leading batch dimensions pass through. A subclass
supplies ``_forward`` and ``_adjoint`` (and ``_normal`` where a cheaper closed
form exists); the base class checks shape, dtype and device at the boundary,
caches ``.H``, composes (``A @ B``), scales (``c * A``) and adds (``A + B``),
and estimates the operator norm by power iteration.

Operators computed with torch are differentiable as they are. An operator with
a non-torch backend (ASTRA) sets ``torch_native = False``; its forward then runs
inside a :class:`torch.autograd.Function` whose backward is the adjoint (whose
backward is the forward again), so gradients flow through every backend.

Example:
    >>> import torch
    >>> from medrecon.operators.base import MatrixOperator
    >>> A = MatrixOperator(torch.tensor([[1.0, 2.0], [0.0, 1.0], [1.0, 0.0]]))
    >>> x = torch.ones(4, 2)                       # a batch of four vectors
    >>> A(x).shape, A.H(A(x)).shape, (2 * A @ A.H).range_shape
    (torch.Size([4, 3]), torch.Size([4, 2]), (3,))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from medrecon.errors import OperatorShapeError

Shape = tuple[int, ...]


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real dtype of the same precision (complex64 -> float32)."""
    return torch.empty((), dtype=dtype).real.dtype


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype of the same precision (float32 -> complex64)."""
    return {torch.float32: torch.complex64, torch.float64: torch.complex128}.get(dtype, dtype)


def randn(shape: Sequence[int], dtype: torch.dtype, device: torch.device | str,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal samples (circular complex for complex dtypes), drawn on the
    generator's device and moved once to ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    z = torch.randn(tuple(shape), dtype=dtype, device=gen_device, generator=generator)
    return z.to(device)


def inner(x: torch.Tensor, y: torch.Tensor, ndim: int) -> torch.Tensor:
    """Batched inner product ``<x, y> = sum(conj(x) * y)`` over the last ``ndim`` dims."""
    dims = tuple(range(-ndim, 0))
    return torch.sum(x.conj() * y, dim=dims) if x.is_complex() else torch.sum(x * y, dim=dims)


class _NonTorchApply(torch.autograd.Function):
    """Autograd for an operator whose forward is not computed by torch: the
    vector-Jacobian product of a linear map is its adjoint."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, op: LinearOperator) -> torch.Tensor:  # type: ignore[override]
        ctx.op = op
        return op._forward(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return ctx.op.adjoint(grad), None


class LinearOperator:
    """A linear map with an adjoint; see the module docstring for the contract.

    Args:
        domain_shape: trailing shape of an input (without batch dimensions).
        range_shape: trailing shape of an output.
        dtype: dtype of inputs.
        device: device of inputs, outputs and the operator's constants.
        range_dtype: dtype of outputs (defaults to ``dtype``).
        name: used in error messages.
    """

    torch_native: bool = True
    #: the real dtype a non-torch backend computes in when less precise than ``dtype``
    backend_precision: torch.dtype | None = None

    def __init__(self, domain_shape: Sequence[int], range_shape: Sequence[int],
                 dtype: torch.dtype, device: torch.device | str = "cpu", *,
                 range_dtype: torch.dtype | None = None, name: str | None = None):
        self.domain_shape: Shape = tuple(int(n) for n in domain_shape)
        self.range_shape: Shape = tuple(int(n) for n in range_shape)
        self.dtype = dtype
        self.range_dtype = range_dtype or dtype
        self.device = torch.device(device)
        self.name = name or type(self).__name__
        self._adjoint_op: LinearOperator | None = None

    # -- subclass interface -------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        return self.adjoint(self.forward(x))

    # -- checked application ------------------------------------------------
    def _check(self, t: torch.Tensor, shape: Shape, dtype: torch.dtype, what: str) -> None:
        if not isinstance(t, torch.Tensor):
            raise OperatorShapeError(f"{self.name}: {what} must be a torch.Tensor, got {type(t)}")
        if tuple(t.shape[t.ndim - len(shape):]) != shape or t.ndim < len(shape):
            raise OperatorShapeError(
                f"{self.name}: {what} must have shape (..., {', '.join(map(str, shape))}), "
                f"got {tuple(t.shape)}")
        if t.dtype != dtype:
            raise OperatorShapeError(f"{self.name}: {what} must be {dtype}, got {t.dtype}")
        if t.device.type != self.device.type or (
                self.device.index is not None and t.device.index != self.device.index):
            raise OperatorShapeError(
                f"{self.name}: {what} is on {t.device}, operator on {self.device}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for ``x`` of shape ``(*batch, *domain_shape)``."""
        self._check(x, self.domain_shape, self.dtype, "input")
        if not self.torch_native and torch.is_grad_enabled() and x.requires_grad:
            return _NonTorchApply.apply(x, self)
        return self._forward(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^H y`` for ``y`` of shape ``(*batch, *range_shape)``."""
        return self.H.forward(y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x``; subclasses override ``_normal`` where a closed form is cheaper."""
        self._check(x, self.domain_shape, self.dtype, "input")
        return self._normal(x)

    __call__ = forward

    # -- algebra ------------------------------------------------------------
    @property
    def H(self) -> LinearOperator:
        """The adjoint operator (cached)."""
        if self._adjoint_op is None:
            self._adjoint_op = Adjoint(self)
        return self._adjoint_op

    def __matmul__(self, other):
        if isinstance(other, LinearOperator):
            return Composed(self, other)
        if isinstance(other, torch.Tensor):
            return self.forward(other)
        return NotImplemented

    def __mul__(self, scale):
        if isinstance(scale, (int, float, complex)):
            return Scaled(self, scale)
        return NotImplemented

    __rmul__ = __mul__

    def __add__(self, other):
        if isinstance(other, LinearOperator):
            return Sum(self, other)
        return NotImplemented

    def __sub__(self, other):
        if isinstance(other, LinearOperator):
            return Sum(self, Scaled(other, -1.0))
        return NotImplemented

    def norm(self, n_iter: int = 100, tol: float = 1e-6,
             generator: torch.Generator | None = None) -> float:
        """Largest singular value ``||A||_2`` by power iteration on ``A^H A``."""
        x = randn(self.domain_shape, self.dtype, self.device, generator)
        x = x / torch.linalg.vector_norm(x)
        estimate = 0.0
        with torch.no_grad():
            for _ in range(n_iter):
                z = self.normal(x)
                new = float(torch.linalg.vector_norm(z))
                if new == 0.0:
                    return 0.0
                x = z / new
                if abs(new - estimate) <= tol * new:
                    estimate = new
                    break
                estimate = new
        return math.sqrt(estimate)

    def __repr__(self) -> str:
        return (f"{self.name}(domain={self.domain_shape}, range={self.range_shape}, "
                f"dtype={self.dtype}, device={self.device})")


class Adjoint(LinearOperator):
    """``A^H`` of an operator; its adjoint is the operator itself."""

    def __init__(self, op: LinearOperator):
        super().__init__(op.range_shape, op.domain_shape, op.range_dtype, op.device,
                         range_dtype=op.dtype, name=f"{op.name}.H")
        self.op = op
        self.torch_native = op.torch_native
        self.backend_precision = op.backend_precision
        self._adjoint_op = op

    def _forward(self, y):
        return self.op._adjoint(y)

    def _adjoint(self, x):
        return self.op._forward(x)


class Composed(LinearOperator):
    """``A @ B``: apply ``B`` then ``A``; the adjoint is ``B^H A^H``."""

    def __init__(self, outer: LinearOperator, inner_op: LinearOperator):
        if outer.domain_shape != inner_op.range_shape or outer.dtype != inner_op.range_dtype:
            raise OperatorShapeError(
                f"cannot compose {outer.name} (domain {outer.domain_shape}, {outer.dtype}) with "
                f"{inner_op.name} (range {inner_op.range_shape}, {inner_op.range_dtype})")
        super().__init__(inner_op.domain_shape, outer.range_shape, inner_op.dtype,
                         inner_op.device, range_dtype=outer.range_dtype,
                         name=f"({outer.name} @ {inner_op.name})")
        self.outer, self.inner = outer, inner_op
        self.backend_precision = outer.backend_precision or inner_op.backend_precision

    def _forward(self, x):
        return self.outer.forward(self.inner.forward(x))

    def _adjoint(self, y):
        return self.inner.adjoint(self.outer.adjoint(y))

    def _normal(self, x):
        return self.inner.adjoint(self.outer.normal(self.inner.forward(x)))


class Scaled(LinearOperator):
    """``c * A`` for a Python scalar ``c``; the adjoint is ``conj(c) A^H``."""

    def __init__(self, op: LinearOperator, scale: complex):
        super().__init__(op.domain_shape, op.range_shape, op.dtype, op.device,
                         range_dtype=op.range_dtype, name=f"{scale}*{op.name}")
        self.op, self.scale = op, scale
        self.backend_precision = op.backend_precision

    def _forward(self, x):
        return self.scale * self.op.forward(x)

    def _adjoint(self, y):
        return self.scale.conjugate() * self.op.adjoint(y)

    def _normal(self, x):
        return abs(self.scale) ** 2 * self.op.normal(x)


class Sum(LinearOperator):
    """``A + B`` for operators with equal domain and range."""

    def __init__(self, a: LinearOperator, b: LinearOperator):
        if (a.domain_shape, a.range_shape, a.dtype) != (b.domain_shape, b.range_shape, b.dtype):
            raise OperatorShapeError(f"cannot add {a.name} and {b.name}: shapes or dtypes differ")
        super().__init__(a.domain_shape, a.range_shape, a.dtype, a.device,
                         range_dtype=a.range_dtype, name=f"({a.name} + {b.name})")
        self.a, self.b = a, b
        self.backend_precision = a.backend_precision or b.backend_precision

    def _forward(self, x):
        return self.a.forward(x) + self.b.forward(x)

    def _adjoint(self, y):
        return self.a.adjoint(y) + self.b.adjoint(y)


class Identity(LinearOperator):
    """The identity on ``shape``."""

    def __init__(self, shape: Sequence[int], dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu"):
        super().__init__(shape, shape, dtype, device)

    def _forward(self, x):
        return x

    def _adjoint(self, y):
        return y

    def _normal(self, x):
        return x


class Multiply(LinearOperator):
    """Pointwise multiplication by fixed ``weights``: masks, coil maps, diagonal
    preconditioners. ``weights`` broadcast against ``shape`` and may add leading
    dimensions (coils); the adjoint multiplies by ``conj(weights)`` and sums over
    those, and the normal operator is ``x * sum |weights|^2``."""

    def __init__(self, shape: Sequence[int], weights: torch.Tensor,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        device = torch.device(device) if device is not None else weights.device
        dtype = dtype or weights.dtype
        shape = tuple(shape)
        out_shape = tuple(torch.broadcast_shapes(shape, weights.shape))
        if out_shape[len(out_shape) - len(shape):] != shape:
            raise OperatorShapeError(
                f"Multiply: weights of shape {tuple(weights.shape)} do not fit domain {shape}")
        super().__init__(shape, out_shape, dtype, device,
                         range_dtype=torch.promote_types(dtype, weights.dtype))
        self.weights = weights.to(device)
        self._conj = self.weights.conj()
        self._extra = tuple(range(-len(out_shape), -len(shape)))
        gram = self.weights.abs() ** 2
        lead = self.weights.ndim - len(shape)
        self._gram = gram.sum(dim=tuple(range(lead))) if lead > 0 else gram

    def _forward(self, x):
        if self._extra:
            x = x.reshape(*x.shape[: x.ndim - len(self.domain_shape)], *(1,) * len(self._extra),
                          *self.domain_shape)
        return x * self.weights

    def _adjoint(self, y):
        out = y * self._conj
        if self._extra:
            out = out.sum(dim=self._extra)
        return out if self.dtype.is_complex else out.real

    def _normal(self, x):
        return x * self._gram.to(real_dtype(self.dtype))


class MatrixOperator(LinearOperator):
    """A dense matrix ``M`` (m x n) acting on vectors of length n."""

    def __init__(self, matrix: torch.Tensor, device: torch.device | str | None = None):
        self.matrix = matrix.to(device) if device is not None else matrix
        super().__init__((matrix.shape[1],), (matrix.shape[0],), matrix.dtype,
                         self.matrix.device)
        self._matrix_h = self.matrix.mH

    def _forward(self, x):
        return x @ self.matrix.mT

    def _adjoint(self, y):
        return y @ self._matrix_h.mT
