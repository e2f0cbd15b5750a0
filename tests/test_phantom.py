"""The procedural CT phantom: determinism, HU content, resolution independence."""

from __future__ import annotations

import numpy as np
import pytest

from medrecon.data.phantom import (
    DEFAULT_FOV_MM,
    MU_WATER,
    REGIONS,
    ct_phantom,
    ct_slice,
    hu_to_mu,
    mu_to_hu,
)


@pytest.mark.parametrize("region", REGIONS)
def test_same_seed_same_image_other_seed_other_patient(region):
    a = ct_phantom(128, seed=5, region=region)
    b = ct_phantom(128, seed=5, region=region)
    c = ct_phantom(128, seed=6, region=region)
    assert a.image.dtype == np.float32 and a.image.shape == (128, 128)
    np.testing.assert_array_equal(a.image, b.image)
    assert float(np.abs(a.image - c.image).mean()) > 20.0
    assert a.pixel_size == pytest.approx(DEFAULT_FOV_MM / 128) and a.fov == DEFAULT_FOV_MM
    np.testing.assert_array_equal(ct_slice(128, seed=5, region=region), a.image)


def _fraction(image: np.ndarray, lo: float, hi: float) -> float:
    return float(((image >= lo) & (image <= hi)).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("region", REGIONS)
def test_tissues_have_clinical_hounsfield_values(region, seed):
    image = ct_phantom(256, seed=seed, region=region).image
    assert image.min() >= -1000.0 and image.max() <= 3071.0
    assert image[:4].max() == pytest.approx(-1000.0, abs=1.0)  # air above the patient
    assert 0.25 < _fraction(image, -1001, -990) < 0.75      # air around the body
    assert _fraction(image, -130, -60) > 0.03                # fat
    assert _fraction(image, 20, 90) > 0.05                   # muscle and organs
    assert _fraction(image, 700, 1500) > 0.001               # cortical bone
    if region == "thorax":
        assert _fraction(image, -950, -700) > 0.05           # lung parenchyma
    body = image > -500
    assert 0.25 < body.mean() < 0.75


def test_texture_is_not_flat():
    """Organs carry a few HU of correlated texture, not piecewise-constant values."""
    image = ct_phantom(256, seed=3).image
    soft = image[(image > 30) & (image < 80)]
    assert 2.0 < float(soft.std()) < 25.0
    assert len(np.unique(np.round(soft))) > 30


def test_anatomy_is_drawn_in_millimetres():
    """The same seed at twice the matrix size is the same patient (block-averaged)."""
    fine = ct_phantom(256, seed=7).image
    coarse = ct_phantom(128, seed=7).image
    binned = fine.reshape(128, 2, 128, 2).mean(axis=(1, 3))
    agree = np.abs(binned - coarse) < 60.0
    assert agree.mean() > 0.9
    smaller_fov = ct_phantom(128, seed=7, pixel_size=1.0)
    assert smaller_fov.fov == 128.0 and smaller_fov.image.max() > 0


def test_hu_and_attenuation_round_trip():
    hu = np.array([-1000.0, -100.0, 0.0, 40.0, 1000.0])
    np.testing.assert_allclose(hu_to_mu(hu), MU_WATER * np.array([0, 0.9, 1, 1.04, 2]))
    np.testing.assert_allclose(mu_to_hu(hu_to_mu(hu)), hu, atol=1e-9)
    assert float(hu_to_mu(np.array([-1200.0]))[0]) == 0.0
    assert hu_to_mu(np.array([0, 1000])).dtype == np.float64


@pytest.mark.parametrize("kwargs,match", [
    ({"size": 8}, "size"), ({"size": 64.0}, "size"), ({"region": "pelvis"}, "region"),
    ({"seed": -1}, "seed"), ({"pixel_size": 0.0}, "pixel_size"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ct_phantom(**{"size": 64, **kwargs})


def test_mr_phantom_is_a_complex_body_with_smooth_phase():
    from medrecon.data.mr_phantom import mr_phantom

    image = mr_phantom(128, seed=4)
    assert image.dtype == np.complex64 and image.shape == (128, 128)
    magnitude = np.abs(image)
    assert magnitude.max() <= 1.0 + 1e-6 and magnitude[:6].max() == 0.0  # no table, no air
    assert 0.15 < float((magnitude > 0.1).mean()) < 0.8
    np.testing.assert_array_equal(image, mr_phantom(128, seed=4))
    phase = np.angle(image[magnitude > 0.3])
    assert np.abs(phase).max() <= np.pi / 2 + 1e-5 and float(phase.std()) > 0.05
    # smooth: neighbouring pixels' phases differ by far less than a radian
    inside = (magnitude[:, 1:] > 0.3) & (magnitude[:, :-1] > 0.3)
    step = np.angle(image[:, 1:] * np.conj(image[:, :-1]))[inside]
    assert np.abs(step).max() < 0.1
