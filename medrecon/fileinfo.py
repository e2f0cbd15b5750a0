"""What a file holds (``medrecon info``) and loading images by path for simulation.

Descriptions never contain patient names, IDs or birth dates.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medrecon.data.ct_image import CTImage, prepare_ct_image
from medrecon.data.dicom import describe_dicom
from medrecon.data.h5guard import attributes, open_hdf5, walk
from medrecon.data.images import is_nifti, read_image
from medrecon.data.nifti import read_nifti
from medrecon.data.sinogram import FORMAT as SINOGRAM_FORMAT
from medrecon.data.sinogram import read_sinogram
from medrecon.errors import InputError

if TYPE_CHECKING:
    from medrecon.data.kspace import FastMRIFile


def _value_range(array: np.ndarray) -> str:
    return f"[{float(np.min(array)):.4g}, {float(np.max(array)):.4g}]"


def describe(path: str | os.PathLike[str]) -> dict[str, object]:
    """A short description of a DICOM file or folder, NIfTI, HDF5, NPY or TIFF file."""
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
        return {"format": "NPY", "shape": array.shape, "dtype": str(array.dtype),
                **_sinogram_array_hint(array.shape)}
    if path.suffix.lower() in (".tif", ".tiff"):
        return _describe_tiff(path)
    return {"format": "DICOM", **describe_dicom(path)}


GEOMETRY_OPTIONS = ("--image-size N, and where the defaults do not fit: --beam parallel|fan, "
                    "--pixel-size MM, --detector-spacing MM, --turn half|full|short, fan "
                    "beam --sid MM --idd MM")
"""What ``medrecon recon ct`` needs to know of a sinogram array without geometry."""


def _sinogram_array_hint(shape: tuple[int, ...]) -> dict[str, object]:
    """How ``medrecon recon ct`` reads an array of ``shape`` as a sinogram: its views and
    detectors, and the geometry options it needs (an NPY or TIFF file stores none)."""
    if len(shape) not in (2, 3):
        return {"as a sinogram": f"no: expected (views, detectors) or (slices, views, "
                                 f"detectors), got {len(shape)} dimensions"}
    hint: dict[str, object] = {"views": shape[-2], "detectors": shape[-1]}
    if len(shape) == 3:
        hint["slices"] = shape[0]
    hint["geometry"] = "not stored; give medrecon recon ct " + GEOMETRY_OPTIONS
    return hint


def _describe_tiff(path: Path) -> dict[str, object]:
    """A TIFF file's first series (shape, dtype) read from its header, without its pixels,
    and how ``medrecon recon ct`` reads it as a sinogram."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, dtype, pages = tuple(series.shape), np.dtype(series.dtype), len(tif.pages)
    except Exception as exc:  # noqa: BLE001 (tifffile raises many kinds on a bad file)
        from medrecon.data.h5guard import brief

        raise InputError(path, None, f"not a readable TIFF file ({brief(exc)})") from None
    return {"format": "TIFF", "shape": shape, "dtype": str(dtype), "pages": pages,
            **_sinogram_array_hint(shape)}


def _describe_hdf5(path: Path) -> dict[str, object]:
    # bounded and guarded (medrecon.data.h5guard): a corrupt file gives one line, never
    # a traceback, and a file with millions of objects is not listed whole
    with open_hdf5(path) as f:
        kind = str(attributes(f, path, ("format",)).get("format", ""))
        datasets = walk(f, path)
    info: dict[str, object] = {"format": "HDF5"}
    # ISMRMRD as medrecon.data.kspace.is_ismrmrd sees it, from the listing already read
    ismrmrd = "kspace" not in datasets and {"dataset/xml", "dataset/data"} <= datasets.keys()
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
        if sino.field_of_view is not None:
            fov = sino.field_of_view
            info["metrics region"] = (f"field of view ({int(fov.sum())} of {fov.size} "
                                      "pixels; padding outside set to air)")
        if g.beam == "fan":
            info.update({"source to isocentre mm": g.source_to_isocenter,
                         "isocentre to detector mm": g.isocenter_to_detector})
    elif "kspace" in datasets or ismrmrd:
        # what a reconstruction would find; a file it refuses is still listed, with why
        from medrecon.data.kspace import FastMRIFile, IsmrmrdFile

        try:
            if ismrmrd:
                with IsmrmrdFile(path) as raw:
                    info.update(raw.describe())
            else:
                with FastMRIFile(path) as kspace:
                    info.update(describe_kspace(kspace))
        except InputError as exc:
            info["problem"] = f"{exc.field}: {exc.problem}" if exc.field else exc.problem
    info["datasets"] = {name: _dtype_text(value) for name, value in datasets.items()}
    return info


def _dtype_text(description: str) -> str:
    """A dataset's ``"shape dtype"`` with a compound dtype shown by its field names
    (``(31,) compound (head, traj, data)``), not numpy's full structure."""
    shape, _, dtype = description.partition(" ")
    if dtype.startswith("{'names'") or dtype.startswith("[("):
        try:
            names = np.dtype(ast.literal_eval(dtype)).names
        except Exception:  # noqa: BLE001 (not a numpy dtype text: show it shortened)
            names = None
        if names:
            return f"{shape} compound ({', '.join(names)})"
        return f"{shape} compound"
    return description


def describe_kspace(f: FastMRIFile) -> dict[str, object]:
    """What a fastMRI-layout k-space file holds, for ``medrecon info`` (never patient
    identity)."""
    from medrecon.data.calibration import calibration_width

    info: dict[str, object] = {"format": "fastMRI k-space",
                               "trajectory": "cartesian" if f.trajectory is None else str(
                                   f.attrs.get("pattern", "non-cartesian")),
                               "slices": f.num_slices, "coils": f.coils,
                               "multi-coil": f.multicoil}
    if f.trajectory is None:
        info["k-space (readout, phase encodes)"] = f.shape
        if f.mask is not None and f.mask.ndim == 1:
            sampled = int(f.mask.sum())
            info["phase encodes sampled"] = (f"{sampled} of {f.shape[-1]} (R = "
                                             f"{f.shape[-1] / sampled:.3g})")
            info["fully sampled centre"] = calibration_width(f.mask, f.shape)
        elif f.mask is not None:
            info["samples"] = f"{int(f.mask.sum())} of {f.mask.numel()} (2D mask)"
        else:
            info["phase encodes sampled"] = "all (no mask)"
    else:
        info["samples per coil"] = f.shape[-1]
        info["image grid"] = f.image_shape
    if f.header is not None:
        info["recon matrix"] = f.header.recon_matrix[:2]
        info["field of view mm"] = f.header.recon_fov_mm[:2]
    info["references"] = list(f.references) or "none"
    info["noise scan"] = "none"
    return info


def load_ct_image(image: str, *, size: int = 256, seed: int = 0,
                  check_modality: bool = True) -> CTImage:
    """The HU slices of an image path (DICOM file or folder, NIfTI) ready to be projected,
    with their field of view (:func:`medrecon.data.ct_image.prepare_ct_image`: DICOM
    padding and out-of-field pixels set to air, nothing below air), or the built-in
    phantom (all in the field of view) when ``image`` is ``"phantom"``.

    Raises :class:`InputError` naming the file for an image that is not CT (unless
    ``check_modality`` is false), non-square pixels, or one that is nearly all padding.
    """
    if image == "phantom":
        from medrecon.data.phantom import ct_phantom

        phantom = ct_phantom(size, seed=seed)
        hu = np.asarray(phantom.image, dtype=np.float32)[None]
        return CTImage(hu, np.ones(hu.shape, dtype=bool), float(phantom.pixel_size))
    return prepare_ct_image(read_image(image), image, check_modality=check_modality)


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
