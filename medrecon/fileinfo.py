"""What a file holds (``medrecon info``) and loading images by path for simulation.

Descriptions never contain patient names, IDs or birth dates.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medrecon.data.dicom import describe_dicom
from medrecon.data.h5guard import attributes, open_hdf5, walk
from medrecon.data.images import is_nifti, read_image
from medrecon.data.nifti import read_nifti
from medrecon.data.sinogram import FORMAT as SINOGRAM_FORMAT
from medrecon.data.sinogram import read_sinogram
from medrecon.errors import InputError


def _value_range(array: np.ndarray) -> str:
    return f"[{float(np.min(array)):.4g}, {float(np.max(array)):.4g}]"


def describe(path: str | os.PathLike[str]) -> dict[str, object]:
    """A short description of a DICOM file or folder, NIfTI, HDF5 or NPY file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, "no such file or folder")
    if path.is_dir() or path.suffix.lower() in (".dcm", ".ima", ""):
        return {"format": "DICOM", **describe_dicom(path)}
    if is_nifti(path):
        volume = read_nifti(path)
        return {"format": "NIfTI", "shape (slices, rows, cols)": volume.array.shape,
                "spacing mm (slice, row, col)": volume.spacing, "values": _value_range(
                    volume.array)}
    if path.suffix.lower() in (".h5", ".hdf5"):
        return _describe_hdf5(path)
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(path, None, f"not a readable NPY file ({exc})") from None
        return {"format": "NPY", "shape": array.shape, "dtype": str(array.dtype)}
    return {"format": "DICOM", **describe_dicom(path)}


def _describe_hdf5(path: Path) -> dict[str, object]:
    # bounded and guarded (medrecon.data.h5guard): a corrupt file gives one line, never
    # a traceback, and a file with millions of objects is not listed whole
    with open_hdf5(path) as f:
        kind = str(attributes(f, path, ("format",)).get("format", ""))
        datasets = walk(f, path)
    info: dict[str, object] = {"format": "HDF5"}
    if kind == SINOGRAM_FORMAT:
        sino = read_sinogram(path)
        g = sino.geometry
        info.update({"format": "medrecon sinogram", "beam": g.beam,
                     "views": g.n_views, "detectors": g.n_detectors,
                     "angular range (deg)": round(float(np.degrees(g.angular_coverage)), 3),
                     "image shape": g.image_shape, "pixel size mm": g.pixel_size,
                     "detector spacing mm": g.detector_spacing,
                     "image units": sino.image_units, "noise": sino.noise,
                     "reference": sino.reference is not None})
        if g.beam == "fan":
            info.update({"source to isocentre mm": g.source_to_isocenter,
                         "isocentre to detector mm": g.isocenter_to_detector})
    info["datasets"] = datasets
    return info


def load_ct_image(image: str, *, size: int = 256, seed: int = 0) -> tuple[np.ndarray, float]:
    """HU slices ``(slices, rows, cols)`` and the pixel size (mm) of an image path
    (DICOM file or folder, NIfTI), or of the built-in phantom when ``image`` is ``"phantom"``."""
    if image == "phantom":
        from medrecon.data.phantom import ct_phantom

        phantom = ct_phantom(size, seed=seed)
        return phantom.image[None], phantom.pixel_size
    volume = read_image(image)
    row, col = volume.spacing[1], volume.spacing[2]
    if abs(row - col) > 1e-3 * max(row, col):
        raise InputError(image, "PixelSpacing", f"pixels are not square ({row} x {col} mm)")
    return volume.array.astype(np.float32), float(col)


def load_mr_image(image: str, *, size: int = 256, seed: int = 0) -> np.ndarray:
    """Complex slices ``(slices, rows, cols)`` scaled to a maximum magnitude of 1: an image
    file's values (real), or the built-in MR phantom (with smooth phase) for ``"phantom"``."""
    if image == "phantom":
        from medrecon.data.mr_phantom import mr_phantom

        return mr_phantom(size, seed=seed)[None]
    array = read_image(image).array.astype(np.float32)
    array = array - min(float(array.min()), 0.0)
    peak = float(np.abs(array).max())
    if peak == 0:
        raise InputError(image, "pixel data", "the image is empty (all zero)")
    return (array / peak).astype(np.complex64)
