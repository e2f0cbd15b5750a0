"""Enhanced (multi-frame) DICOM images split into one dataset per frame.

Enhanced CT (PS3.3 A.38), Enhanced MR (A.36), their Legacy Converted forms (A.70,
A.71) and Parametric Maps (A.75) keep every frame in one file and describe each
frame in functional groups (PS3.3 C.7.6.16): the Per-Frame Functional Groups
Sequence item of the frame, else the Shared Functional Groups Sequence. The
attributes the reader needs are taken from there and put where a single-frame image
has them:

==============================  ====================================================
Plane Position (Patient)        ImagePositionPatient
Plane Orientation (Patient)     ImageOrientationPatient
Pixel Measures                  PixelSpacing, SliceThickness, SpacingBetweenSlices
Pixel Value Transformation      RescaleSlope, RescaleIntercept, RescaleType
Frame VOI LUT                   WindowCenter, WindowWidth
==============================  ====================================================

Each frame becomes a dataset with the file's other top-level attributes (patient,
study, series; the functional groups themselves left out) and that frame's pixels,
so the single-frame reader (:mod:`medrecon.data.dicom`) orders, checks and rescales
them as slices of a series. Every frame keeps the file's SOPInstanceUID; its frame
number (1-based) is the dataset's Python attribute ``medrecon_frame`` (:data:`FRAME_KEY`).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from medrecon.data.h5guard import check_size
from medrecon.errors import InputError

FUNCTIONAL_GROUPS = (
    ("PlanePositionSequence", ("ImagePositionPatient",)),
    ("PlaneOrientationSequence", ("ImageOrientationPatient",)),
    ("PixelMeasuresSequence", ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices")),
    ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept", "RescaleType")),
    ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth")),
)
LEFT_OUT = ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence",
            "NumberOfFrames", "PixelData", "FloatPixelData", "DoubleFloatPixelData",
            "ExtendedOffsetTable", "ExtendedOffsetTableLengths")
FRAME_KEY = "medrecon_frame"


def is_enhanced(ds: Dataset) -> bool:
    """Whether ``ds`` describes its frames in functional groups (PS3.3 C.7.6.16)."""
    return "PerFrameFunctionalGroupsSequence" in ds


def split_frames(path: Path, ds: Dataset) -> list[Dataset]:
    """One single-frame dataset per frame of the enhanced image ``ds`` (module docstring).

    Raises :class:`InputError` naming the file and the attribute for a frame count that
    disagrees with the functional groups or the pixel data, and for undecodable pixels.
    """
    per_frame = ds.PerFrameFunctionalGroupsSequence
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        raise InputError(path, "NumberOfFrames", "not an integer") from None
    if frames < 1 or len(per_frame) != frames:
        raise InputError(path, "PerFrameFunctionalGroupsSequence",
                         f"{len(per_frame)} items for NumberOfFrames {frames}")
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    for keyword in ("Rows", "Columns"):
        if keyword not in ds:
            raise InputError(path, keyword, "missing")
    try:
        shape = (frames, int(ds.Rows), int(ds.Columns))
    except (TypeError, ValueError):
        raise InputError(path, "Rows", "not an integer") from None
    check_size(path, "NumberOfFrames", shape, 8, "a multi-frame image of")
    pixels = _frames(path, ds, shape)
    base = Dataset()
    for element in ds:
        if element.keyword not in LEFT_OUT:
            base[element.tag] = copy.deepcopy(element)
    base.file_meta = FileMetaDataset()
    base.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    result = []
    for k in range(frames):
        frame = copy.deepcopy(base)
        for group, keywords in FUNCTIONAL_GROUPS:
            item = _group(per_frame[k], shared, group)
            for keyword in keywords:
                if item is not None and keyword in item:
                    frame[keyword] = copy.deepcopy(item[keyword])
        _set_pixels(frame, pixels[k])
        setattr(frame, FRAME_KEY, k + 1)
        result.append(frame)
    return result


def _group(frame_item: Dataset, shared: Dataset, keyword: str) -> Dataset | None:
    for item in (frame_item, shared):
        sequence = item.get(keyword)
        if sequence:
            return sequence[0]
    return None


def _frames(path: Path, ds: Dataset, shape: tuple[int, int, int]) -> np.ndarray:
    try:
        array = np.asarray(ds.pixel_array)
    except Exception as exc:  # decoders raise anything from ValueError to RuntimeError
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(path, "PixelData", f"cannot decode the pixel data ({text})") from None
    if shape[0] == 1 and array.ndim == 2:
        array = array[None]
    if array.shape != shape:
        raise InputError(path, "PixelData", f"decoded shape {array.shape}, expected {shape}")
    return array


def _set_pixels(frame: Dataset, pixels: np.ndarray) -> None:
    """Native (uncompressed) pixel data of one frame, with a matching pixel module."""
    frame.SamplesPerPixel = 1
    if pixels.dtype.kind == "f":
        frame.BitsAllocated = 8 * pixels.dtype.itemsize
        keyword = "FloatPixelData" if pixels.dtype.itemsize == 4 else "DoubleFloatPixelData"
        setattr(frame, keyword, np.ascontiguousarray(pixels).astype(
            f"<f{pixels.dtype.itemsize}").tobytes())
        for unused in ("BitsStored", "HighBit", "PixelRepresentation"):
            if unused in frame:
                delattr(frame, unused)
        return
    itemsize = max(pixels.dtype.itemsize, 1)
    frame.BitsAllocated = 8 * itemsize
    frame.BitsStored = min(int(frame.get("BitsStored") or 8 * itemsize), 8 * itemsize)
    frame.HighBit = frame.BitsStored - 1
    frame.PixelRepresentation = int(pixels.dtype.kind == "i")
    kind = "i" if pixels.dtype.kind == "i" else "u"
    frame.PixelData = np.ascontiguousarray(pixels).astype(f"<{kind}{itemsize}").tobytes()
    frame["PixelData"].VR = "OW" if itemsize > 1 else "OB"
