"""Wavelet2D against PyWavelets (periodization mode) and its orthonormality."""

from __future__ import annotations

import time

import numpy as np
import pytest
import pywt
import torch

from medrecon.operators.base import randn
from medrecon.operators.wavelet import Wavelet2D, default_levels

F32, F64, C64, C128 = torch.float32, torch.float64, torch.complex64, torch.complex128


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pywt_packed(x: np.ndarray, wavelet: str, levels: int) -> np.ndarray:
    """PyWavelets' periodized multi-level coefficients in the coeffs_to_array layout."""
    packed, _ = pywt.coeffs_to_array(pywt.wavedec2(x, wavelet, mode="periodization",
                                                   level=levels))
    return packed


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_level_one_matches_pywt_dwt2(wavelet):
    x = np.random.default_rng(0).standard_normal((12, 16))
    c = Wavelet2D((12, 16), wavelet, levels=1, dtype=F64)(torch.from_numpy(x)).numpy()
    ca, (ch, cv, cd) = pywt.dwt2(x, wavelet, mode="periodization")
    np.testing.assert_allclose(c[:6, :8], ca, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c[:6, 8:], cv, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c[6:, :8], ch, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c[6:, 8:], cd, rtol=0, atol=1e-12)


@pytest.mark.parametrize("wavelet,shape,levels", [("db4", (64, 32), 2), ("haar", (16, 8), 3),
                                                  ("sym4", (32, 48), 2), ("coif1", (24, 24), 2)])
def test_multilevel_matches_pywt_wavedec2(wavelet, shape, levels):
    x = np.random.default_rng(1).standard_normal(shape)
    c = Wavelet2D(shape, wavelet, levels=levels, dtype=F64)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(c, _pywt_packed(x, wavelet, levels), rtol=0, atol=1e-12)


def test_inverse_matches_pywt_waverec2():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((32, 32)) + 1j * rng.standard_normal((32, 32))
    W = Wavelet2D((32, 32), "db2", levels=3, dtype=C128)
    c = W(torch.from_numpy(x))
    _, slices = pywt.coeffs_to_array(pywt.wavedec2(x.real, "db2", mode="periodization",
                                                   level=3))
    coeffs = pywt.array_to_coeffs(c.numpy(), slices, output_format="wavedec2")
    np.testing.assert_allclose(pywt.waverec2(coeffs, "db2", mode="periodization"), x,
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(W.H(c).numpy(), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("wavelet", ["haar", "db4", "sym8"])
def test_dense_matrix_is_orthogonal(wavelet):
    """The full 64 x 64 matrix of the 8 x 8 transform satisfies W W^T = W^T W = I,
    including the coarse levels where the filter is longer than the signal."""
    W = Wavelet2D((8, 8), wavelet, levels=3, dtype=F64)
    basis = torch.eye(64, dtype=F64).reshape(64, 8, 8)
    matrix = W(basis).reshape(64, 64).T                     # column j = W e_j
    eye = torch.eye(64, dtype=F64)
    torch.testing.assert_close(matrix.T @ matrix, eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(matrix @ matrix.T, eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(W.H(basis).reshape(64, 64).T, matrix.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype,atol", [(F32, 1e-6), (F64, 1e-12), (C64, 1e-6), (C128, 1e-12)])
@pytest.mark.parametrize("wavelet", ["haar", "db4"])
def test_norm_preserved_and_adjoint_is_inverse(dtype, atol, wavelet, device):
    W = Wavelet2D((64, 48), wavelet, dtype=dtype, device=device)
    x = randn((2, 3, 64, 48), dtype, device, _gen(3))
    c = W(x)
    norms = torch.linalg.vector_norm(x, dim=(-2, -1))
    relative = (torch.linalg.vector_norm(c, dim=(-2, -1)) - norms).abs() / norms
    assert float(relative.max()) < atol
    relative = torch.linalg.vector_norm(W.H(c) - x, dim=(-2, -1)) / norms
    assert float(relative.max()) < atol
    torch.testing.assert_close(W.normal(x), x)


def test_complex_is_real_and_imaginary_parts():
    W = Wavelet2D((16, 16), "db4", levels=1, dtype=C128)
    Wr = Wavelet2D((16, 16), "db4", levels=1, dtype=F64)
    x = randn((16, 16), C128, "cpu", _gen(4))
    torch.testing.assert_close(W(x), torch.complex(Wr(x.real), Wr(x.imag)), rtol=0, atol=0)


def test_batch_items_are_independent():
    W = Wavelet2D((16, 24), "db2", dtype=F64)
    x = randn((4, 16, 24), F64, "cpu", _gen(5))
    c = W(x)
    for i in range(4):
        torch.testing.assert_close(c[i], W(x[i]), rtol=0, atol=0)


def test_constant_image_has_only_an_approximation_coefficient():
    """Haar, 3 levels on 16 x 16: the 2 x 2 approximation holds 8 * mean, the rest is 0."""
    W = Wavelet2D((16, 16), "haar", levels=3, dtype=F64)
    c = W(torch.full((16, 16), 1.5, dtype=F64))
    torch.testing.assert_close(c[:2, :2], torch.full((2, 2), 12.0, dtype=F64))
    c[:2, :2] = 0
    assert float(c.abs().max()) < 1e-13


def test_default_levels():
    assert default_levels((320, 320), 8) == 5        # fastMRI knee crop, db4
    assert default_levels((640, 368), 8) == 4        # 368 = 2^4 * 23
    assert default_levels((256, 256), 2) == 8
    assert Wavelet2D((48, 64), "db4").levels == 2    # dwt_max_level(48, 8) = 2


@pytest.mark.parametrize("kwargs,message", [
    ({"shape": (15, 16)}, "no wavelet level fits"),
    ({"shape": (24, 16), "levels": 4}, "not divisible by 2\\*\\*4"),
    ({"shape": (16, 16), "levels": 0}, "positive integer"),
    ({"shape": (16, 16, 16)}, "rows, columns"),
    ({"shape": (16, 16), "wavelet": "bior2.2"}, "not orthogonal"),
    ({"shape": (16, 16), "wavelet": "nope"}, "unknown wavelet"),
])
def test_bad_parameters_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Wavelet2D(**kwargs)


def test_speed_256():
    """Forward plus adjoint of a 256 x 256 complex64 image, db4, 5 levels, on one thread
    (about 12 ms here; one thread so that other work on the machine does not decide)."""
    W = Wavelet2D((256, 256), "db4", dtype=C64)
    x = randn((256, 256), C64, "cpu", _gen(6))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        W.H(W(x))
        start = time.perf_counter()
        for _ in range(10):
            W.H(W(x))
        per_pair = (time.perf_counter() - start) / 10
    finally:
        torch.set_num_threads(threads)
    assert per_pair < 0.1, f"{per_pair * 1e3:.1f} ms per forward + adjoint"
