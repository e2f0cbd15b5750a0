"""The mixed MR training family (``mrmix``): heads with a skull and scalp, bodies from
the mixed CT family, held-out template slices kept apart, usable as training data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import medrecon.data.mr_mix as mr_mix
from medrecon.data.mni import HELDOUT_SLICES, TRAIN_SLICES, mni152_slice
from medrecon.data.mr_mix import body_slice, head_slice, mr_mix_slice
from medrecon.data.mr_phantom import mr_phantom
from medrecon.errors import InputError
from medrecon.priors.datasets import load_training_set

pytest.importorskip("nibabel")


def _outer_ring(magnitude: np.ndarray) -> np.ndarray:
    """Pixels 3 to 15 deep inside the head's outline (about 2 to 15 mm)."""
    head = ndimage.binary_fill_holes(magnitude > 0.02)
    return ndimage.binary_erosion(head, iterations=3) & ~ndimage.binary_erosion(head,
                                                                               iterations=15)


@pytest.mark.parametrize("seed", [0, 1, 3, 4])
def test_head_slices_have_a_dark_skull_under_a_bright_scalp(seed):
    image = head_slice(seed, size=256)
    assert image.dtype == np.complex64 and image.shape == (256, 256)
    magnitude = np.abs(image)
    assert magnitude.max() <= 1.0 + 1e-6
    # under the outline lie scalp (bright) and skull (dark); the template alone, skull
    # stripped, has only brain there
    ring = magnitude[_outer_ring(magnitude)]
    assert (ring > 0.3).mean() > 0.5 and (ring < 0.1).mean() > 0.02
    template = np.abs(mni152_slice(seed))
    assert (template[_outer_ring(template)] < 0.1).mean() < 0.005


def test_mixed_slices_are_deterministic_complex_with_phase_and_alternate_kinds():
    for seed in range(3):
        a, b = mr_mix_slice(seed, size=128), mr_mix_slice(seed, size=128)
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(np.angle(a[np.abs(a) > 0.2]), 0)  # a smooth phase
    np.testing.assert_array_equal(mr_mix_slice(2, size=128), body_slice(2, size=128))
    np.testing.assert_array_equal(mr_mix_slice(4, size=128), head_slice(4, size=128))
    assert not np.allclose(np.abs(head_slice(0, size=128)), np.abs(head_slice(1, size=128)))


def test_contrasts_differ_between_seeds():
    """Not one T1 look: across seeds the fluid in the ventricles is sometimes brighter
    than the brain around it (T2-like) and sometimes darker (T1 / FLAIR-like)."""
    centres = []
    for seed in (0, 1, 3, 4, 6, 7, 9, 10):
        magnitude = np.abs(head_slice(seed, size=128))
        brain = magnitude[ndimage.binary_erosion(magnitude > 0.02, iterations=20)]
        centres.append(np.percentile(brain, 90) / max(np.median(brain), 1e-6))
    assert max(centres) / min(centres) > 1.2


def test_head_slices_come_from_the_slices_asked_for(monkeypatch):
    asked = []
    original = mr_mix.template_plane

    def recording(rng, slices):
        asked.append(slices)
        return original(rng, slices)

    monkeypatch.setattr(mr_mix, "template_plane", recording)
    mr_mix_slice(0, size=64)
    mr_mix_slice(1, size=64, slices=HELDOUT_SLICES)
    mr_mix_slice(2, size=64, slices=HELDOUT_SLICES)  # a body: no template slice
    assert asked == [TRAIN_SLICES, HELDOUT_SLICES]


def test_body_slices_are_bodies_without_table_and_not_the_evaluation_phantom():
    image = body_slice(2, size=128)
    magnitude = np.abs(image)
    assert magnitude[:4].max() == 0.0 and 0.1 < float((magnitude > 0.05).mean()) < 0.95
    assert not np.allclose(magnitude, np.abs(mr_phantom(128, seed=3)), atol=0.05)


def test_mrmix_is_an_mri_training_source():
    data = load_training_set(["mrmix:3"], modality="mri", crop=64)
    assert len(data.images) == 3 and data.images[0].shape == (2, 256, 256)
    magnitude = data.images[0].square().sum(0).sqrt()
    assert abs(float(magnitude.flatten().quantile(0.99)) - 1.0) < 1e-3  # normalised
    with pytest.raises(InputError, match="MRI priors only"):
        load_training_set(["mrmix:3"], modality="ct", crop=64)
    with pytest.raises(InputError, match="positive"):
        load_training_set(["mrmix:0"], modality="mri", crop=64)
