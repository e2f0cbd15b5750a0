"""Small bundled samples, made by a deterministic recipe in this module.

``ct_sparse_60.h5``: a 256 x 256 abdomen slice of the procedural phantom
(seed 2024, pixel size from the phantom), projected in parallel beam at 60
views over a half turn with Poisson noise of 2e5 photons per ray, in the
medrecon sinogram layout with the phantom as reference (HU).

Regenerate with ``python -m medrecon.data.samples`` (the test suite checks that
the shipped file matches the recipe).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

CT_SAMPLE = "ct_sparse_60.h5"
CT_SAMPLE_RECIPE = {"size": 256, "seed": 2024, "views": 60, "noise": "poisson:2e5"}


def sample_path(name: str = CT_SAMPLE) -> Path:
    """Path of a bundled sample file."""
    path = Path(str(resources.files(__name__).joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"bundled sample {name} is missing from the installation")
    return path


def make_ct_sample():
    """The CT sample's sinogram from its recipe (see the module docstring)."""
    from medrecon.data.phantom import ct_phantom
    from medrecon.data.sinogram import simulate_sinogram
    from medrecon.operators.ct_geometry import CTGeometry

    recipe = CT_SAMPLE_RECIPE
    phantom = ct_phantom(recipe["size"], seed=recipe["seed"])
    geometry = CTGeometry.parallel(phantom.image.shape, recipe["views"],
                                   pixel_size=phantom.pixel_size)
    return simulate_sinogram(phantom.image, geometry, noise=recipe["noise"],
                             generator=torch.Generator().manual_seed(recipe["seed"]))
