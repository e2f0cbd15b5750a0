"""Reading an image volume from a path: a NIfTI file, or a DICOM file or series folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medrecon.data.dicom import read_dicom
from medrecon.data.nifti import read_nifti
from medrecon.data.volume import Volume
from medrecon.errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a NIfTI file (by its suffix)."""
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def read_image(path: str | os.PathLike[str]) -> Volume:
    """The volume of a NIfTI file or a DICOM file or series folder, with finite values;
    raises :class:`InputError` naming the file otherwise."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, "no such file or folder")
    volume = read_nifti(path) if is_nifti(path) else read_dicom(path)
    if not np.all(np.isfinite(volume.array)):
        raise InputError(path, "pixel data", "contains NaN or infinite values")
    return volume
