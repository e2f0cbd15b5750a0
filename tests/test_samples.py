"""The bundled sample matches its recipe and is small."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrecon.data.phantom import ct_phantom
from medrecon.data.samples import CT_SAMPLE_RECIPE, sample_path
from medrecon.data.sinogram import read_sinogram
from medrecon.operators.ct import CTProjector


def test_ct_sample_matches_recipe():
    path = sample_path()
    assert path.stat().st_size < 1_000_000
    sino = read_sinogram(path)
    recipe = CT_SAMPLE_RECIPE
    phantom = ct_phantom(recipe["size"], seed=recipe["seed"])
    g = sino.geometry
    assert g.beam == "parallel" and g.n_views == recipe["views"]
    assert g.pixel_size == phantom.pixel_size and sino.noise == recipe["noise"]
    np.testing.assert_allclose(sino.reference, phantom.image, atol=1e-3)
    # the data are the phantom's line integrals plus Poisson noise of the stated dose:
    # var(p) ~ 1 / (I0 exp(-p)) for -log(counts / I0)
    clean = CTProjector(g)(torch.from_numpy(sino.from_image_units(phantom.image))).numpy()
    photons = float(recipe["noise"].split(":")[1])
    z = (sino.data - clean) * np.sqrt(photons * np.exp(-clean))
    assert abs(float(z.mean())) < 0.05 and 0.9 < float(z.std()) < 1.1


def test_mri_sample_matches_recipe():
    from medrecon.data.kspace import FastMRIFile
    from medrecon.data.kspace_simulate import coil_maps
    from medrecon.data.samples import MRI_SAMPLE, MRI_SAMPLE_RECIPE, mri_sample_image
    from medrecon.operators.mri import fft2c

    path = sample_path(MRI_SAMPLE)
    assert path.stat().st_size < 2_000_000
    recipe = MRI_SAMPLE_RECIPE
    image = mri_sample_image()
    with FastMRIFile(path) as f:
        assert f.coils == recipe["coils"] and f.shape == image.shape and f.trajectory is None
        mask = f.mask.numpy().astype(bool).reshape(-1)
        kspace = f.read_slice(0)
        np.testing.assert_allclose(f.read_reference(0).numpy(), np.abs(image), atol=1e-5)
    assert abs(mask.size / mask.sum() - recipe["acceleration"]) < 0.5
    clean = fft2c(coil_maps(recipe["coils"], image.shape) * torch.from_numpy(image))
    noise = (kspace - clean)[..., mask]
    assert float(noise.real.std()) == pytest.approx(recipe["sigma"], rel=0.05)
    assert float(kspace[..., ~mask].abs().max()) == 0.0
