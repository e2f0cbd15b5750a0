"""Non-Cartesian MRI: NUFFT against the exact sum, the Cartesian FFT and SigPy; the Toeplitz
normal operator; density compensation; trajectory validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sigpy
import sigpy.mri
import torch
import torchkbnufft as tkbn

from medrecon.operators.mri import fft2c
from medrecon.operators.nufft import (
    NUFFT,
    NonCartesianMRI,
    ToeplitzNormal,
    check_trajectory,
    pipe_menon_density,
    radial_ramp_density,
)
from medrecon.operators.sampling import radial_trajectory, radians_to_sigpy


def _complex(shape, seed, dtype=torch.complex128):
    return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _uniform_trajectory(k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(2, k, dtype=torch.float64, generator=g) * 2 - 1) * math.pi


def _relative(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _exact_matrix(ktraj: torch.Tensor, shape) -> np.ndarray:
    """The NUFFT as a dense matrix (K, H*W): exp(-i omega . (n - N//2)) / sqrt(HW)."""
    n = [np.arange(size) - size // 2 for size in shape]
    grid = np.stack(np.meshgrid(*n, indexing="ij")).reshape(2, -1)
    return np.exp(-1j * ktraj.numpy().T @ grid) / math.sqrt(shape[0] * shape[1])


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_nufft_matches_the_exact_sum(dtype):
    shape = (12, 10)
    ktraj = _uniform_trajectory(150, 0)
    E = _exact_matrix(ktraj, shape)
    A = NUFFT(shape, ktraj, toeplitz=False, dtype=dtype)
    x, y = _complex(shape, 1, dtype), _complex((150,), 2, dtype)
    # Kaiser-Bessel interpolation with 6 neighbours on a 2x grid: about 7e-4 measured
    assert _relative(A(x), E @ x.numpy().ravel()) < 2e-3
    assert _relative(A.adjoint(y).ravel(), E.conj().T @ y.numpy()) < 2e-3


@pytest.mark.parametrize("shape", [(16, 16), (12, 9)])
def test_nufft_on_the_cartesian_grid_is_fft2c(shape):
    axes = [2 * math.pi * (torch.arange(n, dtype=torch.float64) - n // 2) / n for n in shape]
    ktraj = torch.stack(torch.meshgrid(*axes, indexing="ij")).reshape(2, -1)
    A = NUFFT(shape, ktraj, toeplitz=False, dtype=torch.complex128)
    x = _complex((2, *shape), 3)
    assert _relative(A(x).reshape(2, *shape), fft2c(x)) < 1e-4        # measured 1.1e-5


@pytest.mark.parametrize("sigpy_options, bound", [
    ({}, 1e-2),                                   # SigPy's defaults: 1.25x grid, width 4
    ({"oversamp": 2.0, "width": 6}, 2e-3),        # the same grid and width as ours
])
def test_nufft_agrees_with_sigpy(sigpy_options, bound):
    shape = (16, 14)
    ktraj = radial_trajectory(24, 16, shape)
    coord = radians_to_sigpy(ktraj, shape)
    A = NUFFT(shape, ktraj, toeplitz=False, dtype=torch.complex128)
    x, y = _complex(shape, 4), _complex((ktraj.shape[1],), 5)
    assert _relative(A(x), sigpy.nufft(x.numpy(), coord, **sigpy_options)) < bound
    assert _relative(A.adjoint(y), sigpy.nufft_adjoint(y.numpy(), coord, shape,
                                                       **sigpy_options)) < bound


def test_multicoil_operator_agrees_with_sigpy_sense():
    shape = (16, 16)
    ktraj = radial_trajectory(32, 16, shape)
    maps = _complex((3, *shape), 6)
    A = NonCartesianMRI(shape, ktraj, maps, toeplitz=False, dtype=torch.complex128)
    S = sigpy.mri.linop.Sense(maps.numpy(), coord=radians_to_sigpy(ktraj, shape))
    x, y = _complex(shape, 7), _complex((3, ktraj.shape[1]), 8)
    assert A.range_shape == (3, ktraj.shape[1])
    assert _relative(A(x), S * x.numpy()) < 1e-2
    assert _relative(A.adjoint(y), S.H * y.numpy()) < 1e-2


def test_density_weights_scale_the_data_by_their_square_root():
    shape = (10, 10)
    ktraj = _uniform_trajectory(80, 9)
    w = torch.rand(80, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    plain = NUFFT(shape, ktraj, toeplitz=False, dtype=torch.complex128)
    weighted = NUFFT(shape, ktraj, weights=w, toeplitz=False, dtype=torch.complex128)
    x, y = _complex(shape, 11), _complex((80,), 12)
    torch.testing.assert_close(weighted(x), w.sqrt() * plain(x))
    torch.testing.assert_close(weighted.adjoint(y), plain.adjoint(w.sqrt() * y))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("trajectory", ["radial", "uniform"])
@pytest.mark.parametrize("weighted", [False, True])
def test_toeplitz_normal_matches_adjoint_of_forward(dtype, trajectory, weighted):
    shape = (16, 12)
    ktraj = (radial_trajectory(40, 16, shape) if trajectory == "radial"
             else _uniform_trajectory(500, 13))
    w = (torch.rand(ktraj.shape[1], dtype=torch.float64,
                    generator=torch.Generator().manual_seed(14)) if weighted else None)
    maps = _complex((3, *shape), 15, dtype)
    A = NonCartesianMRI(shape, ktraj, maps, weights=w, toeplitz=True, dtype=dtype)
    x = _complex((2, *shape), 16, dtype)
    exact = A.adjoint(A(x))
    # the kernel carries torchkbnufft's interpolation error: 2e-6 .. 1e-5 measured
    assert _relative(A.normal(x), exact) < 3e-5
    # and without the Toeplitz filter the normal is adjoint(forward) to rounding
    B = NonCartesianMRI(shape, ktraj, maps, weights=w, toeplitz=False, dtype=dtype)
    torch.testing.assert_close(B.normal(x), exact)


def test_toeplitz_filter_equals_torchkbnufft_toepnufft():
    shape = (16, 12)
    ktraj = radial_trajectory(40, 16, shape)
    w = torch.rand(ktraj.shape[1], dtype=torch.float64,
                   generator=torch.Generator().manual_seed(17))
    T = ToeplitzNormal((2, *shape), ktraj, weights=w, dtype=torch.complex128)
    x = _complex((2, *shape), 18)
    kernel = tkbn.calc_toeplitz_kernel(ktraj, list(shape), weights=w[None])
    reference = tkbn.ToepNufft()(x[None], kernel)[0] / (shape[0] * shape[1])
    torch.testing.assert_close(T(x), reference, rtol=1e-10, atol=1e-12)
    assert T.kernel.dtype == torch.float64 and T.kernel.shape == (32, 24)


def _smooth_image(n: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(n) - n // 2, torch.arange(n) - n // 2, indexing="ij")
    blob = torch.exp(-((yy - 4.0) ** 2 + (xx + 3.0) ** 2) / (2 * 7.0**2))
    return (blob * torch.exp(0.05j * xx)).to(torch.complex128)


@pytest.mark.parametrize("density, bound", [(pipe_menon_density, 0.06),
                                            (radial_ramp_density, 0.05)])
def test_density_compensated_adjoint_recovers_a_smooth_image(density, bound):
    n = 64
    ktraj = radial_trajectory(256, 64, (n, n))
    A = NUFFT((n, n), ktraj, toeplitz=False, dtype=torch.complex128)
    x = _smooth_image(n)
    w = density(ktraj, (n, n))
    assert w.shape == (ktraj.shape[1],) and w.dtype == torch.float64
    # measured: Pipe-Menon 0.038, ramp 0.027; without weights the error is over 100
    assert _relative(A.adjoint(w * A(x)), x) < bound
    assert _relative(A.adjoint(A(x)), x) > 10


def test_pipe_menon_weights_are_one_on_the_cartesian_grid():
    shape = (12, 16)
    axes = [2 * math.pi * (torch.arange(n, dtype=torch.float64) - n // 2) / n for n in shape]
    ktraj = torch.stack(torch.meshgrid(*axes, indexing="ij")).reshape(2, -1)
    torch.testing.assert_close(pipe_menon_density(ktraj, shape),
                               torch.ones(ktraj.shape[1], dtype=torch.float64))


def test_radial_ramp_is_the_ring_area_per_sample():
    spokes, readout, n = 50, 16, 32
    ktraj = radial_trajectory(spokes, readout, (n, n))
    w = radial_ramp_density(ktraj, (n, n)).reshape(spokes, readout)
    spacing = n / (2 * readout)                        # cycles between samples of a spoke
    radius = torch.arange(readout, dtype=torch.float64) * spacing
    ring = 2 * math.pi * radius * spacing / spokes
    ring[0] = math.pi * (spacing / 2) ** 2 / spokes
    torch.testing.assert_close(w, ring.expand(spokes, readout))


def test_constants_live_on_the_operator_device(device):
    ktraj = radial_trajectory(10, 8, (8, 8))
    maps = _complex((2, 8, 8), 19, torch.complex64)
    A = NonCartesianMRI((8, 8), ktraj, maps, weights=torch.ones(80), device=device)
    assert A.ktraj.device.type == device.type and A.ktraj.dtype == torch.float32
    assert A.fourier.toeplitz.kernel.device.type == device.type
    assert A.fourier.weights.device.type == device.type
    x = _complex((8, 8), 20, torch.complex64).to(device)
    assert A.normal(x).device.type == device.type


@pytest.mark.parametrize("ktraj, match", [
    (torch.full((2, 5), 3.2, dtype=torch.float64), "sigpy_to_radians"),
    (torch.zeros(3, 5), r"shape \(2, K\)"),
    (torch.zeros(2, 0), r"shape \(2, K\)"),
    (torch.tensor([[0.0, float("nan")], [0.0, 0.0]]), "NaN"),
    (torch.zeros(2, 5, dtype=torch.complex64), "real"),
    (np.zeros((2, 5)), "real"),
])
def test_bad_trajectories_are_rejected(ktraj, match):
    with pytest.raises(ValueError, match=match):
        check_trajectory(ktraj)
    with pytest.raises(ValueError, match=match):
        NonCartesianMRI((8, 8), ktraj)


def test_float32_pi_is_inside_the_range():
    ktraj = torch.tensor([[math.pi, -math.pi], [0.0, math.pi]], dtype=torch.float32)
    assert check_trajectory(ktraj) is ktraj


@pytest.mark.parametrize("kwargs, match", [
    ({"weights": torch.ones(7)}, "weights"),
    ({"weights": -torch.ones(8)}, "non-negative"),
    ({"dtype": torch.float32}, "complex"),
    ({"oversampling": 0.5}, "oversampling"),
    ({"numpoints": 0}, "numpoints"),
])
def test_bad_operator_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NonCartesianMRI((8, 8), radial_trajectory(2, 4, (8, 8)), **kwargs)
