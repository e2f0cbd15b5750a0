"""The DICOM source of a simulated measurement file, kept for the DICOM outputs.

``medrecon simulate ct|mri`` from a DICOM image writes its sinogram or k-space file
with the source's DICOM headers (every slice, without pixel data) and geometry in
the HDF5 dataset ``/dicom_source``: UTF-8 JSON, ``{"format": "medrecon dicom source",
"version": 1, "shape", "spacing", "origin", "orientation", "modality", "units",
"headers": [DICOM JSON model (PS3.18 F.2) of each slice]}``. A reconstruction of
that file then gets the source's patient, study, frame of reference and geometry
(:meth:`DicomSource.apply`), as one of the DICOM image itself would
(:func:`medrecon.data.dicom.write_dicom_series`). The file holds patient data then:
it is written only beside the user's own outputs and never logged.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
from pydicom.dataset import Dataset

from medrecon.data.atomic import atomic_file
from medrecon.data.h5guard import dataset_info, item, open_hdf5, read_dataset
from medrecon.data.images import is_nifti, read_image
from medrecon.data.quiet import quiet
from medrecon.data.volume import Volume
from medrecon.errors import InputError

DATASET = "dicom_source"
FORMAT = "medrecon dicom source"
VERSION = 1
MAX_BYTES = 256 * 2**20
"""Largest ``/dicom_source`` read (256 MiB: far beyond the headers of any series)."""


@dataclass(frozen=True)
class DicomSource:
    """The headers (pydicom datasets without pixels, in slice order) and geometry of a
    DICOM image volume of ``shape`` ``(slices, rows, cols)`` (see
    :class:`~medrecon.data.volume.Volume` for the geometry's conventions)."""

    datasets: tuple[Dataset, ...]
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    orientation: np.ndarray
    modality: str
    units: str

    @classmethod
    def of(cls, volume: Volume) -> DicomSource:
        if volume.source is None:
            raise ValueError("the volume has no DICOM source")
        return cls(tuple(volume.source), volume.shape, volume.spacing, volume.origin,
                   volume.orientation, volume.modality, volume.units)

    def apply(self, volume: Volume) -> Volume:
        """``volume`` with this source's identity and geometry.

        The field of view of the source is kept: with the source's shape the geometry
        is exactly the source's (every output slice refers to its source slice);
        with another shape (a reconstruction on a coarser grid) the spacing is the
        source's field of view over the new shape and the centre is the source's.
        """
        old = np.array(self.shape[::-1], dtype=np.float64)  # (cols, rows, slices)
        new = np.array(volume.shape[::-1], dtype=np.float64)
        spacing_old = np.array(self.spacing[::-1])
        spacing_new = spacing_old * old / new
        centre = np.asarray(self.origin) + self.orientation @ (spacing_old * (old - 1) / 2)
        origin = centre - self.orientation @ (spacing_new * (new - 1) / 2)
        if tuple(volume.shape) == tuple(self.shape):
            origin, spacing_new = np.asarray(self.origin), spacing_old
        return replace(volume, spacing=tuple(spacing_new[::-1]), origin=tuple(origin),
                       orientation=self.orientation, source=self.datasets)


def dicom_source_of(image: str | os.PathLike[str]) -> DicomSource | None:
    """The :class:`DicomSource` of a DICOM file or series folder; ``None`` for the
    built-in phantom (``"phantom"``) and for NIfTI files."""
    if str(image) == "phantom" or is_nifti(image):
        return None
    volume = read_image(image)
    return DicomSource.of(volume) if volume.source else None


@contextlib.contextmanager
def keeping_dicom_source(path: str | os.PathLike[str], source: DicomSource | None
                         ) -> Iterator[Path]:
    """Yield a temporary path for an HDF5 file's writer; once written, add ``source``
    (when not ``None``) as ``/dicom_source`` and move the file to ``path`` (atomically:
    nothing at ``path`` if anything fails)."""
    with atomic_file(path) as tmp:
        yield tmp
        if source is not None:
            with h5py.File(tmp, "a") as f:
                f.create_dataset(DATASET, data=np.frombuffer(_encode(source), dtype=np.uint8))


def read_dicom_source(path: str | os.PathLike[str]) -> DicomSource | None:
    """The ``/dicom_source`` of an HDF5 measurement file, ``None`` without one (or for a
    file that is not HDF5). Raises :class:`InputError` naming the file and
    ``dicom_source`` when it is there but malformed."""
    path = Path(path)
    if not h5py.is_hdf5(path):
        return None
    with open_hdf5(path) as f:
        return dicom_source_in(f, path)


def dicom_source_in(f: h5py.File, path: str | os.PathLike[str]) -> DicomSource | None:
    """:func:`read_dicom_source` on a file its reader already has open (a study's file
    is opened once)."""
    path = Path(path)
    dataset = item(f, path, DATASET)
    if dataset is None:
        return None
    shape, dtype = dataset_info(path, dataset)
    if dtype != np.uint8 or len(shape) != 1:
        raise InputError(path, DATASET, "expected a 1D uint8 dataset (JSON text)")
    if shape[0] > MAX_BYTES:
        raise InputError(path, DATASET, f"{shape[0]} bytes; at most {MAX_BYTES}")
    return _decode(path, read_dataset(path, dataset, DATASET).tobytes())


def _encode(source: DicomSource) -> bytes:
    record = {"format": FORMAT, "version": VERSION, "shape": list(source.shape),
              "spacing": list(source.spacing), "origin": list(source.origin),
              "orientation": np.asarray(source.orientation).tolist(),
              "modality": source.modality, "units": source.units,
              "headers": [ds.to_json_dict() for ds in source.datasets]}
    with quiet():
        return json.dumps(record).encode()


def _decode(path: Path, raw: bytes) -> DicomSource:
    def bad(what: str) -> InputError:
        return InputError(path, DATASET, what)

    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad("not JSON text") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise bad(f"not a {FORMAT!r} record")
    if record.get("version") != VERSION:
        raise bad(f"version {record.get('version')!r}; this medrecon reads {VERSION}")
    try:
        shape = tuple(int(v) for v in record["shape"])
        spacing = tuple(float(v) for v in record["spacing"])
        origin = tuple(float(v) for v in record["origin"])
        orientation = np.array(record["orientation"], dtype=np.float64)
        modality, units = str(record["modality"]), str(record["units"])
        headers = record["headers"]
        if not isinstance(headers, list) or not all(isinstance(h, dict) for h in headers):
            raise TypeError("headers must be a list of DICOM JSON objects")
        with quiet():
            datasets = tuple(Dataset.from_json(h) for h in headers)
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise bad(f"malformed ({type(exc).__name__}: {str(exc)[:100]})") from None
    if len(shape) != 3 or min(shape) < 1 or len(spacing) != 3 or len(origin) != 3 or \
            orientation.shape != (3, 3) or not all(np.isfinite([*spacing, *origin])) or \
            min(spacing) <= 0 or not np.all(np.isfinite(orientation)) or not datasets:
        raise bad("malformed geometry (shape, spacing, origin, orientation) or no headers")
    return DicomSource(datasets, shape, spacing, origin,  # type: ignore[arg-type]
                       orientation, modality, units)
