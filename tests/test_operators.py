"""The generic property test over every registered operator, dtype and device."""

from __future__ import annotations

import pytest
import torch

from medrecon.errors import OperatorShapeError
from medrecon.operators.base import LinearOperator, MatrixOperator, Scaled, inner, randn
from medrecon.operators.registry import (
    ADJOINT_TOLERANCE,
    NORM_ITERATIONS,
    NORM_TOLERANCE,
    OPERATORS,
    build,
    precision,
)
from tests.conftest import DEVICES

CASES = [
    pytest.param((name, dtype, device), id=f"{name}-{str(dtype)[6:]}-{device}")
    for name, spec in OPERATORS.items()
    for dtype in spec.dtypes
    for device in spec.devices
]


@pytest.fixture(params=CASES)
def case(request):
    name, dtype, device = request.param
    if device not in DEVICES:
        pytest.skip(f"{device} not available")
    return name, build(name, device, dtype)


def _pair(A: LinearOperator, seed: int = 0, batch=()):
    g = torch.Generator().manual_seed(seed)
    x = randn((*batch, *A.domain_shape), A.dtype, A.device, g)
    y = randn((*batch, *A.range_shape), A.range_dtype, A.device, g)
    return x, y


def _close(a: torch.Tensor, b: torch.Tensor, name: str, A: LinearOperator,
           normal: bool = False) -> bool:
    """``||a - b|| <= rtol ||b||`` with the entry's bound for its precision (``normal``:
    one side is ``A.normal``, which a Toeplitz embedding computes only approximately)."""
    scale = max(float(torch.linalg.vector_norm(b)), 1e-30)
    rtol = OPERATORS[name].agreement(A, normal=normal)
    return float(torch.linalg.vector_norm(a - b)) <= rtol * scale


def test_adjointness(case):
    name, A = case
    x, y = _pair(A)
    lhs = inner(A(x), y, len(A.range_shape))
    rhs = inner(x, A.adjoint(y), len(A.domain_shape))
    if not A.dtype.is_complex:
        lhs, rhs = lhs.real, rhs.real
    norm = A.norm(generator=torch.Generator().manual_seed(1))
    error = float(abs(lhs - rhs)) / (norm * float(torch.linalg.vector_norm(x))
                                     * float(torch.linalg.vector_norm(y)))
    bound = OPERATORS[name].tolerance(A)
    assert error < bound, f"{name}: adjoint error {error:.2e} above {bound:.0e}"


def test_known_norm(case):
    """Power iteration against the closed-form ``||A||_2`` the entry knows."""
    name, A = case
    spec = OPERATORS[name]
    if spec.norm is None:
        pytest.skip(f"{name}: no closed-form norm")
    expected = spec.norm(A)
    got = A.norm(n_iter=NORM_ITERATIONS, tol=0.0, generator=torch.Generator().manual_seed(1))
    assert got == pytest.approx(expected, rel=NORM_TOLERANCE[precision(A)]), name


def test_linearity(case):
    name, A = case
    x1, _ = _pair(A, 0)
    x2, _ = _pair(A, 1)
    a, b = (0.7 - 0.2j, -1.3 + 0.5j) if A.dtype.is_complex else (0.7, -1.3)
    assert _close(A(a * x1 + b * x2), a * A(x1) + b * A(x2), name, A)


def test_normal_equals_adjoint_of_forward(case):
    name, A = case
    x, _ = _pair(A)
    assert _close(A.normal(x), A.adjoint(A(x)), name, A, normal=True)


def test_autograd_gradient_is_adjoint(case):
    name, A = case
    x, v = _pair(A)
    x = x.clone().requires_grad_(True)
    A(x).backward(v)
    assert _close(x.grad, A.adjoint(v), name, A)


def test_double_backward_of_quadratic(case):
    """The gradient of 1/2||Ax - y||^2 is A^H(Ax - y), itself differentiable (Hessian A^H A)."""
    name, A = case
    x, y = _pair(A)
    w, _ = _pair(A, 2)
    x = x.clone().requires_grad_(True)
    loss = 0.5 * torch.linalg.vector_norm(A(x) - y) ** 2
    (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    assert _close(grad.detach(), A.adjoint(A(x.detach()) - y), name, A)
    (hvp,) = torch.autograd.grad(grad, x, grad_outputs=w)
    assert _close(hvp, A.normal(w), name, A, normal=True)


def test_batch_dimensions_pass_through(case):
    name, A = case
    x, y = _pair(A, batch=(2, 3))
    fx, ay = A(x), A.adjoint(y)
    assert fx.shape == (2, 3, *A.range_shape) and ay.shape == (2, 3, *A.domain_shape)
    assert _close(fx[1, 2], A(x[1, 2]), name, A)
    assert _close(ay[0, 1], A.adjoint(y[0, 1]), name, A)


def test_boundary_checks_name_the_operator(case):
    _, A = case
    x, y = _pair(A)
    with pytest.raises(OperatorShapeError, match="shape"):
        A(x[..., :-1])
    with pytest.raises(OperatorShapeError, match="shape"):
        A.adjoint(y[..., :-1])
    other = {torch.float32: torch.float64, torch.float64: torch.float32,
             torch.complex64: torch.complex128, torch.complex128: torch.complex64}[A.dtype]
    with pytest.raises(OperatorShapeError, match=str(other)):
        A(x.to(other))


def test_adjoint_of_adjoint_is_the_operator(case):
    _, A = case
    assert A.H.H is A
    assert A.H.domain_shape == A.range_shape and A.H.range_shape == A.domain_shape


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_norm_matches_largest_singular_value(dtype):
    M = randn((9, 6), dtype, "cpu", torch.Generator().manual_seed(3))
    expected = float(torch.linalg.matrix_norm(M, ord=2))
    assert MatrixOperator(M).norm(n_iter=500, tol=1e-12) == pytest.approx(expected, rel=1e-6)


def test_composition_and_algebra_match_dense_matrices():
    g = torch.Generator().manual_seed(4)
    M1, M2 = (randn(s, torch.complex128, "cpu", g) for s in ((4, 5), (5, 3)))
    A, B = MatrixOperator(M1), MatrixOperator(M2)
    x = randn((2, 3), torch.complex128, "cpu", g)
    dense = (2j * M1 @ M2 + M1 @ M2 - M1 @ M2)
    got = ((2j) * (A @ B) + (A @ B) - (A @ B))(x)
    assert torch.allclose(got, x @ dense.mT)
    assert torch.allclose((A @ B).H(got), got @ (M1 @ M2).conj())
    with pytest.raises(OperatorShapeError, match="cannot compose"):
        B @ A


def test_registry_examples_build():
    for name, spec in OPERATORS.items():
        assert spec.dtypes, name
        loosest_default = max(ADJOINT_TOLERANCE.values())
        if any(tol > loosest_default for _, tol in spec.adjoint_tolerance):
            assert spec.note, f"{name}: a loose adjoint tolerance needs a reason"
        if spec.normal_tolerance is not None:
            assert spec.note, f"{name}: a loose normal tolerance needs a reason"


def test_registry_scales_by_complex_scalars():
    """The algebra's conjugations are only tested by complex scalars of complex operators."""
    def scales(A):
        found = [A.scale] if isinstance(A, Scaled) else []
        for child in ("op", "outer", "inner", "a", "b"):
            if isinstance(getattr(A, child, None), LinearOperator):
                found += scales(getattr(A, child))
        return found

    complex_scales = [c for name, spec in OPERATORS.items() if torch.complex128 in spec.dtypes
                      for c in scales(build(name, "cpu", torch.complex128))
                      if complex(c).imag != 0 and abs(c) != 1]
    assert len(complex_scales) >= 4
