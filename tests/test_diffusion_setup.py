"""Diffusion solvers on real problems: prior maps, noise estimates, default parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrecon.ct_pipeline import sinogram_noise
from medrecon.data.phantom import MU_WATER
from medrecon.data.sinogram import Sinogram
from medrecon.diffusion_setup import DEFAULTS, ct_prior, diffusion_params, mri_prior
from medrecon.mri_pipeline import kspace_noise
from medrecon.operators.base import MatrixOperator
from medrecon.operators.ct_geometry import CTGeometry
from medrecon.priors.gaussian import GaussianPrior
from medrecon.solvers.problem import Problem


def test_ct_prior_maps_hounsfield_units_to_attenuation():
    hu_prior = GaussianPrior(torch.zeros(4), 1.0)
    hu_prior.scale, hu_prior.offset = 1000.0, 0.0
    mapped = ct_prior(hu_prior, MU_WATER)
    for x, hu in ((0.0, 0.0), (-1.0, -1000.0), (1.0, 1000.0)):
        assert mapped.scale * x + mapped.offset == pytest.approx(MU_WATER * (1 + hu / 1000))
    x = torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(mapped(x, 0.3), hu_prior(x, 0.3))


def test_sinogram_noise_from_the_record_and_from_the_data():
    geometry = CTGeometry.parallel((32, 32), 90)
    data = np.zeros((90, geometry.n_detectors), dtype=np.float32)
    assert sinogram_noise(Sinogram(data, geometry, noise="gaussian:0.02")) == 0.02
    assert sinogram_noise(Sinogram(data + 1.0, geometry, noise="poisson:1e4")) == \
        pytest.approx(np.sqrt(np.e / 1e4))
    assert sinogram_noise(Sinogram(data, geometry, noise="none")) == 0.0
    noisy = np.random.default_rng(0).normal(0, 0.03, data.shape)
    assert sinogram_noise(Sinogram(noisy, geometry)) == pytest.approx(0.03, rel=0.05)


def test_kspace_noise_reads_the_periphery():
    g = torch.Generator().manual_seed(0)
    sigma = 0.01
    noise = sigma * torch.complex(torch.randn(4, 64, 64, generator=g),
                                  torch.randn(4, 64, 64, generator=g))
    radius = torch.linspace(-1, 1, 64).abs()[None, :] + torch.linspace(-1, 1, 64).abs()[:, None]
    signal = torch.exp(-20 * radius**2) * 100  # all of it near the centre
    estimate = kspace_noise(signal + noise, radius)
    assert estimate == pytest.approx(sigma, rel=0.1)


def _problem(complex_: bool = False) -> Problem:
    g = torch.Generator().manual_seed(1)
    dtype = torch.complex128 if complex_ else torch.float64
    A = torch.randn(20, 16, generator=g, dtype=dtype)
    return Problem(MatrixOperator(A), A @ torch.randn(16, generator=g, dtype=dtype), 0.01)


def test_default_parameters_scale_with_the_operator():
    problem = _problem()
    prior = GaussianPrior(torch.zeros(16, dtype=torch.float64), 1.0)
    prior.scale = 2.0
    norm = float(torch.linalg.matrix_norm(problem.operator.matrix, 2))
    dds = diffusion_params("dds", problem, prior)
    assert dds["gamma"] == pytest.approx(DEFAULTS["dds"]["gamma"] / (2 * norm) ** 2, rel=1e-3)
    assert len(dds["sigmas"]) == DEFAULTS["dds"]["steps"]
    rmpvi = diffusion_params("rmpvi", problem, prior, steps=4, inner_iter=2)
    assert rmpvi["zeta"] is None and rmpvi["inner_iter"] == 2 and len(rmpvi["sigmas"]) == 4
    assert rmpvi["x_init"].shape == (16,) and rmpvi["operator_norm"] == pytest.approx(norm)
    dps = diffusion_params("dps", problem, prior, zeta=0.3, n_samples=3)
    assert dps["zeta"] == 0.3 and dps["n_samples"] == 3 and "operator_norm" not in dps
    with pytest.raises(ValueError, match="unknown"):
        diffusion_params("tv", problem, prior)


def test_mri_prior_scale_is_the_images_99th_percentile():
    problem = _problem(complex_=True)
    prior = GaussianPrior(torch.zeros(16, dtype=torch.complex128), 1.0)
    mapped = mri_prior(prior, problem, n_iter=40)
    exact = torch.linalg.lstsq(problem.operator.matrix, problem.y[:, None]).solution[:, 0]
    assert mapped.scale == pytest.approx(float(torch.quantile(exact.abs(), 0.99)), rel=0.05)
    assert mapped.is_complex
