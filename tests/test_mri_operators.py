"""Cartesian MRI: centred FFT conventions, the SENSE operator and its normal operator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrecon.errors import OperatorShapeError
from medrecon.operators.mri import CartesianMRI, FFT2c, fft2c, ifft2c

SHAPES = [(8, 8), (7, 10), (5, 5), (6, 9)]


def _complex(shape, seed=0, dtype=torch.complex128):
    return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _fastmri_fft2c(x: np.ndarray) -> np.ndarray:
    """fastMRI's fft2c in numpy: ifftshift, orthonormal fft2, fftshift (last two axes)."""
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=axes), norm="ortho"),
                           axes=axes)


def _dft_matrix(n: int) -> np.ndarray:
    """The centred DFT of the module docstring: exp(-2 pi i (k - n//2)(m - n//2) / n) / sqrt(n)."""
    k = np.arange(n) - n // 2
    return np.exp(-2j * np.pi * np.outer(k, k) / n) / np.sqrt(n)


@pytest.mark.parametrize("shape", SHAPES)
def test_fft2c_matches_numpy_fastmri_convention(shape):
    x = _complex((3, *shape))
    np.testing.assert_allclose(fft2c(x).numpy(), _fastmri_fft2c(x.numpy()), atol=1e-12)
    np.testing.assert_allclose(ifft2c(x).numpy(),
                               np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(
                                   x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1)),
                               atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_fft2c_is_the_centred_dft_of_the_docstring(shape):
    x = _complex(shape, seed=1)
    dense = _dft_matrix(shape[0]) @ x.numpy() @ _dft_matrix(shape[1]).T
    np.testing.assert_allclose(fft2c(x).numpy(), dense, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_centred_delta_has_flat_kspace_and_constant_has_dc_at_centre(shape):
    h, w = shape
    delta = torch.zeros(shape, dtype=torch.complex128)
    delta[h // 2, w // 2] = 1
    np.testing.assert_allclose(fft2c(delta).numpy(), np.full(shape, 1 / np.sqrt(h * w)),
                               atol=1e-14)
    k = fft2c(torch.ones(shape, dtype=torch.complex128))
    expected = torch.zeros(shape, dtype=torch.complex128)
    expected[h // 2, w // 2] = np.sqrt(h * w)
    np.testing.assert_allclose(k.numpy(), expected.numpy(), atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_fft2c_is_unitary(shape):
    x = _complex((2, *shape), seed=2)
    k = fft2c(x)
    torch.testing.assert_close(ifft2c(k), x)
    torch.testing.assert_close(torch.linalg.vector_norm(k), torch.linalg.vector_norm(x))
    assert torch.equal(FFT2c(shape, torch.complex128).normal(x), x)


def _mask_2d(shape, seed=3):
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


@pytest.mark.parametrize("coils", [0, 4])
@pytest.mark.parametrize("mask_kind", ["columns", "2d", "none"])
def test_forward_matches_numpy_model(coils, mask_kind):
    h, w = 7, 10
    mask = {"columns": _mask_2d((w,)), "2d": _mask_2d((h, w)), "none": None}[mask_kind]
    maps = _complex((coils, h, w), seed=4) if coils else None
    A = CartesianMRI((h, w), mask, maps, dtype=torch.complex128)
    x = _complex((2, h, w), seed=5)
    coil_images = x.numpy() if maps is None else maps.numpy()[None] * x.numpy()[:, None]
    expected = _fastmri_fft2c(coil_images) * (1.0 if mask is None else mask.numpy())
    np.testing.assert_allclose(A(x).numpy(), expected, atol=1e-12)
    assert A.range_shape == ((coils, h, w) if coils else (h, w))


class _FFTCounter:
    def __init__(self, monkeypatch):
        self.calls = 0
        for name in ("fft2", "ifft2"):
            original = getattr(torch.fft, name)

            def counted(*args, _original=original, **kwargs):
                self.calls += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(torch.fft, name, counted)


@pytest.mark.parametrize("coils", [0, 4])
def test_normal_without_mask_needs_no_fft(monkeypatch, coils):
    maps = _complex((coils, 6, 8), seed=6) if coils else None
    x = _complex((6, 8), seed=7)
    for mask in (None, torch.ones(8)):
        A = CartesianMRI((6, 8), mask, maps, dtype=torch.complex128)
        assert A.mask is None
        counter = _FFTCounter(monkeypatch)
        normal = A.normal(x)
        assert counter.calls == 0
        gram = 1.0 if maps is None else (maps.abs() ** 2).sum(0)
        torch.testing.assert_close(normal, x * gram)
        monkeypatch.undo()
        torch.testing.assert_close(normal, A.adjoint(A(x)))


@pytest.mark.parametrize("coils", [0, 4])
def test_normal_with_mask_is_one_fft_pair(monkeypatch, coils):
    maps = _complex((coils, 6, 8), seed=8) if coils else None
    mask = _mask_2d((8,), seed=9)
    A = CartesianMRI((6, 8), mask, maps, dtype=torch.complex128)
    x = _complex((3, 6, 8), seed=10)
    counter = _FFTCounter(monkeypatch)
    normal = A.normal(x)
    assert counter.calls == 2          # one fft2 and one ifft2 over all coils and the batch
    monkeypatch.undo()
    # F^H M F for one coil: the projection onto the sampled columns
    coil_images = x if maps is None else maps * x[:, None]
    projected = ifft2c(fft2c(coil_images) * mask)
    expected = projected if maps is None else (maps.conj() * projected).sum(1)
    torch.testing.assert_close(normal, expected)
    torch.testing.assert_close(normal, A.adjoint(A(x)))


def test_sense_with_normalised_maps_and_full_sampling_is_an_isometry():
    maps = _complex((5, 6, 6), seed=11)
    maps = maps / torch.linalg.vector_norm(maps, dim=0, keepdim=True)
    A = CartesianMRI((6, 6), None, maps, dtype=torch.complex128)
    x = _complex((6, 6), seed=12)
    torch.testing.assert_close(A.normal(x), x)
    torch.testing.assert_close(A.adjoint(A(x)), x)


def test_constants_live_on_the_operator_device(device):
    maps = _complex((2, 6, 8), seed=13, dtype=torch.complex64)
    A = CartesianMRI((6, 8), _mask_2d((8,)), maps, device=device)
    assert A.maps.device.type == device.type and A.mask.device.type == device.type
    assert A.maps.dtype == torch.complex64 and A.mask.dtype == torch.float32
    x = _complex((6, 8), seed=14, dtype=torch.complex64).to(device)
    assert A(x).device.type == device.type


@pytest.mark.parametrize("kwargs, error, match", [
    ({"dtype": torch.float32}, ValueError, "complex"),
    ({"mask": torch.ones(7)}, OperatorShapeError, "mask"),
    ({"mask": torch.ones(3, 6, 8)}, OperatorShapeError, "mask"),
    ({"mask": torch.ones(8, dtype=torch.complex64)}, ValueError, "real"),
    ({"mask": torch.tensor([1.0] * 7 + [float("nan")])}, ValueError, "finite"),
    ({"maps": torch.ones(2, 6, 7, dtype=torch.complex64)}, OperatorShapeError, "coil maps"),
    ({"maps": torch.ones(6, 8, dtype=torch.complex64)}, OperatorShapeError, "coil maps"),
])
def test_bad_arguments_are_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        CartesianMRI((6, 8), **kwargs)


def test_bad_image_shape_is_rejected():
    with pytest.raises(OperatorShapeError, match="image shape"):
        CartesianMRI((6, 8, 2))
