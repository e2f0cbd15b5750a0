"""NIfTI with the DICOM LPS to NIfTI RAS affine.

The NIfTI data array is indexed ``(i=col, j=row, k=slice)``, i.e.
``data = np.transpose(volume.array, (2, 1, 0))``, and its affine is the volume's
LPS affine (:meth:`~medrecon.data.volume.Volume.affine_lps`) with its first two
rows negated (LPS to RAS). Both the sform and the qform are set (code 1,
scanner) and spatial units are mm. Modality and units travel in ``descrip``.

Reading inverts this: the best affine of the file (sform, else qform), converted
to mm when the file says metres or microns, is split into spacing (column norms)
and orientation (unit columns), so any NIfTI keeps its affine semantics.

>>> import numpy as np
>>> from medrecon.data.nifti import read_nifti, write_nifti
>>> from medrecon.data.volume import Volume
>>> path = getfixture("tmp_path") / "recon.nii.gz"    # a temporary folder under pytest
>>> _ = write_nifti(Volume(np.zeros((2, 3, 4), np.float32), spacing=(5.0, 0.5, 0.5)), path)
>>> read_nifti(path).spacing
(5.0, 0.5, 0.5)
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np

from medrecon.data.atomic import atomic_file
from medrecon.data.h5guard import check_size
from medrecon.data.quiet import quiet
from medrecon.data.volume import Volume
from medrecon.errors import InputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SUFFIXES = (".nii", ".nii.gz")
UNIT_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 1e-3, "unknown": 1.0}
#: largest image side read
MAX_SIDE = 65536
DESCRIP = re.compile(r"medrecon modality=([^;]*); units=(.*)")


def nifti_affine(volume: Volume) -> np.ndarray:
    """The RAS affine of ``volume``: voxel ``(i=col, j=row, k=slice, 1)`` to RAS mm."""
    return LPS_TO_RAS @ volume.affine_lps()


def write_nifti(volume: Volume, path: str | os.PathLike[str]) -> Path:
    """Write ``volume`` to ``path`` (``.nii`` or ``.nii.gz``), complete or not at all."""
    path = Path(path)
    if not path.name.lower().endswith(SUFFIXES):
        raise InputError(path, "output", "a NIfTI file name ends in .nii or .nii.gz")
    affine = nifti_affine(volume)
    image = nib.Nifti1Image(np.transpose(volume.array, (2, 1, 0)), affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    image.header.set_xyzt_units(xyz="mm")
    descrip = f"medrecon modality={volume.modality}; units={volume.units}"
    image.header["descrip"] = descrip.encode("ascii", "replace")[:79]
    data = image.to_bytes()
    if path.name.lower().endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return path


def read_nifti(path: str | os.PathLike[str]) -> Volume:
    """Read a 3D NIfTI file (a 4D file with one volume is accepted) into a :class:`Volume`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "no such file")
    with quiet():  # nibabel logs and warns on odd headers: never printed
        image = _load(path)
        data = _data(path, image)
        lps = LPS_TO_RAS @ _affine_mm(path, image)
        modality, units = _descrip(image)
    matrix = lps[:3, :3]
    with np.errstate(all="ignore"):
        norms = np.linalg.norm(matrix, axis=0)
        invertible = (np.all(np.isfinite(lps)) and norms.min() > 0 and norms.max() < 1e6
                      and abs(np.linalg.det(matrix)) >= 1e-12)
    if not invertible:
        raise InputError(path, "affine", "not a finite invertible voxel-to-world mapping")
    return Volume(array=np.ascontiguousarray(np.transpose(data, (2, 1, 0))),
                  spacing=(norms[2], norms[1], norms[0]), origin=tuple(lps[:3, 3]),
                  orientation=matrix / norms, modality=modality, units=units)


def _load(path: Path) -> nib.Nifti1Image:
    try:
        image = nib.load(path)
    except Exception as exc:  # nibabel raises ImageFileError, OSError, EOFError...
        raise InputError(path, None, f"not a readable NIfTI file ({_brief(exc)})") from None
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(path, None, f"not a NIfTI file ({type(image).__name__})")
    return image


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:200] if text else "") or type(exc).__name__


def _data(path: Path, image: nib.Nifti1Image) -> np.ndarray:
    """The voxel values as a 3D ``(i, j, k)`` float array."""
    shape = image.shape
    if len(shape) < 2 or int(np.prod(shape[3:], dtype=np.int64)) != 1:
        raise InputError(path, "dim", f"shape {shape}: only 3D images (or 4D with one "
                         "volume) are supported")
    if any(n < 1 for n in shape) or max(shape[:3]) > MAX_SIDE:
        raise InputError(path, "dim", f"shape {shape}: sizes must be 1 to {MAX_SIDE}")
    stored = image.get_data_dtype()
    if stored.kind not in "iuf":
        raise InputError(path, "datatype", f"{stored} voxels are not supported")
    dtype = np.float32 if stored == np.float32 or stored.itemsize <= 2 else np.float64
    check_size(path, "dim", shape[:3], 2 * np.dtype(dtype).itemsize)
    try:
        data = image.get_fdata(dtype=dtype)
    except Exception as exc:  # truncated or corrupt data
        raise InputError(path, "data", f"cannot read the voxel data ({_brief(exc)})") from None
    data = data.reshape(shape[:3] + (1,) * (3 - len(shape[:3])))
    if not np.all(np.isfinite(data)):
        raise InputError(path, "data", "contains NaN or infinite values")
    return data


def _affine_mm(path: Path, image: nib.Nifti1Image) -> np.ndarray:
    """The best affine (sform, else qform, else pixdim) with its units converted to mm."""
    try:
        affine = np.array(image.affine, dtype=np.float64)
        unit = image.header.get_xyzt_units()[0]
    except Exception as exc:  # an unusable header
        raise InputError(path, "affine", f"unreadable ({_brief(exc)})") from None
    affine[:3] *= UNIT_TO_MM.get(unit, 1.0)
    return affine


def _descrip(image: nib.Nifti1Image) -> tuple[str, str]:
    """Modality and units written by :func:`write_nifti`, else ``("OT", "")``."""
    try:
        raw = image.header["descrip"]
        text = raw.item().decode("ascii", "replace") if hasattr(raw, "item") else str(raw)
    except Exception:  # an odd header: the description is optional
        return "OT", ""
    match = DESCRIP.fullmatch(text.rstrip("\x00").strip())
    return (match.group(1) or "OT", match.group(2)) if match else ("OT", "")
