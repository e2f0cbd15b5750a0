"""Classical solvers against closed forms, an independent TV solver, and sparse-view CT."""

from __future__ import annotations

import math

import pytest
import torch

from medrecon.errors import OperatorShapeError
from medrecon.metrics import psnr
from medrecon.operators.base import Identity, MatrixOperator
from medrecon.operators.ct import CTProjector
from medrecon.operators.ct_geometry import CTGeometry
from medrecon.operators.finite_difference import FiniteDifference
from medrecon.solvers.classical import (
    DISCREPANCY_TAU,
    cgls,
    fbp,
    sirt,
    tv,
    tv_objective,
)
from medrecon.solvers.problem import Problem

F64, C128 = torch.float64, torch.complex128


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _residual_curve(problem: Problem):
    """A list and a callback that appends ``problem.residual(x_k)`` to it each iteration."""
    curve: list[torch.Tensor] = []
    return curve, lambda k, n, x: curve.append(problem.residual(x))


def _lstsq(m: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Least-squares solutions for a batch of right-hand sides ``y`` (rows)."""
    return torch.linalg.lstsq(m, y.T).solution.T


def _ct_phantom(n: int = 128) -> torch.Tensor:
    """A body ellipse with a smooth modulation and piecewise-constant inserts (1/mm)."""
    c = (torch.arange(n, dtype=F64) - (n - 1) / 2) / (n / 2)
    yy, xx = torch.meshgrid(c, c, indexing="ij")

    def ellipse(x0: float, y0: float, a: float, b: float, phi: float = 0.0) -> torch.Tensor:
        u = (xx - x0) * math.cos(phi) + (yy - y0) * math.sin(phi)
        v = -(xx - x0) * math.sin(phi) + (yy - y0) * math.cos(phi)
        return ((u / a) ** 2 + (v / b) ** 2 <= 1).to(F64)

    body = ellipse(0, 0, 0.85, 0.7) * (1.0 + 0.2 * torch.cos(2.0 * xx) * torch.sin(1.5 * yy))
    inserts = (0.5 * ellipse(-0.35, 0.1, 0.2, 0.3, 0.4)
               - 0.4 * ellipse(0.35, -0.1, 0.15, 0.25, -0.3)
               + 0.8 * ellipse(0.0, 0.45, 0.08, 0.08)
               + 0.3 * ellipse(0.1, -0.4, 0.25, 0.08))
    return (0.02 * (body + inserts)).to(torch.float32)


# --------------------------------------------------------------------------- CGLS
@pytest.mark.parametrize("dtype", [F64, C128])
def test_cgls_equals_lstsq(dtype, device):
    g = _gen(0)
    m = torch.randn(30, 10, generator=g, dtype=dtype)
    y = torch.randn(3, 30, generator=g, dtype=dtype)  # a batch of three right-hand sides
    problem = Problem(MatrixOperator(m, device=device), y.to(device))
    curve, record = _residual_curve(problem)
    result = cgls(problem, n_iter=100, tol=1e-13, callback=record)
    expected = _lstsq(m, y).to(device)
    torch.testing.assert_close(result.image, expected, rtol=1e-8, atol=1e-8)
    assert result.info["stopped"] == "tolerance"
    assert result.residual.shape == (3,) and len(curve) == result.iterations
    assert result.iterations < 100
    # the least-squares residual is reached and CGLS residuals never increase
    assert bool((torch.stack(curve).diff(dim=0) <= 1e-12).all())
    torch.testing.assert_close(result.residual, problem.residual(expected))


def test_cgls_discrepancy_principle(device):
    """Ill-conditioned system with noise: each item stops once ||Ax - y|| <= sigma sqrt(m)."""
    g = _gen(1)
    u, _ = torch.linalg.qr(torch.randn(60, 60, generator=g, dtype=F64))
    v, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=F64))
    m = u[:, :40] * torch.logspace(0, -6, 40, dtype=F64) @ v.T
    x_true = torch.randn(2, 40, generator=g, dtype=F64)
    sigma = 1e-3
    y = x_true @ m.T + sigma * torch.randn(2, 60, generator=g, dtype=F64)
    problem = Problem(MatrixOperator(m, device=device), y.to(device), sigma_y=sigma)
    curve, record = _residual_curve(problem)
    result = cgls(problem, n_iter=200, tol=0.0, callback=record)
    assert result.info["stopped"] == "discrepancy"
    assert result.info["stopped_items"] == ("discrepancy", "discrepancy")
    bound = DISCREPANCY_TAU * sigma * math.sqrt(60)
    residual = torch.linalg.vector_norm(problem.operator(result.image) - problem.y, dim=-1)
    assert bool((residual <= bound * (1 + 1e-9)).all())
    # stopped at the first iterate inside the bound: the one before was outside
    y_norm = torch.linalg.vector_norm(problem.y, dim=-1)
    absolute = torch.stack(curve) * y_norm
    assert bool(absolute[-2].max() > bound)
    assert result.iterations < 40


def test_cgls_keeps_input_and_reports(device):
    m = torch.randn(8, 5, generator=_gen(2), dtype=F64)
    y = torch.randn(8, generator=_gen(3), dtype=F64).to(device)
    x0 = torch.ones(5, dtype=F64, device=device)
    y_copy, x0_copy = y.clone(), x0.clone()
    calls = []
    result = cgls(Problem(MatrixOperator(m, device=device), y), n_iter=3, tol=0.0, x0=x0,
                  callback=lambda k, n, x: calls.append((k, n, tuple(x.shape))))
    assert torch.equal(y, y_copy) and torch.equal(x0, x0_copy)
    assert calls == [(1, 3, (5,)), (2, 3, (5,)), (3, 3, (5,))]
    assert result.info["stopped"] == "max_iter" and result.method == "cgls"
    assert result.residual.shape == ()
    # nothing to do: zero data from a zero start stops before the first iteration
    empty = cgls(Problem(MatrixOperator(m, device=device), torch.zeros(2, 8, dtype=F64,
                                                                      device=device)))
    assert empty.iterations == 0 and empty.residual.shape == (2,)
    assert not bool(empty.residual.any())
    assert empty.info["stopped_items"] == ("tolerance", "tolerance")
    assert not bool(empty.image.any())


# --------------------------------------------------------------------------- SIRT
def _nonnegative_matrix(seed: int) -> torch.Tensor:
    g = _gen(seed)
    m = torch.rand(40, 15, generator=g, dtype=F64)
    return m * (torch.rand(40, 15, generator=g, dtype=F64) < 0.3)


def test_sirt_converges_on_consistent_data(device):
    m = _nonnegative_matrix(4)
    x_true = torch.rand(15, generator=_gen(5), dtype=F64) + 0.5
    problem = Problem(MatrixOperator(m, device=device), (m @ x_true).to(device))
    weights = 1.0 / m.sum(dim=1).to(device)
    weighted, curve = [], []

    def record(k: int, n: int, x: torch.Tensor) -> None:
        weighted.append(float(torch.linalg.vector_norm(
            weights.sqrt() * (problem.operator(x) - problem.y))))
        curve.append(problem.residual(x))

    result = sirt(problem, n_iter=500, callback=record)
    torch.testing.assert_close(result.image, x_true.to(device), rtol=1e-9, atol=1e-9)
    # SIRT is gradient descent on ||R^(1/2)(Ax - y)||^2 with a step <= 1 / L: monotone
    assert all(b <= a * (1 + 1e-12) for a, b in zip(weighted, weighted[1:]))
    assert bool((torch.stack(curve).diff() <= 0).all())
    torch.testing.assert_close(result.residual, curve[-1])


def test_sirt_limit_is_weighted_least_squares(device):
    m = _nonnegative_matrix(6)
    y = m @ (torch.rand(15, generator=_gen(7), dtype=F64) + 0.5)
    y = y + 0.05 * torch.randn(40, generator=_gen(8), dtype=F64)
    r_sqrt = m.sum(dim=1).rsqrt()
    expected = torch.linalg.lstsq(r_sqrt[:, None] * m, (r_sqrt * y)[:, None]).solution[:, 0]
    result = sirt(Problem(MatrixOperator(m, device=device), y.to(device)), n_iter=2000,
                  nonnegative=False)
    torch.testing.assert_close(result.image, expected.to(device), rtol=1e-9, atol=1e-9)


def test_sirt_rejects_complex():
    problem = Problem(MatrixOperator(torch.eye(3, dtype=C128)), torch.ones(3, dtype=C128))
    with pytest.raises(ValueError, match="real operator"):
        sirt(problem)


# --------------------------------------------------------------------------- TV
def test_tv_with_zero_weight_is_least_squares(device):
    g = _gen(9)
    q, _ = torch.linalg.qr(torch.randn(40, 10, generator=g, dtype=F64))
    m = q * torch.linspace(1.0, 3.0, 10, dtype=F64)
    y = torch.randn(2, 40, generator=g, dtype=F64)
    result = tv(Problem(MatrixOperator(m, device=device), y.to(device)), weight=0.0,
                n_iter=300, generator=_gen(10))
    torch.testing.assert_close(result.image, _lstsq(m, y).to(device), rtol=1e-9, atol=1e-9)


def _tv_denoise_fgp(y: torch.Tensor, weight: float, n_iter: int):
    """Independent reference: FISTA on the dual of TV denoising (Beck & Teboulle 2009,
    IEEE TIP 18(11), FGP). Returns the primal solution and the dual variable."""
    G = FiniteDifference(y.shape, dtype=y.dtype)
    step = 1.0 / G.norm_bound**2
    q = r = torch.zeros_like(G(y))
    t = 1.0
    for _ in range(n_iter):
        q_new = r + step * G(y - G.adjoint(r))
        q_new = q_new / (torch.linalg.vector_norm(q_new, dim=0, keepdim=True) / weight
                         ).clamp_min(1.0)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        r = q_new + (t - 1) / t_new * (q_new - q)
        q, t = q_new, t_new
    return y - G.adjoint(q), q


def _dual_objective(y: torch.Tensor, q: torch.Tensor) -> float:
    G = FiniteDifference(y.shape, dtype=y.dtype)
    return float(0.5 * y.norm() ** 2 - 0.5 * (y - G.adjoint(q)).norm() ** 2)


@pytest.mark.parametrize("shape,noise,weight", [((96,), 0.15, 0.2), ((32, 32), 0.1, 0.05)],
                         ids=["1d", "2d"])
def test_tv_denoising_matches_independent_solver(shape, noise, weight, device):
    """Piecewise-constant signal plus noise, A = I: PDHG reaches the optimum certified
    by an independent dual solver (duality gap), and beats the noisy and the clean input."""
    clean = torch.zeros(shape, dtype=F64)
    if len(shape) == 1:
        clean[20:50], clean[50:70] = 1.0, -0.5
    else:
        clean[6:20, 8:26], clean[16:28, 4:14] = 1.0, 0.4
    noisy = clean + noise * torch.randn(shape, generator=_gen(11), dtype=F64)
    reference, dual = _tv_denoise_fgp(noisy, weight, n_iter=3000)
    problem = Problem(Identity(shape, F64, device), noisy.to(device))

    def objective(x: torch.Tensor) -> float:
        return float(tv_objective(problem, x.to(device), weight))

    lower = _dual_objective(noisy, dual)  # weak duality: no image has a smaller objective
    assert objective(reference) - lower <= 1e-7 * lower  # the reference is certified optimal
    coarse = tv(problem, weight=weight, n_iter=100, operator_norm=1.0).image
    result = tv(problem, weight=weight, n_iter=1500, operator_norm=1.0)
    f = objective(result.image)
    assert lower - 1e-9 <= f <= lower * (1 + 5e-5)
    assert f < objective(coarse) < min(objective(noisy), objective(clean))
    torch.testing.assert_close(result.image.cpu(), reference, rtol=0, atol=2e-3)
    assert result.residual.shape == ()


def test_tv_complex_is_phase_equivariant(device):
    """A constant phase factor commutes with isotropic complex TV denoising."""
    clean = torch.zeros(24, 24, dtype=F64)
    clean[5:15, 6:18] = 1.0
    noisy = clean + 0.1 * torch.randn(24, 24, generator=_gen(12), dtype=F64)
    phase = complex(math.cos(0.7), math.sin(0.7))
    real = tv(Problem(Identity((24, 24), F64, device), noisy.to(device)), weight=0.1,
              n_iter=200, operator_norm=1.0).image
    cplx = tv(Problem(Identity((24, 24), C128, device), (phase * noisy).to(C128).to(device)),
              weight=0.1, n_iter=200, operator_norm=1.0).image
    torch.testing.assert_close(cplx, phase * real.to(C128), rtol=1e-10, atol=1e-10)


def test_tv_nonnegative_and_bad_weight():
    noisy = torch.tensor([-1.0, -0.5, 0.2, 1.0, 1.2], dtype=F64)
    problem = Problem(Identity((5,), F64), noisy)
    assert bool((tv(problem, weight=0.01, nonnegative=True, operator_norm=1.0).image >= 0).all())
    with pytest.raises(ValueError, match="weight"):
        tv(problem, weight=-1.0)


# --------------------------------------------------------------------------- CT
@pytest.fixture(scope="module")
def phantom() -> torch.Tensor:
    return _ct_phantom(128)


def _ct_psnr(image: torch.Tensor, phantom: torch.Tensor) -> float:
    return float(psnr(image.cpu(), phantom, data_range=float(phantom.max() - phantom.min())))


def test_fbp_full_view_ct(phantom, device):
    A = CTProjector(CTGeometry.parallel((128, 128), n_views=180), device=device)
    result = fbp(Problem(A, A(phantom.to(device))))
    assert _ct_psnr(result.image, phantom) >= 28.0
    assert result.iterations == 1 and result.residual.shape == ()


def test_sparse_view_ct_iterative_beats_fbp(phantom, device):
    A = CTProjector(CTGeometry.parallel((128, 128), n_views=60), device=device)
    problem = Problem(A, A(phantom.to(device)))
    norm = A.norm(generator=_gen(13))
    scores = {
        "fbp": _ct_psnr(fbp(problem).image, phantom),
        "cgls": _ct_psnr(cgls(problem).image, phantom),
        "tv": _ct_psnr(tv(problem, weight=1e-4 * norm**2 * float(phantom.max()), n_iter=100,
                          operator_norm=norm).image, phantom),
    }
    assert scores["cgls"] > scores["fbp"] + 0.5, scores
    assert scores["tv"] > scores["fbp"] + 1.0, scores


@pytest.mark.parametrize("method,params", [("cgls", {"n_iter": 8}), ("sirt", {"n_iter": 8}),
                                           ("tv", {"n_iter": 8, "weight": 1.0})])
def test_ct_batch_equals_single(method, params, phantom, device):
    A = CTProjector(CTGeometry.parallel((128, 128), n_views=30), device=device)
    images = torch.stack([phantom, 0.7 * phantom.flip(-1).T]).to(device)
    y = A(images)
    solver = {"cgls": cgls, "sirt": sirt, "tv": tv}[method]
    extra = {"generator": _gen(14)} if method == "tv" else {}
    batched = solver(Problem(A, y), **params, **extra)
    for i in range(2):
        extra = {"generator": _gen(14)} if method == "tv" else {}
        single = solver(Problem(A, y[i]), **params, **extra)
        scale = float(single.image.abs().max())
        torch.testing.assert_close(batched.image[i], single.image, rtol=0, atol=1e-5 * scale)
        torch.testing.assert_close(batched.residual[i], single.residual, rtol=1e-4,
                                   atol=1e-7)


def test_fan_beam_cgls(device):
    phantom = _ct_phantom(64)
    A = CTProjector(CTGeometry.fan((64, 64), n_views=90, source_to_isocenter=200.0,
                                   isocenter_to_detector=150.0), device=device)
    problem = Problem(A, A(phantom.to(device)))
    curve, record = _residual_curve(problem)
    result = cgls(problem, n_iter=20, callback=record)
    assert bool((torch.stack(curve).diff() <= 1e-6).all())
    assert float(result.residual) < 0.01
    assert _ct_psnr(result.image, phantom) > 28.0


# --------------------------------------------------------------------------- contract
def test_fbp_needs_a_ct_operator():
    problem = Problem(MatrixOperator(torch.eye(3)), torch.ones(3))
    with pytest.raises(ValueError, match="filtered back projection"):
        fbp(problem)


def test_problem_rejects_mismatched_measurement():
    with pytest.raises(OperatorShapeError, match="does not fit"):
        Problem(MatrixOperator(torch.eye(3)), torch.ones(4))


