"""Writing reconstructions: the output path's suffix picks the format.

=================  ===========================================================
``.nii[.gz]``      NIfTI, with the RAS affine of the volume's geometry
``.h5/.hdf5``      HDF5: ``/reconstruction`` (slices, rows, cols) float32, optional
                   ``/reference``; attributes ``units``, ``spacing``, ``origin``,
                   ``orientation``, ``method`` and ``metrics`` (JSON)
``.png``           a figure of the middle slice (with reference and error map)
no suffix          a DICOM series folder (derived from the source series if any)
=================  ===========================================================
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from medrecon.data.atomic import check_output_path
from medrecon.data.dicom import write_dicom_series
from medrecon.data.kspace_write import write_fastmri_reconstruction
from medrecon.data.nifti import write_nifti
from medrecon.data.volume import Volume
from medrecon.errors import InputError
from medrecon.figures import comparison_panels, save_figure

FORMATS = {".nii": "nifti", ".gz": "nifti", ".h5": "hdf5", ".hdf5": "hdf5", ".png": "png",
           "": "dicom"}


def output_format(path: str | os.PathLike[str]) -> str:
    """``"nifti"``, ``"hdf5"``, ``"png"`` or ``"dicom"`` from the path; checks the folder exists."""
    path = check_output_path(path)
    suffix = path.suffix.lower()
    if suffix == ".gz" and not path.name.lower().endswith(".nii.gz"):
        suffix = ".unknown"
    if suffix not in FORMATS:
        raise InputError(path, "output", f"unknown output format {suffix!r}: use .nii, .nii.gz, "
                         ".h5, .png, or a folder name (no suffix) for a DICOM series")
    kind = FORMATS[suffix]
    if kind != "dicom" and path.is_dir():
        raise InputError(path, "output", "is a folder, expected a file name")
    if kind == "dicom" and path.exists() and not path.is_dir():
        raise InputError(path, "output", "is a file; a DICOM series is written to a folder")
    return kind


def write_reconstruction(volume: Volume, path: str | os.PathLike[str], *, method: str,
                         reference: np.ndarray | None = None,
                         metrics: dict[str, float] | None = None) -> Path:
    """Write ``volume`` to ``path`` in the format its suffix names (see module docstring)."""
    path = Path(path)
    kind = output_format(path)
    metrics = metrics or {}
    if kind == "nifti":
        write_nifti(volume, path)
    elif kind == "dicom":
        write_dicom_series(volume, path, series_description=f"medrecon {method}")
    elif kind == "png":
        middle = volume.array.shape[0] // 2
        ref = None if reference is None else np.asarray(reference).reshape(volume.array.shape)[
            middle]
        text = ", ".join(f"{k} {v:.3g}" for k, v in metrics.items())
        save_figure(path, comparison_panels(volume.array[middle], method, volume.units, ref),
                    suptitle=text)
    else:
        write_fastmri_reconstruction(
            path, volume.array, reference=reference,
            attrs={"units": volume.units, "spacing": volume.spacing, "origin": volume.origin,
                   "orientation": volume.orientation, "method": method,
                   "metrics": json.dumps(metrics)})
    return path
