"""MRI solvers (zero-filled, CG-SENSE, L1-wavelet FISTA) and TV on complex multi-coil
problems, against closed forms, dense solves and PyWavelets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pywt
import torch

from medrecon.operators.base import Identity, MatrixOperator, Multiply, randn
from medrecon.operators.wavelet import Wavelet2D
from medrecon.solvers.cgsense import cgsense
from medrecon.solvers.classical import tv, tv_objective
from medrecon.solvers.l1wavelet import l1wavelet, l1wavelet_objective, soft_threshold
from medrecon.solvers.problem import Problem
from medrecon.solvers.zero_filled import zero_filled

F64, C128 = torch.float64, torch.complex128


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _residual_curve(problem: Problem):
    """A list and a callback that appends ``problem.residual(x_k)`` to it each iteration."""
    curve: list[torch.Tensor] = []
    return curve, lambda k, n, x: curve.append(problem.residual(x))


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def _dft_rows(n: int, rows: list[int]) -> torch.Tensor:
    """Rows of the orthonormal DFT matrix: an undersampled 1D Fourier encoding."""
    return torch.fft.fft(torch.eye(n, dtype=C128), norm="ortho")[rows]


def _coils(n: int, n_coils: int, seed: int, density: float = 1.0) -> Multiply:
    """A multi-coil encoding ``x -> (S_c x)_c`` on an n x n image; with ``density < 1``
    each coil sees a random subset of pixels (an underdetermined, ill-posed problem)."""
    g = _gen(seed)
    maps = torch.randn(n_coils, n, n, dtype=C128, generator=g)
    if density < 1:
        maps = maps * (torch.rand(n_coils, n, n, generator=g, dtype=F64) < density)
    return Multiply((n, n), maps)


def _phantom(n: int) -> torch.Tensor:
    """Piecewise-smooth complex image: ellipses with a ramp in magnitude and smooth phase."""
    c = (torch.arange(n, dtype=F64) - (n - 1) / 2) / (n / 2)
    yy, xx = torch.meshgrid(c, c, indexing="ij")

    def ellipse(x0: float, y0: float, a: float, b: float) -> torch.Tensor:
        return (((xx - x0) / a) ** 2 + ((yy - y0) / b) ** 2 <= 1).to(F64)

    magnitude = (ellipse(0, 0, 0.8, 0.65) * (1 + 0.3 * xx) + 0.5 * ellipse(-0.3, 0.1, 0.2, 0.3)
                 - 0.3 * ellipse(0.35, -0.1, 0.15, 0.25))
    return magnitude * torch.exp(1j * math.pi * (0.4 * xx + 0.3 * yy**2))


# --------------------------------------------------------------------------- zero-filled
def test_zero_filled_is_inverse_fft_of_zero_filled_kspace():
    rows = [0, 1, 2, 5, 7, 9, 14, 15]
    x = randn((2, 16), C128, "cpu", _gen(0))
    A = MatrixOperator(_dft_rows(16, rows))
    result = zero_filled(Problem(A, A(x)))
    kspace = np.zeros((2, 16), dtype=complex)
    kspace[:, rows] = np.fft.fft(x.numpy(), norm="ortho")[:, rows]
    np.testing.assert_allclose(result.image.numpy(), np.fft.ifft(kspace, norm="ortho"),
                               rtol=0, atol=1e-12)
    assert result.method == "zf" and result.iterations == 0
    assert result.residual.shape == (2,)


def test_zero_filled_multicoil_is_coil_combination():
    A = _coils(8, 4, seed=1)
    y = randn((4, 8, 8), C128, "cpu", _gen(2))
    expected = (A.weights.conj() * y).sum(dim=0)
    torch.testing.assert_close(zero_filled(Problem(A, y)).image, expected)


# --------------------------------------------------------------------------- CG-SENSE
@pytest.mark.parametrize("dtype", [F64, C128])
@pytest.mark.parametrize("weight", [0.0, 0.3])
def test_cgsense_equals_dense_solve(dtype, weight, device):
    g = _gen(3)
    m = torch.randn(20, 12, dtype=dtype, generator=g)
    y = torch.randn(3, 20, dtype=dtype, generator=g)
    problem = Problem(MatrixOperator(m, device=device), y.to(device))
    result = cgsense(problem, weight=weight, n_iter=100, tol=1e-12)
    normal = m.mH @ m + weight * torch.eye(12, dtype=dtype)
    expected = torch.linalg.solve(normal, (y @ m.conj()).T).T.to(device)
    for i in range(3):
        assert _relative(result.image[i], expected[i]) < 1e-6
    assert result.info["stopped"] == "tolerance" and result.iterations < 100
    assert result.info["cg_residuals"].shape == (result.iterations, 3)
    assert result.residual.shape == (3,)
    torch.testing.assert_close(result.residual, problem.residual(result.image))


def test_cgsense_multicoil_closed_form():
    """For x -> (S_c x)_c the normal operator is diagonal: x = sum conj(S) y / (sum |S|^2 + w)."""
    A = _coils(12, 3, seed=4)
    y = randn((2, 3, 12, 12), C128, "cpu", _gen(5))
    result = cgsense(Problem(A, y), weight=0.5, n_iter=200, tol=1e-13)
    maps = A.weights
    expected = (maps.conj() * y).sum(dim=-3) / ((maps.abs() ** 2).sum(dim=0) + 0.5)
    assert _relative(result.image, expected) < 1e-9


def test_cgsense_batch_equals_single_and_keeps_x0():
    g = _gen(6)
    m = torch.randn(15, 10, dtype=C128, generator=g)
    y = torch.randn(2, 3, 15, dtype=C128, generator=g)
    x0 = torch.randn(10, dtype=C128, generator=g)
    kept = x0.clone()
    A = MatrixOperator(m)
    batched = cgsense(Problem(A, y), weight=0.1, n_iter=4, tol=0.0, x0=x0)
    assert torch.equal(x0, kept)
    assert batched.iterations == 4 and batched.info["stopped"] == "max_iter"
    for i in range(2):
        for j in range(3):
            single = cgsense(Problem(A, y[i, j]), weight=0.1, n_iter=4, tol=0.0, x0=x0)
            torch.testing.assert_close(batched.image[i, j], single.image, rtol=1e-12,
                                       atol=1e-12)


def test_cgsense_callback_called_every_iteration():
    calls = []
    A = MatrixOperator(torch.randn(8, 5, dtype=F64, generator=_gen(7)))
    result = cgsense(Problem(A, torch.ones(8, dtype=F64)), n_iter=3, tol=0.0,
                     callback=lambda k, n, x: calls.append((k, n, x)))
    assert [(k, n) for k, n, _ in calls] == [(1, 3), (2, 3), (3, 3)]
    torch.testing.assert_close(calls[-1][2], result.image)
    assert result.residual.shape == ()


# --------------------------------------------------------------------------- L1-wavelet
def _pywt_shrink(y: np.ndarray, wavelet: str, levels: int, threshold: float) -> np.ndarray:
    """W^H soft(W y) with PyWavelets (periodization) and numpy complex soft-thresholding."""
    packed, slices = pywt.coeffs_to_array(pywt.wavedec2(y, wavelet, mode="periodization",
                                                        level=levels))
    modulus = np.abs(packed)
    shrunk = packed * np.maximum(modulus - threshold, 0) / np.where(modulus > 0, modulus, 1)
    coeffs = pywt.array_to_coeffs(shrunk, slices, output_format="wavedec2")
    return pywt.waverec2(coeffs, wavelet, mode="periodization")


@pytest.mark.parametrize("dtype", [F64, C128])
@pytest.mark.parametrize("wavelet,levels", [("db4", 2), ("haar", 4)])
def test_l1wavelet_identity_is_wavelet_shrinkage(dtype, wavelet, levels):
    """With A = I the minimiser is W^H soft(W y, weight); FISTA from 0 reaches it in one
    step and stays there."""
    y = randn((32, 32), dtype, "cpu", _gen(8))
    problem = Problem(Identity((32, 32), dtype), y)
    curve, record = _residual_curve(problem)
    result = l1wavelet(problem, weight=0.7, n_iter=5, wavelet=wavelet, levels=levels,
                       generator=_gen(9), callback=record)
    expected = _pywt_shrink(y.numpy(), wavelet, levels, 0.7)
    np.testing.assert_allclose(result.image.numpy(), expected, rtol=0, atol=1e-12)
    assert result.info["operator_norm"] == pytest.approx(1.0)
    assert bool((torch.stack(curve).diff(dim=0).abs() < 1e-14).all())


def test_soft_threshold_shrinks_modulus_and_keeps_phase():
    c = torch.tensor([3 + 4j, -0.6j, 0.0, -2.0 + 0j], dtype=C128)
    expected = torch.tensor([(3 + 4j) * 4 / 5, 0.0, 0.0, -1.0 + 0j], dtype=C128)
    torch.testing.assert_close(soft_threshold(c, 1.0), expected)
    torch.testing.assert_close(soft_threshold(torch.tensor([-3.0, 0.5, 2.0]), 1.0),
                               torch.tensor([-2.0, 0.0, 1.0]))


def _dense_pywt_wavelet(n: int, wavelet: str, levels: int) -> np.ndarray:
    """The n^2 x n^2 matrix of PyWavelets' periodized transform in the packed layout."""
    basis = np.eye(n * n).reshape(n * n, n, n)
    return np.stack([_pywt_packed(e, wavelet, levels).ravel() for e in basis], axis=1)


def _pywt_packed(x: np.ndarray, wavelet: str, levels: int) -> np.ndarray:
    packed, _ = pywt.coeffs_to_array(pywt.wavedec2(x, wavelet, mode="periodization",
                                                   level=levels))
    return packed


def _dense_ista(problem: Problem, weight: float, wavelet: str, levels: int,
                n_iter: int) -> torch.Tensor:
    """Plain ISTA (proximal gradient, no momentum) in numpy on dense matrices, built from
    the operator applied to a basis and from PyWavelets: an independent reference. It
    iterates on the coefficients ``c = W x`` (``W`` orthogonal):
    ``c <- soft(W (I - s A^H A) W^T c + s W A^H y, s weight)``, ``s = 1 / ||A||^2``."""
    A, n = problem.operator, problem.operator.domain_shape[0]
    basis = torch.eye(n * n, dtype=A.dtype).reshape(n * n, n, n)
    a = A(basis).reshape(n * n, -1).T.numpy()
    w = _dense_pywt_wavelet(n, wavelet, levels)
    step = 1.0 / np.linalg.norm(a, 2) ** 2
    iteration = w @ (np.eye(n * n) - step * a.conj().T @ a) @ w.T
    shift = step * w @ (a.conj().T @ problem.y.numpy().ravel())
    c = np.zeros(n * n, dtype=complex)
    for _ in range(n_iter):
        c = iteration @ c + shift
        modulus = np.abs(c)
        c = c * np.maximum(modulus - step * weight, 0) / np.where(modulus > 0, modulus, 1)
    return torch.from_numpy((w.T @ c).reshape(n, n))


@pytest.fixture(scope="module")
def compressed_sensing() -> Problem:
    """Three coils on a 16 x 16 image, each seeing 30% of the Haar coefficients:
    underdetermined, so the db4 L1 term decides the answer."""
    n = 16
    A = _coils(n, 3, seed=10, density=0.3) @ Wavelet2D((n, n), "haar", dtype=C128)
    noise = 0.05 * randn((3, n, n), C128, "cpu", _gen(11))
    return Problem(A, A(_phantom(n)) + noise)


def test_l1wavelet_converges_to_ista_reference(compressed_sensing):
    problem, weight = compressed_sensing, 0.05
    objective: list[float] = []

    def record(k: int, n: int, x: torch.Tensor) -> None:
        objective.append(float(l1wavelet_objective(problem, x, weight)))

    result = l1wavelet(problem, weight=weight, n_iter=300, generator=_gen(12), callback=record)
    start = float(l1wavelet_objective(problem, problem.image_like(), weight))
    reference = _dense_ista(problem, weight, "db4", 1, 20000)
    best = float(l1wavelet_objective(problem, reference, weight))
    slow = float(l1wavelet_objective(problem, _dense_ista(problem, weight, "db4", 1, 300),
                                     weight))
    assert len(objective) == 300 and objective[-1] < start / 10
    assert objective[-1] == pytest.approx(best, rel=1e-5)
    assert objective[-1] - best < 0.1 * (slow - best)        # momentum pays
    assert _relative(result.image, reference) < 1e-2
    # FISTA is not monotone, but its objective never rises much above the best so far
    lowest = np.minimum.accumulate(objective)
    assert float(np.max(np.array(objective) - lowest)) < 0.01 * (start - best)
    torch.testing.assert_close(result.residual, problem.residual(result.image))


def test_l1wavelet_batch_equals_single(compressed_sensing):
    A, y = compressed_sensing.operator, compressed_sensing.y
    ys = torch.stack([y, 0.5j * y.flip(-1)])
    norm = A.norm(generator=_gen(13))
    batched = l1wavelet(Problem(A, ys), weight=0.05, n_iter=20, operator_norm=norm)
    for i in range(2):
        single = l1wavelet(Problem(A, ys[i]), weight=0.05, n_iter=20, operator_norm=norm)
        torch.testing.assert_close(batched.image[i], single.image, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(batched.residual[i], single.residual)


def test_l1wavelet_complex_phase_equivariance_and_real_problems(compressed_sensing):
    """|.| makes the penalty phase invariant: a global phase on y rotates the solution;
    a real problem solved in complex arithmetic gives the real solver's answer."""
    A, y = compressed_sensing.operator, compressed_sensing.y
    norm = A.norm(generator=_gen(14))
    phase = complex(math.cos(0.8), math.sin(0.8))
    base = l1wavelet(Problem(A, y), weight=0.05, n_iter=30, operator_norm=norm).image
    turned = l1wavelet(Problem(A, phase * y), weight=0.05, n_iter=30, operator_norm=norm).image
    torch.testing.assert_close(turned, phase * base, rtol=1e-10, atol=1e-12)

    real_weights = torch.randn(2, 16, 16, dtype=F64, generator=_gen(15))
    y_real = torch.randn(2, 16, 16, dtype=F64, generator=_gen(16))
    real = l1wavelet(Problem(Multiply((16, 16), real_weights), y_real), weight=0.2,
                     n_iter=50, operator_norm=4.0).image
    complex_ = l1wavelet(Problem(Multiply((16, 16), real_weights.to(C128)), y_real.to(C128)),
                         weight=0.2, n_iter=50, operator_norm=4.0).image
    torch.testing.assert_close(complex_, real.to(C128), rtol=1e-12, atol=1e-12)


def test_l1wavelet_denoises_piecewise_smooth_complex_image():
    """A = I, complex noise of standard deviation 0.1 per pixel: wavelet shrinkage with
    weight = sigma cuts the error of the noisy image (0.151 -> 0.093 relative)."""
    x = _phantom(64)
    sigma = 0.1
    y = x + sigma * randn((64, 64), C128, "cpu", _gen(17))
    result = l1wavelet(Problem(Identity((64, 64), C128), y), weight=sigma, n_iter=1,
                       operator_norm=1.0)
    noisy_error, denoised_error = _relative(y, x), _relative(result.image, x)
    assert denoised_error < 0.7 * noisy_error, (noisy_error, denoised_error)


# --------------------------------------------------------------------------- TV
def test_tv_handles_complex_multicoil_problems():
    """classical.tv on a complex image with a coil dimension in the range: the objective
    drops well below that of the least-squares image, and a global phase on y rotates
    the solution (isotropic TV of a complex image is phase invariant)."""
    n = 16
    A = _coils(n, 3, seed=18)
    x = torch.zeros(n, n, dtype=C128)
    x[4:12, 4:12] = 1 + 1j
    x[6:9, 2:6] = 0.5j
    y = A(x) + 0.3 * randn((3, n, n), C128, "cpu", _gen(19))
    problem = Problem(A, y)
    result = tv(problem, weight=0.5, n_iter=300, generator=_gen(20))
    assert result.image.dtype == C128 and result.residual.shape == ()
    least_squares = cgsense(problem, n_iter=50, tol=1e-12).image
    fitted = float(tv_objective(problem, result.image, 0.5))
    assert fitted < 0.9 * float(tv_objective(problem, least_squares, 0.5))
    longer = tv(problem, weight=0.5, n_iter=1500, generator=_gen(20))
    assert fitted == pytest.approx(float(tv_objective(problem, longer.image, 0.5)), rel=1e-3)
    assert _relative(result.image, x) < _relative(least_squares, x)
    phase = complex(math.cos(1.1), math.sin(1.1))
    turned = tv(Problem(A, phase * y), weight=0.5, n_iter=300, generator=_gen(20))
    torch.testing.assert_close(turned.image, phase * result.image, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- contract
@pytest.mark.parametrize("solver,params,message", [
    (cgsense, {"weight": -1.0}, "weight"),
    (cgsense, {"weight": math.nan}, "weight"),
    (cgsense, {"n_iter": -1}, "n_iter"),
    (cgsense, {"tol": -1e-3}, "tol"),
    (cgsense, {"x0": torch.zeros(7, 8, dtype=C128)}, "broadcast"),
    (cgsense, {"x0": torch.zeros(8, 8, dtype=F64)}, "x0 must be"),
    (l1wavelet, {"weight": -0.1}, "weight"),
    (l1wavelet, {"weight": 0.1, "n_iter": 2.5}, "n_iter"),
    (l1wavelet, {"weight": 0.1, "operator_norm": 0.0}, "operator_norm"),
    (l1wavelet, {"weight": 0.1, "wavelet": "bior2.2"}, "not orthogonal"),
    (l1wavelet, {"weight": 0.1, "levels": 4}, "not divisible"),
])
def test_bad_parameters_raise_value_error(solver, params, message):
    problem = Problem(_coils(8, 2, seed=23), randn((2, 8, 8), C128, "cpu", _gen(24)))
    with pytest.raises(ValueError, match=message):
        solver(problem, **params)


def test_l1wavelet_needs_a_2d_domain():
    problem = Problem(Identity((4, 8, 8), F64), torch.zeros(4, 8, 8, dtype=F64))
    with pytest.raises(ValueError, match="2D image domain"):
        l1wavelet(problem, weight=0.1)
