"""Studies: prior maps, noise estimates, and settings that do not depend on an
operator's scaling (the relative weights of :mod:`medrecon.methods`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medrecon.data.mr_phantom import mr_phantom
from medrecon.data.phantom import MU_WATER
from medrecon.data.sinogram import Sinogram
from medrecon.methods import METHODS
from medrecon.operators.base import MatrixOperator
from medrecon.operators.ct_geometry import CTGeometry
from medrecon.operators.mri import CartesianMRI
from medrecon.operators.nufft import NonCartesianMRI
from medrecon.operators.sampling import radial_trajectory
from medrecon.priors.gaussian import GaussianPrior
from medrecon.solvers.problem import Problem
from medrecon.studies.ct import CTTask, ct_prior, sinogram_noise
from medrecon.studies.mri import (
    PRIOR_QUANTILE,
    MRITask,
    background_noise,
    kspace_noise,
    mri_prior,
    sampled_columns,
)


# ----------------------------------------------------------------------- CT prior and noise
def test_ct_prior_maps_hounsfield_units_to_attenuation():
    hu_prior = GaussianPrior(torch.zeros(4), 1.0)
    hu_prior.scale, hu_prior.offset = 1000.0, 0.0
    mapped = ct_prior(hu_prior, MU_WATER)
    for x, hu in ((0.0, 0.0), (-1.0, -1000.0), (1.0, 1000.0)):
        assert mapped.scale * x + mapped.offset == pytest.approx(MU_WATER * (1 + hu / 1000))
    x = torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(mapped(x, 0.3), hu_prior(x, 0.3))


def test_ct_task_maps_the_prior_with_the_sinograms_water():
    geometry = CTGeometry.parallel((32, 32), 90)
    data = np.zeros((90, geometry.n_detectors), dtype=np.float32)
    sinogram = Sinogram(data, geometry, noise="gaussian:0.02")
    hu_prior = GaussianPrior(torch.zeros(4), 1.0)
    hu_prior.scale, hu_prior.offset = 1000.0, -1000.0
    task = CTTask(None, sinogram, sigma_y=None)
    mapped, expected = task.prior_in_units(hu_prior), ct_prior(hu_prior, sinogram.mu_water)
    assert (mapped.scale, mapped.offset) == (expected.scale, expected.offset)
    assert task.noise_level() == 0.02  # from the record, as no sigma_y is given
    assert CTTask(None, sinogram, sigma_y=0.5).noise_level() == 0.5


def test_sinogram_noise_from_the_record_and_from_the_data():
    geometry = CTGeometry.parallel((32, 32), 90)
    data = np.zeros((90, geometry.n_detectors), dtype=np.float32)
    assert sinogram_noise(Sinogram(data, geometry, noise="gaussian:0.02")) == 0.02
    assert sinogram_noise(Sinogram(data + 1.0, geometry, noise="poisson:1e4")) == \
        pytest.approx(np.sqrt(np.e / 1e4))
    assert sinogram_noise(Sinogram(data, geometry, noise="none")) == 0.0
    noisy = np.random.default_rng(0).normal(0, 0.03, data.shape)
    assert sinogram_noise(Sinogram(noisy, geometry)) == pytest.approx(0.03, rel=0.05)


# ----------------------------------------------------------------------- MRI prior and noise
def test_kspace_noise_reads_the_periphery():
    g = torch.Generator().manual_seed(0)
    sigma = 0.01
    noise = sigma * torch.complex(torch.randn(4, 64, 64, generator=g),
                                  torch.randn(4, 64, 64, generator=g))
    radius = torch.linspace(-1, 1, 64).abs()[None, :] + torch.linspace(-1, 1, 64).abs()[:, None]
    signal = torch.exp(-20 * radius**2) * 100  # all of it near the centre
    estimate = kspace_noise(signal + noise, radius)
    assert estimate == pytest.approx(sigma, rel=0.1)


def test_background_noise_reads_the_empty_rows_where_the_periphery_has_signal():
    """A sharp-edged phantom at low noise fills the k-space periphery with signal:
    :func:`kspace_noise` reads many times the noise there, the empty image rows of the
    fully sampled columns read it within a few per cent; the task takes the smaller."""
    from medrecon.data.kspace_simulate import simulate_kspace

    sigma = 1e-3
    sim = simulate_kspace(mr_phantom(128, seed=1)[None], coils=4, pattern="random",
                          acceleration=4.0, center_fraction=0.1, sigma=sigma, seed=1)
    y, mask = torch.from_numpy(sim.kspace[0]), torch.from_numpy(sim.mask)
    k = (torch.arange(128) - 64) / 128
    radius = torch.hypot(k[:, None], k[None, :])
    columns = sampled_columns(mask, (128, 128))
    assert torch.equal(columns, mask.bool())
    assert kspace_noise(y, radius) > 3 * sigma
    assert background_noise(y, columns) == pytest.approx(sigma, rel=0.05)
    maps = torch.ones(4, 128, 128, dtype=torch.complex64) / 2
    task = MRITask(Problem(CartesianMRI((128, 128), mask=mask, maps=maps), y), radius, 1.0,
                   columns)
    assert task.estimated_noise() == pytest.approx(sigma, rel=0.05)
    assert MRITask(task.problem, radius, 1.0).estimated_noise() == kspace_noise(y, radius)


def test_sampled_columns_of_masks():
    columns = torch.tensor([1, 0, 1, 1, 0], dtype=torch.bool)
    assert torch.equal(sampled_columns(columns, (4, 5)), columns)
    assert torch.equal(sampled_columns(columns.expand(4, 5), (4, 5)), columns)
    assert bool(sampled_columns(None, (4, 5)).all())
    scattered = torch.eye(5, dtype=torch.bool)[:4]  # no column is complete
    assert sampled_columns(scattered, (4, 5)) is None


def _matrix_task(seed: int = 1) -> MRITask:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(40, 16, generator=g, dtype=torch.complex128)
    y = A @ torch.randn(16, generator=g, dtype=torch.complex128)
    return MRITask(Problem(MatrixOperator(A), y), torch.arange(40.0), scale=1.0)


def test_mri_prior_scale_is_the_images_99th_percentile():
    task = _matrix_task()
    prior = GaussianPrior(torch.zeros(16, dtype=torch.complex128), 1.0)
    prior.scale, prior.offset = 2.0, 0.5
    rough = task.rough_image()
    mapped = mri_prior(prior, rough)
    reference = float(torch.quantile(rough.abs(), PRIOR_QUANTILE))
    assert mapped.scale == pytest.approx(2.0 * reference) and \
        mapped.offset == pytest.approx(0.5 * reference)
    assert mapped.is_complex
    # the task maps its prior by its own rough image, which is near the data's solution
    in_units = task.prior_in_units(prior)
    assert in_units.scale == pytest.approx(mapped.scale)
    A = task.problem.operator.matrix
    exact = torch.linalg.lstsq(A, task.problem.y[:, None]).solution[:, 0]
    assert reference == pytest.approx(float(torch.quantile(exact.abs(), PRIOR_QUANTILE)),
                                      rel=0.1)


def test_rough_image_and_norm_are_computed_once_per_task(monkeypatch):
    task = _matrix_task()
    calls = []
    real = task.problem.operator.norm
    monkeypatch.setattr(task.problem.operator, "norm",
                        lambda **kw: calls.append(1) or real(**kw))
    first = task.operator_norm()
    assert task.operator_norm() == first and len(calls) == 1
    assert task.rough_image() is task.rough_image()
    assert first == pytest.approx(float(torch.linalg.matrix_norm(
        task.problem.operator.matrix, 2)), rel=1e-4)


# ----------------------------------------------------------------------- operator scaling
SIZE = 32


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def _radial_tasks(c: float = 5.0) -> tuple[MRITask, MRITask]:
    """A radial 2-coil scan and the same scan through ``c A`` with data ``c y``."""
    from medrecon.data.kspace_simulate import coil_maps

    image = torch.as_tensor(mr_phantom(SIZE, seed=3), dtype=torch.complex64)
    traj = radial_trajectory(24, 2 * SIZE, (SIZE, SIZE))
    A = NonCartesianMRI((SIZE, SIZE), traj, coil_maps(2, (SIZE, SIZE)).to(torch.complex64))
    g = torch.Generator().manual_seed(0)
    y = A(image)
    y = y + 1e-3 * float(y.abs().max()) * torch.complex(
        torch.randn(y.shape, generator=g), torch.randn(y.shape, generator=g))
    radius = torch.linalg.vector_norm(traj, dim=0)
    return (MRITask(Problem(A, y), radius, 1.0),
            MRITask(Problem(A * c, c * y), radius, 1.0))


QUICK_SETTINGS = {  # weights where the regularisation shows (checked: absolute weights fail)
    "cgsense": {"iterations": 15}, "tv": {"iterations": 20},
    "l1wavelet": {"iterations": 20, "weight": 1e-2},
    "dds": {"steps": 3, "cg_iter": 5, "relative_gamma": 1.0}}


@pytest.mark.parametrize("name", sorted(QUICK_SETTINGS))
def test_relative_weights_ignore_the_operators_scaling(name):
    """One relative weight means one image, whatever the operator's scaling (the old
    absolute weights gave a 25 times stronger or weaker regularisation here)."""
    plain, scaled = _radial_tasks(5.0)
    assert scaled.operator_norm() == pytest.approx(5.0 * plain.operator_norm(), rel=1e-4)
    record = METHODS[name]
    params = record.parameters("mri", QUICK_SETTINGS[name])
    prior = GaussianPrior(torch.zeros(SIZE, SIZE, dtype=torch.complex64), 1.0) \
        if record.needs_prior else None
    images = [record.run(task, params, prior=prior,
                         generator=torch.Generator().manual_seed(0)).image
              for task in (plain, scaled)]
    assert _relative_difference(images[1], images[0]) < 1e-3


def test_cartesian_and_nufft_operators_of_one_scan_agree():
    """A fully sampled 32 x 32 scan through the orthonormal FFT and through the NUFFT
    at the same grid points, plain (this NUFFT is normalised like the FFT: both norms
    are 1) and scaled by ``sqrt(N) = 32`` as an unnormalised NUFFT would be (e.g.
    torchkbnufft's default): CG-SENSE with one relative weight gives one image. A strong
    weight (1) makes the point: with it absolute, the Cartesian image would be halved
    and the scaled NUFFT one nearly not."""
    image = torch.as_tensor(mr_phantom(SIZE, seed=3), dtype=torch.complex64)
    cartesian = CartesianMRI((SIZE, SIZE))
    k = 2 * math.pi * (torch.arange(SIZE, dtype=torch.float32) - SIZE // 2) / SIZE
    grid = torch.stack(torch.meshgrid(k, k, indexing="ij")).reshape(2, -1)
    nufft = NonCartesianMRI((SIZE, SIZE), grid)
    radius = torch.linalg.vector_norm(grid, dim=0)
    tasks = [MRITask(Problem(A, A(image)), r, 1.0)
             for A, r in ((cartesian, radius.reshape(SIZE, SIZE)), (nufft, radius),
                          (nufft * float(SIZE), radius))]
    norms = [task.operator_norm() for task in tasks]
    assert norms[0] == pytest.approx(1.0, rel=1e-3) and norms[1] == pytest.approx(1.0, rel=1e-2)
    assert norms[2] == pytest.approx(SIZE * norms[1], rel=1e-4)
    cgsense = METHODS["cgsense"]
    params = cgsense.parameters("mri", {"weight": 1.0, "noise_weight": 0.0})  # noiseless
    images = [cgsense.run(task, params).image for task in tasks]
    assert _relative_difference(images[0], image / 2) < 0.02
    assert _relative_difference(images[1], images[0]) < 0.02
    assert _relative_difference(images[2], images[0]) < 0.02
