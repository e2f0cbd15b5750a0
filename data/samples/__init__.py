"""Small bundled samples, made by a deterministic recipe in this module.

``ct_sparse_60.h5``: a 256 x 256 abdomen slice of the procedural phantom
(seed 2024, pixel size from the phantom), projected in parallel beam at 60
views over a half turn with Poisson noise of 2e5 photons per ray, in the
medrecon sinogram layout with the phantom as reference (HU).

``mri_brain_r4.h5``: a held-out augmented slice of the MNI152 T1 template
(:func:`medrecon.data.mni.mni152_slice`, seed 20000, from the slices no prior was
trained on), 256 x 256 complex, seen by 8 birdcage coils, a 1D random Cartesian mask
at R = 4 with an 8 % fully sampled centre (mask seed 0), complex Gaussian noise of
1e-3 per component, in the fastMRI layout with the magnitude as reference.

Regenerate with ``python -m medrecon.data.samples`` (the test suite checks that
the shipped file matches the recipe).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

CT_SAMPLE = "ct_sparse_60.h5"
CT_SAMPLE_RECIPE = {"size": 256, "seed": 2024, "views": 60, "noise": "poisson:2e5"}
MRI_SAMPLE = "mri_brain_r4.h5"
MRI_SAMPLE_RECIPE = {"image_seed": 20000, "coils": 8, "pattern": "random", "acceleration": 4,
                     "center_fraction": 0.08, "sigma": 1e-3, "seed": 0}


def sample_path(name: str = CT_SAMPLE) -> Path:
    """Path of a bundled sample file."""
    path = Path(str(resources.files(__name__).joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"bundled sample {name} is missing from the installation")
    return path


def make_ct_sample():
    """The CT sample's sinogram from its recipe (see the module docstring)."""
    import torch

    from medrecon.data.phantom import ct_phantom
    from medrecon.data.sinogram_simulate import simulate_sinogram
    from medrecon.operators.ct_geometry import CTGeometry

    recipe = CT_SAMPLE_RECIPE
    phantom = ct_phantom(recipe["size"], seed=recipe["seed"])
    geometry = CTGeometry.parallel(phantom.image.shape, recipe["views"],
                                   pixel_size=phantom.pixel_size)
    return simulate_sinogram(phantom.image, geometry, noise=recipe["noise"],
                             generator=torch.Generator().manual_seed(recipe["seed"]))


def mri_sample_image():
    """The MRI sample's complex image (needs nilearn's MNI152 template)."""
    from medrecon.data.mni import HELDOUT_SLICES, mni152_slice

    return mni152_slice(MRI_SAMPLE_RECIPE["image_seed"], slices=HELDOUT_SLICES)


def write_mri_sample(path: Path) -> Path:
    """Simulate the MRI sample from its recipe (see the module docstring) into ``path``."""
    from medrecon.data.kspace_simulate import simulate_kspace
    from medrecon.data.kspace_write import write_kspace_file

    recipe = MRI_SAMPLE_RECIPE
    sim = simulate_kspace(mri_sample_image()[None], coils=recipe["coils"],
                          pattern=recipe["pattern"], acceleration=recipe["acceleration"],
                          center_fraction=recipe["center_fraction"], sigma=recipe["sigma"],
                          seed=recipe["seed"])
    return write_kspace_file(path, sim.kspace, mask=sim.mask, reference=sim.reference,
                             attrs={"acceleration": recipe["acceleration"],
                                    "pattern": recipe["pattern"]})
