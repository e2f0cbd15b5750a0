"""The head and neck phantom regions and the mixed training family (ct_mix_phantom)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medrecon.data.phantom import (
    ALL_REGIONS,
    MIX_PIXEL_RANGES,
    REGIONS,
    ct_mix_phantom,
    ct_phantom,
)


def _main_body(image: np.ndarray) -> np.ndarray:
    """The largest connected region above -500 HU (the patient, not the holder), with
    its enclosed air (sinuses, airway) filled in."""
    labels, n = ndimage.label(image > -500)
    sizes = ndimage.sum(np.ones_like(image), labels, range(1, n + 1))
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))


def _ray_maxima(image: np.ndarray, rays: int = 72) -> np.ndarray:
    """Maximum HU along rays from the centre of the body to the image edge."""
    cy, cx = ndimage.center_of_mass(_main_body(image))
    r = np.arange(0, image.shape[0])
    out = []
    for t in np.linspace(0, 2 * np.pi, rays, endpoint=False):
        y = np.clip(np.round(cy + r * np.sin(t)).astype(int), 0, image.shape[0] - 1)
        x = np.clip(np.round(cx + r * np.cos(t)).astype(int), 0, image.shape[1] - 1)
        out.append(image[y, x].max())
    return np.array(out)


def test_regions_keep_the_body_regions_first():
    assert REGIONS == ("abdomen", "thorax")  # phantom:N alternates these two, unchanged
    assert ALL_REGIONS == ("abdomen", "thorax", "head", "neck")


@pytest.mark.parametrize("seed", [0, 7, 8])  # vertex, skull base (orbits), ventricles
def test_head_has_a_closed_skull_and_brain_values(seed):
    image = ct_phantom(256, seed=seed, region="head", pixel_size=0.9).image
    assert image.dtype == np.float32 and image.shape == (256, 256)
    assert image[:4].max() == pytest.approx(-1000.0, abs=1.0)
    # a skull ring of cortical bone (> 700 HU) on nearly every ray from the centre
    assert float((_ray_maxima(image) > 700).mean()) >= 0.9
    # diploe: bone between the tables, denser than soft tissue, lighter than cortex
    assert float(((image > 300) & (image < 700)).mean()) > 0.005
    # brain: most of the intracranial pixels are 20-50 HU (grey and white matter)
    inner = ndimage.binary_erosion(_main_body(image), iterations=17)
    brain = image[inner]
    assert float(((brain > 20) & (brain < 50)).mean()) > 0.6
    # head size: 100-210 mm across (smaller toward the vertex)
    cols = np.flatnonzero(_main_body(image).any(axis=0))
    assert 100 < (cols[-1] - cols[0] + 1) * 0.9 < 210


@pytest.mark.parametrize("seed", [0, 1, 8])
def test_head_above_the_skull_base_has_grey_and_white_matter_and_csf(seed):
    image = ct_phantom(256, seed=seed, region="head", pixel_size=0.9).image
    brain = image[ndimage.binary_erosion(_main_body(image), iterations=17)]
    white = float(((brain > 20) & (brain < 33)).mean())
    grey = float(((brain >= 35) & (brain < 55)).mean())
    csf = float(((brain > -5) & (brain < 15)).mean())
    assert white > 0.2 and grey > 0.1 and csf > 0.01


def test_skull_base_has_air_in_sinuses_and_dense_petrous_bone():
    image = ct_phantom(256, seed=7, region="head", pixel_size=0.9).image
    inner = ndimage.binary_erosion(_main_body(image), iterations=5)
    assert float((image[inner] < -900).mean()) > 0.005   # sinus / nasal / mastoid air
    assert float((image > 1400).mean()) > 0.002           # petrous bone


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_neck_has_airway_vertebra_and_neck_size(seed):
    image = ct_phantom(256, seed=seed, region="neck", pixel_size=0.7).image
    body = _main_body(image)
    cols = np.flatnonzero(body.any(axis=0))
    assert 95 < (cols[-1] - cols[0] + 1) * 0.7 < 150
    # airway: an air region enclosed by the body, at least 50 mm^2
    labels, n = ndimage.label(image < -900)
    border = set(np.unique(np.r_[labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    enclosed = [int((labels == k).sum()) for k in range(1, n + 1) if k not in border]
    assert enclosed and max(enclosed) * 0.49 > 50
    assert float((image > 700).mean()) > 0.005            # cervical vertebra
    assert float(((image > -130) & (image < -60)).mean()) > 0.02  # fat


@pytest.mark.parametrize("region", ["head", "neck"])
def test_new_regions_are_deterministic_per_seed(region):
    a = ct_phantom(128, seed=11, region=region)
    b = ct_phantom(128, seed=11, region=region)
    c = ct_phantom(128, seed=12, region=region)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.region == region and a.seed == 11
    assert float(np.abs(a.image - c.image).mean()) > 5.0


def test_pixel_size_scales_the_anatomy_in_pixels():
    """Anatomy is drawn in mm: 1.25 x finer pixels, a 1.25 x wider skull in pixels."""
    def skull_extent(ps):
        bone = ct_phantom(128, seed=3, region="head", pixel_size=ps).image > 700
        cols, rows = np.flatnonzero(bone.any(axis=0)), np.flatnonzero(bone.any(axis=1))
        return cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1
    w_fine, h_fine = skull_extent(1.6)
    w_coarse, h_coarse = skull_extent(2.0)
    assert w_fine / w_coarse == pytest.approx(1.25, abs=0.06)
    assert h_fine / h_coarse == pytest.approx(1.25, abs=0.06)


def test_bone_has_trabecular_texture_in_the_new_regions():
    """Cancellous bone carries a network of ridges: far more fine-scale variation
    than the smooth marrow texture of the body regions."""
    def fine_variation(image):
        marrow = (image > 150) & (image < 650)
        marrow = ndimage.binary_erosion(marrow, iterations=1)
        lap = ndimage.laplace(image.astype(np.float64))
        return float(np.abs(lap[marrow]).mean())
    neck = ct_phantom(256, seed=1, region="neck", pixel_size=0.5).image
    abdomen = ct_phantom(256, seed=1, region="abdomen", pixel_size=0.5).image
    assert fine_variation(neck) > 1.5 * fine_variation(abdomen)


def test_mix_family_cycles_regions_and_pixel_sizes_deterministically():
    seen = {}
    for seed in range(8):
        ph = ct_mix_phantom(128, seed=seed)
        assert ph.region == ALL_REGIONS[seed % 4]
        lo, hi = MIX_PIXEL_RANGES[ph.region]
        assert lo * 2 - 1e-9 <= ph.pixel_size <= hi * 2 + 1e-9  # 256 / 128 = 2
        assert ph.image.dtype == np.float32 and ph.image.min() >= -1024
        seen[seed] = ph
    np.testing.assert_array_equal(ct_mix_phantom(128, seed=5).image, seen[5].image)
    assert len({round(p.pixel_size, 6) for p in seen.values()}) == 8
    # the mix leaves ct_phantom alone: same seed and region, other pixels and texture
    plain = ct_phantom(128, seed=0, region="abdomen", pixel_size=seen[0].pixel_size).image
    assert not np.array_equal(plain, seen[0].image)
    assert float(np.abs(plain - seen[0].image).mean()) < 40.0


def test_ctmix_training_source():
    from medrecon.errors import InputError
    from medrecon.priors.datasets import load_training_set

    data = load_training_set(["ctmix:4"], modality="ct", crop=64)
    assert len(data.images) == 4 and data.images[0].shape == (1, 256, 256)
    assert data.sources == ("ctmix:4",) and data.method == "HU / 1000"
    assert -1.03 < float(data.images[2].min()) and float(data.images[2].max()) > 0.7
    with pytest.raises(InputError, match="CT priors only"):
        load_training_set(["ctmix:2"], modality="mri", crop=64)
    with pytest.raises(InputError, match="ctmix:N"):
        load_training_set(["ctmix:0"], modality="ct", crop=64)
