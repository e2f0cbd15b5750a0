"""Sinograms: the medrecon HDF5 layout, NPY and TIFF stacks (simulation is in
:mod:`medrecon.data.sinogram_simulate`).

HDF5 layout (``format = "medrecon-sinogram"``, ``format_version = 1``)::

    /sinogram    float32 (views, detectors) or (slices, views, detectors):
                 line integrals of linear attenuation (dimensionless: 1/mm x mm)
    /angles      float64 (views,): projection angles in radians (ASTRA convention,
                 see medrecon.operators.ct_geometry)
    /reference   optional float32 (rows, cols) or (slices, rows, cols): the true
                 image, in ``image_units``, for metrics
    /field_of_view  optional uint8, the reference's shape: 1 where the reference holds
                 measured values (a scanner's field of view; outside it, DICOM padding
                 was set to air, see medrecon.data.ct_image); metrics are computed there
    root attributes:
      format, format_version
      beam                   "parallel" or "fan"
      image_shape            (rows, cols) of the reconstruction grid
      pixel_size             mm (square pixels)
      n_detectors            detector cells
      detector_spacing       mm, at the detector
      source_to_isocenter    mm (fan beam only)
      isocenter_to_detector  mm (fan beam only)
      image_units            "HU" or "1/mm": what a reconstruction is reported in
      mu_water               1/mm, converts attenuation to HU
      noise                  how the data were simulated ("none", "poisson:I0",
                             "gaussian:sigma"), or "measured"

An NPY or TIFF file holds the sinogram array alone (views x detectors, or a stack
of such); its geometry comes from the caller (the command line's options).

This module reads and writes files only: it imports neither torch nor ASTRA, so that
``medrecon info`` starts quickly.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from medrecon.data.atomic import atomic_file
from medrecon.data.h5guard import (
    attributes,
    brief,
    check_size,
    dataset_info,
    item,
    open_hdf5,
    plain,
    read_dataset,
)
from medrecon.data.phantom import MU_WATER, hu_to_mu, mu_to_hu
from medrecon.errors import InputError
from medrecon.operators.ct_geometry import MAX_VIEWS, CTGeometry

if TYPE_CHECKING:
    from medrecon.data.dicom_source import DicomSource

FORMAT = "medrecon-sinogram"
FORMAT_VERSION = 1
IMAGE_UNITS = ("HU", "1/mm")
#: most slices in one sinogram file
MAX_SLICES = 4096


@dataclass(frozen=True)
class Sinogram:
    """A sinogram with the geometry that produced it.

    Attributes:
        data: ``(views, detectors)`` or ``(slices, views, detectors)`` float32 line integrals.
        geometry: the scan.
        image_units: ``"HU"`` or ``"1/mm"``, the units reconstructions are reported in.
        mu_water: attenuation of water (1/mm) for the HU conversion.
        reference: optional true image in ``image_units``.
        noise: how the data were made (``"measured"`` for real data).
        dicom_source: the DICOM source ``medrecon simulate`` kept in ``/dicom_source``
            (:class:`medrecon.data.dicom_source.DicomSource`), or ``None``.
        field_of_view: optional bool array of the reference's shape, true where the
            reference holds measured values (metrics are computed there); ``None``:
            everywhere.
    """

    data: np.ndarray
    geometry: CTGeometry
    image_units: str = "HU"
    mu_water: float = MU_WATER
    reference: np.ndarray | None = None
    noise: str = "measured"
    dicom_source: DicomSource | None = None
    field_of_view: np.ndarray | None = None

    def to_image_units(self, mu: np.ndarray) -> np.ndarray:
        """Attenuation (1/mm) to this sinogram's image units."""
        return mu_to_hu(mu, self.mu_water) if self.image_units == "HU" else mu

    def from_image_units(self, image: np.ndarray) -> np.ndarray:
        """Image units to attenuation (1/mm), clamped at 0 (nothing attenuates less than air)."""
        if self.image_units == "HU":
            return hu_to_mu(image, self.mu_water)
        return np.maximum(image, 0)


def check_sinogram(data: np.ndarray, geometry: CTGeometry, source: str | os.PathLike[str],
                   field: str = "sinogram") -> np.ndarray:
    """Check that ``data`` fits ``geometry`` and is finite; return it as float32."""
    data = np.asarray(data)
    if data.ndim not in (2, 3):
        raise InputError(source, field, f"expected (views, detectors) or (slices, views, "
                         f"detectors), got shape {data.shape}")
    views, detectors = data.shape[-2:]
    if detectors != geometry.n_detectors:
        raise InputError(source, field, f"has {detectors} detector columns but the geometry "
                         f"has n_detectors={geometry.n_detectors}")
    if views != geometry.n_views:
        raise InputError(source, field, f"has {views} views but the geometry has "
                         f"{geometry.n_views} angles")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise InputError(source, field, f"must hold real numbers, got {data.dtype}")
    if not np.all(np.isfinite(data)):
        raise InputError(source, field, f"contains {int(np.sum(~np.isfinite(data)))} NaN or "
                         "infinite values")
    return data.astype(np.float32, copy=False)


def read_sinogram(path: str | os.PathLike[str], geometry: CTGeometry | None = None, *,
                  image_units: str = "1/mm") -> Sinogram:
    """Read a sinogram file: the HDF5 layout above (geometry inside), or an NPY or
    TIFF array with ``geometry`` given. Raises :class:`InputError` naming the
    file and field on any problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "no such file")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return _read_hdf5(path)
    if suffix in (".npy", ".tif", ".tiff"):
        if geometry is None:
            raise InputError(path, "geometry", f"a {suffix} sinogram carries no geometry; "
                             "give it (e.g. --beam, --image-size, --pixel-size)")
        data = read_sinogram_array(path)
        return Sinogram(check_sinogram(data, geometry, path), geometry, image_units,
                        noise="measured")
    raise InputError(path, None, "unknown sinogram format (expected .h5, .npy, .tif)")


def read_sinogram_array(path: Path) -> np.ndarray:
    """The array of an NPY or TIFF file (no checks of shape or values)."""
    try:
        if path.suffix.lower() == ".npy":
            header = np.load(path, mmap_mode="r", allow_pickle=False)
            shape, itemsize = header.shape, header.dtype.itemsize
            del header
            check_size(path, "array", shape, max(itemsize, 1))
            return np.load(path, allow_pickle=False)
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            check_size(path, "array", series.shape, max(series.dtype.itemsize, 1))
            return series.asarray()
    except InputError:
        raise
    except Exception as exc:  # numpy/tifffile raise many kinds on a bad file
        raise InputError(path, None, f"cannot read array: {brief(exc)}") from None


#: root attributes the reader uses (others are ignored, never read)
ATTRIBUTES = ("format", "format_version", "beam", "image_shape", "pixel_size", "n_detectors",
              "detector_spacing", "source_to_isocenter", "isocenter_to_detector", "image_units",
              "mu_water", "noise")
#: accepted attenuation of water (1/mm): water is about 0.02/mm at CT energies
MU_WATER_RANGE = (1e-6, 10.0)


def _read_hdf5(path: Path) -> Sinogram:
    """Read the HDF5 layout; every declared shape, dtype and attribute is checked before
    the data are read (:mod:`medrecon.data.h5guard`)."""
    f = open_hdf5(path)
    with f:
        sinogram = item(f, path, "sinogram", required=True,
                        hint="is this a medrecon sinogram file? see `medrecon info`")
        angles = item(f, path, "angles", required=True)
        attrs = attributes(f, path, ATTRIBUTES)
        shape, dtype = dataset_info(path, angles)
        if len(shape) != 1 or dtype.kind not in "iuf":
            raise InputError(path, "angles", f"expected a real (views,) array, got shape "
                             f"{shape} {dtype}")
        if not 1 <= shape[0] <= MAX_VIEWS:
            raise InputError(path, "angles", f"{shape[0]} views; expected 1 to {MAX_VIEWS}")
        attrs["angles"] = read_dataset(path, angles, "angles")
        try:
            geometry = CTGeometry.from_dict(attrs)
        except ValueError as exc:
            raise InputError(path, "geometry", str(exc)) from None
        data = check_sinogram(_read_checked(path, sinogram, "sinogram", geometry.sinogram_shape),
                              geometry, path)
        reference = item(f, path, "reference")
        if reference is not None:
            reference = _read_checked(path, reference, "reference", geometry.image_shape,
                                      slices=data.shape[0] if data.ndim == 3 else None)
        fov = item(f, path, "field_of_view")
        if fov is not None:
            if reference is None:
                raise InputError(path, "field_of_view", "given without a /reference")
            fov = _read_field_of_view(path, fov, reference.shape)
        source = None
        if "dicom_source" in f:  # only then load the DICOM stack
            from medrecon.data.dicom_source import dicom_source_in

            source = dicom_source_in(f, path)
    units = attrs.get("image_units", "1/mm")
    if units not in IMAGE_UNITS:
        raise InputError(path, "image_units", f"must be one of {IMAGE_UNITS}, got {units!r}")
    mu_water = attrs.get("mu_water", MU_WATER)
    if (isinstance(mu_water, bool) or not isinstance(mu_water, (int, float))
            or not MU_WATER_RANGE[0] <= mu_water <= MU_WATER_RANGE[1]):
        raise InputError(path, "mu_water", f"must be an attenuation in 1/mm between "
                         f"{MU_WATER_RANGE[0]:g} and {MU_WATER_RANGE[1]:g}, got {mu_water!r}")
    if reference is not None:
        if not np.all(np.isfinite(reference)):
            raise InputError(path, "reference", "contains NaN or infinite values")
        reference = reference.astype(np.float32)
    return Sinogram(data, geometry, units, float(mu_water), reference,
                    str(attrs.get("noise", "measured")), source, fov)


def _read_field_of_view(path: Path, dataset, shape: tuple[int, ...]) -> np.ndarray:
    """``/field_of_view`` as a bool array of the reference's ``shape``: 0/1 values, some 1."""
    got, dtype = dataset_info(path, dataset)
    if dtype.kind not in "biu":
        raise InputError(path, "field_of_view", f"must hold 0 and 1, got {dtype}")
    if tuple(got) != tuple(shape):
        raise InputError(path, "field_of_view", f"has shape {tuple(got)}, the reference "
                         f"{tuple(shape)}")
    values = read_dataset(path, dataset, "field_of_view")
    if not np.isin(values, (0, 1)).all():
        raise InputError(path, "field_of_view", "must hold only 0 and 1")
    if not values.any():
        raise InputError(path, "field_of_view", "is empty (no pixel inside)")
    return values.astype(bool)


def _read_checked(path: Path, dataset, field: str, trailing: tuple[int, int],
                  slices: int | None = None) -> np.ndarray:
    """Read ``dataset`` after checking from its metadata that it is a real
    ``trailing`` or ``(slices, *trailing)`` array of a readable size."""
    shape, dtype = dataset_info(path, dataset)
    if dtype.kind not in "biuf":
        raise InputError(path, field, f"must hold real numbers, got {dtype}")
    if len(shape) not in (2, 3):
        raise InputError(path, field, f"expected {trailing} or (slices, {trailing[0]}, "
                         f"{trailing[1]}), got shape {shape}")
    if field == "sinogram" and shape[-1] != trailing[1]:
        raise InputError(path, field, f"has {shape[-1]} detector columns but the geometry "
                         f"has n_detectors={trailing[1]}")
    if field == "sinogram" and shape[-2] != trailing[0]:
        raise InputError(path, field, f"has {shape[-2]} views but the geometry has "
                         f"{trailing[0]} angles")
    if shape[-2:] != tuple(trailing):
        raise InputError(path, field, f"must be finite with image shape {trailing}, got "
                         f"{shape}")
    if slices is not None and len(shape) == 3 and shape[0] != slices:
        raise InputError(path, field, f"has {shape[0]} slices, the sinogram {slices}")
    if len(shape) == 3 and shape[0] > MAX_SLICES:
        raise InputError(path, field, f"{shape[0]} slices, more than {MAX_SLICES}")
    check_size(path, field, shape, max(dtype.itemsize, 4))
    return read_dataset(path, dataset, field)


def _plain(value):
    """An HDF5 attribute as a plain value (text of any encoding as ``str``)."""
    return plain(value)


def write_sinogram(sinogram: Sinogram, path: str | os.PathLike[str]) -> Path:
    """Write ``sinogram`` in the HDF5 layout, atomically."""
    path = Path(path)
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        geometry = sinogram.geometry.to_dict()
        f.create_dataset("angles", data=np.asarray(geometry.pop("angles"), dtype=np.float64))
        for key, value in geometry.items():
            f.attrs[key] = value
        f.attrs["image_units"] = sinogram.image_units
        f.attrs["mu_water"] = sinogram.mu_water
        f.attrs["noise"] = sinogram.noise
        f.create_dataset("sinogram", data=sinogram.data.astype(np.float32), compression="gzip",
                         shuffle=True)
        if sinogram.reference is not None:
            f.create_dataset("reference", data=sinogram.reference.astype(np.float32),
                             compression="gzip", shuffle=True)
            if sinogram.field_of_view is not None:
                f.create_dataset("field_of_view", compression="gzip",
                                 data=np.asarray(sinogram.field_of_view).astype(np.uint8))
    return path


def parse_noise(spec: str) -> tuple[str, float]:
    """``"none"``, ``"poisson:I0"`` (photons per ray) or ``"gaussian:SIGMA"`` (line-integral
    units) to ``(kind, level)``; raises ``ValueError`` on anything else."""
    kind, _, level = spec.partition(":")
    if kind == "none" and not level:
        return "none", 0.0
    if kind in ("poisson", "gaussian"):
        try:
            value = float(level)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value > 0:
            return kind, value
    raise ValueError(f"noise must be 'none', 'poisson:PHOTONS' or 'gaussian:SIGMA' with a "
                     f"positive number, got {spec!r}")


def __getattr__(name: str):
    # ``simulate_sinogram`` moved to medrecon.data.sinogram_simulate (it needs torch and
    # ASTRA); the old import keeps working without importing them here.
    if name == "simulate_sinogram":
        from medrecon.data.sinogram_simulate import simulate_sinogram

        return simulate_sinogram
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
