"""Float maps (posterior standard deviation...) as a DICOM Parametric Map.

A Parametric Map (PS3.3 A.75, SOP class 1.2.840.10008.5.1.4.1.1.30) stores real
values as 32-bit floats (Float Pixel Data, PS3.3 C.7.6.3) in one enhanced multi-frame
instance, one frame per slice, with the geometry in the functional groups (Pixel
Measures, Plane Orientation, Plane Position; PS3.3 C.7.6.16.2) and the meaning of
the values in a Real World Value Mapping (PS3.3 C.7.6.16.2.11: unit, quantity). No
rescale or quantisation is involved, so the written values are the map's float32
values exactly. It is built with highdicom (:class:`highdicom.pm.ParametricMap`).

Identity follows :func:`medrecon.data.dicom.write_dicom_series`: a derived map keeps
its DICOM source's patient, study and frame of reference and references its source
images; without a source, :class:`~medrecon.data.dicom.StudyIdentity` gives them (the
same study as the reconstruction written with the same identity) and the map
references no instance.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from pydicom.valuerep import format_number_as_ds

from medrecon.data.atomic import atomic_folder
from medrecon.data.dicom import (
    StudyIdentity,
    _check_replaceable,
    _copy_or_empty,
    _series_number,
    _series_template,
    percentile_window,
)
from medrecon.data.volume import Volume
from medrecon.errors import InputError

UNITS = {"HU": codes.UCUM.HounsfieldUnit}
"""UCUM codes of the units medrecon writes; any other unit is written as UCUM "1"."""
QUANTITIES = {"std": codes.DCM.StandardDeviation}
PARAMETRIC_MAP_NAME = "IM00001.dcm"


def write_parametric_map(volume: Volume, folder: str | os.PathLike[str], *,
                         source: Sequence[Dataset] | None = None,
                         series_description: str = "medrecon standard deviation",
                         quantity: str = "std",
                         identity: StudyIdentity | None = None) -> list[Path]:
    """Write ``volume`` (float values, e.g. a standard-deviation map) as one Parametric
    Map instance ``IM00001.dcm`` in the new folder ``folder``.

    ``quantity`` names what the values are (``"std"``: DCM 113061 Standard Deviation,
    in the Real World Value Mapping's Quantity Definition); the unit is the volume's
    (``HU`` as UCUM ``[hnsf'U]``, else UCUM ``1``). ``source`` (default
    ``volume.source``) and ``identity`` as for
    :func:`medrecon.data.dicom.write_dicom_series`; ``folder`` likewise must not exist
    or hold only a previous medrecon series. Returns the written path.

    >>> import numpy as np
    >>> folder = getfixture("tmp_path") / "std_map"         # a temporary folder under pytest
    >>> std = Volume(np.full((2, 3, 4), 0.5, np.float32), spacing=(5.0, 0.5, 0.5), modality="CT")
    >>> [p.name for p in write_parametric_map(std, folder)]
    ['IM00001.dcm']
    """
    import highdicom as hd

    folder = Path(folder)
    sources = tuple(volume.source or ()) if source is None else tuple(source)
    array = np.asarray(volume.array, dtype=np.float32)
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise InputError(folder, "pixel data", "the map is empty or has NaN or infinite values")
    _check_replaceable(folder, sources)
    identity = identity or StudyIdentity(str(generate_uid()))
    modality = volume.modality or "OT"
    # one reference per instance: the frames of an enhanced source share their file's UID
    references = list({s.SOPInstanceUID: s for s in sources if "SOPInstanceUID" in s}.values())
    template = _series_template(volume, sources, series_description, modality, identity)
    images = references or [_stand_in(template, volume)]
    low, high = float(array.min()), float(array.max())
    unit = UNITS.get(volume.units, codes.UCUM.NoUnits)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=quantity.upper()[:16], lut_explanation=series_description[:64], unit=unit,
        value_range=(low, high if high > low else low + 1.0), slope=1.0, intercept=0.0,
        quantity_definition=QUANTITIES.get(quantity))
    spacing, positions = volume.spacing, volume.positions()
    row_cos, col_cos = volume.orientation[:, 0], volume.orientation[:, 1]
    center, width = percentile_window(array, min_width=1e-6)
    pmap = hd.pm.ParametricMap(
        images, array, generate_uid(), _series_number(sources[0] if sources else None) + 1,
        generate_uid(), 1, "medrecon", "medrecon", _version(), "0", False, [mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(  # PS3.3 C.11.2.1.3.2
            window_center=center, window_width=width, voi_lut_function="LINEAR_EXACT")],
        content_description=series_description[:64], content_label=quantity.upper()[:16],
        pixel_measures=hd.PixelMeasuresSequence((spacing[1], spacing[2]),
                                                float(template.SliceThickness)),
        plane_orientation=hd.PlaneOrientationSequence(
            "PATIENT", [float(v) for v in (*row_cos, *col_cos)]),
        plane_positions=[hd.PlanePositionSequence("PATIENT", [float(v) for v in p])
                         for p in positions])
    pmap.SeriesDescription = series_description
    _copy_or_empty(pmap, sources[0] if sources else None, ("Laterality",))  # C.7.3.1, 2C
    if not references:  # the stand-in is no instance: nothing to reference
        for keyword in ("ReferencedSeriesSequence", "SourceImageSequence"):
            if keyword in pmap:
                delattr(pmap, keyword)
    with atomic_folder(folder) as tmp:
        pmap.save_as(tmp / PARAMETRIC_MAP_NAME, enforce_file_format=True)
    return [folder / PARAMETRIC_MAP_NAME]


def _stand_in(template: Dataset, volume: Volume) -> Dataset:
    """A source-image stand-in that carries the patient, study and frame of reference
    (highdicom copies them from its first source image)."""
    ds = Dataset()
    for element in template:
        ds[element.tag] = element
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.ImagePositionPatient = [format_number_as_ds(float(v)) for v in volume.origin]
    return ds


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medrecon")
    except PackageNotFoundError:
        return "unknown"
