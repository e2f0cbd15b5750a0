"""Coil maps (ESPIRiT), RSS, coil compression and prewhitening against closed forms.

The phantom is an ellipse with inserts and a smooth phase, seen by eight coils
with smooth Gaussian magnitude and linear phase; its k-space is the fastMRI
centred orthonormal FFT (NumPy), and non-Cartesian samples are an exact DFT.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medrecon.operators.coils import (
    coil_compress,
    espirit_maps,
    espirit_maps_noncartesian,
    noise_covariance,
    prewhiten,
    rss,
)

N = 80
COILS = 8
CALIB = 24


def fft2c(x: np.ndarray) -> np.ndarray:
    """fastMRI's centred orthonormal 2D FFT over the last two axes."""
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=axes), norm="ortho"), axes=axes)


def make_phantom(n: int = N, coils: int = COILS):
    """(image, true maps, object support)."""
    y, x = np.mgrid[:n, :n]
    u, v = (x - n / 2) / (n / 2), (y - n / 2) / (n / 2)
    support = (u / 0.7) ** 2 + (v / 0.85) ** 2 <= 1
    bright = (u - 0.2) ** 2 / 0.09 + (v + 0.1) ** 2 / 0.04 <= 1
    dark = (u + 0.3) ** 2 / 0.02 + (v - 0.3) ** 2 / 0.05 <= 1
    image = support * (1 + 0.5 * bright - 0.4 * dark) * np.exp(1j * np.pi * 0.3 * u)
    angles = 2 * np.pi * np.arange(coils) / coils
    maps = np.stack([
        np.exp(-((u - 1.2 * np.cos(a)) ** 2 + (v - 1.2 * np.sin(a)) ** 2) / 1.5)
        * np.exp(1j * (a + 0.5 * u * np.sin(a) - 0.3 * v)) for a in angles])
    return image, maps, support


@pytest.fixture(scope="module")
def phantom():
    image, maps, support = make_phantom()
    coil_images = maps * image
    return {"coil_images": coil_images, "maps": maps, "support": support,
            "kspace": torch.from_numpy(fft2c(coil_images).astype(np.complex64))}


@pytest.fixture(scope="module")
def cartesian_maps(phantom) -> np.ndarray:
    return espirit_maps(phantom["kspace"], CALIB).numpy()


def projection_error(maps: np.ndarray, coil_images: np.ndarray, support: np.ndarray) -> float:
    """Relative error of ``S S^H x`` against the coil images ``x`` inside the object."""
    combined = np.sum(maps.conj() * coil_images, axis=0)
    residual = (maps * combined - coil_images)[:, support]
    return float(np.linalg.norm(residual) / np.linalg.norm(coil_images[:, support]))


def relative_to_coil0(maps: np.ndarray) -> np.ndarray:
    """Maps (coils, points) normalised to unit sum of squares, without coil 0's phase."""
    maps = maps / np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))
    return maps * np.exp(-1j * np.angle(maps[0]))


def radial(n: int, spokes: int) -> np.ndarray:
    """(2, spokes * 2n) radial trajectory in radians, samples offset by half a step."""
    radius = np.linspace(-np.pi, np.pi, 2 * n, endpoint=False) + np.pi / (2 * n)
    theta = np.arange(spokes) * np.pi / spokes
    return np.stack([np.outer(np.cos(theta), radius).ravel(),
                     np.outer(np.sin(theta), radius).ravel()])


def exact_dft(coil_images: np.ndarray, traj: np.ndarray) -> np.ndarray:
    """``y_c(k) = sum_x x_c(r) exp(-i k . (r - n/2)) / n``: the centred orthonormal FFT
    evaluated off the grid (rows of ``traj`` pair with image axes 0 and 1)."""
    coils, n, _ = coil_images.shape
    position = np.arange(n) - n // 2
    along0 = np.exp(-1j * np.outer(traj[0], position))
    along1 = np.exp(-1j * np.outer(traj[1], position))
    partial = (coil_images.reshape(-1, n) @ along1.T).reshape(coils, n, -1)
    return np.einsum("sx,cxs->cs", along0, partial) / n


# --------------------------------------------------------------------------- ESPIRiT


def test_espirit_maps_reproduce_coil_images(phantom, cartesian_maps):
    maps, support = cartesian_maps, phantom["support"]
    assert maps.shape == (COILS, N, N) and maps.dtype == np.complex64
    assert projection_error(maps, phantom["coil_images"], support) < 0.02   # measured 0.005
    sum_of_squares = np.sum(np.abs(maps) ** 2, axis=0)
    np.testing.assert_allclose(sum_of_squares[support], 1.0, atol=1e-4)
    truth = relative_to_coil0(phantom["maps"][:, support])
    error = np.linalg.norm(relative_to_coil0(maps[:, support]) - truth) / np.linalg.norm(truth)
    assert error < 0.02


def test_espirit_crops_outside_the_object(phantom, cartesian_maps):
    """With crop = 0.95 the maps vanish in the empty corners; with crop = 0 they do not."""
    corners = np.zeros((N, N), dtype=bool)
    corners[:4, :4] = corners[:4, -4:] = corners[-4:, :4] = corners[-4:, -4:] = True
    assert np.abs(cartesian_maps[:, corners]).max() == 0
    uncropped = espirit_maps(phantom["kspace"], CALIB, crop=0.0).numpy()
    assert np.abs(uncropped[:, corners]).max() > 0.1


def test_espirit_keeps_dtype_and_device(phantom, device):
    kspace = phantom["kspace"].to(device=device, dtype=torch.complex128)
    maps = espirit_maps(kspace, CALIB, max_iter=30)
    assert maps.device.type == device.type and maps.dtype == torch.complex128
    error = projection_error(maps.cpu().numpy(), phantom["coil_images"], phantom["support"])
    assert error < 0.02


@pytest.mark.parametrize(("kspace", "calib", "kernel", "message"), [
    (torch.zeros(N, N, dtype=torch.complex64), CALIB, 6, "coils, H, W"),
    (torch.zeros(COILS, N, N), CALIB, 6, "complex"),
    (torch.ones(COILS, 16, 40, dtype=torch.complex64), 24, 6, "larger than the k-space"),
    (torch.ones(COILS, N, N, dtype=torch.complex64), 6, 6, "must exceed kernel_width"),
])
def test_espirit_rejects_bad_input(kspace, calib, kernel, message):
    with pytest.raises(ValueError, match=message):
        espirit_maps(kspace, calib, kernel_width=kernel)


def test_espirit_rejects_undersampled_calibration(phantom):
    kspace = phantom["kspace"].clone()
    kspace[:, :, N // 2 + 3] = 0
    with pytest.raises(ValueError, match="not fully sampled"):
        espirit_maps(kspace, CALIB)
    assert espirit_maps(kspace, 4, kernel_width=3, max_iter=1).shape == kspace.shape


def test_exact_dft_matches_the_centred_fft(phantom):
    """The test's off-grid DFT is the centred FFT at grid points (k = 2 pi m / n)."""
    m = np.array([-N // 2, -3, 0, 5, N // 2 - 1])
    traj = 2 * np.pi * np.stack([np.repeat(m, m.size), np.tile(m, m.size)]) / N
    expected = fft2c(phantom["coil_images"])[:, (traj[0] * N / (2 * np.pi)).round().astype(int)
                                              + N // 2,
                                             (traj[1] * N / (2 * np.pi)).round().astype(int)
                                             + N // 2]
    np.testing.assert_allclose(exact_dft(phantom["coil_images"], traj), expected, atol=1e-10)


@pytest.fixture(scope="module")
def radial_data(phantom):
    traj = radial(N, spokes=64)
    kdata = exact_dft(phantom["coil_images"], traj)
    return (torch.from_numpy(kdata.astype(np.complex64)),
            torch.from_numpy(traj.astype(np.float32)))


def test_noncartesian_espirit_matches_cartesian(phantom, cartesian_maps, radial_data):
    kdata, traj = radial_data
    maps = espirit_maps_noncartesian(kdata, traj, (N, N), CALIB).numpy()
    support = phantom["support"]
    assert projection_error(maps, phantom["coil_images"], support) < 0.02   # measured 0.005
    difference = np.linalg.norm((maps - cartesian_maps)[:, support])
    assert difference / np.linalg.norm(cartesian_maps[:, support]) < 0.01  # measured 6e-4


def test_noncartesian_espirit_with_density_compensation(phantom, radial_data):
    """One-step gridding with the analytic radial density |k| is good enough for ESPIRiT."""
    kdata, traj = radial_data
    dcf = torch.linalg.vector_norm(traj, dim=0)
    maps = espirit_maps_noncartesian(kdata, traj, (N, N), CALIB, dcf=dcf).numpy()
    assert projection_error(maps, phantom["coil_images"], phantom["support"]) < 0.05


@pytest.mark.parametrize(("change", "message"), [
    (lambda k, t: (k[0], t), "coils, samples"),
    (lambda k, t: (k, t[:, :-1]), "traj must be"),
    (lambda k, t: (k, t * 1.1), r"\[-pi, pi\]"),
    (lambda k, t: (k[:, :100], t[:, :100] * 0 + 3.0), "calibration region"),
])
def test_noncartesian_espirit_rejects_bad_input(radial_data, change, message):
    kdata, traj = change(*radial_data)
    with pytest.raises(ValueError, match=message):
        espirit_maps_noncartesian(kdata, traj, (N, N), CALIB)


def test_noncartesian_espirit_rejects_large_calibration(radial_data):
    with pytest.raises(ValueError, match="larger than the k-space"):
        espirit_maps_noncartesian(*radial_data, (16, 16), CALIB)


# --------------------------------------------------------------------------- RSS


def test_rss_closed_form(generator):
    x = torch.randn(3, 5, 4, dtype=torch.complex128, generator=generator)
    expected = np.sqrt(np.sum(np.abs(x.numpy()) ** 2, axis=1))
    np.testing.assert_allclose(rss(x, dim=1).numpy(), expected, rtol=1e-12)
    assert rss(torch.tensor([[3.0, 0.0], [4.0, -2.0]])).tolist() == [5.0, 2.0]


# --------------------------------------------------------------------------- compression


def test_coil_compress_energy_against_numpy_svd(phantom):
    kspace = phantom["kspace"]
    singular = np.linalg.svd(kspace.numpy().reshape(COILS, -1).astype(np.complex128),
                             compute_uv=False)
    for n_virtual in (1, 3, 5):
        result = coil_compress(kspace, n_virtual)
        expected = np.sum(singular[:n_virtual] ** 2) / np.sum(singular**2)
        assert result.kspace.shape == (n_virtual, N, N)
        assert result.energy == pytest.approx(expected, rel=1e-9)
        kept = torch.sum(result.kspace.abs().double() ** 2) / torch.sum(kspace.abs().double() ** 2)
        assert float(kept) == pytest.approx(expected, rel=1e-5)
        gram = result.matrix.to(torch.complex128) @ result.matrix.to(torch.complex128).mH
        torch.testing.assert_close(gram, torch.eye(n_virtual, dtype=torch.complex128),
                                   atol=1e-6, rtol=0)


def test_coil_compress_is_exact_with_all_coils(phantom, device):
    kspace = phantom["kspace"].to(device)
    result = coil_compress(kspace, COILS)
    assert result.energy == pytest.approx(1.0, abs=1e-12)
    assert result.kspace.device.type == device.type
    restored = torch.einsum("vc,vhw->chw", result.matrix.conj(), result.kspace)
    torch.testing.assert_close(restored, kspace, atol=1e-5, rtol=1e-5)


def test_coil_compress_recovers_low_rank_data(generator):
    """Eight coils mixing three independent sources compress to three without loss."""
    sources = torch.randn(2, 3, 16, 16, dtype=torch.complex128, generator=generator)
    mixing = torch.randn(8, 3, dtype=torch.complex128, generator=generator)
    data = torch.einsum("cs,bshw->bchw", mixing, sources)          # (batch, coils, H, W)
    result = coil_compress(data, 3, coil_dim=1)
    assert result.kspace.shape == (2, 3, 16, 16)
    assert result.energy == pytest.approx(1.0, abs=1e-12)
    restored = torch.einsum("vc,bvhw->bchw", result.matrix.conj(), result.kspace)
    torch.testing.assert_close(restored, data, atol=1e-10, rtol=1e-10)


def test_coil_compress_commutes_with_the_fourier_transform(phantom):
    result = coil_compress(phantom["kspace"], 4)
    images = torch.from_numpy(phantom["coil_images"].astype(np.complex64))
    compressed_images = torch.einsum("vc,chw->vhw", result.matrix, images)
    torch.testing.assert_close(torch.from_numpy(fft2c(compressed_images.numpy())),
                               result.kspace, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("n_virtual", "shape", "message"), [
    (9, (8, 4, 4), "between 1 and the number of coils"),
    (0, (8, 4, 4), "between 1 and the number of coils"),
    (2, (8,), "coil dimension"),
])
def test_coil_compress_rejects_bad_input(n_virtual, shape, message):
    with pytest.raises(ValueError, match=message):
        coil_compress(torch.ones(shape, dtype=torch.complex64), n_virtual)


# --------------------------------------------------------------------------- noise


def correlated_noise(generator, coils=6, samples=200_000):
    factor = torch.randn(coils, coils, dtype=torch.complex128, generator=generator)
    factor = torch.tril(factor) + coils * torch.eye(coils)
    white = torch.randn(coils, samples, dtype=torch.complex128, generator=generator)
    return factor @ white, factor @ factor.mH


def test_noise_covariance_estimates_the_true_covariance(generator):
    noise, psi = correlated_noise(generator)
    estimate = noise_covariance(noise)
    assert estimate.dtype == torch.complex128
    error = torch.linalg.matrix_norm(estimate - psi) / torch.linalg.matrix_norm(psi)
    assert float(error) < 0.01    # sampling error ~ 1 / sqrt(samples)
    expected = noise.numpy() @ noise.numpy().conj().T / noise.shape[1]
    np.testing.assert_allclose(estimate.numpy(), expected, rtol=1e-12)


def test_prewhitened_noise_has_identity_covariance(generator, device):
    noise, psi = correlated_noise(generator)
    noise = noise.to(torch.complex64).to(device)
    estimate = noise_covariance(noise)
    white = prewhiten(noise, estimate)
    assert white.device.type == device.type and white.dtype == torch.complex64
    torch.testing.assert_close(noise_covariance(white).cpu(),
                               torch.eye(6, dtype=torch.complex64), atol=1e-5, rtol=0)
    with_truth = noise_covariance(prewhiten(noise, psi.to(device))).cpu().to(torch.complex128)
    assert float(torch.linalg.matrix_norm(with_truth - torch.eye(6))) < 0.02


def test_prewhiten_matches_inverse_cholesky_and_coil_dim(generator):
    _, psi = correlated_noise(generator, coils=4, samples=4)
    data = torch.randn(3, 4, 5, dtype=torch.complex128, generator=generator)  # (slices, coils, n)
    inverse = np.linalg.inv(np.linalg.cholesky(psi.numpy()))
    expected = np.einsum("dc,scn->sdn", inverse, data.numpy())
    np.testing.assert_allclose(prewhiten(data, psi, coil_dim=1).numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize(("covariance", "message"), [
    (torch.eye(3, dtype=torch.complex64), r"must be \(4, 4\)"),
    (torch.eye(4, dtype=torch.complex64) + torch.triu(torch.ones(4, 4), 1), "not Hermitian"),
    (torch.diag(torch.tensor([1.0, 1.0, 0.0, -1.0])).to(torch.complex64), "positive definite"),
])
def test_prewhiten_rejects_bad_covariance(covariance, message):
    with pytest.raises(ValueError, match=message):
        prewhiten(torch.ones(4, 10, dtype=torch.complex64), covariance)


def test_noise_covariance_needs_enough_samples():
    with pytest.raises(ValueError, match="at least as many noise samples as coils"):
        noise_covariance(torch.ones(8, 5, dtype=torch.complex64))
    assert math.isclose(float(noise_covariance(torch.ones(2, 2)).abs().sum()), 4.0)
