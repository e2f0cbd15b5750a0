"""Writers for fastMRI-layout files: simulated k-space and reconstructions.

- :func:`write_kspace_file` writes k-space (Cartesian, or non-Cartesian with a
  trajectory) in the layout :class:`medrecon.data.kspace.FastMRIFile` reads,
  with an ISMRMRD XML header (:func:`make_ismrmrd_header`) that states the
  encoded and reconstruction matrices.
- :func:`write_ismrmrd_file` writes Cartesian k-space as an ISMRMRD raw file (one
  acquisition per phase encode, an optional noise scan).
- :func:`write_fastmri_reconstruction` writes reconstructions as the fastMRI
  challenge expects them: ``/reconstruction`` float32 ``(slices, H, W)``.

Both write to a temporary name beside the destination and rename it when
complete (:func:`medrecon.data.atomic.atomic_file`), and raise
:class:`~medrecon.errors.InputError` naming the file and dataset for bad arrays.
A reconstruction without a source DICOM series is written as an MR series by
:func:`medrecon.data.dicom.write_dicom_series` with ``modality="MR"``.

Example::

    header = make_ismrmrd_header((640, 368), (320, 320))
    write_kspace_file("sim.h5", kspace, mask=mask, reference=rss, header_xml=header)
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from medrecon.data.atomic import atomic_file
from medrecon.data.kspace import HEADER, NAMESPACE, PI_TOLERANCE, parse_ismrmrd_header
from medrecon.errors import InputError

#: 1H Larmor frequency written into generated headers (1.5 T); simulated data have none
H1_FREQUENCY_HZ = 63_870_000

ArrayLike = np.ndarray | torch.Tensor


def _numpy(array: ArrayLike) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _element(parent: ET.Element, tag: str, text: object | None = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    if text is not None:
        child.text = str(text)
    return child


def _space(encoding: ET.Element, tag: str, matrix: Sequence[int], fov: Sequence[float]) -> None:
    space = _element(encoding, tag)
    for name, values in (("matrixSize", matrix), ("fieldOfView_mm", fov)):
        element = _element(space, name)
        for axis, value in zip("xyz", values):
            _element(element, axis, value)


def make_ismrmrd_header(encoded_matrix: Sequence[int], recon_matrix: Sequence[int] | None = None,
                        *, pixel_size_mm: float = 1.0, slice_thickness_mm: float = 1.0,
                        slices: int = 1, trajectory: str = "cartesian") -> str:
    """A minimal schema-valid ISMRMRD XML header for a 2D acquisition.

    ``encoded_matrix`` and ``recon_matrix`` (default: the encoded one) are
    ``(x, y)``: readout and phase encodes (k-space ``(H, W)`` in fastMRI's layout);
    the fields of view are the matrices times ``pixel_size_mm``. encodingLimits
    state phase encodes ``0 .. y - 1`` with centre ``y // 2`` and slices
    ``0 .. slices - 1``; experimentalConditions holds a placeholder 1.5 T
    frequency (the schema requires one). ``trajectory`` is an ISMRMRD trajectory
    name (``cartesian``, ``radial``, ``spiral``, ``other``...).

    >>> from medrecon.data.kspace import parse_ismrmrd_header
    >>> parse_ismrmrd_header(make_ismrmrd_header((64, 48), (32, 48))).recon_fov_mm
    (32.0, 48.0, 1.0)
    """
    encoded = tuple(int(n) for n in encoded_matrix) + (1,)
    recon = tuple(int(n) for n in (recon_matrix or encoded_matrix)) + (1,)
    if len(encoded) != 3 or len(recon) != 3 or min(encoded + recon) < 1:
        raise ValueError(f"matrices must be two positive sizes (x, y), got {encoded_matrix} "
                         f"and {recon_matrix}")
    root = ET.Element("ismrmrdHeader", xmlns=NAMESPACE)
    conditions = _element(root, "experimentalConditions")
    _element(conditions, "H1resonanceFrequency_Hz", H1_FREQUENCY_HZ)
    encoding = _element(root, "encoding")
    for tag, matrix in (("encodedSpace", encoded), ("reconSpace", recon)):
        fov = (matrix[0] * pixel_size_mm, matrix[1] * pixel_size_mm, slice_thickness_mm)
        _space(encoding, tag, matrix, tuple(float(v) for v in fov))
    limits = _element(encoding, "encodingLimits")
    for tag, maximum, center in (("kspace_encoding_step_1", encoded[1] - 1, encoded[1] // 2),
                                 ("slice", slices - 1, 0)):
        limit = _element(limits, tag)
        for name, value in (("minimum", 0), ("maximum", maximum), ("center", center)):
            _element(limit, name, value)
    _element(encoding, "trajectory", trajectory)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def _check_real(path: Path, name: str, array: np.ndarray, ndim: int) -> np.ndarray:
    if array.ndim != ndim or array.size == 0 or array.dtype.kind not in "biuf":
        raise InputError(path, name, f"expected a real {ndim}D array, got shape {array.shape} "
                         f"{array.dtype}")
    if not np.all(np.isfinite(array)):
        raise InputError(path, name, "contains NaN or infinite values")
    return array.astype(np.float32)


def _write_attrs(f: h5py.File, attrs: Mapping[str, object] | None) -> None:
    for key, value in (attrs or {}).items():
        f.attrs[key] = value


def write_fastmri_reconstruction(path: str | os.PathLike[str], reconstruction: ArrayLike, *,
                                 reference: ArrayLike | None = None,
                                 attrs: Mapping[str, object] | None = None) -> Path:
    """Write ``reconstruction`` (real ``(slices, H, W)``) to ``/reconstruction`` as
    float32 (and an optional real ``reference`` to ``/reference``), with root
    attributes ``attrs``, atomically; returns ``path``."""
    path = Path(path)
    values = _check_real(path, "reconstruction", _numpy(reconstruction), 3)
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("reconstruction", data=values)
        if reference is not None:
            f.create_dataset("reference", data=np.asarray(reference, dtype=np.float32))
        _write_attrs(f, attrs)
    return path


def _check_kspace(path: Path, kspace: np.ndarray, non_cartesian: bool) -> None:
    expected = (3,) if non_cartesian else (3, 4)
    if kspace.ndim not in expected or kspace.size == 0:
        layout = ("(slices, coils, samples)" if non_cartesian
                  else "(slices, H, W) or (slices, coils, H, W)")
        raise InputError(path, "kspace", f"expected {layout}, got shape {kspace.shape}")
    if not np.all(np.isfinite(kspace)):
        raise InputError(path, "kspace", "contains NaN or infinite values")


def _check_trajectory(path: Path, trajectory: np.ndarray, samples: int) -> np.ndarray:
    if trajectory.shape != (2, samples) or trajectory.dtype.kind not in "iuf":
        raise InputError(path, "trajectory", f"expected real (2, {samples}), got "
                         f"{trajectory.shape} {trajectory.dtype}")
    if not np.all(np.abs(trajectory) <= math.pi * (1 + PI_TOLERANCE)):
        raise InputError(path, "trajectory", "values must be finite radians within [-pi, pi]")
    return trajectory.astype(np.float32)


def _check_mask(path: Path, mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if mask.shape not in (shape[-1:], shape) or not np.all(np.isin(mask, (0, 1))):
        raise InputError(path, "mask", f"expected 0/1 values of shape {shape[-1:]} or {shape}, "
                         f"got {mask.shape}")
    return mask.astype(bool)


def write_kspace_file(path: str | os.PathLike[str], kspace: ArrayLike, *,
                      mask: ArrayLike | None = None, trajectory: ArrayLike | None = None,
                      reference: ArrayLike | None = None, header_xml: str | None = None,
                      image_shape: Sequence[int] | None = None,
                      attrs: Mapping[str, object] | None = None) -> Path:
    """Write simulated k-space in the fastMRI layout (see :mod:`medrecon.data.kspace`).

    ``kspace`` is complex ``(slices, H, W)`` (single-coil), ``(slices, coils, H, W)``,
    or with ``trajectory`` (float ``(2, samples)``, radians in ``[-pi, pi]``)
    ``(slices, coils, samples)``; it is stored as complex64 in one gzip-compressed
    chunk per slice, so that slices read independently (unsampled zeros cost nothing).
    ``mask`` is 0/1 ``(W,)`` or ``(H, W)`` (Cartesian only). ``reference`` (real
    ``(slices, h, w)``) is stored as ``reconstruction_rss`` for multi-coil data,
    ``reconstruction_esc`` for single-coil, and sets the ``max`` and ``norm``
    attributes as in fastMRI (``attrs`` override them). Without ``header_xml`` a
    header is generated by :func:`make_ismrmrd_header`: encoded matrix ``(H, W)``
    (non-Cartesian: ``image_shape``, required then), recon matrix the reference's
    ``(h, w)``. A given ``header_xml`` must parse
    (:func:`medrecon.data.kspace.parse_ismrmrd_header`).
    """
    path = Path(path)
    data = _numpy(kspace)
    non_cartesian = trajectory is not None
    _check_kspace(path, data, non_cartesian)
    multicoil = non_cartesian or data.ndim == 4
    traj = _check_trajectory(path, _numpy(trajectory), data.shape[-1]) if non_cartesian else None
    if mask is not None and non_cartesian:
        raise InputError(path, "mask", "not allowed with a trajectory")
    sampling = _check_mask(path, _numpy(mask), data.shape[-2:]) if mask is not None else None
    ref = _check_real(path, "reference", _numpy(reference), 3) if reference is not None else None
    if ref is not None and ref.shape[0] != data.shape[0]:
        raise InputError(path, "reference", f"has {ref.shape[0]} slices, kspace {data.shape[0]}")
    if header_xml is None:
        if non_cartesian and image_shape is None:
            raise InputError(path, HEADER, "non-Cartesian k-space needs image_shape (or "
                             "header_xml) for its image matrix")
        encoded = tuple(image_shape) if non_cartesian else data.shape[-2:]
        recon = ref.shape[1:] if ref is not None else encoded
        header_xml = make_ismrmrd_header(encoded, recon, slices=data.shape[0],
                                         trajectory="other" if non_cartesian else "cartesian")
    parse_ismrmrd_header(header_xml, path, HEADER)
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("kspace", data=data.astype(np.complex64),
                         chunks=(1, *data.shape[1:]), compression="gzip", compression_opts=4)
        f.create_dataset(HEADER, data=header_xml.encode())
        if traj is not None:
            f.create_dataset("trajectory", data=traj)
        if sampling is not None:
            f.create_dataset("mask", data=sampling)
        if ref is not None:
            f.create_dataset("reconstruction_rss" if multicoil else "reconstruction_esc",
                             data=ref, chunks=(1, *ref.shape[1:]))
            f.attrs["max"] = float(ref.max())
            f.attrs["norm"] = float(np.linalg.norm(ref))
        _write_attrs(f, attrs)
    return path


def write_ismrmrd_file(path: str | os.PathLike[str], kspace: ArrayLike, *,
                       mask: ArrayLike | None = None, noise: ArrayLike | None = None,
                       recon_matrix: Sequence[int] | None = None,
                       pixel_size_mm: float = 1.0) -> Path:
    """Write Cartesian 2D k-space as an ISMRMRD raw file (Inati et al., MRM 77:411-421,
    2017), the layout :func:`medrecon.data.kspace.read_ismrmrd` reads, with the
    ``ismrmrd`` package.

    ``kspace`` is complex ``(slices, coils, H, W)`` in fastMRI's orientation (``H`` the
    readout, ``W`` the phase encodes, centre at ``(H // 2, W // 2)``); one acquisition is
    written per slice and sampled phase encode (``mask``: 0/1 ``(W,)``, default every
    column), with ``idx.kspace_encode_step_1`` the column, ``idx.slice`` the slice,
    ``center_sample = H // 2`` and the first/last-in-slice flags. ``noise`` (complex
    ``(coils, samples)``) becomes one acquisition flagged ``ACQ_IS_NOISE_MEASUREMENT``,
    written first as scanners do. The header is :func:`make_ismrmrd_header` with encoded
    matrix ``(H, W)`` and ``recon_matrix`` (default the same). Written to a temporary
    name and renamed when complete.
    """
    import ismrmrd

    path = Path(path)
    data = _numpy(kspace)
    if data.ndim != 4 or not np.iscomplexobj(data):
        raise InputError(path, "kspace", "expected complex (slices, coils, H, W), got "
                         f"{data.dtype} {data.shape}")
    slices, coils, height, width = data.shape
    columns = np.ones(width, dtype=bool) if mask is None else \
        _check_mask(path, _numpy(mask), (width,)).astype(bool)
    if noise is not None:
        noise = _numpy(noise)
        if noise.ndim != 2 or noise.shape[0] != coils:
            raise InputError(path, "noise", f"expected ({coils}, samples), got {noise.shape}")
    header = make_ismrmrd_header((height, width), recon_matrix or (height, width),
                                 pixel_size_mm=pixel_size_mm, slices=slices)
    sampled = np.flatnonzero(columns)

    def line(values: np.ndarray) -> ismrmrd.Acquisition:
        acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(values, dtype=np.complex64))
        acq.available_channels = coils
        return acq

    with atomic_file(path) as tmp:
        with ismrmrd.Dataset(str(tmp), "dataset", create_if_needed=True) as dataset:
            dataset.write_xml_header(header)
            if noise is not None:
                acq = line(noise)
                acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
                dataset.append_acquisition(acq)
            for s in range(slices):
                for n, column in enumerate(sampled):
                    acq = line(data[s, :, :, column])
                    acq.center_sample = height // 2
                    acq.idx.kspace_encode_step_1 = int(column)
                    acq.idx.slice = s
                    if n == 0:
                        acq.set_flag(ismrmrd.ACQ_FIRST_IN_SLICE)
                    if n == len(sampled) - 1:
                        acq.set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
                    dataset.append_acquisition(acq)
    return path
