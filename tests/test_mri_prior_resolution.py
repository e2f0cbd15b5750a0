"""Prior-resolution matching (medrecon.studies.mri_resolution): DDS on a finer image grid
for MRI images smaller than the prior's training images."""

from __future__ import annotations

import pytest
import torch

from medrecon.methods import METHODS, dds_gamma
from medrecon.operators.kspace_crop import KSpaceCrop
from medrecon.operators.mri import CartesianMRI, fft2c, ifft2c
from medrecon.studies import problem_of
from medrecon.studies.mri import MRITask, kspace_radius
from medrecon.studies.mri_resolution import (
    PRIOR_TRAINING_SIZE,
    PriorGridTask,
    prior_grid_task,
    prior_training_size,
    resolution_factor,
)


def _random(shape, seed, dtype=torch.complex128):
    return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("fine, coarse", [((16, 16), (8, 8)), ((15, 22), (7, 10)),
                                          ((12, 9), (12, 9))])
def test_crop_is_the_adjoint_of_zero_padding(fine, coarse):
    """``C^H`` is the zero-padding of the centred k-space times ``s`` (built here by hand,
    DC to DC), in float64 to rounding; ``C`` keeps a constant image's intensity and
    undoes the intensity-preserving upsampling; ``C C^H = s^2 I``."""
    C = KSpaceCrop(fine, coarse, dtype=torch.complex128)
    x, y = _random(fine, 0), _random(coarse, 1)
    s = (coarse[0] * coarse[1] / (fine[0] * fine[1])) ** 0.5
    padded = torch.zeros(fine, dtype=torch.complex128)
    top, left = fine[0] // 2 - coarse[0] // 2, fine[1] // 2 - coarse[1] // 2
    padded[top:top + coarse[0], left:left + coarse[1]] = fft2c(y)
    by_hand = s * ifft2c(padded)
    assert torch.allclose(C.H(y), by_hand, atol=1e-14)
    lhs, rhs = torch.vdot(C(x).flatten(), y.flatten()), torch.vdot(x.flatten(),
                                                                   C.H(y).flatten())
    assert abs(lhs - rhs) <= 1e-13 * x.norm() * y.norm()
    assert torch.allclose(C(C.H(y)), s**2 * y, atol=1e-13)
    constant = torch.full(fine, 0.7 - 0.2j, dtype=torch.complex128)
    assert torch.allclose(C(constant), torch.full(coarse, 0.7 - 0.2j, dtype=torch.complex128),
                          atol=1e-13)
    assert torch.allclose(C(C.upsample(y)), y, atol=1e-13)


def test_factor_is_the_power_of_two_nearest_the_training_size():
    """The grid aims at half the training size (128 for the default prior)."""
    assert resolution_factor((64, 64), 256) == 2
    assert resolution_factor((32, 32), 256) == 4
    assert resolution_factor((128, 128), 256) == 1
    assert resolution_factor((256, 256), 256) == 1
    assert resolution_factor((320, 320), 256) == 1
    assert resolution_factor((48, 48), 256) == 2  # 96 is nearer 128 in ratio than 192
    assert resolution_factor((8, 8), 256) == 8  # at most MAX_FACTOR
    assert resolution_factor((64, 64), 256, fraction=1.0) == 4
    assert prior_training_size(None) == PRIOR_TRAINING_SIZE == 256

    class Sized:
        training_size = 128

    assert prior_training_size(Sized()) == 128


def _task(size: int, seed: int = 0, sigma: float = 1e-3) -> MRITask:
    from medrecon.data.kspace_simulate import coil_maps

    maps = coil_maps(4, (size, size))
    mask = (torch.rand(size, size, generator=torch.Generator().manual_seed(seed)) < 0.3).float()
    A = CartesianMRI((size, size), mask=mask, maps=maps)
    x = torch.zeros(size, size, dtype=torch.complex64)
    x[size // 4:-size // 4, size // 4:-size // 4] = 1.0
    y = A(x) + sigma * mask * _random(A.range_shape, seed + 1, torch.complex64)

    class Shape:  # the two attributes kspace_radius reads of a file
        trajectory = None
        shape = (4, size, size)

    return MRITask(problem_of(A, y), kspace_radius(Shape(), torch.device("cpu")), 1.0)


@pytest.fixture(scope="module")
def prior():
    from medrecon.priors.defaults import load_named_prior

    return load_named_prior("default", "mri")[0]


def test_a_256_study_is_untouched(prior):
    """At the prior's training size DDS solves the study's own problem, with the weight
    it had before."""
    task = _task(256)
    assert prior_grid_task(task, prior) is None and task.prior_grid_task(prior) is None
    params = METHODS["dds"].parameters("mri")
    problem, arguments = METHODS["dds"].prepare(task, params, prior, None)
    assert problem.operator is task.problem.operator
    assert task.prior_grid is None
    denoiser = task.prior_in_units(prior)
    assert arguments["gamma"] == dds_gamma(task, params, denoiser)


def test_a_64_study_runs_on_the_prior_grid_with_the_same_data_weight(prior):
    """A 64 x 64 task: DDS gets ``A C`` on the prior's grid, ``||A C|| = ||A|| / f``, the
    coarse task's data weight (``r^2 / sigma_y^2`` does not depend on the grid) and
    prior mapping."""
    task = _task(64)
    params = METHODS["dds"].parameters("mri")
    problem, arguments = METHODS["dds"].prepare(task, params, prior, None)
    fine = task.prior_grid
    assert isinstance(fine, PriorGridTask) and fine.grid_factor == 2
    assert problem.operator.domain_shape == (128, 128)
    assert fine.operator_norm() == pytest.approx(task.operator_norm() / 2, rel=1e-12)
    generator = torch.Generator().manual_seed(0)
    assert float(problem.operator.norm(generator=generator)) == pytest.approx(
        task.operator_norm() / 2, rel=5e-3)  # power iteration, from below
    denoiser = task.prior_in_units(prior)
    assert arguments["gamma"] == pytest.approx(dds_gamma(task, params, denoiser), rel=1e-12)
    assert arguments["denoiser"].scale == denoiser.scale
    # the fine problem's data residual of the upsampled truth is the coarse one's
    x = _random((64, 64), 3, torch.complex64)
    assert torch.allclose(problem.operator(fine.crop.upsample(x)), task.problem.operator(x),
                          atol=1e-5)
    # a noisy scan keeps its lower weight: 2e-2 is above reference_noise per pixel
    noisy = _task(64, sigma=2e-2)
    _, loud = METHODS["dds"].prepare(noisy, params, prior, None)
    assert loud["gamma"] == pytest.approx(
        dds_gamma(noisy, params, noisy.prior_in_units(prior)), rel=1e-12)
    assert loud["gamma"] < arguments["gamma"]


def test_dds_on_the_prior_grid_beats_the_native_grid_on_a_fov_filling_slice(tmp_path, prior,
                                                                            monkeypatch):
    """(About 7 s.) A generated 64 x 64 slice whose head fills the field of view (held-out MNI seed
    10000, the first image of bench/bench_prior_resolution.py), R = 4, noise 1e-3: DDS on the
    prior's grid (f = 2) against the native grid (f forced to 1); the study's volume
    stays 64 x 64. One chain from noise, where the grid matters most (the default warm
    start with 4 samples measured 40.84 against 40.29 dB)."""
    import medrecon.studies.mri_resolution as resolution
    from medrecon.data.kspace_simulate import simulate_kspace
    from medrecon.data.kspace_write import write_kspace_file
    from medrecon.run import reconstruct_study
    from medrecon.studies import open_study
    from tests.test_mri_study import fov_filling_slice

    sim = simulate_kspace(fov_filling_slice(10_000)[None], coils=8, pattern="poisson",
                          acceleration=4, center_fraction=0.19, sigma=1e-3, seed=4)
    path = tmp_path / "fov.h5"
    write_kspace_file(path, sim.kspace, mask=sim.mask, trajectory=None,
                      reference=sim.reference, image_shape=sim.image_shape)

    def dds():
        with open_study(path, "mri") as study:
            return reconstruct_study(study, "dds", {"warm_start": 0.0, "n_samples": 1},
                                     prior=prior,
                                     generator=torch.Generator().manual_seed(0))

    matched = dds()
    assert matched.volume.array.shape == (1, 64, 64)
    assert matched.records[0].info["prior_grid"] == [128, 128]
    monkeypatch.setattr(resolution, "resolution_factor", lambda shape, size: 1)
    native = dds()
    assert "prior_grid" not in native.records[0].info
    gain = matched.metrics["psnr"] - native.metrics["psnr"]
    # measured 30.59 against 28.10 dB (+2.48)
    assert gain > 1.5, (matched.metrics["psnr"], native.metrics["psnr"])
