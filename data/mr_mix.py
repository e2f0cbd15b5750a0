"""Generated MR training slices closer to real scans than the template: ``mrmix:N``.

The MNI152 template (:mod:`medrecon.data.mni`) is an average of 152 brains: skull
stripped, its cortex blurred, one T1 contrast. A scan of one person has a scalp, a
skull and the cerebrospinal fluid around the brain, crisp grey-white boundaries,
tissue texture, a contrast of its own and a receive-coil bias. :func:`mr_mix_slice`
gives two kinds of complex64 ``size x size`` slice, magnitude about in [0, 1]:

- two seeds in three (``seed % 3`` 0 and 1), :func:`head_slice`: an individual-looking
  head from a template slice.

  1. Geometry: the template's augmentation (:func:`medrecon.data.mni.augmented_coordinates`,
     a field of view of 180 to 260 mm, so that the head fills 64 to 100 % of it) plus a
     fine elastic displacement (a 16 x 16 grid, standard deviation 0.8 mm) that moves
     the folds of the cortex, as brains differ.
  2. Crisp tissue: the template's intensity is sharpened by unsharp masking (a random
     gain 0.5 to 2 at 1.5 mm), undoing part of the averaging blur, then mapped through
     a lookup from its grey levels (cerebrospinal fluid, grey and white matter) to a
     drawn contrast, T1-, T2-, proton-density- or FLAIR-like (:data:`CONTRASTS`).
  3. Outside the brain, by the distance from it (thicknesses scaled by a smooth random
     field, 0.7 to 1.3): a cerebrospinal fluid rim (0.5 to 3 mm), the skull's inner
     table, diploe (marrow) and outer table (1 to 2, 1.5 to 4 and 1 to 2 mm), then the
     scalp (galea and muscle, 1 to 3 mm; subcutaneous fat, 2 to 6 mm; skin, 1 mm).
- one seed in three (``seed % 3 == 2``), :func:`body_slice`: abdomen, thorax, head or
  neck of the mixed CT phantom family (:func:`medrecon.data.phantom.ct_mix_phantom`,
  seeds from :data:`BODY_FIRST_SEED`: neither the CT training slices, nor the CT
  tuning crops (50000 to 50003), nor the evaluation's MR phantom (seed 3), nor the CT
  evaluation's phantoms (from 10000)) with trabecular bone, mapped from HU to MR
  magnitude by a T1- or T2-like lookup with jittered tissue values, the body only
  (:func:`medrecon.data.mr_phantom.body_mask`).

Both then get correlated multiplicative tissue texture (0 to 6 %), a point-spread blur
of 0.3 to 0.7 pixels (partial-volume edges), a smooth receive bias (0.7 to 1.3) and a
smooth phase of up to pi (:func:`medrecon.data.mr_phantom.smooth_phase`). Head slices
come from :data:`medrecon.data.mni.TRAIN_SLICES` unless ``slices`` says otherwise
(:data:`medrecon.data.mni.HELDOUT_SLICES` for evaluation). Deterministic in the seed.
No knee or other limb is generated: the non-brain anatomy is the CT family's trunk,
head and neck.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medrecon.data.mni import (
    TRAIN_SLICES,
    augmented_coordinates,
    smooth_displacement,
    template_plane,
)
from medrecon.data.mr_phantom import body_mask, smooth_phase
from medrecon.data.phantom import ct_mix_phantom

BODY_FIRST_SEED = 100_000
# amplitude (low, high) of the correlated multiplicative tissue texture
TEXTURE = (0.0, 0.06)
# tissue magnitudes (low, high) drawn per slice, by contrast
CONTRASTS: dict[str, dict[str, tuple[float, float]]] = {
    "t1": {"csf": (0.05, 0.2), "gm": (0.35, 0.55), "wm": (0.65, 0.85), "fat": (0.85, 1.0),
           "marrow": (0.55, 0.9), "muscle": (0.3, 0.45), "bone": (0.0, 0.05)},
    "t2": {"csf": (0.85, 1.0), "gm": (0.45, 0.6), "wm": (0.3, 0.45), "fat": (0.55, 0.8),
           "marrow": (0.4, 0.7), "muscle": (0.15, 0.3), "bone": (0.0, 0.05)},
    "pd": {"csf": (0.6, 0.8), "gm": (0.6, 0.75), "wm": (0.45, 0.6), "fat": (0.7, 0.9),
           "marrow": (0.5, 0.8), "muscle": (0.3, 0.45), "bone": (0.0, 0.05)},
    "flair": {"csf": (0.02, 0.1), "gm": (0.5, 0.7), "wm": (0.35, 0.5), "fat": (0.6, 0.9),
              "marrow": (0.4, 0.7), "muscle": (0.2, 0.35), "bone": (0.0, 0.05)},
}
# template grey level -> tissue: below 0.3 fluid, about 0.55 grey matter, above 0.8 white
_TEMPLATE_LEVELS = (0.0, 0.3, 0.55, 0.8, 1.0)


def mr_mix_slice(seed: int, *, size: int = 256, slices: range = TRAIN_SLICES) -> np.ndarray:
    """One slice of the mixed MR family (module docstring): a head for ``seed % 3`` in
    0, 1, a body for 2."""
    if seed % 3 == 2:
        return body_slice(seed, size=size)
    return head_slice(seed, size=size, slices=slices)


def head_slice(seed: int, *, size: int = 256, slices: range = TRAIN_SLICES) -> np.ndarray:
    """An individual-looking complex64 head slice (module docstring, steps 1 to 3)."""
    rng = np.random.default_rng([seed, 0x68656164])
    plane = template_plane(rng, slices)
    field_of_view = rng.uniform(180.0, 260.0)
    pixel = field_of_view / size
    coordinates = augmented_coordinates(rng, size, plane.shape, field_of_view)
    coordinates += smooth_displacement(rng, size, 16, 0.8)
    level = ndimage.map_coordinates(plane, coordinates, order=3, mode="constant", cval=0.0)
    level = np.clip(level, 0.0, 1.0)
    gain = rng.uniform(0.5, 2.0)
    level = np.clip(level + gain * (level - ndimage.gaussian_filter(level, 1.5 / pixel)),
                    0.0, 1.0)
    values = {name: rng.uniform(*span) for name, span in
              CONTRASTS[str(rng.choice(list(CONTRASTS)))].items()}
    brain = ndimage.binary_fill_holes(ndimage.gaussian_filter(level, 1.0) > 0.15)
    tissue = np.interp(level, _TEMPLATE_LEVELS, [values["csf"], values["csf"], values["gm"],
                                                 values["wm"], values["wm"]])
    scale = 1.0 + 0.3 * smooth_phase((size, size), rng, max_phase=1.0)
    distance = ndimage.distance_transform_edt(~brain) * pixel / scale
    layers = [("csf", rng.uniform(0.5, 3.0)), ("bone", rng.uniform(1.0, 2.0)),
              ("marrow", rng.uniform(1.5, 4.0)), ("bone", rng.uniform(1.0, 2.0)),
              ("muscle", rng.uniform(1.0, 3.0)), ("fat", rng.uniform(2.0, 6.0)),
              ("muscle", 1.0)]
    magnitude = np.where(brain, tissue, 0.0)
    inner = 0.0
    for name, thickness in layers:
        shell = (distance > inner) & (distance <= inner + thickness)
        magnitude[shell] = values[name]
        inner += thickness
    return _finish(rng, magnitude)


def body_slice(seed: int, *, size: int = 256) -> np.ndarray:
    """A complex64 MR-like body slice from the mixed CT family (module docstring)."""
    rng = np.random.default_rng([seed, 0x626F6479])
    phantom = ct_mix_phantom(size, seed=BODY_FIRST_SEED + seed)
    hu = phantom.image.astype(np.float64)
    values = {name: rng.uniform(*span) for name, span in
              CONTRASTS[str(rng.choice(["t1", "t2"]))].items()}
    knots = ((-1000.0, 0.0), (-700.0, 0.03), (-110.0, values["fat"]), (-60.0, values["fat"]),
             (-20.0, 0.5 * (values["fat"] + values["csf"])), (0.0, values["csf"]),
             (20.0, values["csf"]), (40.0, values["muscle"]),
             (120.0, min(1.0, values["muscle"] + rng.uniform(0.05, 0.25))),
             (150.0, values["marrow"]), (400.0, values["marrow"]), (700.0, values["bone"]),
             (3071.0, values["bone"]))
    knots_hu, knots_value = np.array(knots).T
    magnitude = np.interp(hu, knots_hu, knots_value) * body_mask(hu, phantom.pixel_size)
    return _finish(rng, magnitude)


def _finish(rng: np.random.Generator, magnitude: np.ndarray) -> np.ndarray:
    """Texture, point-spread blur, receive bias and phase (module docstring)."""
    shape = magnitude.shape
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), rng.uniform(0.6, 1.5))
    texture /= max(float(texture.std()), 1e-12)
    magnitude = magnitude * (1.0 + rng.uniform(*TEXTURE) * texture)
    magnitude = ndimage.gaussian_filter(np.clip(magnitude, 0.0, None), rng.uniform(0.3, 0.7))
    magnitude = magnitude * (1.0 + 0.3 * smooth_phase(shape, rng, max_phase=1.0))
    magnitude = magnitude / max(float(magnitude.max()), 1e-12)
    phase = smooth_phase(shape, rng, max_phase=np.pi)
    return (magnitude * np.exp(1j * phase)).astype(np.complex64)

