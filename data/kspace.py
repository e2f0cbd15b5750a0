"""k-space files: fastMRI HDF5 (and medrecon's non-Cartesian extension) and ISMRMRD raw data.

fastMRI layout (Zbontar et al., "fastMRI: an open dataset and benchmarks for
accelerated MRI", arXiv:1811.08839, and the fastMRI repository's data
description)::

    /kspace              complex64 (slices, H, W) single-coil or
                         (slices, coils, H, W) multi-coil; H is the readout
                         (encoded matrix x, often 2x oversampled), W the phase
                         encodes; k-space centre at (H // 2, W // 2), image =
                         fftshift(ifft2(ifftshift(k), norm="ortho"))
    /mask                optional (W,) sampled phase-encode columns (test and
                         challenge sets: kspace is zero elsewhere); medrecon also
                         accepts an (H, W) mask
    /reconstruction_rss  optional float32 (slices, h, w) reference (multi-coil)
    /reconstruction_esc  optional float32 (slices, h, w) reference (single-coil)
    /ismrmrd_header      the ISMRMRD XML header (namespace
                         http://www.ismrm.org/ISMRMRD): encoding/encodedSpace and
                         encoding/reconSpace matrixSize and fieldOfView_mm
    root attributes      acquisition, max, norm, patient_id (an anonymised id,
                         still never logged), and on test sets acceleration,
                         num_low_frequency

medrecon's non-Cartesian extension (simulated files, written by
:func:`medrecon.data.kspace_write.write_kspace_file`)::

    /trajectory          float32 (2, samples): k-space positions in radians per
                         pixel within [-pi, pi] (torchkbnufft's convention; row 0
                         pairs with image axis 0)
    /kspace              complex64 (slices, coils, samples)
    /ismrmrd_header      required: the image matrix is encodedSpace/matrixSize

:class:`FastMRIFile` validates everything it can up front (datasets, ranks,
dtypes, mask and trajectory, header) and then reads one slice at a time, so a
volume is never loaded whole; each slice is checked for NaN when it is read.

ISMRMRD raw data (Inati et al., "ISMRM Raw data format: a proposed standard for
MRI raw datasets", MRM 77:411-421, 2017) are read with the ``ismrmrd`` package by
:func:`read_ismrmrd` (Cartesian 2D only; see there); :class:`IsmrmrdFile` presents them
like a :class:`FastMRIFile` and :func:`open_kspace` opens either kind.

Every problem raises :class:`~medrecon.errors.InputError` naming the file and the
dataset. Example::

    with FastMRIFile("file1000001.h5") as f:
        kspace = f.read_slice(17)            # (coils, H, W) complex64
        reference = f.read_reference(17)     # (320, 320) float32
"""

from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import h5py
import ismrmrd
import numpy as np
import torch

from medrecon.data.calibration import calibration_width
from medrecon.data.h5guard import (
    attributes,
    check_size,
    dataset_info,
    guarded,
    item,
    open_hdf5,
    read_dataset,
)
from medrecon.data.h5guard import text as h5text
from medrecon.errors import InputError

logger = logging.getLogger(__name__)

NAMESPACE = "http://www.ismrm.org/ISMRMRD"
HEADER = "ismrmrd_header"
REFERENCES = ("reconstruction_rss", "reconstruction_esc")
#: tolerance on |trajectory| <= pi (float32 rounding of pi)
PI_TOLERANCE = 1e-6
#: limits of one k-space file, refused from its metadata before anything is read
MAX_SLICES = 4096
MAX_COILS = 256
MAX_MATRIX = 16384
MAX_SAMPLES = 1 << 26
MAX_HEADER_BYTES = 16 << 20
MAX_ACQUISITIONS = 1 << 22
#: smallest image grid and reconstruction matrix side
MIN_MATRIX = 8
#: ISMRMRD acquisitions that are neither imaging lines nor noise
SKIPPED_FLAGS = (ismrmrd.ACQ_IS_NAVIGATION_DATA, ismrmrd.ACQ_IS_PHASECORR_DATA,
                 ismrmrd.ACQ_IS_DUMMYSCAN_DATA, ismrmrd.ACQ_IS_HPFEEDBACK_DATA,
                 ismrmrd.ACQ_IS_RTFEEDBACK_DATA, ismrmrd.ACQ_IS_PHASE_STABILIZATION_REFERENCE,
                 ismrmrd.ACQ_IS_PHASE_STABILIZATION)


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class IsmrmrdHeader:
    """The parts of an ISMRMRD XML header a reconstruction needs (first encoding).

    Attributes:
        encoded_matrix: encodedSpace/matrixSize ``(x, y, z)``: readout, phase, partitions.
        encoded_fov_mm: encodedSpace/fieldOfView_mm ``(x, y, z)``.
        recon_matrix: reconSpace/matrixSize ``(x, y, z)``.
        recon_fov_mm: reconSpace/fieldOfView_mm ``(x, y, z)``.
        trajectory: encoding/trajectory (``"cartesian"``, ``"radial"``, ...).
        limits: encodingLimits, name -> ``(minimum, maximum, center)`` (read-only).
    """

    encoded_matrix: tuple[int, int, int]
    encoded_fov_mm: tuple[float, float, float]
    recon_matrix: tuple[int, int, int]
    recon_fov_mm: tuple[float, float, float]
    trajectory: str
    limits: Mapping[str, tuple[int, int, int]]


def _strip_namespace(root: ET.Element) -> ET.Element:
    prefix = "{" + NAMESPACE + "}"
    for element in root.iter():
        if isinstance(element.tag, str) and element.tag.startswith(prefix):
            element.tag = element.tag[len(prefix):]
    return root


def _text(root: ET.Element, path: str, source: object, field: str) -> str:
    element = root.find(path)
    if element is None or not (element.text or "").strip():
        raise InputError(source, field, f"{path} missing")
    return element.text.strip()


def _triple(root: ET.Element, path: str, kind: type, source: object, field: str) -> tuple:
    values = []
    for axis in "xyz":
        text = _text(root, f"{path}/{axis}", source, field)
        try:
            value = kind(text)
        except ValueError:
            raise InputError(source, field, f"{path}/{axis} is not a number ({text!r})") from None
        if not (math.isfinite(value) and value > 0):
            raise InputError(source, field, f"{path}/{axis} must be positive, got {text}")
        if kind is int and value > MAX_MATRIX:
            raise InputError(source, field, f"{path}/{axis} is {value}, more than {MAX_MATRIX}")
        values.append(value)
    return tuple(values)


def parse_ismrmrd_header(xml: str | bytes, source: str | os.PathLike[str] | None = None,
                         field: str = HEADER) -> IsmrmrdHeader:
    """Parse an ISMRMRD XML header (with or without its namespace) with ``xml.etree``.

    Raises :class:`InputError` ``(source, field, problem)`` for malformed XML, a
    root other than ``ismrmrdHeader``, or a missing or non-positive matrix size or
    field of view.

    >>> xml = ('<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>'
    ...        '<encodedSpace><matrixSize><x>64</x><y>48</y><z>1</z></matrixSize>'
    ...        '<fieldOfView_mm><x>200</x><y>150</y><z>5</z></fieldOfView_mm></encodedSpace>'
    ...        '<reconSpace><matrixSize><x>32</x><y>48</y><z>1</z></matrixSize>'
    ...        '<fieldOfView_mm><x>100</x><y>150</y><z>5</z></fieldOfView_mm></reconSpace>'
    ...        '<trajectory>cartesian</trajectory></encoding></ismrmrdHeader>')
    >>> parse_ismrmrd_header(xml).recon_matrix
    (32, 48, 1)
    """
    try:
        root = _strip_namespace(ET.fromstring(xml))
    except ET.ParseError as exc:
        raise InputError(source, field, f"malformed XML ({exc})") from None
    if root.tag != "ismrmrdHeader":
        raise InputError(source, field, f"root element is {root.tag!r}, not 'ismrmrdHeader'")
    encoding = root.find("encoding")
    if encoding is None:
        raise InputError(source, field, "encoding missing")
    limits = {}
    for element in encoding.findall("encodingLimits/*"):
        try:
            limits[element.tag] = tuple(int(_text(element, name, source, field))
                                        for name in ("minimum", "maximum", "center"))
        except ValueError:
            raise InputError(source, field, f"encodingLimits/{element.tag} is not "
                             "integers") from None
    trajectory = encoding.find("trajectory")
    return IsmrmrdHeader(
        encoded_matrix=_triple(encoding, "encodedSpace/matrixSize", int, source, field),
        encoded_fov_mm=_triple(encoding, "encodedSpace/fieldOfView_mm", float, source, field),
        recon_matrix=_triple(encoding, "reconSpace/matrixSize", int, source, field),
        recon_fov_mm=_triple(encoding, "reconSpace/fieldOfView_mm", float, source, field),
        trajectory=(trajectory.text or "").strip() if trajectory is not None else "",
        limits=MappingProxyType(limits))


def _attribute(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------- fastMRI


class FastMRIFile:
    """A fastMRI (or medrecon non-Cartesian) k-space file, read one slice at a time.

    Opening validates the layout (module docstring) and raises :class:`InputError`
    naming the file and dataset; the file stays open until :meth:`close` (or the
    end of a ``with`` block).

    Attributes:
        path: the file.
        num_slices: number of slices.
        coils: receive coils (1 for single-coil files).
        multicoil: whether ``kspace`` has a coil dimension.
        shape: trailing k-space shape of one coil: ``(H, W)`` Cartesian,
            ``(samples,)`` non-Cartesian.
        image_shape: ``(H, W)`` image grid of the k-space (Cartesian: ``shape``;
            non-Cartesian: encodedSpace matrixSize ``(x, y)``).
        header: the parsed ``ismrmrd_header`` (``None`` when absent).
        header_xml: its text.
        attrs: root attributes (may hold ``patient_id``: never log it).
        mask: bool ``(W,)`` or ``(H, W)`` sampling mask, or ``None``.
        trajectory: float32 ``(2, samples)`` radians, or ``None`` (Cartesian).
        references: names of the reference reconstructions present.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._file = open_hdf5(self.path)
        try:
            self._validate()
            self.dicom_source = None
            """The DICOM source ``medrecon simulate`` kept (:mod:`medrecon.data.dicom_source`)."""
            if "dicom_source" in self._file:
                from medrecon.data.dicom_source import dicom_source_in

                self.dicom_source = dicom_source_in(self._file, self.path)
        except BaseException:
            self._file.close()
            raise
        logger.info("opened %s: %d slices, %d coils, k-space %s", self.path.name,
                    self.num_slices, self.coils, self.shape)

    # -- validation ----------------------------------------------------------
    # Every declared shape, dtype and size is checked from the metadata before any
    # data are read (medrecon.data.h5guard), so a corrupt or hostile file ends with
    # one InputError instead of a MemoryError, a hang or a library traceback.
    def _dataset(self, name: str, required: bool = False) -> h5py.Dataset | None:
        return item(self._file, self.path, name, required=required,
                    hint="not a fastMRI k-space file?")

    def _info(self, dataset: h5py.Dataset, name: str) -> tuple[tuple[int, ...], np.dtype]:
        shape, dtype = dataset_info(self.path, dataset)
        if len(shape) > 4:
            raise InputError(self.path, name, f"rank {len(shape)} is not a fastMRI layout, "
                             f"got shape {shape}")
        return shape, dtype

    def _validate(self) -> None:
        self._kspace = kspace = self._dataset("kspace", required=True)
        shape, dtype = self._info(kspace, "kspace")
        if not np.issubdtype(dtype, np.complexfloating):
            raise InputError(self.path, "kspace", f"must be complex, got {dtype}")
        self._kspace_shape = shape
        self.attrs = attributes(self._file, self.path)
        self.header_xml, self.header = self._read_header()
        self.trajectory = self._read_trajectory()
        if self.trajectory is None and len(shape) not in (3, 4):
            raise InputError(self.path, "kspace", "expected (slices, H, W) or (slices, coils, "
                             f"H, W), got shape {shape}")
        if 0 in shape:
            raise InputError(self.path, "kspace", f"empty, shape {shape}")
        self.num_slices = int(shape[0])
        self.multicoil = len(shape) == 4 or self.trajectory is not None
        self.coils = int(shape[1]) if self.multicoil else 1
        self.shape = tuple(int(n) for n in shape[2 if self.multicoil else 1:])
        self._check_limits(shape, dtype)
        if self.trajectory is None:
            self.image_shape = self.shape
        else:
            self.image_shape = self.header.encoded_matrix[:2]
        self._check_matrices()
        self.mask = self._read_mask()
        self.references = tuple(name for name in REFERENCES if self._check_reference(name))

    def _check_limits(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        """Refuse sizes beyond the documented limits, or a slice too large for memory."""
        if self.num_slices > MAX_SLICES:
            raise InputError(self.path, "kspace", f"{self.num_slices} slices, more than "
                             f"{MAX_SLICES}")
        if self.coils > MAX_COILS:
            raise InputError(self.path, "kspace", f"{self.coils} coils, more than {MAX_COILS}")
        if self.trajectory is None and max(self.shape) > MAX_MATRIX:
            raise InputError(self.path, "kspace", f"k-space of {self.shape} exceeds the "
                             f"{MAX_MATRIX} x {MAX_MATRIX} limit")
        # a slice is read whole and becomes complex64 (several copies during a solve)
        check_size(self.path, "kspace", (self.coils, *self.shape), max(dtype.itemsize, 8),
                   "slices of shape")

    def _recon_shape(self) -> tuple[int, int]:
        """The reconstruction's shape: the header's recon matrix (x, y) within the
        image grid (as :mod:`medrecon.studies.mri` crops it)."""
        matrix = self.header.recon_matrix[:2] if self.header is not None else self.image_shape
        return tuple(min(int(m), int(n)) for m, n in zip(matrix, self.image_shape))

    def _check_matrices(self) -> None:
        """The image grid and the reconstruction matrix are at least MIN_MATRIX a side
        (metrics use 7 x 7 SSIM windows; ESPIRiT needs a calibration region)."""
        if len(self.image_shape) != 2 or min(self.image_shape) < MIN_MATRIX:
            field = "kspace" if self.trajectory is None else HEADER
            raise InputError(self.path, field, f"image grid {tuple(self.image_shape)} is "
                             f"smaller than {MIN_MATRIX} x {MIN_MATRIX}")
        if min(self._recon_shape()) < MIN_MATRIX:
            raise InputError(self.path, HEADER, f"reconSpace matrix "
                             f"{self.header.recon_matrix[:2]} is smaller than {MIN_MATRIX} x "
                             f"{MIN_MATRIX}")

    def _read_header(self) -> tuple[str | None, IsmrmrdHeader | None]:
        dataset = self._dataset(HEADER)
        if dataset is None:
            return None, None
        shape, dtype = self._info(dataset, HEADER)
        if shape not in ((), (1,)) or dtype.kind not in "OSUV":
            raise InputError(self.path, HEADER, f"expected one XML text, got shape {shape} "
                             f"{dtype}")
        if dtype.kind != "O" and dtype.itemsize > MAX_HEADER_BYTES:
            raise InputError(self.path, HEADER, f"{dtype.itemsize} bytes, more than "
                             f"{MAX_HEADER_BYTES}")
        value = guarded(self.path, HEADER, lambda: dataset[()])
        if isinstance(value, np.ndarray):
            value = value.item() if value.size == 1 else b""
        if isinstance(value, np.void):
            value = bytes(value)
        text = h5text(value)
        if len(text) > MAX_HEADER_BYTES:
            raise InputError(self.path, HEADER, f"{len(text)} characters, more than "
                             f"{MAX_HEADER_BYTES}")
        return text, parse_ismrmrd_header(text, self.path, HEADER)

    def _read_trajectory(self) -> torch.Tensor | None:
        dataset = self._dataset("trajectory")
        if dataset is None:
            return None
        shape = self._kspace_shape
        if len(shape) != 3:
            raise InputError(self.path, "kspace", "with a trajectory, expected (slices, coils, "
                             f"samples), got shape {shape}")
        trajectory_shape, dtype = self._info(dataset, "trajectory")
        if trajectory_shape != (2, shape[2]):
            raise InputError(self.path, "trajectory", f"expected shape (2, {shape[2]}) "
                             f"to match kspace, got {trajectory_shape}")
        if not np.issubdtype(dtype, np.floating):
            raise InputError(self.path, "trajectory", f"must be real, got {dtype}")
        if shape[2] > MAX_SAMPLES:
            raise InputError(self.path, "trajectory", f"{shape[2]} samples, more than "
                             f"{MAX_SAMPLES}")
        values = read_dataset(self.path, dataset, "trajectory").astype(np.float32)
        if not np.all(np.isfinite(values)):
            raise InputError(self.path, "trajectory", "contains NaN or infinite values")
        largest = float(np.abs(values).max())
        if largest > math.pi * (1 + PI_TOLERANCE):
            raise InputError(self.path, "trajectory", f"values up to {largest:.4g} lie outside "
                             "[-pi, pi] (radians per pixel expected)")
        if self.header is None:
            raise InputError(self.path, HEADER, "missing: a non-Cartesian file needs it for "
                             "its image matrix")
        if max(self.header.encoded_matrix[:2]) > MAX_MATRIX:
            raise InputError(self.path, HEADER, f"encoded matrix {self.header.encoded_matrix} "
                             f"exceeds the {MAX_MATRIX} limit")
        return torch.from_numpy(values)

    def _read_mask(self) -> torch.Tensor | None:
        dataset = self._dataset("mask")
        if dataset is None:
            return None
        if self.trajectory is not None:
            raise InputError(self.path, "mask", "not allowed with a trajectory")
        shape, dtype = self._info(dataset, "mask")
        if shape not in (self.shape[-1:], self.shape):
            raise InputError(self.path, "mask", f"shape {shape} does not match k-space "
                             f"width {self.shape[-1]} (expected {self.shape[-1:]} or "
                             f"{self.shape})")
        if dtype.kind not in "biuf":
            raise InputError(self.path, "mask", f"must hold only 0 and 1, got {dtype}")
        values = read_dataset(self.path, dataset, "mask")
        if not np.all(np.isin(values, (0, 1))):
            raise InputError(self.path, "mask", "must hold only 0 and 1")
        mask = values.astype(bool)
        if not mask.any():
            raise InputError(self.path, "mask", "samples nothing")
        return torch.from_numpy(mask)

    def _check_reference(self, name: str) -> bool:
        dataset = self._dataset(name)
        if dataset is None:
            return False
        shape, dtype = self._info(dataset, name)
        if len(shape) != 3 or shape[0] != self.num_slices:
            raise InputError(self.path, name, f"expected ({self.num_slices}, rows, cols), got "
                             f"shape {shape}")
        if dtype.kind not in "iuf":
            raise InputError(self.path, name, f"must be real, got {dtype}")
        if max(shape[1:]) > MAX_MATRIX:
            raise InputError(self.path, name, f"images of {shape[1:]} exceed the {MAX_MATRIX} "
                             "limit")
        recon = self._recon_shape()
        if shape[1] < recon[0] or shape[2] < recon[1]:
            raise InputError(self.path, name, f"images of {shape[1:]} are smaller than the "
                             f"reconstruction matrix {recon}")
        return True

    # -- reading -------------------------------------------------------------
    def _slice(self, name: str, index: int) -> np.ndarray:
        if not isinstance(index, (int, np.integer)) or not 0 <= index < self.num_slices:
            raise InputError(self.path, name, f"slice {index!r} out of range "
                             f"(0 to {self.num_slices - 1})")
        dataset = self._dataset(name, required=True)
        try:
            values = read_dataset(self.path, dataset, name, int(index))
        except InputError as exc:
            raise InputError(self.path, name, f"slice {index}: {exc.problem}") from None
        if not np.all(np.isfinite(values)):
            raise InputError(self.path, name, f"slice {index} contains NaN or infinite values")
        return values

    def read_slice(self, index: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """k-space of slice ``index``: complex64 ``(coils, H, W)`` (``coils`` is 1 for
        single-coil files) or ``(coils, samples)``, on ``device``. Unsampled
        positions of the mask, when the file has one, are set to zero."""
        values = self._slice("kspace", index).astype(np.complex64, copy=False)
        if not self.multicoil:
            values = values[None]
        kspace = torch.from_numpy(np.ascontiguousarray(values))
        if self.mask is not None:
            kspace = kspace * self.mask
        return kspace.to(device)

    def read_reference(self, index: int, name: str | None = None) -> torch.Tensor:
        """Reference image of slice ``index`` (float32 ``(rows, cols)``) from ``name``,
        by default ``reconstruction_rss`` (multi-coil) or ``reconstruction_esc``."""
        if name is None:
            preferred = REFERENCES if self.multicoil else REFERENCES[::-1]
            name = next((n for n in preferred if n in self.references), REFERENCES[0])
        if name not in self.references:
            raise InputError(self.path, name, "dataset missing (no reference image)")
        return torch.from_numpy(self._slice(name, index).astype(np.float32))

    def __len__(self) -> int:
        return self.num_slices

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> FastMRIFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "non-Cartesian" if self.trajectory is not None else "Cartesian"
        return (f"FastMRIFile({self.path.name!r}, {kind}, slices={self.num_slices}, "
                f"coils={self.coils}, shape={self.shape}, references={self.references})")


# --------------------------------------------------------------------------- ISMRMRD


@dataclass(frozen=True, eq=False)
class IsmrmrdData:
    """Cartesian k-space assembled from an ISMRMRD file by :func:`read_ismrmrd`.

    Attributes:
        kspace: complex64 ``(slices, coils, phase encodes, readout)``; unsampled
            positions are zero.
        sampled: bool ``(slices, phase encodes)``, the phase encodes that hold data.
        noise: complex64 ``(coils, samples)`` from the noise-measurement
            acquisitions (for :func:`medrecon.operators.coils.noise_covariance`),
            or ``None``.
        header: the parsed XML header.
        header_xml: its text.
    """

    kspace: torch.Tensor
    sampled: torch.Tensor
    noise: torch.Tensor | None
    header: IsmrmrdHeader
    header_xml: str


def _open_ismrmrd(path: Path, group: str) -> tuple[ismrmrd.Dataset, str]:
    """The open dataset and its XML header text."""
    if not path.is_file():
        raise InputError(path, None, "no such file")
    try:
        dataset = ismrmrd.Dataset(str(path), group, create_if_needed=False, mode="r")
    except OSError as exc:
        raise InputError(path, None, f"not a readable HDF5 file ({exc})") from None
    try:
        xml = dataset.read_xml_header()
    except LookupError:
        dataset.close()
        raise InputError(path, f"{group}/xml", "missing (not an ISMRMRD file?)") from None
    return dataset, xml.decode(errors="replace") if isinstance(xml, bytes) else str(xml)


def read_ismrmrd(path: str | os.PathLike[str], group: str = "dataset") -> IsmrmrdData:
    """Read Cartesian 2D k-space from an ISMRMRD HDF5 file with the ``ismrmrd`` package.

    Acquisitions flagged as noise measurements are returned separately as
    ``noise``; navigator, phase-correction, dummy-scan, feedback and
    phase-stabilisation acquisitions are skipped. Imaging lines are placed at
    ``[idx.slice, :, idx.kspace_encode_step_1 + offset, :]`` with ``offset = P // 2 -
    center`` (``P`` the encoded matrix y, ``center`` the encodingLimits
    kspace_encoding_step_1 centre, 0 when absent), so the k-space centre lands at
    ``P // 2`` as in fastMRI; ``discard_pre``/``discard_post`` samples are dropped
    and ``ACQ_IS_REVERSE`` lines flipped. Repeated lines (averages) are averaged.
    Lines flagged as parallel-calibration only fill positions no imaging line
    sampled. 3D encoding and several contrasts, phases, repetitions or sets are
    not supported (InputError).

    >>> data = read_ismrmrd("meas.h5")  # doctest: +SKIP
    >>> data.kspace.shape  # (slices, coils, phase encodes, readout)  # doctest: +SKIP
    torch.Size([1, 16, 256, 512])
    """
    path = Path(path)
    field = f"{group}/data"
    dataset, xml = _open_ismrmrd(path, group)
    with dataset:
        header = parse_ismrmrd_header(xml, path, f"{group}/xml")
        if header.encoded_matrix[2] > 1:
            raise InputError(path, f"{group}/xml", "3D encoding (matrixSize z > 1) is not "
                             "supported")
        try:
            count = dataset.number_of_acquisitions()
        except LookupError:
            raise InputError(path, field, "missing: no acquisitions") from None
        if count > MAX_ACQUISITIONS:
            raise InputError(path, field, f"{count} acquisitions, more than "
                             f"{MAX_ACQUISITIONS}")
        noise, lines = [], []
        for number in range(count):
            try:
                acq = dataset.read_acquisition(number)
            except (OSError, ValueError) as exc:
                raise InputError(path, field, f"acquisition {number} unreadable ({exc})"
                                 ) from None
            data = np.asarray(acq.data)
            if not np.all(np.isfinite(data)):
                raise InputError(path, field, f"acquisition {number} contains NaN or infinite "
                                 "values")
            if acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
                noise.append(data)
            elif not any(acq.is_flag_set(flag) for flag in SKIPPED_FLAGS):
                lines.append((number, acq, data))
    kspace, sampled = _assemble(path, field, header, lines)
    return IsmrmrdData(kspace=kspace, sampled=sampled,
                       noise=_noise(path, field, noise, kspace.shape[1]), header=header,
                       header_xml=xml)


def _readout(acq: ismrmrd.Acquisition, data: np.ndarray) -> np.ndarray:
    """The samples of one line without discarded ones, in increasing k order."""
    line = data[:, acq.discard_pre: data.shape[1] - acq.discard_post]
    return line[:, ::-1] if acq.is_flag_set(ismrmrd.ACQ_IS_REVERSE) else line


def _assemble(path: Path, field: str, header: IsmrmrdHeader, lines: list
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Place imaging lines ``(number, acquisition, data)`` into k-space (see read_ismrmrd).

    Imaging (kind 0) and calibration-only (kind 1) lines are summed and counted
    separately and averaged; calibration lines fill the positions no imaging line has.
    """
    if not lines:
        raise InputError(path, field, "no imaging acquisitions")
    phases = header.encoded_matrix[1]
    offset = phases // 2 - header.limits.get("kspace_encoding_step_1", (0, 0, phases // 2))[2]
    slices = 1 + max(acq.idx.slice for _, acq, _ in lines)
    coils, readout = _readout(lines[0][1], lines[0][2]).shape
    if slices > MAX_SLICES or coils > MAX_COILS or readout > MAX_MATRIX or coils == 0 \
            or readout == 0:
        raise InputError(path, field, f"{slices} slices, {coils} coils, {readout} readout "
                         f"samples: beyond the limits ({MAX_SLICES}, 1 to {MAX_COILS}, 1 to "
                         f"{MAX_MATRIX})")
    kinds = 1 + any(acq.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION) for _, acq, _ in lines)
    check_size(path, field, (kinds, slices, coils, phases, readout), 8, "k-space of")
    total = np.zeros((kinds, slices, coils, phases, readout), dtype=np.complex64)
    count = np.zeros((kinds, slices, phases), dtype=np.int64)
    for number, acq, data in lines:
        idx = acq.idx
        if idx.kspace_encode_step_2 or idx.contrast or idx.phase or idx.repetition or idx.set:
            raise InputError(path, field, f"acquisition {number}: 3D encoding or several "
                             "contrasts/phases/repetitions/sets are not supported")
        line = _readout(acq, data)
        if line.shape != (coils, readout):
            raise InputError(path, field, f"acquisition {number} has {line.shape[0]} coils x "
                             f"{line.shape[1]} samples, the first had {coils} x {readout}")
        position = idx.kspace_encode_step_1 + offset
        if not 0 <= position < phases:
            raise InputError(path, field, f"acquisition {number}: phase encode "
                             f"{idx.kspace_encode_step_1} outside the encoded matrix ({phases})")
        kind = int(acq.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION))
        total[kind, idx.slice, :, position] += line
        count[kind, idx.slice, position] += 1
    total /= np.maximum(count, 1)[:, :, None, :, None]
    kspace, sampled = total[0], count[0] > 0
    if kinds == 2:
        gaps = ~sampled & (count[1] > 0)
        slice_index, phase_index = np.nonzero(gaps)
        kspace[slice_index, :, phase_index] = total[1][slice_index, :, phase_index]
        sampled |= gaps
    return torch.from_numpy(kspace), torch.from_numpy(sampled)


def _noise(path: Path, field: str, noise: list[np.ndarray], coils: int) -> torch.Tensor | None:
    if not noise:
        return None
    if any(n.shape[0] != coils for n in noise):
        raise InputError(path, field, f"noise acquisitions do not have the {coils} coils of "
                         "the imaging data")
    return torch.from_numpy(np.concatenate(noise, axis=1).astype(np.complex64))


def is_ismrmrd(path: str | os.PathLike[str], group: str = "dataset") -> bool:
    """Whether ``path`` is an HDF5 file holding an ISMRMRD group ``group`` (with its
    ``xml`` header and ``data`` acquisitions) and no fastMRI ``kspace`` dataset. Never
    raises: an unreadable file is not ISMRMRD (its reader then says why)."""
    try:
        with h5py.File(Path(path), "r") as f:
            node = f.get(group)
            return (isinstance(node, h5py.Group) and "xml" in node and "data" in node
                    and "kspace" not in f)
    except Exception:  # noqa: BLE001 (any failure: not recognisable as ISMRMRD)
        return False


class IsmrmrdFile:
    """An ISMRMRD raw file (:func:`read_ismrmrd`) seen as a Cartesian k-space file with the
    attributes and methods of :class:`FastMRIFile` that a reconstruction reads, so that
    :mod:`medrecon.studies.mri` takes either.

    The k-space is read whole when the file is opened and turned into fastMRI's
    orientation, ``(coils, H, W)`` per slice with ``H`` the readout and ``W`` the phase
    encodes (ISMRMRD stores one acquisition per readout line), centre at ``(H // 2, W //
    2)``. ``mask`` is the sampled phase encodes ``(W,)`` (``None`` when every one is
    sampled); every slice must sample the same ones. ``noise`` is the noise scan
    ``(coils, samples)`` (``None`` without one), for prewhitening. There is no
    reference image. Non-Cartesian encodings are refused (InputError naming
    ``dataset/xml``).
    """

    format = "ISMRMRD"
    dicom_source = None

    def __init__(self, path: str | os.PathLike[str], group: str = "dataset"):
        self.path = Path(path)
        self.group = group
        data = read_ismrmrd(self.path, group)
        header = data.header
        if header.trajectory not in ("", "cartesian"):
            raise InputError(self.path, f"{group}/xml", f"trajectory {header.trajectory!r}: "
                             "only Cartesian ISMRMRD files are read")
        kspace = data.kspace.transpose(-2, -1).contiguous()  # (slices, coils, readout, phase)
        sampled = data.sampled
        if not bool((sampled == sampled[:1]).all()):
            raise InputError(self.path, f"{group}/data", "the slices sample different phase "
                             "encodes; one pattern for all slices is supported")
        self._kspace = kspace
        self.header, self.header_xml = header, data.header_xml
        self.noise = data.noise
        self.num_slices, self.coils = int(kspace.shape[0]), int(kspace.shape[1])
        self.multicoil = True
        self.shape = self.image_shape = (int(kspace.shape[2]), int(kspace.shape[3]))
        if min(self.shape) < MIN_MATRIX:
            raise InputError(self.path, f"{group}/data", f"k-space of {self.shape} is smaller "
                             f"than {MIN_MATRIX} x {MIN_MATRIX}")
        columns = sampled[0]
        self.mask = None if bool(columns.all()) else columns.clone()
        self.trajectory = None
        self.references: tuple[str, ...] = ()
        self.attrs: Mapping[str, object] = MappingProxyType({"format": self.format})
        logger.info("opened ISMRMRD %s: %d slices, %d coils, k-space %s, %d of %d phase "
                    "encodes, noise scan %s", self.path.name, self.num_slices, self.coils,
                    self.shape, int(columns.sum()), columns.numel(),
                    "yes" if self.noise is not None else "no")

    def read_slice(self, index: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """k-space of slice ``index``: complex64 ``(coils, H, W)`` on ``device``."""
        if not isinstance(index, (int, np.integer)) or not 0 <= index < self.num_slices:
            raise InputError(self.path, f"{self.group}/data", f"slice {index!r} out of range "
                             f"(0 to {self.num_slices - 1})")
        return self._kspace[int(index)].to(device)

    def read_reference(self, index: int, name: str | None = None) -> torch.Tensor:
        """ISMRMRD raw files hold no reference image: always :class:`InputError`."""
        raise InputError(self.path, name or "reference", "an ISMRMRD raw file holds no "
                         "reference image")

    def describe(self) -> dict[str, object]:
        """What was found, for ``medrecon info`` (never patient identity)."""
        sampled = int(self.mask.sum()) if self.mask is not None else self.shape[1]
        centre = calibration_width(self.mask, self.shape) if self.mask is not None \
            else self.shape[1]
        return {"format": "ISMRMRD raw data", "trajectory": "cartesian",
                "slices": self.num_slices, "coils": self.coils,
                "k-space (readout, phase encodes)": self.shape,
                "encoded matrix": self.header.encoded_matrix[:2],
                "recon matrix": self.header.recon_matrix[:2],
                "field of view mm": self.header.recon_fov_mm[:2],
                "phase encodes sampled": f"{sampled} of {self.shape[1]} "
                                         f"(R = {self.shape[1] / sampled:.3g})",
                "fully sampled centre": centre,
                "noise scan": (f"{self.noise.shape[1]} samples per coil (used for "
                               "prewhitening)") if self.noise is not None else "none"}

    def __len__(self) -> int:
        return self.num_slices

    def close(self) -> None:
        """Nothing to close: the file was read when opened."""

    def __enter__(self) -> IsmrmrdFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"IsmrmrdFile({self.path.name!r}, slices={self.num_slices}, "
                f"coils={self.coils}, shape={self.shape})")


def open_kspace(path: str | os.PathLike[str]) -> FastMRIFile | IsmrmrdFile:
    """A k-space file: :class:`IsmrmrdFile` for ISMRMRD raw data (:func:`is_ismrmrd`), else
    :class:`FastMRIFile` (the fastMRI layout and medrecon's non-Cartesian extension)."""
    try:
        return FastMRIFile(path)  # one open for the common case
    except InputError:
        if is_ismrmrd(path):
            return IsmrmrdFile(path)
        raise
