"""Simulated sinograms: project an image with ASTRA and add noise.

Kept apart from :mod:`medrecon.data.sinogram` (the file layout) because it imports
torch and ASTRA, which reading a file's metadata does not need.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from medrecon.data.phantom import MU_WATER
from medrecon.data.sinogram import Sinogram, parse_noise
from medrecon.operators.ct import CTProjector
from medrecon.operators.ct_geometry import CTGeometry


def simulate_sinogram(image: np.ndarray, geometry: CTGeometry, *, noise: str = "none",
                      image_units: str = "HU", mu_water: float = MU_WATER,
                      generator: torch.Generator | None = None,
                      field_of_view: np.ndarray | None = None) -> Sinogram:
    """Project an image (or a stack of slices) with ``geometry`` and add noise.

    Poisson noise with ``I0`` photons per ray: counts ``~ Poisson(I0 exp(-p))``,
    measured ``p = -log(max(counts, 1) / I0)``. Gaussian noise adds ``sigma``
    to each line integral. The image is kept as the reference, and ``field_of_view``
    (bool, the image's shape: where it holds measured values, e.g.
    :attr:`medrecon.data.ct_image.CTImage.field_of_view`) with it, for metrics there.

    >>> from medrecon.data.phantom import ct_slice  # doctest: +SKIP
    """
    kind, level = parse_noise(noise)
    image = np.asarray(image, dtype=np.float32)
    if image.shape[-2:] != geometry.image_shape:
        raise ValueError(f"image shape {image.shape} does not match geometry image_shape "
                         f"{geometry.image_shape}")
    if field_of_view is not None:
        field_of_view = np.asarray(field_of_view, dtype=bool)
        if field_of_view.shape != image.shape:
            raise ValueError(f"field_of_view shape {field_of_view.shape} does not match the "
                             f"image shape {image.shape}")
    sino = Sinogram(np.empty(0), geometry, image_units, mu_water, image, noise,
                    field_of_view=field_of_view)
    mu = torch.from_numpy(sino.from_image_units(image).astype(np.float32))
    p = CTProjector(geometry)(mu)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    if kind == "poisson":
        counts = torch.poisson(level * torch.exp(-p), generator=gen)
        p = -torch.log(counts.clamp_min(1.0) / level)
    elif kind == "gaussian":
        p = p + level * torch.randn(p.shape, generator=gen)
    return replace(sino, data=p.numpy().astype(np.float32))
