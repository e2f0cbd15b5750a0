"""DICOM series in, derived DICOM series out.

Reading (:func:`read_dicom`): a single file or the folder of one series. Slices
are ordered by their position along the slice normal
``dot(ImagePositionPatient, cross(row_cosine, col_cosine))``, never by
InstanceNumber. Stored values are rescaled (RescaleSlope, RescaleIntercept, to HU
for CT). Compressed transfer syntaxes decode through pydicom's pixel-data plugins
(pylibjpeg, pyjpegls). Enhanced multi-frame images (Enhanced CT/MR, Legacy
Converted, Parametric Map) are read frame by frame from their functional groups
(:mod:`medrecon.data.dicom_enhanced`); other multi-frame files are refused. The slice
step is the mean step between consecutive ImagePositionPatient; steps must agree
within 1 % (a missing slice is an error, not a silent gap).

Writing (:func:`write_dicom_series`): one Explicit VR Little Endian file per slice,
``IM00001.dcm``, ``IM00002.dcm``... in a new folder that appears complete or not
at all. Values are stored as int16 with a linear rescale chosen so that integer
values (HU) are kept exactly; see :func:`int16_encoding`.

Bad input raises :class:`~medrecon.errors.InputError` naming the file and the
DICOM keyword. Patient names and IDs are never logged or put in messages.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from medrecon.data.atomic import atomic_folder
from medrecon.data.dicom_enhanced import FRAME_KEY, is_enhanced, split_frames
from medrecon.data.h5guard import check_size
from medrecon.data.quiet import quiet
from medrecon.data.volume import Volume
from medrecon.errors import InputError

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
SLICE_STEP_TOLERANCE = 0.01  # relative deviation of one slice step from the mean step
ORIENTATION_TOLERANCE = 1e-4
SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage}
PATIENT_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
STUDY_KEYWORDS = ("StudyDate", "StudyTime", "AccessionNumber", "StudyID",
                  "ReferringPhysicianName")
MR_KEYWORDS = {"ScanningSequence": "RM", "SequenceVariant": "NONE", "ScanOptions": "",
               "MRAcquisitionType": "", "RepetitionTime": "", "EchoTime": "",
               "EchoTrainLength": ""}  # PS3.3 C.8.3.1 MR Image Module (Type 1, 2, 2C)
IMAGE_TYPE_3 = {"CT": "AXIAL", "MR": "OTHER"}  # PS3.3 C.8.2.1.1.1, C.8.3.1.1.1
HU_OFFSET = 1024  # CT stored values: HU + 1024 (RescaleIntercept -1024)
CT_WINDOW = (40.0, 400.0)  # soft-tissue window (center, width) in HU
OUTPUT_NAME = re.compile(r"IM\d{5,}\.dcm")
#: largest Rows or Columns read
MAX_SIDE = 16384


# --------------------------------------------------------------------------- reading


def read_dicom(path: str | os.PathLike[str]) -> Volume:
    """Read a DICOM file or the folder of one series into a :class:`Volume`.

    Files in the folder that are not DICOM (README...), the DICOMDIR and non-image
    objects (structured reports...) are ignored. A single file without
    ImagePositionPatient/ImageOrientationPatient gets origin 0, identity orientation
    and 1 mm spacing where missing; a series needs its full geometry.

    >>> import numpy as np
    >>> from medrecon.data.volume import Volume
    >>> folder = getfixture("tmp_path") / "series"      # a temporary folder under pytest
    >>> _ = write_dicom_series(Volume(np.zeros((2, 3, 4), np.float32), (5.0, 0.5, 0.5),
    ...                               units="HU", modality="CT"), folder)
    >>> volume = read_dicom(folder)
    >>> volume.array.shape, volume.units
    ((2, 3, 4), 'HU')
    """
    # pydicom, its decoders and PIL log (even tracebacks) and warn on corrupt files:
    # kept quiet, and any problem ends as one InputError
    with quiet():
        return _read_dicom(Path(path))


def _read_dicom(path: Path) -> Volume:
    if path.is_dir():
        slices = _read_folder(path)
    elif path.is_file():
        slices = _frames_of(path, _read_file(path))
    else:
        raise InputError(path, None, "no such file or folder")
    for file, ds in slices:
        _check_single_frame_image(file, ds)
    geometry = _geometry(path, slices, single_file=path.is_file())
    order, spacing, origin, orientation = geometry
    slices = [slices[n] for n in order]
    array = _pixel_values(slices)
    sources = tuple(_without_pixels(ds) for _, ds in slices)
    first = sources[0]
    try:
        modality = str(first.get("Modality", "") or "OT")
        units = _units(first, modality)
    except Exception as exc:  # a value pydicom cannot convert
        raise InputError(slices[0][0], "Modality", f"unreadable ({_brief(exc)})") from None
    return Volume(array=array, spacing=spacing, origin=origin, orientation=orientation,
                  modality=modality, units=units, source=sources)


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:200] if text else "") or type(exc).__name__


def _is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust panic from a decoder (pyo3's ``PanicException``, which
    derives from ``BaseException`` so that ``except Exception`` misses it)."""
    return type(exc).__name__ == "PanicException"


def _read_file(path: Path, *, in_folder: bool = False) -> Dataset | None:
    """The dataset of ``path``; ``None`` for a non-DICOM file in a folder."""
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        if in_folder:
            return None
        raise InputError(path, None, _not_dicom_reason(path)) from None
    except Exception as exc:  # pydicom raises many kinds on corrupt files
        raise InputError(path, None, f"unreadable DICOM file ({_brief(exc)})") from None
    except BaseException as exc:
        if not _is_panic(exc):
            raise
        raise InputError(path, None, f"unreadable DICOM file (decoder panic: {_brief(exc)})"
                         ) from None


def _not_dicom_reason(path: Path) -> str:
    """Tell a DICOM file without the Part 10 header from a file that is not DICOM."""
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        looks_dicom = any(k in ds for k in ("SOPClassUID", "Rows", "Modality"))
    except Exception:
        looks_dicom = False
    if looks_dicom:
        return ("DICOM data without the 128-byte preamble and 'DICM' prefix "
                "(not a DICOM Part 10 file); re-export it as standard DICOM")
    return "not a DICOM file"


def _read_folder(folder: Path) -> list[tuple[Path, Dataset]]:
    """The image datasets of one series in ``folder`` (not recursive)."""
    slices = []
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        ds = _read_file(file, in_folder=True)
        if ds is not None and not _is_non_image(ds):
            slices.extend(_frames_of(file, ds))
    if not slices:
        raise InputError(folder, None, "no DICOM image files in this folder")
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) > 1:
        raise InputError(folder, "SeriesInstanceUID",
                         f"the folder holds {len(series)} series; give the folder of one series")
    return slices


def _sop_class(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("MediaStorageSOPClassUID", "") if meta is not None else ""
    return str(uid or ds.get("SOPClassUID", ""))


def _is_non_image(ds: Dataset) -> bool:
    """A DICOMDIR, structured report, presentation state...: no pixels by design."""
    if any(k in ds for k in PIXEL_KEYWORDS):
        return False
    uid = UID(_sop_class(ds))
    return uid.is_valid and uid.name != str(uid) and "Image" not in uid.name


def _frames_of(path: Path, ds: Dataset) -> list[tuple[Path, Dataset]]:
    """``[(path, ds)]``, or one dataset per frame of an enhanced multi-frame image
    (:func:`medrecon.data.dicom_enhanced.split_frames`)."""
    if not is_enhanced(ds):
        _check_single_frame_image(path, ds)
        return [(path, ds)]
    if not any(k in ds for k in PIXEL_KEYWORDS):
        raise InputError(path, "PixelData", "missing: the file has no image (truncated?)")
    if _int(path, "SamplesPerPixel", ds.get("SamplesPerPixel") or 1) != 1:
        raise InputError(path, "SamplesPerPixel", "colour images are not supported")
    try:
        frames = split_frames(path, ds)
    except BaseException as exc:  # the RLE decoder's Rust panic, nothing else
        if not _is_panic(exc):
            raise
        raise InputError(path, "PixelData", f"cannot decode the pixel data (decoder panic: "
                         f"{_brief(exc)})") from None
    return [(path, frame) for frame in frames]


def _check_single_frame_image(path: Path, ds: Dataset) -> None:
    if not any(k in ds for k in PIXEL_KEYWORDS):
        raise InputError(path, "PixelData", "missing: the file has no image (truncated?)")
    frames = ds.get("NumberOfFrames") or 1
    if _int(path, "NumberOfFrames", frames) > 1 and getattr(ds, FRAME_KEY, None) is None:
        raise InputError(path, "NumberOfFrames", "multi-frame DICOM files without functional "
                         "groups (other than enhanced CT/MR) are not supported; export the "
                         "series as one file per slice")
    if _int(path, "SamplesPerPixel", ds.get("SamplesPerPixel") or 1) != 1:
        raise InputError(path, "SamplesPerPixel", "colour images are not supported")
    for keyword in ("Rows", "Columns"):
        if keyword not in ds:
            raise InputError(path, keyword, "missing")


def _int(path: Path, keyword: str, value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise InputError(path, keyword, f"not an integer ({value!r})") from None


def _floats(path: Path, ds: Dataset, keyword: str, count: int) -> np.ndarray | None:
    """``count`` finite numbers from ``keyword``, ``None`` when absent."""
    if keyword not in ds or ds[keyword].value in (None, ""):
        return None
    try:
        values = np.array([float(v) for v in np.atleast_1d(ds[keyword].value)])
    except (TypeError, ValueError):
        raise InputError(path, keyword, "not a list of numbers") from None
    if values.shape != (count,) or not np.all(np.isfinite(values)):
        raise InputError(path, keyword, f"expected {count} finite numbers, got {values.tolist()}")
    return values


def _cosines(path: Path, ds: Dataset, single_file: bool) -> np.ndarray:
    """Row and column direction cosines as a 3x2 matrix."""
    iop = _floats(path, ds, "ImageOrientationPatient", 6)
    if iop is None:
        if single_file and "ImagePositionPatient" not in ds:
            return np.eye(3)[:, :2]
        raise InputError(path, "ImageOrientationPatient", "missing")
    row, col = iop[:3], iop[3:]
    norms = np.linalg.norm(row), np.linalg.norm(col)
    if min(norms) < 0.5 or abs(row @ col) > 1e-2 * norms[0] * norms[1]:
        raise InputError(path, "ImageOrientationPatient",
                         "not two orthogonal direction cosines")
    return np.stack([row / norms[0], col / norms[1]], axis=1)


def _pixel_spacing(path: Path, ds: Dataset, single_file: bool) -> np.ndarray:
    spacing = _floats(path, ds, "PixelSpacing", 2)
    if spacing is None:
        no_geometry = "ImagePositionPatient" not in ds and "ImageOrientationPatient" not in ds
        if single_file and no_geometry:
            return np.ones(2)
        raise InputError(path, "PixelSpacing", "missing")
    if np.any(spacing <= 0):
        raise InputError(path, "PixelSpacing", f"must be positive, got {spacing.tolist()}")
    return spacing


def _position(path: Path, ds: Dataset, single_file: bool) -> np.ndarray:
    ipp = _floats(path, ds, "ImagePositionPatient", 3)
    if ipp is None:
        if single_file and "ImageOrientationPatient" not in ds:
            return np.zeros(3)
        raise InputError(path, "ImagePositionPatient", "missing")
    return ipp


def _geometry(where: Path, slices: list[tuple[Path, Dataset]], single_file: bool
              ) -> tuple[list[int], tuple[float, float, float], tuple[float, float, float],
                         np.ndarray]:
    """``(order, spacing, origin, orientation)`` of the slices (see the module docstring)."""
    cosines = [_cosines(f, ds, single_file) for f, ds in slices]
    pixel = [_pixel_spacing(f, ds, single_file) for f, ds in slices]
    positions = np.array([_position(f, ds, single_file) for f, ds in slices])
    for (file, _), c, p in zip(slices, cosines, pixel):
        if np.abs(c - cosines[0]).max() > ORIENTATION_TOLERANCE:
            raise InputError(file, "ImageOrientationPatient", "differs from the other slices")
        if np.abs(p - pixel[0]).max() > 1e-4 * pixel[0].max():
            raise InputError(file, "PixelSpacing", "differs from the other slices")
    normal = np.cross(cosines[0][:, 0], cosines[0][:, 1])
    order = np.argsort(positions @ normal, kind="stable")
    positions = positions[order]
    if len(slices) == 1:
        step, direction = _single_slice_spacing(slices[0][0], slices[0][1]), normal
    else:
        step, direction = _slice_step(where, positions)
    orientation = np.column_stack([cosines[0], direction])
    spacing = (step, float(pixel[0][0]), float(pixel[0][1]))
    return order.tolist(), spacing, tuple(positions[0].tolist()), orientation


def _single_slice_spacing(path: Path, ds: Dataset) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _floats(path, ds, keyword, 1)
        if value is not None and value[0] > 0:
            return float(value[0])
    return 1.0


def _slice_step(where: Path, positions: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean slice step (mm) and its unit direction; every step within 1 % of the mean."""
    steps = np.diff(positions, axis=0)
    mean = (positions[-1] - positions[0]) / (len(positions) - 1)
    length = float(np.linalg.norm(mean))
    lengths = np.linalg.norm(steps, axis=1)
    if length == 0 or lengths.min() < 1e-3 * length:
        raise InputError(where, "ImagePositionPatient",
                         "two slices at the same position (several acquisitions in one series?)")
    deviation = np.linalg.norm(steps - mean, axis=1).max()
    if deviation > SLICE_STEP_TOLERANCE * length:
        raise InputError(where, "ImagePositionPatient",
                         f"slice spacing is not uniform (steps from {lengths.min():.4g} to "
                         f"{lengths.max():.4g} mm); is a slice missing?")
    return length, mean / length


def _pixel_values(slices: list[tuple[Path, Dataset]]) -> np.ndarray:
    """Rescaled values ``(slices, rows, cols)``: float32, or float64 beyond 2**24."""
    rows, cols = (_int(slices[0][0], k, slices[0][1][k].value) for k in ("Rows", "Columns"))
    for file, ds in slices:
        for keyword, expected in (("Rows", rows), ("Columns", cols)):
            value = _int(file, keyword, ds[keyword].value)
            if value != expected:
                raise InputError(file, keyword, f"{value}, but other slices have {expected}")
            if not 1 <= value <= MAX_SIDE:
                raise InputError(file, keyword, f"{value}; expected 1 to {MAX_SIDE}")
        bits = ds.get("BitsAllocated")
        if bits is not None and _int(file, "BitsAllocated", bits) not in (1, 8, 16, 32, 64):
            raise InputError(file, "BitsAllocated", f"{bits} is not 1, 8, 16, 32 or 64")
    # decoded and rescaled in float64: refused from the declared sizes before decoding
    check_size(slices[0][0], "Rows", (len(slices), rows, cols), 16, "a series of")
    array = np.stack([_rescaled(file, ds, (rows, cols)) for file, ds in slices])
    if np.abs(array).max(initial=0.0) > 2.0**24:
        return array
    return array.astype(np.float32)


def _rescaled(path: Path, ds: Dataset, shape: tuple[int, int]) -> np.ndarray:
    try:
        stored = ds.pixel_array
    except Exception as exc:  # decoders raise anything from ValueError to RuntimeError
        raise InputError(path, "PixelData", f"cannot decode the pixel data ({_brief(exc)})"
                         ) from None
    except BaseException as exc:  # the RLE decoder's Rust panic, nothing else
        if not _is_panic(exc):
            raise
        raise InputError(path, "PixelData", f"cannot decode the pixel data (decoder panic: "
                         f"{_brief(exc)})") from None
    if stored.shape != shape:
        raise InputError(path, "PixelData", f"decoded shape {stored.shape}, expected {shape}")
    slope = _floats(path, ds, "RescaleSlope", 1)
    intercept = _floats(path, ds, "RescaleIntercept", 1)
    if slope is None and intercept is None:
        slope = _medrecon_mapping(path, ds)
    values = stored.astype(np.float64)
    values = values * (1.0 if slope is None else slope[0]) + (
        0.0 if intercept is None else intercept[0])
    if not np.all(np.isfinite(values)):
        raise InputError(path, "PixelData", "contains NaN or infinite values")
    return values


def _medrecon_mapping(path: Path, ds: Dataset) -> np.ndarray | None:
    """The slope of medrecon's own Real World Value Mapping (an MR series it wrote, see
    :func:`mr_encoding`; PS3.3 C.7.6.16.2.11), ``None`` for any other file."""
    items = ds.get("RealWorldValueMappingSequence") or []
    for item in items:
        if str(item.get("LUTLabel", "")) == "MEDRECON":
            slope = _floats(path, item, "RealWorldValueSlope", 1)
            if slope is not None and slope[0] > 0:
                return slope
    return None


def _without_pixels(ds: Dataset) -> Dataset:
    for keyword in PIXEL_KEYWORDS:
        if keyword in ds:
            delattr(ds, keyword)
    return ds


def _units(ds: Dataset, modality: str) -> str:
    rescale_type = str(ds.get("RescaleType", "") or "")
    if rescale_type and rescale_type != "US":
        return rescale_type
    return "HU" if modality == "CT" else ""


def describe_dicom(path: str | os.PathLike[str]) -> dict[str, object]:
    """A short description of a DICOM file or series, without patient identity.

    >>> import numpy as np
    >>> from medrecon.data.volume import Volume
    >>> folder = getfixture("tmp_path") / "series"      # a temporary folder under pytest
    >>> _ = write_dicom_series(Volume(np.zeros((2, 3, 4), np.float32), (5.0, 0.5, 0.5)),
    ...                          folder)
    >>> describe_dicom(folder)["slices"]
    2
    """
    volume = read_dicom(path)
    assert volume.source is not None
    with quiet():
        try:
            return _description(volume)
        except Exception as exc:  # a text value pydicom cannot decode
            raise InputError(path, "SeriesDescription", f"unreadable ({_brief(exc)})"
                             ) from None


def _description(volume: Volume) -> dict[str, object]:
    first = volume.source[0]
    syntaxes = sorted({_transfer_syntax(ds) for ds in volume.source})
    low, high = float(volume.array.min()), float(volume.array.max())
    return {
        "modality": volume.modality,
        "slices": volume.shape[0],
        "rows": volume.shape[1],
        "cols": volume.shape[2],
        "spacing mm (slice, row, col)": tuple(round(s, 6) for s in volume.spacing),
        "transfer syntax": ", ".join(syntaxes),
        "series description": str(first.get("SeriesDescription", "") or ""),
        "values": f"[{low:.4g}, {high:.4g}] {volume.units}".strip(),
    }


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID", "") if meta is not None else ""
    return UID(str(uid)).name if uid else "unknown"


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class StudyIdentity:
    """Who and which study a derived series without a DICOM source belongs to.

    ``key`` is the study's identity: the Study Instance UID and the Frame of Reference
    UID are derived from it (:func:`pydicom.uid.generate_uid` with ``entropy_srcs``), so
    that every re-run of one study, and every output of it (reconstruction, standard
    deviation map), lands in the same DICOM study (PS3.3 C.7.2.1 General Study Module,
    C.7.4.1 Frame of Reference Module). ``patient_id`` and ``patient_name`` are written
    as given (PS3.3 C.7.1.1 Patient Module); an empty ``patient_id`` becomes a
    pseudonymous ``MEDRECON-`` + 12 hex digits derived from ``key`` (never the patient's), so
    that the series can be filed (a DICOMDIR needs a Patient ID). ``study_id`` (Study ID,
    SH) defaults to 8 hex digits of the key; ``study_date`` (YYYYMMDD) and
    ``study_time`` (HHMMSS) are written as given (Type 2: empty when unknown).

    >>> a, b = StudyIdentity("sha256:0f3a"), StudyIdentity("sha256:0f3a")
    >>> a.study_uid == b.study_uid and a.study_uid != StudyIdentity("other").study_uid
    True
    """

    key: str
    patient_id: str = ""
    patient_name: str = ""
    study_id: str = ""
    study_date: str = ""
    study_time: str = ""

    def _digest(self) -> str:
        return hashlib.sha256(f"medrecon study\0{self.key}".encode()).hexdigest()

    @property
    def study_uid(self) -> str:
        return str(generate_uid(entropy_srcs=["medrecon study", self.key]))

    @property
    def frame_uid(self) -> str:
        return str(generate_uid(entropy_srcs=["medrecon frame of reference", self.key]))

    @property
    def pseudonymous_id(self) -> str:
        return "MEDRECON-" + self._digest()[:12].upper()

    @property
    def resolved_study_id(self) -> str:
        return (self.study_id or self._digest()[:8].upper())[:16]


def _integral(values: np.ndarray) -> bool:
    """Whether ``values`` are integers (within 1e-6) and not all zero: an image whose
    values all lie below 1e-6 in magnitude is not taken for an image of zeros."""
    return bool(np.all(np.abs(values - np.rint(values)) < 1e-6)) and (
        not values.size or float(np.abs(values).max()) >= 1 or not np.any(values))


def int16_encoding(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(stored int16, slope, intercept)`` with ``value = stored * slope + intercept``.

    Integer values (within 1e-6) are kept exactly: slope 1, intercept 0 when they
    fit int16, else an integer intercept when their range spans at most
    65536 values. Other values are scaled linearly over the full int16 range:
    the quantisation step is ``slope = (max - min) / 65535`` and the error at most
    half of it. Slope and intercept are rounded to 16-character DICOM DS strings
    before quantising, so the stored file decodes to the values computed here.
    Used for CT values that are not HU and for Secondary Capture (PS3.3 C.11.1
    Modality LUT Module); HU use :func:`hu_encoding`, MR :func:`mr_encoding`.

    >>> int16_encoding(np.array([-1024.0, 0.0, 3071.0]))[1:]
    (1.0, 0.0)
    """
    values = np.asarray(array, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    integral = _integral(values)
    if integral and low >= -32768 and high <= 32767:
        slope, intercept = 1.0, 0.0
    elif integral and high - low <= 65535:
        slope, intercept = 1.0, float(np.rint(low) + 32768)
    else:
        slope = (high - low) / 65535 if high > low else 1.0
        slope = float(format_number_as_ds(slope))
        intercept = float(format_number_as_ds(low + 32768 * slope))
    stored = np.clip(np.rint((values - intercept) / slope), -32768, 32767)
    return stored.astype("<i2"), slope, intercept


def hu_encoding(array: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """CT values in HU as integer HU: ``(stored int16, 1.0, -1024.0)``, the usual CT
    encoding (PS3.3 C.8.2.1 CT Image Module: RescaleSlope 1, RescaleIntercept -1024,
    so stored 0 is air); values are rounded to whole HU (half a HU at most, far below
    CT noise). ``None`` when the HU do not fit (below -33792 or above 31743).

    >>> stored, slope, intercept = hu_encoding(np.array([-1000.4, 0.0, 40.6]))
    >>> stored.tolist(), slope, intercept
    ([24, 1024, 1065], 1.0, -1024.0)
    """
    values = np.rint(np.asarray(array, dtype=np.float64)) + HU_OFFSET
    if values.min() < -32768 or values.max() > 32767:
        return None
    return values.astype("<i2"), 1.0, -float(HU_OFFSET)


def mr_encoding(array: np.ndarray) -> tuple[np.ndarray, float]:
    """MR values as integers without a rescale: ``(stored, scale)`` with
    ``stored = round(value * scale)``.

    The MR Image IOD has no Modality LUT (PS3.3 A.4: no RescaleSlope/Intercept), so
    stored values are the image values. Integers that fit 16 bits are kept as they are
    (``scale`` 1; uint16 when none is negative, else int16). Other values are scaled by
    a power of two so that the largest magnitude lands in ``[2**14, 2**15)``
    (uint16 for non-negative images, int16 otherwise): a relative quantisation step
    below ``2**-14`` of the maximum. ``scale`` is written as the Real World Value
    Mapping (PS3.3 C.7.6.16.2.11; slope ``1/scale``) so that the image's own units
    are recoverable, and :func:`read_dicom` applies it.

    >>> stored, scale = mr_encoding(np.array([0.0, 0.25, 1.0]))
    >>> stored.tolist(), scale
    ([0, 4096, 16384], 16384.0)
    """
    values = np.asarray(array, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    integral = _integral(values)
    if integral and low >= 0 and high <= 65535:
        return np.rint(values).astype("<u2"), 1.0
    if integral and low >= -32768 and high <= 32767:
        return np.rint(values).astype("<i2"), 1.0
    peak = max(abs(low), abs(high))
    scale = 1.0 if peak == 0 else 2.0 ** (14 - int(np.floor(np.log2(peak))))
    stored = np.rint(values * scale)
    if low >= 0:
        return np.clip(stored, 0, 65535).astype("<u2"), scale
    return np.clip(stored, -32768, 32767).astype("<i2"), scale


def write_dicom_series(volume: Volume, folder: str | os.PathLike[str], *,
                       source: Sequence[Dataset] | None = None,
                       series_description: str = "medrecon reconstruction",
                       modality: str | None = None,
                       identity: StudyIdentity | None = None) -> list[Path]:
    """Write ``volume`` as a new DICOM series, one file per slice, into ``folder``.

    The SOP class follows the modality: CT Image (PS3.3 A.3), MR Image (A.4), else
    Secondary Capture Image (A.8.1). ImageType is ``DERIVED\\SECONDARY\\AXIAL`` for
    CT, ``DERIVED\\SECONDARY\\OTHER`` for MR (PS3.3 C.8.2.1.1.1, C.8.3.1.1.1).
    Values: CT in HU as integer HU with slope 1 and intercept -1024
    (:func:`hu_encoding`); other CT values and Secondary Capture with a linear
    rescale (:func:`int16_encoding`); MR as integers without rescale
    (:func:`mr_encoding`). The VOI window (PS3.3 C.11.2) is the source's when it has
    one, else 40/400 HU for CT in HU (soft tissue), else the 0.5 and 99.5 percentiles.

    With ``source`` (default ``volume.source``) the series is derived: patient,
    study and frame of reference, PatientPosition and Laterality are the source's,
    series and instance UIDs are new, and ReferencedSeriesSequence and
    SourceImageSequence name the source. Without it, ``identity`` (default: a random
    key, so a new study) gives the study and frame-of-reference UIDs and the patient
    fields (:class:`StudyIdentity`); PatientPosition and Laterality are written empty
    (Type 2C: unknown). SliceThickness is the source's, else the slice spacing.

    ``folder`` must not exist, or hold only a previous medrecon series
    (``IM*.dcm``), which is then replaced once the new one is complete; the
    source's own folder is never written to. Returns the written paths.

    >>> import numpy as np
    >>> from medrecon.data.volume import Volume
    >>> folder = getfixture("tmp_path") / "recon_series"  # a temporary folder under pytest
    >>> volume = Volume(np.zeros((2, 3, 4), np.float32), spacing=(5.0, 0.5, 0.5))
    >>> [p.name for p in write_dicom_series(volume, folder)]
    ['IM00001.dcm', 'IM00002.dcm']
    """
    folder = Path(folder)
    sources = tuple(volume.source or ()) if source is None else tuple(source)
    if volume.array.size == 0 or not np.all(np.isfinite(volume.array)):
        raise InputError(folder, "pixel data", "the volume is empty or has NaN or infinite values")
    _check_replaceable(folder, sources)
    modality = modality or volume.modality or "OT"
    identity = identity or StudyIdentity(str(generate_uid()))
    template = _series_template(volume, sources, series_description, modality, identity)
    stored = _set_pixel_module(template, volume, modality, sources[0] if sources else None)
    positions = volume.positions()
    width = max(5, len(str(volume.shape[0])))
    paths = []
    with atomic_folder(folder) as tmp:
        for k in range(volume.shape[0]):
            ds = _slice_dataset(template, k, positions[k], stored[k], sources, volume.shape[0])
            name = f"IM{k + 1:0{width}d}.dcm"
            pydicom.dcmwrite(tmp / name, ds, enforce_file_format=True)
            paths.append(folder / name)
    return paths


def _check_replaceable(folder: Path, sources: Sequence[Dataset]) -> None:
    if not folder.is_dir():
        return
    resolved = folder.resolve()
    for ds in sources:
        filename = getattr(ds, "filename", None)
        if isinstance(filename, str | os.PathLike) and Path(filename).resolve().parent == resolved:
            raise InputError(folder, "output", "is the folder of the source series; "
                             "inputs are never overwritten: give a new folder")
    others = [p for p in folder.iterdir() if not (p.is_file() and OUTPUT_NAME.fullmatch(p.name))]
    if others:
        raise InputError(folder, "output", "exists and holds other files than a previous "
                         "medrecon series; give a new folder")


def _ds(value: float) -> str:
    return format_number_as_ds(float(value))


def _copy_or_empty(ds: Dataset, src: Dataset | None, keywords: Sequence[str]) -> None:
    for keyword in keywords:
        if src is not None and keyword in src:
            ds[keyword] = copy.deepcopy(src[keyword])
        else:
            setattr(ds, keyword, "")


def _series_template(volume: Volume, sources: Sequence[Dataset], description: str,
                     modality: str, identity: StudyIdentity) -> Dataset:
    """Everything that all slices share except the pixel module."""
    src = sources[0] if sources else None
    now = datetime.datetime.now()
    ds = Dataset()
    if src is not None and "SpecificCharacterSet" in src:
        ds.SpecificCharacterSet = copy.deepcopy(src.SpecificCharacterSet)
    elif not all(text.isascii() for text in (identity.patient_name, identity.patient_id)):
        ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8 (PS3.3 C.12.1.1.2)
    ds.SOPClassUID = SOP_CLASS.get(modality, SecondaryCaptureImageStorage)
    _copy_or_empty(ds, src, PATIENT_KEYWORDS)
    _copy_or_empty(ds, src, STUDY_KEYWORDS)
    if src is None:  # PS3.3 C.7.1.1, C.7.2.1 from the site's study identity
        ds.PatientName = identity.patient_name
        ds.PatientID = identity.patient_id or identity.pseudonymous_id
        ds.StudyID = identity.resolved_study_id
        ds.StudyDate, ds.StudyTime = identity.study_date, identity.study_time
    ds.StudyInstanceUID = str(src.get("StudyInstanceUID", "")) if src is not None else ""
    ds.StudyInstanceUID = ds.StudyInstanceUID or identity.study_uid
    ds.FrameOfReferenceUID = str(src.get("FrameOfReferenceUID", "")) if src is not None else ""
    ds.FrameOfReferenceUID = ds.FrameOfReferenceUID or identity.frame_uid
    _copy_or_empty(ds, src, ("PositionReferenceIndicator",))
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = _series_number(src)
    ds.SeriesDescription = description
    ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    _copy_or_empty(ds, src, ("Laterality",))  # PS3.3 C.7.3.1, Type 2C
    ds.Manufacturer = "medrecon"
    ds.ImageType = ["DERIVED", "SECONDARY", IMAGE_TYPE_3.get(modality, "OTHER")]
    _set_modality_attributes(ds, src, modality)
    if src is not None:
        _set_derivation(ds, sources, description)
    _set_plane(ds, volume, src)
    if ds.SOPClassUID == SecondaryCaptureImageStorage:  # PS3.3 C.7.6.1, Type 2C
        ds.PatientOrientation = patient_orientation(volume.orientation)
    return ds


def patient_orientation(orientation: np.ndarray) -> list[str]:
    """PatientOrientation (PS3.3 C.7.6.1.1.1): the patient directions of increasing
    column and row index, up to three letters each (L/R, P/A, H/F), largest first.

    >>> patient_orientation(np.eye(3))
    ['L', 'P']
    """
    letters = (("R", "L"), ("A", "P"), ("F", "H"))
    result = []
    for axis in np.asarray(orientation, dtype=np.float64)[:, :2].T:
        order = np.argsort(-np.abs(axis), kind="stable")
        result.append("".join(letters[i][int(axis[i] > 0)] for i in order
                              if abs(axis[i]) > 1e-4))
    return result


def _series_number(src: Dataset | None) -> int:
    try:
        return int(src.get("SeriesNumber", 0) or 0) + 1000 if src is not None else 1
    except (TypeError, ValueError):
        return 1000


def _set_modality_attributes(ds: Dataset, src: Dataset | None, modality: str) -> None:
    if modality in ("CT", "MR"):  # PS3.3 C.7.3.1 General Series, Type 2C
        _copy_or_empty(ds, src, ("PatientPosition",))
    if modality == "CT":  # PS3.3 C.8.2.1 CT Image Module
        _copy_or_empty(ds, src, ("KVP",))
        ds.AcquisitionNumber = ""
    elif modality == "MR":  # PS3.3 C.8.3.1 MR Image Module
        for keyword, default in MR_KEYWORDS.items():
            if src is not None and keyword in src:
                ds[keyword] = copy.deepcopy(src[keyword])
            else:
                setattr(ds, keyword, default)
        if "IR" in list(np.atleast_1d(ds["ScanningSequence"].value)):
            _copy_or_empty(ds, src, ("InversionTime",))
    else:  # PS3.3 C.8.6.1 SC Equipment Module
        ds.ConversionType = "WSD"


def _set_derivation(ds: Dataset, sources: Sequence[Dataset], description: str) -> None:
    src = sources[0]
    ds.DerivationDescription = f"{description} from series {src.get('SeriesInstanceUID', '')}"
    item = Dataset()
    item.SeriesInstanceUID = src.get("SeriesInstanceUID", "")
    references: dict[str, Dataset] = {}
    for s in sources:
        if "SOPInstanceUID" in s and str(s.SOPInstanceUID) not in references:
            references[str(s.SOPInstanceUID)] = _reference(s)
    item.ReferencedInstanceSequence = list(references.values())
    ds.ReferencedSeriesSequence = [item]


def _reference(src: Dataset, frame: bool = False) -> Dataset:
    """SOP Instance Reference Macro (PS3.3 10.8); with ``frame`` the frame of an enhanced
    source (Image SOP Instance Reference Macro, PS3.3 10.3: ReferencedFrameNumber)."""
    item = Dataset()
    item.ReferencedSOPClassUID = src.get("SOPClassUID", "")
    item.ReferencedSOPInstanceUID = src.SOPInstanceUID
    number = getattr(src, FRAME_KEY, None)
    if frame and number is not None:
        item.ReferencedFrameNumber = number
    return item


def _set_plane(ds: Dataset, volume: Volume, src: Dataset | None) -> None:
    """Image plane module: orientation, pixel spacing, thickness, slice spacing."""
    row_cos, col_cos, direction = volume.orientation.T
    ds.ImageOrientationPatient = [_ds(v) for v in (*row_cos, *col_cos)]
    ds.PixelSpacing = [_ds(volume.spacing[1]), _ds(volume.spacing[2])]
    normal = np.cross(row_cos, col_cos)
    along_normal = volume.spacing[0] * abs(float(direction @ normal)) / np.linalg.norm(normal)
    thickness = src.get("SliceThickness", "") if src is not None else ""
    ds.SliceThickness = thickness if thickness not in ("", None) else _ds(volume.spacing[0])
    ds.SpacingBetweenSlices = _ds(along_normal)


def _source_window(src: Dataset | None) -> tuple[float, float] | None:
    """The first (center, width) of the source's VOI LUT module, if valid."""
    if src is None or "WindowCenter" not in src or "WindowWidth" not in src:
        return None
    try:
        center = float(np.atleast_1d(src["WindowCenter"].value)[0])
        width = float(np.atleast_1d(src["WindowWidth"].value)[0])
    except (TypeError, ValueError, IndexError):
        return None
    return (center, width) if np.isfinite(center) and np.isfinite(width) and width >= 1 else None


def percentile_window(values: np.ndarray, min_width: float = 1.0) -> tuple[float, float]:
    """A VOI window (center, width) over the 0.5 to 99.5 percentiles of ``values`` (their
    whole range where those are closer than ``min_width``), at least ``min_width`` wide:
    1 for stored integers, smaller for float maps."""
    low, high = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    if high - low < min_width:
        low, high = float(values.min()), float(values.max())
    return (low + high) / 2, max(high - low, min_width)


def _set_pixel_module(ds: Dataset, volume: Volume, modality: str, src: Dataset | None
                      ) -> np.ndarray:
    """Image pixel (PS3.3 C.7.6.3), modality LUT (C.11.1) and VOI LUT (C.11.2) modules;
    returns the stored values."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    window = _source_window(src)
    if modality == "MR":
        stored, scale = mr_encoding(volume.array)
        if window is not None:  # the source's window in its stored values -> values -> ours
            slope = _medrecon_mapping(Path(str(getattr(src, "filename", None) or "source")), src)
            to_values = 1.0 if slope is None else float(slope[0])
            window = (window[0] * to_values * scale, window[1] * to_values * scale)
        if scale != 1.0:
            ds.RealWorldValueMappingSequence = [_real_world_mapping(stored, scale, volume.units)]
        window = window or percentile_window(stored)
    else:
        hu = hu_encoding(volume.array) if modality == "CT" and volume.units == "HU" else None
        stored, slope, intercept = hu or int16_encoding(volume.array)
        ds.RescaleIntercept, ds.RescaleSlope = _ds(intercept), _ds(slope)
        ds.RescaleType = volume.units or "US"
        if window is None and hu is not None:
            window = CT_WINDOW
        window = window or percentile_window(volume.array)
    ds.PixelRepresentation = int(stored.dtype.kind == "i")
    ds.WindowCenter, ds.WindowWidth = _ds(window[0]), _ds(window[1])
    return stored


def _real_world_mapping(stored: np.ndarray, scale: float, units: str) -> Dataset:
    """Real World Value Mapping item (PS3.3 C.7.6.16.2.11): value = stored / scale."""
    item = Dataset()
    signed = stored.dtype.kind == "i"
    first, last = (-32768, 32767) if signed else (0, 65535)
    item.add_new("RealWorldValueFirstValueMapped", "SS" if signed else "US", first)
    item.add_new("RealWorldValueLastValueMapped", "SS" if signed else "US", last)
    item.RealWorldValueIntercept = 0.0
    item.RealWorldValueSlope = 1.0 / scale
    item.LUTExplanation = f"medrecon: stored = round(value * {scale:g})"
    item.LUTLabel = "MEDRECON"
    unit = Dataset()  # UCUM "1": a dimensionless (arbitrary) unit
    unit.CodeValue, unit.CodingSchemeDesignator = "1", "UCUM"
    unit.CodeMeaning = units if units and units.isascii() else "no units"
    item.MeasurementUnitsCodeSequence = [unit]
    return item


def _slice_dataset(template: Dataset, k: int, position: np.ndarray, stored: np.ndarray,
                   sources: Sequence[Dataset], n_slices: int) -> Dataset:
    ds = copy.deepcopy(template)
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [_ds(v) for v in position]
    if len(sources) == n_slices and "SOPInstanceUID" in sources[k]:
        ds.SourceImageSequence = [_reference(sources[k], frame=True)]
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds
