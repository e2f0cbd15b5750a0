"""Augmented complex brain slices from the MNI152 T1 template that nilearn ships.

The template (ICBM 2009a nonlinear symmetric, 1 mm, 197 x 233 x 189, intensities in
[0, 1]; Fonov et al., NeuroImage 2011) is read from nilearn's package data with
nibabel, without importing nilearn. :func:`mni152_slice` makes one ``size x size``
complex64 image from an axial slice (rows anterior to posterior, columns the subject's
right to left: the neurological view):

1. the slice is resampled onto a ``size x size`` grid of ``fov / size`` mm pixels
   (``fov`` 200 mm) after a random rotation (+-15 degrees), scaling (0.85 .. 1.15),
   shift (+-8 mm) and a smooth elastic displacement (a 6 x 6 grid of displacements of
   standard deviation 3 mm, cubic-spline interpolated);
2. contrast: a random gamma (0.6 .. 1.6) of the intensity and a smooth multiplicative
   bias field (0.8 .. 1.2, degree-2 polynomial);
3. a smooth phase (:func:`medrecon.data.mr_phantom.smooth_phase`, up to pi radians).

Slices ``z`` come from :data:`TRAIN_SLICES` (training) or :data:`HELDOUT_SLICES` (never
used in training: the evaluation's images), disjoint blocks of the template.
Deterministic in the seed.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from medrecon.data.mr_phantom import smooth_phase
from medrecon.errors import InputError

TEMPLATE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
TRAIN_SLICES = range(40, 126)
HELDOUT_SLICES = range(130, 146)
FIELD_OF_VIEW_MM = 200.0


def template_path() -> Path:
    """Where nilearn keeps the MNI152 T1 template; :class:`InputError` without nilearn."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise InputError(None, "mni152", "needs the nilearn package (pip install nilearn), "
                         "which ships the MNI152 template")
    path = Path(spec.origin).parent / "datasets" / "data" / TEMPLATE
    if not path.is_file():
        raise InputError(path, "mni152", "the MNI152 template is missing from nilearn")
    return path


@lru_cache(maxsize=1)
def _template() -> np.ndarray:
    import nibabel

    volume = np.asarray(nibabel.load(template_path()).get_fdata(), dtype=np.float32)
    return volume / float(volume.max())


def template_plane(rng: np.random.Generator, slices: range) -> np.ndarray:
    """An axial template slice ``(y, x)``, anterior at the top, its index drawn from
    ``slices``."""
    z = int(rng.integers(slices.start, slices.stop))
    return _template()[:, :, z].T[::-1]


def smooth_displacement(rng: np.random.Generator, size: int, grid: int,
                        std: float) -> np.ndarray:
    """A ``(2, size, size)`` displacement cubic-spline interpolated from a random
    ``grid x grid`` one of standard deviation ``std``."""
    coarse = rng.normal(0.0, std, size=(2, grid, grid))
    return np.stack([ndimage.zoom(c, size / grid, order=3)[:size, :size] for c in coarse])


def augmented_coordinates(rng: np.random.Generator, size: int, plane_shape: tuple[int, int],
                          field_of_view: float = FIELD_OF_VIEW_MM) -> np.ndarray:
    """Template coordinates (1 mm voxels) of each pixel of a ``size x size`` grid of
    ``field_of_view / size`` mm pixels: a random rotation (+-15 degrees), scaling
    (0.85 .. 1.15), shift (+-8 mm) and elastic displacement (a 6 x 6 grid of standard
    deviation 3 mm, cubic-spline interpolated), as ``(2, size, size)``."""
    pixel = field_of_view / size
    angle = np.deg2rad(rng.uniform(-15, 15))
    zoom = rng.uniform(0.85, 1.15)
    shift = rng.uniform(-8, 8, size=2)
    rows, cols = np.meshgrid(np.arange(size) - (size - 1) / 2,
                             np.arange(size) - (size - 1) / 2, indexing="ij")
    warp = smooth_displacement(rng, size, 6, 3.0)
    cos, sin = np.cos(angle), np.sin(angle)
    y_mm = (cos * rows - sin * cols) * pixel / zoom + shift[0] + warp[0]
    x_mm = (sin * rows + cos * cols) * pixel / zoom + shift[1] + warp[1]
    centre = (np.asarray(plane_shape) - 1) / 2
    return np.stack([y_mm + centre[0], x_mm + centre[1]])


def mni152_slice(seed: int, *, size: int = 256, slices: range = TRAIN_SLICES) -> np.ndarray:
    """One augmented complex64 ``(size, size)`` slice (module docstring), magnitude about
    in [0, 1]; the slice index and every augmentation are drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    plane = template_plane(rng, slices)
    coordinates = augmented_coordinates(rng, size, plane.shape)
    magnitude = ndimage.map_coordinates(plane, coordinates, order=1, mode="constant",
                                        cval=0.0)
    magnitude = np.clip(magnitude, 0, None) ** rng.uniform(0.6, 1.6)
    bias = 1.0 + 0.2 * smooth_phase((size, size), rng, max_phase=1.0)
    phase = smooth_phase((size, size), rng, max_phase=np.pi)
    return (magnitude * bias * np.exp(1j * phase)).astype(np.complex64)
