"""Metrics against scikit-image (the reference fastMRI uses) and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medrecon.metrics import data_residual, nmse, psnr, ssim
from medrecon.operators.base import MatrixOperator


def _structured(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth ramp with a bright rectangle and a disk, plus mild texture."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    image = 0.3 * rows / shape[0] + 0.2 * np.sin(cols / 5.0)
    image[shape[0] // 4: shape[0] // 2, shape[1] // 3: 2 * shape[1] // 3] += 1.0
    image[(rows - 0.7 * shape[0]) ** 2 + (cols - 0.3 * shape[1]) ** 2 < (shape[0] / 6) ** 2] -= 0.5
    return image + 0.01 * rng.standard_normal(shape)


def _pairs():
    rng = np.random.default_rng(0)
    random = rng.random((40, 33))
    structured = _structured((64, 48), 1)
    return [
        ("random", random, random + 0.1 * rng.standard_normal(random.shape)),
        ("structured", structured, structured + 0.05 * rng.standard_normal(structured.shape)),
        ("structured-blurred", structured,
         0.5 * (structured + np.roll(structured, 1, axis=1))),
    ]


@pytest.mark.parametrize("name,ref,x", _pairs(), ids=[p[0] for p in _pairs()])
def test_psnr_and_ssim_match_skimage(name, ref, x):
    for data_range in (float(ref.max() - ref.min()), float(ref.max()), 2.0):
        expected_psnr = peak_signal_noise_ratio(ref, x, data_range=data_range)
        expected_ssim = structural_similarity(ref, x, win_size=7, data_range=data_range)
        assert float(psnr(torch.from_numpy(x), torch.from_numpy(ref), data_range)) == \
            pytest.approx(expected_psnr, rel=1e-5, abs=1e-5)
        assert float(ssim(torch.from_numpy(x), torch.from_numpy(ref), data_range)) == \
            pytest.approx(expected_ssim, rel=1e-5, abs=1e-5)
    # default data range: max - min of the reference; numpy arrays accepted
    assert float(psnr(x, ref)) == pytest.approx(
        peak_signal_noise_ratio(ref, x, data_range=ref.max() - ref.min()), rel=1e-5)
    assert float(ssim(x, ref)) == pytest.approx(
        structural_similarity(ref, x, win_size=7, data_range=ref.max() - ref.min()), rel=1e-5)


def test_ssim_of_a_volume_is_the_mean_over_slices():
    """fastMRI: per-slice SSIM with the volume's data range, averaged over slices."""
    rng = np.random.default_rng(2)
    ref = np.stack([_structured((32, 40), s) for s in range(3)])
    x = ref + 0.05 * rng.standard_normal(ref.shape)
    data_range = float(ref.max())
    expected = np.mean([structural_similarity(r, p, win_size=7, data_range=data_range)
                        for r, p in zip(ref, x)])
    assert float(ssim(torch.from_numpy(x), torch.from_numpy(ref), data_range)) == \
        pytest.approx(expected, rel=1e-5)
    # a (batch, slice) layout gives the same mean
    assert float(ssim(x[None], ref[None], data_range)) == pytest.approx(expected, rel=1e-5)
    # PSNR over the whole volume, as fastMRI's per-volume PSNR
    assert float(psnr(x, ref, data_range)) == pytest.approx(
        peak_signal_noise_ratio(ref, x, data_range=data_range), rel=1e-5)


def test_complex_inputs_by_magnitude():
    rng = np.random.default_rng(3)
    ref = _structured((32, 32), 4) * np.exp(1j * rng.uniform(0, 2 * np.pi, (32, 32)))
    x = ref + 0.05 * (rng.standard_normal(ref.shape) + 1j * rng.standard_normal(ref.shape))
    mag_ref, mag_x = np.abs(ref), np.abs(x)
    data_range = float(mag_ref.max())
    assert float(ssim(torch.from_numpy(x), torch.from_numpy(ref), data_range)) == \
        pytest.approx(structural_similarity(mag_ref, mag_x, win_size=7, data_range=data_range),
                      rel=1e-5)
    assert float(psnr(x, ref, data_range)) == pytest.approx(
        peak_signal_noise_ratio(mag_ref, mag_x, data_range=data_range), rel=1e-5)
    assert float(nmse(x, ref)) == pytest.approx(
        np.sum((mag_x - mag_ref) ** 2) / np.sum(mag_ref**2), rel=1e-12)


def test_closed_forms():
    ref = torch.zeros(16, 16, dtype=torch.float64)
    ref[4:12, 4:12] = 2.0
    x = ref + 0.2
    assert float(psnr(x, ref)) == pytest.approx(20.0)  # range 2, error 0.2 everywhere
    assert float(nmse(x, ref)) == pytest.approx(256 * 0.04 / (64 * 4.0))
    assert float(ssim(ref, ref)) == pytest.approx(1.0)
    assert float(psnr(ref, ref)) == float("inf")
    assert float(nmse(ref, ref)) == 0.0


def test_data_residual_per_item():
    m = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    A = MatrixOperator(m)
    x = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 2.0, 2.0], [3.0, 0.0, 4.0]], dtype=torch.float64)
    residual = data_residual(A, x, y)
    assert residual.shape == (2,)
    torch.testing.assert_close(residual, torch.tensor([0.0, 1.0], dtype=torch.float64))


def test_bad_input():
    with pytest.raises(ValueError, match="differ"):
        psnr(torch.zeros(4, 4), torch.zeros(4, 5))
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(torch.zeros(6, 9), torch.zeros(6, 9), data_range=1.0)
