"""CT images as a physicist reads them: padding and out-of-field pixels masked.

A scanner reconstructs inside a circular field of view; the pixels outside it hold a
padding value (DICOM PixelPaddingValue, PS3.3 C.7.5.1.1.2, optionally with
PixelPaddingRangeLimit) or simply a number far below air (-2000, -3024 HU). Taken as
HU they are not tissue: converted to attenuation they would be negative (or clamped
to 0 while the reference keeps -3024), and metrics against them measure the padding.

:func:`field_of_view` finds the pixels that hold measured values: not padding, and
not part of a region below :data:`OUT_OF_FIELD_BELOW` HU that touches the image border
(the corners outside a circular field of view; dark air inside the body is kept).
:func:`prepare_ct_image` sets everything outside to air (-1000 HU) and clips values
below air to air, so that the attenuation ``mu = mu_water (1 + HU / 1000)`` is never
negative; reported metrics are then computed inside the field of view.

:func:`check_ct_modality` refuses an image whose file says it is not CT (DICOM
Modality, or the modality medrecon records in a NIfTI header).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from medrecon.data.volume import Volume
from medrecon.errors import InputError

logger = logging.getLogger(__name__)

AIR_HU = -1000.0
"""The attenuation of air in HU (``mu = 0``): nothing attenuates less."""
OUT_OF_FIELD_BELOW = -1024.0
"""HU below this, in a region touching the image border, are outside the field of view:
scanners store air as -1000 +- noise and clip at -1024 (stored 0 with
RescaleIntercept -1024); out-of-field pixels are written as -2000, -2048 or -3024."""
MIN_FIELD_FRACTION = 0.05
"""A field of view of fewer than this fraction of a slice's pixels is refused (the
image is then all padding, or its values are not HU)."""
NOT_CT = ("MR", "PT", "NM", "US", "XA", "RF", "MG", "DX", "CR", "OP", "SM", "ECG")
"""Modalities that are certainly not CT values in HU."""


@dataclass(frozen=True)
class CTImage:
    """HU slices ready to be projected, with the field of view they were measured in.

    Attributes:
        hu: ``(slices, rows, cols)`` float32, air (-1000) outside the field of view and
            nothing below air.
        field_of_view: ``(slices, rows, cols)`` bool, True where the values were measured.
        pixel_size: mm (square pixels).
        masked: pixels set to air outside the field of view (padding or out of field).
    """

    hu: np.ndarray
    field_of_view: np.ndarray
    pixel_size: float
    masked: int = 0


def check_ct_modality(volume: Volume, source: str | os.PathLike[str], *,
                      use: str = "a CT image in HU") -> None:
    """Raise :class:`InputError` naming ``source`` when ``volume`` is known not to be CT:
    a DICOM Modality in :data:`NOT_CT` (field ``Modality``), or for NIfTI the modality
    medrecon records in the header (field ``descrip``). Other files (a NIfTI from
    elsewhere says nothing) pass."""
    modality = (volume.modality or "").upper()
    if modality in NOT_CT or (modality not in ("", "OT", "CT") and volume.units
                              and volume.units != "HU"):
        field = "Modality" if volume.source is not None else "descrip"
        where = "DICOM Modality" if volume.source is not None else "the NIfTI header"
        raise InputError(source, field, f"is {modality} ({where}), but this needs {use}")


def padding_mask(volume: Volume) -> np.ndarray:
    """Pixels ``(slices, rows, cols)`` equal to the DICOM PixelPaddingValue (or within
    PixelPaddingValue .. PixelPaddingRangeLimit) of their slice, in rescaled units
    (``stored * RescaleSlope + RescaleIntercept``); all False without a DICOM source."""
    mask = np.zeros(volume.array.shape, dtype=bool)
    if volume.source is None:
        return mask
    for k, ds in enumerate(volume.source[: volume.array.shape[0]]):
        bounds = _padding_range(ds)
        if bounds is not None:
            low, high = bounds
            tolerance = 1e-3 * max(1.0, abs(low), abs(high))
            mask[k] = (volume.array[k] >= low - tolerance) & (volume.array[k] <= high + tolerance)
    return mask


def _padding_range(ds) -> tuple[float, float] | None:
    """The padding values of one slice, rescaled; ``None`` without a usable one."""
    try:
        value = ds.get("PixelPaddingValue")
        if value is None:
            return None
        limit = ds.get("PixelPaddingRangeLimit")
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        first = float(value) * slope + intercept
        last = first if limit is None else float(limit) * slope + intercept
    except (TypeError, ValueError, OverflowError):  # odd VR or multi-valued: no padding
        return None
    if not (np.isfinite(first) and np.isfinite(last)):
        return None
    return min(first, last), max(first, last)


def _border_regions(below: np.ndarray) -> np.ndarray:
    """The parts of the 2D mask ``below`` connected (4-neighbours) to the image border."""
    from scipy import ndimage

    labels, count = ndimage.label(below)
    if count == 0:
        return np.zeros_like(below)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge = edge[edge > 0]
    return np.isin(labels, edge)


def field_of_view(volume: Volume) -> np.ndarray:
    """Where ``volume`` (HU) holds measured values, ``(slices, rows, cols)`` bool: neither
    DICOM padding (:func:`padding_mask`) nor a region below :data:`OUT_OF_FIELD_BELOW`
    that touches the image border."""
    outside = padding_mask(volume)
    below = np.asarray(volume.array) < OUT_OF_FIELD_BELOW
    for k in range(volume.array.shape[0]):
        outside[k] |= _border_regions(below[k] | outside[k])
    return ~outside


def prepare_ct_image(volume: Volume, source: str | os.PathLike[str], *,
                     check_modality: bool = True) -> CTImage:
    """The HU slices of ``volume`` with padding and out-of-field pixels set to air and
    values below air clipped to it, and their field of view (see the module docstring).

    Raises :class:`InputError` naming ``source``: an image that is not CT
    (:func:`check_ct_modality`, skipped with ``check_modality=False``), non-square
    pixels (``PixelSpacing``), or a slice whose field of view is under
    :data:`MIN_FIELD_FRACTION` of it (``PixelPaddingValue``).
    """
    if check_modality:
        check_ct_modality(volume, source)
    row, col = volume.spacing[1], volume.spacing[2]
    if abs(row - col) > 1e-3 * max(row, col):
        raise InputError(source, "PixelSpacing", f"pixels are not square ({row} x {col} mm)")
    fov = field_of_view(volume)
    fraction = fov.reshape(fov.shape[0], -1).mean(axis=1)
    if float(fraction.min()) < MIN_FIELD_FRACTION:
        k = int(np.argmin(fraction))
        raise InputError(source, "PixelPaddingValue", f"slice {k}: only {fraction[k]:.1%} of the "
                         "pixels are inside the field of view (padding or values far below "
                         "air: is this a CT image in HU?)")
    hu = np.where(fov, np.maximum(volume.array, AIR_HU), AIR_HU).astype(np.float32)
    masked = int((~fov).sum())
    if masked:
        logger.info("%s: %d pixels outside the field of view set to air (%g HU)",
                    os.fspath(source), masked, AIR_HU)
    return CTImage(hu, fov, float(col), masked)
