"""k-space files: fastMRI HDF5 (written by medrecon and built by hand in the public
layout), the non-Cartesian extension, ISMRMRD raw data, reconstruction writers, and
every bad input ending in one InputError that names the file and the dataset."""

from __future__ import annotations

import logging
import warnings

import h5py
import ismrmrd
import numpy as np
import pydicom
import pytest
import torch
from pydicom.uid import MRImageStorage

from medrecon.data.dicom import read_dicom, write_dicom_series
from medrecon.data.kspace import FastMRIFile, parse_ismrmrd_header, read_ismrmrd
from medrecon.data.kspace_write import (
    make_ismrmrd_header,
    write_fastmri_reconstruction,
    write_kspace_file,
)
from medrecon.data.volume import Volume
from medrecon.errors import InputError

SLICES, COILS, H, W = 3, 4, 32, 24
PATIENT_ID = "c7a1e6f03b0d4e8f9a2b5c6d7e8f9a0b"

#: a header as fastMRI files carry it (abridged: namespaces, order and types as published)
FASTMRI_HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD" xmlns:xs="http://www.w3.org/2001/XMLSchema"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.ismrm.org/ISMRMRD ismrmrd.xsd">
  <studyInformation><studyTime>09:38:56</studyTime></studyInformation>
  <measurementInformation><measurementID>45_12345_6789</measurementID>
    <patientPosition>FFS</patientPosition><protocolName>AX FLAIR_FBB</protocolName>
  </measurementInformation>
  <acquisitionSystemInformation><systemVendor>SIEMENS</systemVendor>
    <systemFieldStrength_T>2.89362</systemFieldStrength_T>
    <receiverChannels>4</receiverChannels></acquisitionSystemInformation>
  <experimentalConditions><H1resonanceFrequency_Hz>123252006</H1resonanceFrequency_Hz>
  </experimentalConditions>
  <encoding>
    <encodedSpace>
      <matrixSize><x>32</x><y>24</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>440</x><y>220</y><z>7.5</z></fieldOfView_mm>
    </encodedSpace>
    <reconSpace>
      <matrixSize><x>16</x><y>16</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>220</x><y>227</y><z>5</z></fieldOfView_mm>
    </reconSpace>
    <trajectory>cartesian</trajectory>
    <encodingLimits>
      <kspace_encoding_step_1><minimum>0</minimum><maximum>22</maximum><center>12</center>
      </kspace_encoding_step_1>
      <slice><minimum>0</minimum><maximum>2</maximum><center>0</center></slice>
    </encodingLimits>
  </encoding>
</ismrmrdHeader>
"""


def complex_normal(shape, generator, dtype=torch.complex64) -> np.ndarray:
    return torch.randn(shape, dtype=dtype, generator=generator).numpy()


def check_error(info: pytest.ExceptionInfo, path, field: str, text: str = "") -> None:
    """The one-line message is ``file: dataset: problem``."""
    assert str(info.value).startswith(f"{path}: {field}: "), str(info.value)
    assert text in str(info.value)


@pytest.fixture
def multicoil(generator):
    kspace = complex_normal((SLICES, COILS, H, W), generator)
    mask = np.zeros(W, dtype=bool)
    mask[::3] = mask[W // 2 - 3: W // 2 + 3] = True
    reference = torch.rand(SLICES, 16, 16, generator=generator).numpy()
    return kspace, mask, reference


def build_fastmri(path, generator, **replace) -> tuple[np.ndarray, np.ndarray]:
    """A multi-coil file built with h5py in the public fastMRI layout; ``replace``
    overrides (or, with ``None``, removes) datasets."""
    kspace = complex_normal((SLICES, COILS, H, W), generator)
    reference = torch.rand(SLICES, 16, 16, generator=generator).numpy()
    datasets = {"kspace": kspace, "reconstruction_rss": reference,
                "ismrmrd_header": np.bytes_(FASTMRI_HEADER.encode())}
    datasets.update(replace)
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            if value is not None:
                f.create_dataset(name, data=value)
        f.attrs.update({"acquisition": "AXFLAIR", "max": float(reference.max()),
                        "norm": float(np.linalg.norm(reference)), "patient_id": PATIENT_ID})
    return kspace, reference


# --------------------------------------------------------------------------- fastMRI


@pytest.mark.parametrize("header_storage", ["fixed-length bytes", "variable-length string"])
def test_hand_built_fastmri_multicoil_file(tmp_path, generator, caplog, header_storage):
    path = tmp_path / "file_brain_AXFLAIR_200_6002425.h5"
    kspace, reference = build_fastmri(path, generator)
    if header_storage == "variable-length string":
        with h5py.File(path, "r+") as f:
            del f["ismrmrd_header"]
            f.create_dataset("ismrmrd_header", data=FASTMRI_HEADER, dtype=h5py.string_dtype())
    with caplog.at_level(logging.DEBUG, logger="medrecon"), FastMRIFile(path) as f:
        assert (len(f), f.coils, f.shape, f.multicoil) == (SLICES, COILS, (H, W), True)
        assert f.mask is None and f.trajectory is None
        assert f.references == ("reconstruction_rss",)
        header = f.header
        assert header.encoded_matrix == (32, 24, 1) and header.recon_matrix == (16, 16, 1)
        assert header.encoded_fov_mm == (440.0, 220.0, 7.5)
        assert header.recon_fov_mm == (220.0, 227.0, 5.0)
        assert header.trajectory == "cartesian"
        assert header.limits == {"kspace_encoding_step_1": (0, 22, 12), "slice": (0, 2, 0)}
        assert f.attrs["acquisition"] == "AXFLAIR" and f.attrs["patient_id"] == PATIENT_ID
        assert f.attrs["max"] == pytest.approx(reference.max())
        slice1 = f.read_slice(1)
        assert slice1.dtype == torch.complex64 and slice1.shape == (COILS, H, W)
        np.testing.assert_array_equal(slice1.numpy(), kspace[1])
        np.testing.assert_array_equal(f.read_reference(2).numpy(), reference[2])
        assert PATIENT_ID not in repr(f)
    assert caplog.records and all(PATIENT_ID not in r.getMessage() for r in caplog.records)


def test_multicoil_round_trip_with_mask(tmp_path, multicoil):
    kspace, mask, reference = multicoil
    path = write_kspace_file(tmp_path / "sim.h5", torch.from_numpy(kspace), mask=mask,
                             reference=reference, attrs={"acquisition": "simulated"})
    with FastMRIFile(path) as f:
        assert (len(f), f.coils, f.shape, f.image_shape) == (SLICES, COILS, (H, W), (H, W))
        np.testing.assert_array_equal(f.mask.numpy(), mask)
        for index in range(SLICES):
            np.testing.assert_array_equal(f.read_slice(index).numpy(), kspace[index] * mask)
            np.testing.assert_array_equal(f.read_reference(index).numpy(), reference[index])
        assert f.header.encoded_matrix == (H, W, 1) and f.header.recon_matrix == (16, 16, 1)
        assert f.header.encoded_fov_mm == (H, W, 1.0)
        assert f.attrs["acquisition"] == "simulated"
        assert f.attrs["max"] == pytest.approx(reference.max())
        assert f.attrs["norm"] == pytest.approx(np.linalg.norm(reference), rel=1e-6)


def test_single_coil_round_trip(tmp_path, generator):
    kspace = complex_normal((2, H, W), generator)
    reference = torch.rand(2, 16, 16, generator=generator).numpy()
    mask2d = np.ones((H, W), dtype=np.uint8)
    mask2d[:, 1::2] = 0
    path = write_kspace_file(tmp_path / "single.h5", kspace, mask=mask2d, reference=reference)
    with FastMRIFile(path) as f:
        assert (f.multicoil, f.coils, f.shape, f.references) == (
            False, 1, (H, W), ("reconstruction_esc",))
        np.testing.assert_array_equal(f.read_slice(1).numpy(), kspace[1][None] * mask2d)
        np.testing.assert_array_equal(f.read_reference(0).numpy(), reference[0])


def test_noncartesian_round_trip(tmp_path, generator):
    samples = 50
    traj = (torch.rand(2, samples, generator=generator) * 2 - 1) * torch.pi
    traj[0, 0] = torch.pi
    kspace = complex_normal((2, COILS, samples), generator)
    path = write_kspace_file(tmp_path / "radial.h5", kspace, trajectory=traj,
                             image_shape=(20, 18))
    with FastMRIFile(path) as f:
        assert (f.multicoil, f.coils, f.shape, f.image_shape) == (True, COILS, (samples,),
                                                                   (20, 18))
        assert f.header.trajectory == "other"
        np.testing.assert_array_equal(f.trajectory.numpy(), traj.numpy())
        np.testing.assert_array_equal(f.read_slice(1).numpy(), kspace[1])


def test_generated_header_is_schema_valid():
    xml = make_ismrmrd_header((64, 48), (32, 32), pixel_size_mm=0.5, slices=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parsed = ismrmrd.xsd.CreateFromDocument(xml)       # the ismrmrd package's schema
    encoding = parsed.encoding[0]
    assert (encoding.encodedSpace.matrixSize.x, encoding.encodedSpace.matrixSize.y) == (64, 48)
    assert encoding.reconSpace.fieldOfView_mm.x == 16.0
    assert encoding.encodingLimits.kspace_encoding_step_1.center == 24
    header = parse_ismrmrd_header(xml)
    assert header.encoded_fov_mm == (32.0, 24.0, 1.0) and header.limits["slice"] == (0, 3, 0)


def test_reading_one_slice_leaves_the_others_unread(tmp_path, generator):
    """Slices are separate checksummed chunks; with slice 1's chunk corrupted on disk,
    opening the file and reading slices 0 and 2 still work, so neither read slice 1."""
    kspace = complex_normal((SLICES, COILS, H, W), generator)
    path = tmp_path / "lazy.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace, chunks=(1, COILS, H, W), fletcher32=True)
        offset = f["kspace"].id.get_chunk_info_by_coord((1, 0, 0, 0)).byte_offset
    with open(path, "r+b") as raw:
        raw.seek(offset + 100)
        raw.write(b"\x00\xff" * 16)
    with FastMRIFile(path) as f:
        np.testing.assert_array_equal(f.read_slice(0).numpy(), kspace[0])
        np.testing.assert_array_equal(f.read_slice(2).numpy(), kspace[2])
        with pytest.raises(InputError) as info:
            f.read_slice(1)
    check_error(info, path, "kspace", "slice 1: unreadable")


def test_nan_is_found_in_the_slice_that_has_it(tmp_path, generator):
    kspace = complex_normal((SLICES, COILS, H, W), generator)
    kspace[1, 2, 3, 4] = np.nan
    path = tmp_path / "nan.h5"
    build_fastmri(path, generator, kspace=kspace)
    with FastMRIFile(path) as f:
        f.read_slice(0)
        with pytest.raises(InputError) as info:
            f.read_slice(1)
        check_error(info, path, "kspace", "slice 1 contains NaN")
        with pytest.raises(InputError) as info:
            f.read_slice(SLICES)
        check_error(info, path, "kspace", "out of range")


BAD_FILES = {
    "no kspace": ({"kspace": None}, "kspace", "dataset missing"),
    "kspace is a group": ({"kspace": "group"}, "kspace", "is a group"),
    "rank 2": ({"kspace": np.ones((H, W), np.complex64)}, "kspace", "expected (slices, H, W)"),
    "rank 5": ({"kspace": np.ones((1, 1, 2, H, W), np.complex64)}, "kspace", "got shape"),
    "real": ({"kspace": np.ones((2, H, W), np.float32)}, "kspace", "must be complex"),
    "empty": ({"kspace": np.ones((0, COILS, H, W), np.complex64),
               "reconstruction_rss": None}, "kspace", "empty"),
    "mask width": ({"mask": np.ones(W + 1, bool)}, "mask", "does not match k-space width"),
    "mask values": ({"mask": np.full(W, 0.5)}, "mask", "only 0 and 1"),
    "mask empty": ({"mask": np.zeros(W, bool)}, "mask", "samples nothing"),
    "reference slices": ({"reconstruction_rss": np.ones((2, 16, 16), np.float32)},
                         "reconstruction_rss", "expected (3, rows, cols)"),
    "reference complex": ({"reconstruction_rss": np.ones((SLICES, 4, 4), np.complex64)},
                          "reconstruction_rss", "must be real"),
    "malformed header": ({"ismrmrd_header": np.bytes_(b"<ismrmrdHeader><enc")},
                         "ismrmrd_header", "malformed XML"),
    "header root": ({"ismrmrd_header": np.bytes_(b"<other/>")}, "ismrmrd_header",
                    "not 'ismrmrdHeader'"),
    "header matrix": ({"ismrmrd_header": np.bytes_(
        FASTMRI_HEADER.replace("<x>16</x>", "").encode())}, "ismrmrd_header",
        "reconSpace/matrixSize/x missing"),
    "header negative fov": ({"ismrmrd_header": np.bytes_(
        FASTMRI_HEADER.replace("<x>440</x>", "<x>-440</x>").encode())}, "ismrmrd_header",
        "must be positive"),
    "trajectory range": ({"kspace": np.ones((2, COILS, 10), np.complex64),
                          "reconstruction_rss": None,
                          "trajectory": np.full((2, 10), 3.2, np.float32)},
                         "trajectory", "outside [-pi, pi]"),
    "trajectory shape": ({"kspace": np.ones((2, COILS, 10), np.complex64),
                          "reconstruction_rss": None,
                          "trajectory": np.zeros((2, 11), np.float32)},
                         "trajectory", "expected shape (2, 10)"),
    "trajectory nan": ({"kspace": np.ones((2, COILS, 10), np.complex64),
                        "reconstruction_rss": None,
                        "trajectory": np.full((2, 10), np.nan, np.float32)},
                       "trajectory", "NaN"),
    "trajectory rank": ({"trajectory": np.zeros((2, W), np.float32)}, "kspace",
                        "with a trajectory"),
    "trajectory without header": ({"kspace": np.ones((2, COILS, 10), np.complex64),
                                   "reconstruction_rss": None, "ismrmrd_header": None,
                                   "trajectory": np.zeros((2, 10), np.float32)},
                                  "ismrmrd_header", "needs it"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_fastmri_file(tmp_path, generator, case):
    replace, field, text = BAD_FILES[case]
    path = tmp_path / "bad.h5"
    group = isinstance(replace.get("kspace"), str)
    build_fastmri(path, generator, **({} if group else replace))
    if group:
        with h5py.File(path, "r+") as f:
            del f["kspace"]
            f.create_group("kspace")
    with pytest.raises(InputError) as info:
        FastMRIFile(path)
    check_error(info, path, field, text)


def test_unreadable_files(tmp_path, generator):
    missing = tmp_path / "missing.h5"
    with pytest.raises(InputError, match="no such file"):
        FastMRIFile(missing)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not an HDF5 file at all" * 100)
    with pytest.raises(InputError, match="not a readable HDF5 file") as info:
        FastMRIFile(garbage)
    assert str(info.value).startswith(f"{garbage}: ")
    truncated = tmp_path / "truncated.h5"
    build_fastmri(truncated, generator)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(InputError) as info:
        FastMRIFile(truncated)
    assert str(info.value).startswith(f"{truncated}: ")


# --------------------------------------------------------------------------- writers


def test_fastmri_reconstruction_round_trip(tmp_path, generator):
    volume = torch.rand(SLICES, 16, 12, dtype=torch.float64, generator=generator)
    path = write_fastmri_reconstruction(tmp_path / "recon.h5", volume,
                                        attrs={"method": "sense", "acceleration": 4})
    with h5py.File(path, "r") as f:
        assert list(f) == ["reconstruction"] and f["reconstruction"].dtype == np.float32
        np.testing.assert_array_equal(f["reconstruction"][()], volume.numpy().astype(np.float32))
        assert (f.attrs["method"], f.attrs["acceleration"]) == ("sense", 4)


@pytest.mark.parametrize(("array", "text"), [
    (np.ones((16, 12)), "expected a real 3D array"),
    (np.ones((2, 16, 12), np.complex64), "expected a real 3D array"),
    (np.full((2, 4, 4), np.nan), "NaN"),
])
def test_fastmri_reconstruction_rejects_bad_arrays(tmp_path, array, text):
    path = tmp_path / "recon.h5"
    with pytest.raises(InputError) as info:
        write_fastmri_reconstruction(path, array)
    check_error(info, path, "reconstruction", text)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("kwargs", "field", "text"), [
    ({"kspace": np.ones((H, W), np.complex64)}, "kspace", "expected (slices, H, W)"),
    ({"kspace": np.full((1, H, W), np.nan, np.complex64)}, "kspace", "NaN"),
    ({"mask": np.ones(W - 1)}, "mask", "expected 0/1 values"),
    ({"reference": np.ones((SLICES + 1, 4, 4))}, "reference", "has 4 slices"),
    ({"header_xml": "<ismrmrdHeader/>"}, "ismrmrd_header", "encoding missing"),
    ({"kspace": np.ones((2, COILS, 5), np.complex64), "trajectory": np.zeros((2, 5))},
     "ismrmrd_header", "needs image_shape"),
    ({"kspace": np.ones((2, COILS, 5), np.complex64), "trajectory": np.full((2, 5), 4.0),
      "image_shape": (8, 8)}, "trajectory", "[-pi, pi]"),
])
def test_write_kspace_file_rejects_bad_input(tmp_path, generator, kwargs, field, text):
    arguments = {"kspace": complex_normal((SLICES, COILS, H, W), generator), **kwargs}
    path = tmp_path / "sim.h5"
    with pytest.raises(InputError) as info:
        write_kspace_file(path, arguments.pop("kspace"), **arguments)
    check_error(info, path, field, text)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path, multicoil):
    """An error in the middle of writing (an attribute HDF5 cannot store) leaves no file."""
    kspace, mask, reference = multicoil
    path = tmp_path / "sim.h5"
    with pytest.raises(TypeError):
        write_kspace_file(path, kspace, mask=mask, attrs={"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_mr_dicom_series_without_source(tmp_path, generator):
    """A reconstruction with no source DICOM becomes a valid MR series with no patient
    identity whose values round-trip within the int16 quantisation step."""
    magnitude = torch.rand(3, 20, 16, dtype=torch.float64, generator=generator).numpy() * 3e-4
    volume = Volume(magnitude, spacing=(5.0, 0.9, 0.8), modality="MR")
    paths = write_dicom_series(volume, tmp_path / "series", modality="MR",
                               series_description="medrecon SENSE")
    datasets = [pydicom.dcmread(p) for p in paths]
    assert len(datasets) == 3
    assert {ds.SOPClassUID for ds in datasets} == {MRImageStorage}
    assert {ds.Modality for ds in datasets} == {"MR"}
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == 3
    for ds in datasets:
        assert ds.file_meta.MediaStorageSOPClassUID == MRImageStorage
        assert str(ds.PatientName) == "" and ds.PatientID.startswith("MEDRECON-")
        assert "ReferencedSeriesSequence" not in ds and "RescaleSlope" not in ds
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "OTHER"]
        assert ds.SeriesDescription == "medrecon SENSE"
    back = read_dicom(tmp_path / "series")
    step = magnitude.max() / 2**14  # integers without rescale (data.dicom.mr_encoding)
    np.testing.assert_allclose(back.array, magnitude, rtol=0, atol=step)
    assert back.spacing == pytest.approx((5.0, 0.9, 0.8))


# --------------------------------------------------------------------------- ISMRMRD


def acquisition(data: np.ndarray, *, step: int = 0, slice_: int = 0,
                flags: tuple[int, ...] = (), discard: int = 0) -> ismrmrd.Acquisition:
    acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(data, dtype=np.complex64))
    acq.idx.kspace_encode_step_1 = step
    acq.idx.slice = slice_
    acq.discard_pre = acq.discard_post = discard
    for flag in flags:
        acq.set_flag(flag)
    return acq


def write_ismrmrd(path, header: str, acquisitions) -> None:
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as dataset:
        dataset.write_xml_header(header)
        for acq in acquisitions:
            dataset.append_acquisition(acq)


def test_ismrmrd_round_trip(tmp_path, generator):
    """Noise scans come back separately, navigators are skipped, lines land at their
    phase encode and slice, reversed lines are flipped, discarded samples dropped,
    averages averaged, and calibration-only lines fill only what imaging left empty."""
    coils, phases, readout, slices, discard = 3, 12, 16, 2, 2
    expected = complex_normal((slices, coils, phases, readout), generator)
    sampled = np.zeros((slices, phases), dtype=bool)
    noise = [complex_normal((coils, 40), generator) for _ in range(2)]
    acqs = [acquisition(n, flags=(ismrmrd.ACQ_IS_NOISE_MEASUREMENT,)) for n in noise]
    acqs.append(acquisition(np.full((coils, readout), 1e3), step=0,
                            flags=(ismrmrd.ACQ_IS_NAVIGATION_DATA,)))
    order = torch.randperm(slices * phases, generator=generator).tolist()
    for number in order:
        s, p = divmod(number, phases)
        if p % 3 == 1 and not 4 <= p < 8:
            continue                                             # undersampled outside the centre
        sampled[s, p] = True
        line = expected[s, :, p]
        padded = np.pad(line, ((0, 0), (discard, discard)), constant_values=99.0)
        if p == 5:                                               # reversed readout
            acqs.append(acquisition(padded[:, ::-1], step=p, slice_=s, discard=discard,
                                    flags=(ismrmrd.ACQ_IS_REVERSE,)))
        elif p == 6:                                             # two averages
            for sign in (1, -1):
                offset = np.pad(line + sign * 0.5, ((0, 0), (discard, discard)))
                acqs.append(acquisition(offset, step=p, slice_=s, discard=discard))
        else:
            acqs.append(acquisition(padded, step=p, slice_=s, discard=discard))
    calibration = (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION,)
    acqs.append(acquisition(np.pad(expected[0, :, 1] * 0 + 7, ((0, 0), (discard, discard))),
                            step=1, discard=discard, flags=calibration))    # fills a gap
    acqs.append(acquisition(np.full((coils, readout + 2 * discard), 5.0), step=5,
                            discard=discard, flags=calibration))            # ignored: imaged
    expected[0, :, 1] = 7
    sampled[0, 1] = True
    expected *= sampled[:, None, :, None]
    header = make_ismrmrd_header((readout, phases), slices=slices)
    write_ismrmrd(tmp_path / "raw.h5", header, acqs)

    data = read_ismrmrd(tmp_path / "raw.h5")
    assert data.kspace.shape == (slices, coils, phases, readout)
    np.testing.assert_allclose(data.kspace.numpy(), expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(data.sampled.numpy(), sampled)
    np.testing.assert_array_equal(data.noise.numpy(), np.concatenate(noise, axis=1))
    assert data.header.encoded_matrix == (readout, phases, 1)
    assert data.header_xml == header


def test_ismrmrd_partial_fourier_offset(tmp_path, generator):
    """With the k-space centre at encode step 3 of 8 lines, step 3 lands at P // 2 = 6."""
    phases = 12
    header = make_ismrmrd_header((8, phases)).replace("<center>6</center>", "<center>3</center>")
    lines = complex_normal((8, 2, 8), generator)
    write_ismrmrd(tmp_path / "pf.h5", header,
                  [acquisition(lines[k], step=k) for k in range(8)])
    data = read_ismrmrd(tmp_path / "pf.h5")
    assert data.noise is None
    np.testing.assert_array_equal(data.kspace[0, :, 3:11].numpy(), lines.transpose(1, 0, 2))
    assert data.sampled[0].tolist() == [False] * 3 + [True] * 8 + [False]


def test_ismrmrd_bad_files(tmp_path, generator):
    header = make_ismrmrd_header((8, 4))
    cases = []
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f.create_dataset("kspace", data=np.ones(3))
    cases.append((plain, "dataset/xml", "missing"))
    no_data = tmp_path / "no_data.h5"
    with ismrmrd.Dataset(str(no_data), "dataset", create_if_needed=True) as dataset:
        dataset.write_xml_header(header)
    cases.append((no_data, "dataset/data", "no acquisitions"))
    nan = tmp_path / "nan.h5"
    write_ismrmrd(nan, header, [acquisition(np.full((2, 8), np.nan))])
    cases.append((nan, "dataset/data", "acquisition 0 contains NaN"))
    outside = tmp_path / "outside.h5"
    write_ismrmrd(outside, header, [acquisition(np.ones((2, 8)), step=4)])
    cases.append((outside, "dataset/data", "outside the encoded matrix"))
    ragged = tmp_path / "ragged.h5"
    write_ismrmrd(ragged, header, [acquisition(np.ones((2, 8))),
                                   acquisition(np.ones((2, 6)), step=1)])
    cases.append((ragged, "dataset/data", "acquisition 1 has 2 coils x 6 samples"))
    only_noise = tmp_path / "only_noise.h5"
    write_ismrmrd(only_noise, header,
                  [acquisition(np.ones((2, 8)), flags=(ismrmrd.ACQ_IS_NOISE_MEASUREMENT,))])
    cases.append((only_noise, "dataset/data", "no imaging acquisitions"))
    three_d = tmp_path / "three_d.h5"
    write_ismrmrd(three_d, header.replace("<z>1</z>", "<z>4</z>", 1), [])
    cases.append((three_d, "dataset/xml", "3D encoding"))
    bad_xml = tmp_path / "bad_xml.h5"
    write_ismrmrd(bad_xml, "<ismrmrdHeader><encoding>", [acquisition(np.ones((2, 8)))])
    cases.append((bad_xml, "dataset/xml", "malformed XML"))
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x00" * 4096)
    missing = tmp_path / "missing.h5"
    for path, field, text in cases:
        with pytest.raises(InputError) as info:
            read_ismrmrd(path)
        check_error(info, path, field, text)
    for path, text in ((garbage, "not a readable HDF5 file"), (missing, "no such file")):
        with pytest.raises(InputError, match=text) as info:
            read_ismrmrd(path)
        assert str(info.value).startswith(f"{path}: ")
