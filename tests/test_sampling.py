"""Sampling patterns: fastMRI column masks, Poisson-disc masks, radial and spiral
trajectories, and SigPy's units."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medrecon.operators.nufft import check_trajectory
from medrecon.operators.sampling import (
    equispaced_mask,
    poisson_mask,
    radial_trajectory,
    radians_to_sigpy,
    random_mask,
    sigpy_to_radians,
    spiral_trajectory,
)

FASTMRI_SETTINGS = [(368, 4, 0.08), (368, 8, 0.04), (320, 4, 0.08), (372, 6, 0.06), (41, 3, 0.1)]
MASKS = [random_mask, equispaced_mask]


def _centre(width: int, center_fraction: float) -> slice:
    n_low = round(width * center_fraction)
    start = (width - n_low + 1) // 2
    return slice(start, start + n_low)


@pytest.mark.parametrize("make", MASKS)
@pytest.mark.parametrize("width, acceleration, center_fraction", FASTMRI_SETTINGS)
def test_centre_is_fully_sampled_around_dc(make, width, acceleration, center_fraction):
    mask = make(width, acceleration, center_fraction, seed=1)
    assert mask.shape == (width,) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    centre = _centre(width, center_fraction)
    assert bool((mask[centre] == 1).all())
    assert centre.start <= width // 2 < centre.stop      # the DC column of fft2c


@pytest.mark.parametrize("make", MASKS)
def test_masks_are_reproducible_by_seed_and_differ_between_seeds(make):
    a = make(368, 4, 0.08, seed=7)
    assert torch.equal(a, make(368, 4, 0.08, seed=7))
    others = [make(368, 4, 0.08, seed=s) for s in range(8, 14)]
    assert any(not torch.equal(a, b) for b in others)


@pytest.mark.parametrize("width, acceleration, center_fraction", FASTMRI_SETTINGS)
def test_random_mask_reaches_the_acceleration_on_average(width, acceleration, center_fraction):
    n = 400
    counts = torch.stack([random_mask(width, acceleration, center_fraction, seed=s).sum()
                          for s in range(n)])
    n_low = round(width * center_fraction)
    prob = (width / acceleration - n_low) / (width - n_low)
    # the count outside the centre is Binomial(width - n_low, prob): test the mean to 4 sd
    sd = math.sqrt((width - n_low) * prob * (1 - prob) / n)
    assert abs(float(counts.double().mean()) - width / acceleration) < 4 * sd


@pytest.mark.parametrize("width, acceleration, center_fraction", FASTMRI_SETTINGS)
def test_equispaced_mask_reaches_the_acceleration_with_even_gaps(width, acceleration,
                                                                 center_fraction):
    n_low = round(width * center_fraction)
    spacing = acceleration * (n_low - width) / (n_low * acceleration - width)
    for seed in range(5):
        mask = equispaced_mask(width, acceleration, center_fraction, seed=seed)
        assert abs(float(mask.sum()) - width / acceleration) <= 2
        outside = mask.clone()
        outside[_centre(width, center_fraction)] = 0
        gaps = np.diff(np.flatnonzero(outside.numpy()))
        gaps = gaps[gaps < n_low]                     # gaps that do not jump over the centre
        assert set(gaps.tolist()) <= {math.floor(spacing), math.ceil(spacing)}


def test_equispaced_mask_by_hand():
    # width 10, acceleration 2, centre 0.2: 2 centre columns (4, 5); spacing
    # 2 (2 - 10) / (2 * 2 - 10) = 8/3; offset 0: round(0, 2.67, 5.33, 8) = 0, 3, 5, 8
    mask = equispaced_mask(10, 2, 0.2, seed=0, offset=0)
    assert mask.tolist() == [1, 0, 0, 1, 1, 1, 0, 0, 1, 0]


def test_random_mask_at_acceleration_one_samples_everything():
    assert bool((random_mask(64, 1, 0.1, seed=0) == 1).all())


@pytest.mark.parametrize("make", MASKS)
@pytest.mark.parametrize("args, match", [
    ((368, 0.5, 0.08), "acceleration"),
    ((368, float("nan"), 0.08), "acceleration"),
    ((368, 4, 0.0), "center_fraction"),
    ((368, 4, 1.0), "center_fraction"),
    ((368, 4, 0.3), "centre columns"),
    ((0, 4, 0.08), "width"),
    ((36.5, 4, 0.08), "width"),
])
def test_bad_mask_parameters(make, args, match):
    with pytest.raises(ValueError, match=match):
        make(*args, seed=0)


def test_equispaced_offset_out_of_range():
    with pytest.raises(ValueError, match="offset"):
        equispaced_mask(64, 4, 0.08, seed=0, offset=64)


def _sigpy_radius(shape, calib):
    """SigPy's normalised radius: distance beyond the calibration half-width per axis,
    scaled to 1 at the edge."""
    axes = []
    for n, c in zip(shape, calib):
        d = np.maximum(np.abs(np.arange(n) - n / 2) - c / 2, 0)
        axes.append(d / d.max())
    return np.sqrt(axes[0][:, None] ** 2 + axes[1][None, :] ** 2)


def test_poisson_mask_statistics_and_calibration():
    # the legacy global generator is what SigPy's seeding could have disturbed
    state = np.random.get_state()[1].copy()  # noqa: NPY002
    mask = poisson_mask((48, 40), 4, calibration=(8, 6), seed=3)
    assert np.array_equal(np.random.get_state()[1], state)  # noqa: NPY002
    assert mask.shape == (48, 40) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert abs(48 * 40 / float(mask.sum()) - 4) < 0.1
    assert bool((mask[20:28, 17:23] == 1).all())                 # int(24 -+ 4), int(20 -+ 3)
    r = torch.from_numpy(_sigpy_radius((48, 40), (8, 6)))
    assert float(mask[r >= 1].sum()) == 0                        # corners cropped
    # variable density: the centre is sampled more densely than the periphery
    inner = float(mask[(r > 0) & (r < 0.4)].mean())
    outer = float(mask[(r > 0.6) & (r < 1.0)].mean())
    assert inner > 1.5 * outer


@pytest.mark.parametrize("shape, acceleration, calibration, seed", [
    ((32, 32), 4, (8, 8), 3), ((64, 50), 6, (0, 0), 1), ((40, 64), 3, (10, 12), 0)])
def test_poisson_mask_equals_sigpy(shape, acceleration, calibration, seed):
    import sigpy.mri

    expected = sigpy.mri.poisson(shape, acceleration, calib=calibration, dtype=np.float32,
                                 seed=seed)
    got = poisson_mask(shape, acceleration, calibration=calibration, seed=seed)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_poisson_mask_is_reproducible_by_seed():
    a = poisson_mask((32, 32), 3, seed=5)
    assert torch.equal(a, poisson_mask((32, 32), 3, seed=5))
    assert not torch.equal(a, poisson_mask((32, 32), 3, seed=6))


@pytest.mark.parametrize("kwargs, match", [
    ({"acceleration": 1.0}, "acceleration"),
    ({"acceleration": 4, "calibration": (32, 4)}, "calibration"),
    ({"acceleration": 4, "calibration": (4,)}, "calibration"),
    ({"acceleration": 4, "calibration": (-2, 4)}, "calibration"),
    ({"acceleration": 4, "tolerance": 0.0}, "tolerance"),
    ({"acceleration": 4, "shape": (32,)}, "shape"),
    ({"acceleration": 60}, "reaches acceleration"),   # SigPy itself never returns here
])
def test_bad_poisson_parameters(kwargs, match):
    kwargs = {"shape": (32, 32), **kwargs}
    with pytest.raises(ValueError, match=match):
        poisson_mask(**kwargs)


def test_sigpy_units_convert_to_radians_and_back():
    coord = np.array([[[3.0, -2.5], [-8.0, 10.0]], [[0.0, 0.0], [7.9, -9.9]]])
    ktraj = sigpy_to_radians(coord, (16, 20))
    assert ktraj.shape == (2, 4) and ktraj.dtype == torch.float64
    expected = np.stack([coord[..., 0].ravel() * 2 * np.pi / 16,
                         coord[..., 1].ravel() * 2 * np.pi / 20])
    np.testing.assert_allclose(ktraj.numpy(), expected, rtol=1e-15)
    # SigPy's edges -N/2 and N/2 cycles are -pi and pi radians
    assert ktraj[0, 1] == -math.pi and ktraj[1, 1] == math.pi
    np.testing.assert_allclose(radians_to_sigpy(ktraj, (16, 20)), coord.reshape(-1, 2),
                               rtol=1e-14)
    with pytest.raises(ValueError, match="shape"):
        sigpy_to_radians(np.zeros((4, 3)), (16, 20))


@pytest.mark.parametrize("golden", [True, False])
def test_radial_trajectory_geometry(golden):
    spokes, readout = 12, 16
    ktraj = radial_trajectory(spokes, readout, (32, 24), golden=golden)
    assert ktraj.shape == (2, spokes * readout) and ktraj.dtype == torch.float64
    check_trajectory(ktraj)
    k = ktraj.reshape(2, spokes, readout)
    radius = torch.linalg.vector_norm(k, dim=0)
    # sample j of every spoke at radius 2 pi j / (2 readout), in radians, for any matrix
    expected = torch.arange(readout, dtype=torch.float64) * math.pi / readout
    torch.testing.assert_close(radius, expected.expand(spokes, readout))
    assert float(radius.max()) < math.pi
    angles = torch.atan2(k[0, :, -1], k[1, :, -1])
    step = math.pi * (3 - math.sqrt(5)) if golden else 2 * math.pi / spokes
    turn = torch.remainder(angles.diff() - step + math.pi, 2 * math.pi) - math.pi
    assert float(turn.abs().max()) < 1e-12


def test_spiral_trajectory_fills_the_disc_in_radians():
    ktraj = spiral_trajectory(64, 8)
    check_trajectory(ktraj)
    assert ktraj.shape[0] == 2 and ktraj.shape[1] > 1000
    radius = torch.linalg.vector_norm(ktraj, dim=0)
    assert float(radius[0]) == 0.0
    # SigPy's k * fov reaches N/2 cycles: pi radians
    assert math.pi * 0.99 < float(radius.max()) <= math.pi + 1e-12
    # eight interleaves: copies rotated by 2 pi / 8
    k = torch.complex(ktraj[0], ktraj[1]).reshape(8, -1)
    torch.testing.assert_close(k[1], k[0] * np.exp(2j * np.pi / 8))


@pytest.mark.parametrize("kwargs, match", [
    ({"image_size": 64, "n_interleaves": 32}, "n_interleaves"),
    ({"image_size": 64, "n_interleaves": 0}, "n_interleaves"),
    ({"image_size": 64, "n_interleaves": 4, "fov": -1.0}, "fov"),
])
def test_bad_spiral_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        spiral_trajectory(**kwargs)


# -- fastMRI's random stream (issue 14) ----------------------------------------------
FASTMRI_MASKS = Path(__file__).parent / "data" / "fastmri_masks.json"
MASK_KINDS = {"random": random_mask, "equispaced_fraction": equispaced_mask}


def _stored_masks() -> list[dict]:
    return json.loads(FASTMRI_MASKS.read_text())["masks"]


def test_masks_match_the_fastmri_package_bit_for_bit():
    """Masks stored once from fastmri 0.3.0 (tests/data/make_fastmri_masks.py): 20 seeds
    for each of 6 settings and both mask functions, all reproduced exactly."""
    stored = _stored_masks()
    assert len(stored) == 240 and {m["seed"] for m in stored} == set(range(20))
    for entry in stored:
        mask = MASK_KINDS[entry["kind"]](entry["width"], entry["acceleration"],
                                         entry["center_fraction"], seed=entry["seed"])
        expected = np.array([int(c) for c in entry["columns"]], dtype=np.float32)
        assert np.array_equal(mask.numpy(), expected), entry


def test_seed_zero_gives_fastmris_95_columns():
    # the issue: 89 columns here, 95 in fastmri.data.subsample.RandomMaskFunc([0.08], [4])
    assert int(random_mask(368, 4, 0.08, seed=0).sum()) == 95


def _fastmri_reimplemented(kind: str, width: int, acceleration: float, center_fraction: float,
                           seed) -> np.ndarray:
    """fastmri.data.subsample (v0.3.0) as documented: MaskFunc.__call__ reseeds a legacy
    RandomState, choose_acceleration draws randint(len(center_fractions)), then
    RandomMaskFunc draws uniform(size=num_cols) < prob and EquispacedMaskFractionFunc an
    offset randint(0, round(adjusted_accel)) and samples around(arange(offset, num_cols - 1,
    adjusted_accel))."""
    rng = np.random.RandomState(seed)
    rng.randint(1)
    n_low = round(width * center_fraction)
    centre = np.zeros(width, dtype=np.float32)
    pad = (width - n_low + 1) // 2
    centre[pad:pad + n_low] = 1
    if kind == "random":
        prob = (width / acceleration - n_low) / (width - n_low)
        accel = (rng.uniform(size=width) < prob).astype(np.float32)
    else:
        adjusted = acceleration * (n_low - width) / (n_low * acceleration - width)
        offset = rng.randint(0, high=round(adjusted))
        accel = np.zeros(width, dtype=np.float32)
        accel[np.around(np.arange(offset, width - 1, adjusted)).astype(np.uint)] = 1
    return np.maximum(centre, accel)


@pytest.mark.parametrize("kind", sorted(MASK_KINDS))
def test_masks_match_fastmris_documented_algorithm_for_tuple_seeds(kind):
    # fastMRI's data transforms seed with tuple(map(ord, fname))
    for name in ("file1000001.h5", "file_brain_AXT2_200_2000019.h5"):
        seed = tuple(map(ord, name))
        mask = MASK_KINDS[kind](320, 4, 0.08, seed=seed)
        assert np.array_equal(mask.numpy(), _fastmri_reimplemented(kind, 320, 4, 0.08, seed))


def test_masks_leave_numpys_global_state_alone():
    np.random.seed(123)  # noqa: NPY002 (the legacy global state is what is checked)
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    random_mask(256, 8, 0.04, seed=3)
    equispaced_mask(256, 8, 0.04, seed=3)
    assert np.array_equal(np.random.get_state()[1], before)  # noqa: NPY002


def test_fastmri_r8_centre_at_width_256_is_10_lines():
    mask = random_mask(256, 8, 0.04, seed=0)
    assert bool(mask[_centre(256, 0.04)].all()) and _centre(256, 0.04).stop - \
        _centre(256, 0.04).start == 10
