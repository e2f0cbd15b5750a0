"""A 3D image with its patient-space geometry (DICOM LPS, millimetres).

Conventions
-----------
``array[k, j, i]`` is slice ``k``, row ``j``, column ``i``. The voxel index vector
``(i, j, k)`` maps to patient coordinates (LPS: x to the patient's Left, y to
Posterior, z to Superior, in mm) by::

    p = origin + orientation @ diag(col_spacing, row_spacing, slice_spacing) @ (i, j, k)

where ``spacing = (slice_spacing, row_spacing, col_spacing)`` and the columns of
``orientation`` are the unit vectors of increasing column index (DICOM
ImageOrientationPatient[0:3]), increasing row index (ImageOrientationPatient[3:6])
and increasing slice index (from the first slice to the next).

>>> import numpy as np
>>> v = Volume(np.zeros((2, 3, 4), np.float32), spacing=(5.0, 0.5, 0.5))
>>> v.positions()[1].tolist()
[0.0, 0.0, 5.0]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _identity() -> np.ndarray:
    return np.eye(3)


@dataclass(frozen=True, eq=False, repr=False)
class Volume:
    """A 3D image ``(slices, rows, cols)`` with its geometry (see the module docstring).

    Attributes:
        array: ``(slices, rows, cols)`` float32 or float64 values (HU for CT); other
            real dtypes are converted (float32 when exact, else float64).
        spacing: ``(slice, row, col)`` spacing in mm; row spacing is the distance
            between rows (DICOM PixelSpacing[0]).
        origin: LPS position (mm) of voxel ``(0, 0, 0)``: ImagePositionPatient of slice 0.
        orientation: 3x3, columns = unit LPS vectors of increasing col, row, slice index.
        modality: DICOM modality (``"CT"``, ``"MR"``, ``"OT"``...).
        units: ``"HU"`` for CT values, another unit, or ``""`` when unknown.
        source: pydicom datasets of the source slices in the order of ``array``, without
            pixel data (DICOM-read volumes only; they hold patient data: never log them).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    orientation: np.ndarray = field(default_factory=_identity)
    modality: str = "OT"
    units: str = ""
    source: tuple | None = None

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise ValueError(f"Volume.array must be 3D (slices, rows, cols), got {array.shape}")
        if array.dtype.kind not in "biuf":
            raise ValueError(f"Volume.array must hold real numbers, got {array.dtype}")
        if array.dtype not in (np.float32, np.float64):
            exact32 = array.dtype.itemsize <= 2 or array.dtype == np.float16
            array = array.astype(np.float32 if exact32 else np.float64)
        spacing = tuple(float(s) for s in self.spacing)
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"Volume.spacing must be 3 positive numbers, got {self.spacing}")
        origin = tuple(float(o) for o in self.origin)
        orientation = np.array(self.orientation, dtype=np.float64)
        if len(origin) != 3 or orientation.shape != (3, 3):
            raise ValueError("Volume.origin must have 3 numbers and orientation be 3x3")
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "orientation", orientation)
        if self.source is not None:
            object.__setattr__(self, "source", tuple(self.source))

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(slices, rows, cols)``."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping ``(i=col, j=row, k=slice, 1)`` to LPS mm (module docstring)."""
        slice_sp, row_sp, col_sp = self.spacing
        affine = np.eye(4)
        affine[:3, :3] = self.orientation @ np.diag([col_sp, row_sp, slice_sp])
        affine[:3, 3] = self.origin
        return affine

    def positions(self) -> np.ndarray:
        """``(slices, 3)`` LPS position of the first voxel of every slice (ImagePositionPatient)."""
        k = np.arange(self.array.shape[0], dtype=np.float64)
        step = self.orientation[:, 2] * self.spacing[0]
        return np.asarray(self.origin) + k[:, None] * step

    def __repr__(self) -> str:
        source = "None" if self.source is None else f"<{len(self.source)} datasets>"
        return (f"Volume(shape={self.shape}, dtype={self.array.dtype}, spacing={self.spacing}, "
                f"origin={self.origin}, modality={self.modality!r}, units={self.units!r}, "
                f"source={source})")
