"""The embedded default priors: shipped, small, trained by their recipe, and denoising
held-out images far better than doing nothing; the MNI152 training source."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrecon.data.mni import HELDOUT_SLICES, TRAIN_SLICES, mni152_slice
from medrecon.data.phantom import ct_phantom
from medrecon.data.priors import RECIPES, default_prior_path
from medrecon.errors import InputError
from medrecon.priors.checkpoint import load_prior, read_checkpoint
from medrecon.priors.datasets import load_training_set


@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_default_prior_ships_with_its_recipe(modality):
    path = default_prior_path(modality)
    assert path.stat().st_size < 25 * 2**20
    checkpoint = read_checkpoint(path)
    recipe = checkpoint.metadata["recipe"]
    for key, value in RECIPES[modality].items():
        assert recipe[key] == value, key
    assert checkpoint.step == RECIPES[modality]["steps"] == len(checkpoint.losses)
    assert checkpoint.optimizer is None  # a weights-only export
    # the loss fell during training (mean of the last 500 steps against the first 500)
    assert np.mean(checkpoint.losses[-500:]) < 0.5 * np.mean(checkpoint.losses[:500])


def _denoising_gain(prior, clean: torch.Tensor, sigma: float) -> float:
    """MSE of the noisy input over MSE of the prior's estimate, in prior space."""
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(clean.shape, generator=g, dtype=clean.real.dtype)
    if clean.is_complex():
        noise = torch.complex(noise, torch.randn(clean.shape, generator=g))
    noisy = clean + sigma * noise
    with torch.no_grad():
        estimate = prior(noisy, sigma)
    return float((noisy - clean).abs().square().mean() / (estimate - clean).abs().square().mean())


@pytest.mark.parametrize("sigma,gain", [(0.05, 3.0), (0.2, 8.0)])
def test_ct_prior_denoises_a_held_out_phantom(sigma, gain):
    prior = load_prior(default_prior_path("ct"), modality="ct")
    clean = torch.from_numpy(ct_phantom(128, seed=10_003).image)[None] / 1000.0
    assert _denoising_gain(prior, clean, sigma) > gain


@pytest.mark.parametrize("sigma,gain", [(0.05, 3.0), (0.2, 8.0)])
def test_mri_prior_denoises_a_held_out_slice(sigma, gain):
    prior = load_prior(default_prior_path("mri"), modality="mri")
    image = torch.from_numpy(mni152_slice(10_001, size=128, slices=HELDOUT_SLICES))
    clean = image / torch.quantile(image.abs().flatten(), 0.99)
    assert _denoising_gain(prior, clean[None], sigma) > gain


def test_mni152_slices_are_deterministic_complex_and_held_out_apart():
    a, b = mni152_slice(5), mni152_slice(5)
    assert a.dtype == np.complex64 and a.shape == (256, 256)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(np.angle(a[np.abs(a) > 0.1]), 0)  # a smooth phase is applied
    assert set(TRAIN_SLICES).isdisjoint(HELDOUT_SLICES)
    data = load_training_set(["mni152:3"], modality="mri", crop=64)
    assert len(data.images) == 3 and data.images[0].shape == (2, 256, 256)
    with pytest.raises(InputError, match="MRI priors only"):
        load_training_set(["mni152:3"], modality="ct", crop=64)
    with pytest.raises(InputError, match="positive"):
        load_training_set(["mni152:0"], modality="mri", crop=64)
