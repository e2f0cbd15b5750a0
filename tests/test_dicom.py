"""DICOM reading, derived-series writing and bad input (synthetic CT series, CPU, fast)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_encoder
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    MediaStorageDirectoryStorage,
    MRImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

import medrecon.data.dicom as dicom_module
from medrecon.data.dicom import (
    StudyIdentity,
    describe_dicom,
    int16_encoding,
    read_dicom,
    write_dicom_series,
)
from medrecon.data.volume import Volume
from medrecon.errors import InputError

SLICES, ROWS, COLS = 6, 40, 36  # JPEG 2000 (6 resolutions) needs >= 32 pixels a side
PIXEL_SPACING = (0.7, 0.9)  # (row spacing, col spacing) mm
SLICE_STEP = 2.5
ORIGIN = np.array([-120.25, -80.5, 40.125])
PATIENT_NAME, PATIENT_ID = "Doe^Jane", "PID-12345"


def rotation(a: float, b: float, c: float) -> np.ndarray:
    """A rotation matrix from three angles (radians): an oblique orientation."""
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return rz @ ry @ rx


ORIENTATION = rotation(0.3, -0.2, 0.15)


def known_hu(slices: int = SLICES, rows: int = ROWS, cols: int = COLS) -> np.ndarray:
    """Integer HU in [-1024, 3071] with both ends present."""
    hu = np.random.default_rng(1).integers(-1024, 3072, size=(slices, rows, cols))
    hu.flat[0], hu.flat[-1] = -1024, 3071
    return hu.astype(np.int16)


def slice_dataset(hu: np.ndarray, k: int, n: int, uids: dict[str, str]) -> Dataset:
    """Slice ``k`` of ``n``: realistic CT tags, 12-bit unsigned stored values, intercept -1024."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
    ds.PatientBirthDate, ds.PatientSex = "19700101", "F"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20240102", "101500", "A7", "9"
    ds.ReferringPhysicianName = ""
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "CT", 3, "synthetic abdomen"
    ds.InstanceNumber = n - k  # runs backwards relative to position
    position = ORIGIN + k * SLICE_STEP * ORIENTATION[:, 2]
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in ORIENTATION[:, :2].T.ravel()]
    ds.PixelSpacing = [str(s) for s in PIXEL_SPACING]
    ds.SliceThickness = str(SLICE_STEP)
    ds.KVP = "120"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = hu.shape[1:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.PixelData = (hu[k].astype(np.int32) + 1024).astype("<u2").tobytes()
    return ds


def write_ct_series(folder: Path, hu: np.ndarray | None = None, *, syntax: str | None = None,
                    extras: bool = True, series_uid: str | None = None) -> np.ndarray:
    """Write a CT series of ``hu`` (in position order) in random file order; returns ``hu``."""
    hu = known_hu() if hu is None else hu
    folder.mkdir(parents=True, exist_ok=True)
    uids = {"study": generate_uid(), "series": series_uid or generate_uid(),
            "frame": generate_uid()}
    names = np.random.default_rng(2).permutation(len(hu))
    for k in range(len(hu)):
        ds = slice_dataset(hu, k, len(hu), uids)
        if syntax is not None:
            ds.compress(syntax, generate_instance_uid=False)
        ds.save_as(folder / f"img{names[k]:03d}.dcm", enforce_file_format=True)
    if extras:
        (folder / "README").write_text("exported series\n")
        write_dicomdir_like(folder / "DICOMDIR")
    return hu


def write_dicomdir_like(path: Path) -> None:
    """A DICOM file with the DICOMDIR SOP class and no pixel data."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.FileSetID = "SET"
    ds.save_as(path, enforce_file_format=True)


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".dcm")


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def positions_by_instance(folder: Path) -> np.ndarray:
    """ImagePositionPatient of the files, in position order (reverse InstanceNumber)."""
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in dicom_files(folder)]
    datasets.sort(key=lambda ds: -int(ds.InstanceNumber))
    return np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])


@pytest.fixture
def series(tmp_path: Path) -> tuple[Path, np.ndarray]:
    folder = tmp_path / "series"
    return folder, write_ct_series(folder)


# --------------------------------------------------------------------------- reading


def test_read_series_orders_by_position(series):
    folder, hu = series
    volume = read_dicom(folder)
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, hu)
    assert volume.modality == "CT" and volume.units == "HU"
    np.testing.assert_allclose(volume.spacing, (SLICE_STEP, *PIXEL_SPACING), atol=1e-6)
    np.testing.assert_allclose(volume.orientation, ORIENTATION, atol=1e-6)
    np.testing.assert_allclose(volume.origin, ORIGIN, atol=1e-6)
    np.testing.assert_allclose(volume.positions(), positions_by_instance(folder), atol=1e-5)
    assert [int(ds.InstanceNumber) for ds in volume.source] == list(range(SLICES, 0, -1))
    assert all("PixelData" not in ds for ds in volume.source)


def test_affine_maps_voxels_to_patient(series):
    volume = read_dicom(series[0])
    i, j, k = 3, 5, 2
    expected = (ORIGIN + ORIENTATION @ np.array([i * PIXEL_SPACING[1], j * PIXEL_SPACING[0],
                                                 k * SLICE_STEP]))
    np.testing.assert_allclose((volume.affine_lps() @ [i, j, k, 1])[:3], expected, atol=1e-5)


def test_read_single_file_of_a_series(series):
    folder, hu = series
    first = min(dicom_files(folder), key=lambda p: -int(pydicom.dcmread(p).InstanceNumber))
    volume = read_dicom(first)
    assert volume.shape == (1, ROWS, COLS)
    np.testing.assert_array_equal(volume.array[0], hu[0])
    assert volume.spacing[0] == pytest.approx(SLICE_STEP)


def test_pydicom_sample_ct_reads():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    volume = read_dicom(path)
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(volume.array[0], expected)
    assert volume.spacing[1:] == pytest.approx([float(v) for v in ds.PixelSpacing])
    assert volume.origin == pytest.approx([float(v) for v in ds.ImagePositionPatient])
    assert volume.units == "HU"


def test_single_file_without_geometry_gets_defaults(tmp_path):
    hu = known_hu(1)
    ds = slice_dataset(hu, 0, 1, {"study": "1.2.3", "series": "1.2.3.4", "frame": "1.2.3.5"})
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                    "SliceThickness"):
        delattr(ds, keyword)
    ds.save_as(tmp_path / "one.dcm", enforce_file_format=True)
    volume = read_dicom(tmp_path / "one.dcm")
    assert volume.spacing == (1.0, 1.0, 1.0) and volume.origin == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(volume.orientation, np.eye(3))


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless],
                         ids=["rle", "jpeg-ls", "jpeg2000"])
def test_compressed_series_reads_identically(tmp_path, syntax):
    if not get_encoder(syntax).is_available:
        pytest.skip(f"no {syntax.name} encoder installed to build the test data")
    folder = tmp_path / "compressed"
    hu = write_ct_series(folder, syntax=syntax)
    before = hashes(folder)
    volume = read_dicom(folder)
    np.testing.assert_array_equal(volume.array, hu)
    assert describe_dicom(folder)["transfer syntax"] == syntax.name
    assert hashes(folder) == before


def test_describe_has_no_patient_identity(series):
    folder, _ = series
    info = describe_dicom(folder)
    assert info["slices"] == SLICES and (info["rows"], info["cols"]) == (ROWS, COLS)
    assert info["values"] == "[-1024, 3071] HU"
    text = str(info) + repr(read_dicom(folder))
    assert PATIENT_NAME not in text and "Doe" not in text and PATIENT_ID not in text
    assert "19700101" not in text


# --------------------------------------------------------------------------- writing


def test_derived_series_round_trip(series, tmp_path):
    folder, hu = series
    before = hashes(folder)
    volume = read_dicom(folder)
    paths = write_dicom_series(volume, tmp_path / "derived")
    assert [p.name for p in paths] == [f"IM{k:05d}.dcm" for k in range(1, SLICES + 1)]
    derived = read_dicom(tmp_path / "derived")
    np.testing.assert_array_equal(derived.array, hu)
    src, out = volume.source[0], derived.source[0]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID",
                    "FrameOfReferenceUID", "AccessionNumber"):
        assert out[keyword].value == src[keyword].value, keyword
    assert out.SeriesInstanceUID != src.SeriesInstanceUID
    assert list(out.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
    assert out.SOPClassUID == CTImageStorage
    assert out.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    sop_uids = {ds.SOPInstanceUID for ds in derived.source}
    assert len(sop_uids) == SLICES and not sop_uids & {ds.SOPInstanceUID for ds in volume.source}
    np.testing.assert_allclose(positions_by_instance_order(tmp_path / "derived"),
                               positions_by_instance(folder), atol=1e-4)
    assert hashes(folder) == before


def positions_by_instance_order(folder: Path) -> np.ndarray:
    """ImagePositionPatient of a written series in InstanceNumber order."""
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in dicom_files(folder)]
    datasets.sort(key=lambda ds: int(ds.InstanceNumber))
    return np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])


def test_written_files_are_explicit_vr_little_endian_part10(series, tmp_path):
    paths = write_dicom_series(read_dicom(series[0]), tmp_path / "out")
    raw = paths[0].read_bytes()
    assert raw[128:132] == b"DICM"
    ds = pydicom.dcmread(paths[0])
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == -1024.0
    assert ds.pixel_array.dtype == np.int16


@pytest.mark.parametrize(("modality", "sop_class"), [
    ("CT", CTImageStorage), ("MR", MRImageStorage), ("OT", SecondaryCaptureImageStorage)])
def test_write_without_source_has_no_patient_identity(tmp_path, modality, sop_class):
    array = known_hu(3).astype(np.float32)
    volume = Volume(array, spacing=(2.0, 0.5, 0.5), origin=(1.0, 2.0, 3.0), modality=modality,
                    units="HU" if modality == "CT" else "")
    write_dicom_series(volume, tmp_path / "new")
    back = read_dicom(tmp_path / "new")
    np.testing.assert_array_equal(back.array, array)
    np.testing.assert_allclose(back.affine_lps(), volume.affine_lps(), atol=1e-9)
    ds = back.source[0]
    # no patient's identity; a pseudonymous Patient ID so that the series can be filed
    assert ds.PatientName == "" and ds.PatientID.startswith("MEDRECON-")
    assert ds.SOPClassUID == sop_class and ds.Modality == modality
    assert pydicom.uid.UID(ds.StudyInstanceUID).is_valid
    assert pydicom.uid.UID(ds.FrameOfReferenceUID).is_valid
    assert "ReferencedSeriesSequence" not in ds


def test_non_integer_values_are_quantised_within_half_a_step(tmp_path):
    array = np.random.default_rng(3).normal(0.02, 0.005, size=(2, 8, 9))
    volume = Volume(array, spacing=(1.0, 1.0, 1.0), modality="CT", units="1/mm")
    write_dicom_series(volume, tmp_path / "mu")
    back = read_dicom(tmp_path / "mu")
    _, slope, _ = int16_encoding(array)
    assert slope == pytest.approx((array.max() - array.min()) / 65535, rel=1e-6)
    assert np.abs(back.array - array).max() <= 0.5 * slope * (1 + 1e-3)
    assert back.units == "1/mm"


def test_integers_beyond_int16_are_kept_exactly(tmp_path):
    array = np.random.default_rng(4).integers(0, 60001, size=(2, 5, 4)).astype(np.float64)
    array.flat[0], array.flat[1] = 0, 60000
    volume = Volume(array, spacing=(1.0, 1.0, 1.0), modality="MR")
    write_dicom_series(volume, tmp_path / "mr")
    np.testing.assert_array_equal(read_dicom(tmp_path / "mr").array, array)


def test_previous_output_is_replaced_but_source_folder_never(series, tmp_path):
    folder, _ = series
    volume = read_dicom(folder)
    out = tmp_path / "out"
    first = write_dicom_series(volume, out)
    write_dicom_series(volume, out)
    assert sorted(out.iterdir()) == first
    before = hashes(folder)
    with pytest.raises(InputError, match="source series"):
        write_dicom_series(volume, folder)
    assert hashes(folder) == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="other files"):
        write_dicom_series(volume, tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


# --------------------------------------------------------------------------- bad input


def cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_file_in_series(series, keep):
    folder, _ = series
    victim = dicom_files(folder)[2]
    cut(victim, keep)
    with pytest.raises(InputError, match="PixelData") as info:
        read_dicom(folder)
    assert str(victim) in str(info.value)
    with pytest.raises(InputError, match=victim.name):
        read_dicom(victim)


def test_text_file_is_not_dicom(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("patient notes\n" * 20)
    with pytest.raises(InputError, match="not a DICOM file") as info:
        read_dicom(path)
    assert str(path) in str(info.value)


def test_dicom_without_preamble_is_reported(tmp_path):
    path = tmp_path / "raw.dcm"
    ds = slice_dataset(known_hu(1), 0, 1, {"study": "1.2", "series": "1.3", "frame": "1.4"})
    pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=True)
    with pytest.raises(InputError, match="preamble"):
        read_dicom(path)


def test_folder_without_dicom(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "README").write_text("nothing here")
    write_dicomdir_like(folder / "DICOMDIR")
    with pytest.raises(InputError, match="no DICOM image files") as info:
        read_dicom(folder)
    assert str(folder) in str(info.value)


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_dicom(tmp_path / "absent")


def rewrite(path: Path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


def test_mixed_rows(series):
    folder, _ = series
    victim = dicom_files(folder)[1]

    def smaller(ds: Dataset) -> None:
        ds.Rows = ROWS - 2
        ds.PixelData = np.zeros((ROWS - 2, COLS), "<u2").tobytes()

    rewrite(victim, smaller)
    with pytest.raises(InputError, match="Rows") as info:
        read_dicom(folder)
    assert str(victim) in str(info.value)


def test_missing_pixel_spacing_in_series(series):
    folder, _ = series
    victim = dicom_files(folder)[0]
    rewrite(victim, lambda ds: delattr(ds, "PixelSpacing"))
    with pytest.raises(InputError, match="PixelSpacing: missing") as info:
        read_dicom(folder)
    assert str(victim) in str(info.value)


def test_file_without_pixel_data(series):
    victim = dicom_files(series[0])[0]
    rewrite(victim, lambda ds: delattr(ds, "PixelData"))
    with pytest.raises(InputError, match="PixelData: missing"):
        read_dicom(victim)


def test_two_series_in_one_folder(tmp_path):
    folder = tmp_path / "mixed"
    write_ct_series(folder / "a", extras=False)
    write_ct_series(folder / "b", extras=False)
    for path in (folder / "b").iterdir():
        path.rename(folder / f"b_{path.name}")
    for path in (folder / "a").iterdir():
        path.rename(folder / path.name)
    with pytest.raises(InputError, match="SeriesInstanceUID: the folder holds 2 series"):
        read_dicom(folder)


def test_missing_slice_breaks_uniform_spacing(series):
    folder, _ = series
    middle = min(dicom_files(folder), key=lambda p: abs(int(pydicom.dcmread(p).InstanceNumber)
                                                     - SLICES // 2))
    middle.unlink()
    with pytest.raises(InputError, match="ImagePositionPatient: slice spacing is not uniform"):
        read_dicom(folder)


def test_multi_frame_is_refused(series):
    victim = dicom_files(series[0])[0]
    rewrite(victim, lambda ds: setattr(ds, "NumberOfFrames", 2))
    with pytest.raises(InputError, match="multi-frame"):
        read_dicom(victim)


def test_undecodable_pixel_data(series):
    victim = dicom_files(series[0])[0]

    def short(ds: Dataset) -> None:
        ds.PixelData = ds.PixelData[:40]

    rewrite(victim, short)
    with pytest.raises(InputError, match="PixelData: cannot decode"):
        read_dicom(victim)


def test_missing_output_folder_writes_nothing(series, tmp_path):
    volume = read_dicom(series[0])
    target = tmp_path / "missing" / "out"
    with pytest.raises(InputError, match="does not exist") as info:
        write_dicom_series(volume, target)
    assert str(target) in str(info.value)
    assert not (tmp_path / "missing").exists()


def test_failed_write_leaves_nothing(series, tmp_path, monkeypatch):
    volume = read_dicom(series[0])
    before = sorted(tmp_path.iterdir())
    real_write, calls = pydicom.dcmwrite, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        real_write(*args, **kwargs)

    monkeypatch.setattr(dicom_module.pydicom, "dcmwrite", failing)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(volume, tmp_path / "out")
    assert sorted(tmp_path.iterdir()) == before


def test_nan_volume_is_refused_before_writing(tmp_path):
    array = np.zeros((2, 3, 4))
    array[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        write_dicom_series(Volume(array, spacing=(1, 1, 1)), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- issue 14:
# DICOM that validates (each test fails if its defect comes back; dciodvfy itself runs
# in tests/test_dicom_validate.py)


def write_enhanced(series_folder: Path, path: Path, sop_class: str | None = None) -> Path:
    """The single-frame series in ``series_folder`` as one enhanced multi-frame file
    (highdicom's Legacy Converted Enhanced CT/MR), relabelled as ``sop_class`` if given
    (Enhanced CT/MR Image Storage: the same functional-group layout)."""
    from highdicom.legacy import LegacyConvertedEnhancedCTImage, LegacyConvertedEnhancedMRImage

    datasets = [pydicom.dcmread(p) for p in dicom_files(series_folder)]
    kind = (LegacyConvertedEnhancedMRImage if datasets[0].Modality == "MR"
            else LegacyConvertedEnhancedCTImage)
    enhanced = kind(datasets, generate_uid(), 7, generate_uid(), 1)
    if sop_class is not None:
        enhanced.SOPClassUID = enhanced.file_meta.MediaStorageSOPClassUID = sop_class
    enhanced.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("sop_class", [None, "1.2.840.10008.5.1.4.1.1.2.1"])  # Enhanced CT
def test_enhanced_multi_frame_ct_reads_like_its_series(series, tmp_path, sop_class):
    folder, hu = series
    for extra in ("README", "DICOMDIR"):
        (folder / extra).unlink()
    single = read_dicom(folder)
    enhanced = read_dicom(write_enhanced(folder, tmp_path / "enhanced.dcm", sop_class))
    np.testing.assert_array_equal(enhanced.array, hu)
    np.testing.assert_allclose(enhanced.affine_lps(), single.affine_lps(), atol=1e-5)
    assert enhanced.units == "HU" and enhanced.modality == "CT"
    # a derived series names the frames of its source
    write_dicom_series(enhanced, tmp_path / "derived")
    out = pydicom.dcmread(tmp_path / "derived" / "IM00002.dcm")
    frame = int(out.SourceImageSequence[0].ReferencedFrameNumber)
    assert frame == enhanced.source[1].medrecon_frame
    assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == enhanced.source[1].SOPInstanceUID


def test_enhanced_multi_frame_mr_reads(tmp_path):
    image = np.random.default_rng(5).integers(0, 4000, size=(4, 10, 12)).astype(np.float32)
    volume = Volume(image, spacing=(3.0, 0.8, 0.8), origin=(1.0, 2.0, 3.0),
                    orientation=ORIENTATION, modality="MR")
    write_dicom_series(volume, tmp_path / "mr")
    enhanced = read_dicom(write_enhanced(tmp_path / "mr", tmp_path / "enhanced.dcm",
                                         "1.2.840.10008.5.1.4.1.1.4.1"))  # Enhanced MR
    np.testing.assert_array_equal(enhanced.array, image)
    np.testing.assert_allclose(enhanced.affine_lps(), volume.affine_lps(), atol=1e-6)
    assert enhanced.modality == "MR"


def test_enhanced_file_with_missing_frames_is_refused(series, tmp_path):
    path = write_enhanced(series[0], tmp_path / "enhanced.dcm")
    rewrite(path, lambda ds: setattr(ds, "NumberOfFrames", SLICES + 1))
    with pytest.raises(InputError, match="enhanced.dcm: PerFrameFunctionalGroupsSequence"):
        read_dicom(path)


def test_ct_series_has_what_the_ct_image_iod_requires(series, tmp_path):
    write_dicom_series(read_dicom(series[0]), tmp_path / "derived")
    write_dicom_series(Volume(known_hu(2).astype(np.float32), (1, 1, 1), modality="CT",
                              units="HU"), tmp_path / "new")
    for folder in ("derived", "new"):
        ds = pydicom.dcmread(tmp_path / folder / "IM00001.dcm")
        assert list(ds.ImageType)[2] == "AXIAL"  # PS3.3 C.8.2.1.1.1: value 3 required
        assert "PatientPosition" in ds and "Laterality" in ds  # Type 2C


def test_float_hu_are_stored_as_integer_hu(tmp_path):
    hu = np.random.default_rng(6).normal(-200, 400, size=(2, 9, 8)).astype(np.float32)
    write_dicom_series(Volume(hu, (1, 1, 1), modality="CT", units="HU"), tmp_path / "hu")
    ds = pydicom.dcmread(tmp_path / "hu" / "IM00001.dcm")
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (40.0, 400.0)  # soft tissue
    back = read_dicom(tmp_path / "hu").array
    np.testing.assert_array_equal(back, np.rint(hu))


def test_source_window_is_kept(series, tmp_path):
    volume = read_dicom(series[0])
    for ds in volume.source:
        ds.WindowCenter, ds.WindowWidth = "-600", "1500"  # a lung window
    write_dicom_series(replace(volume, array=volume.array + 0.3), tmp_path / "derived")
    ds = pydicom.dcmread(tmp_path / "derived" / "IM00001.dcm")
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (-600.0, 1500.0)


def test_mr_is_written_without_rescale_and_reads_back(tmp_path):
    magnitude = np.random.default_rng(7).random((2, 10, 9)) * 3e-4
    write_dicom_series(Volume(magnitude, (1, 1, 1), modality="MR", units="a.u."),
                       tmp_path / "mr")
    ds = pydicom.dcmread(tmp_path / "mr" / "IM00001.dcm")
    for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
        assert keyword not in ds  # not in the MR Image IOD (PS3.3 A.4)
    for keyword in ("RepetitionTime", "EchoTime", "ScanningSequence", "SequenceVariant"):
        assert keyword in ds
    assert ds.PixelRepresentation == 0 and 2**14 <= int(ds.pixel_array.max()) < 2**15
    stored = np.stack([pydicom.dcmread(p).pixel_array for p in dicom_files(tmp_path / "mr")])
    low, high = np.percentile(stored, [0.5, 99.5])
    assert float(ds.WindowCenter) == pytest.approx((low + high) / 2, abs=1)
    step = magnitude.max() / 2**14
    np.testing.assert_allclose(read_dicom(tmp_path / "mr").array, magnitude, atol=step)


def test_identity_of_a_non_dicom_study_is_stable(tmp_path):
    from medrecon.outputs import study_identity, write_reconstruction

    measurement = tmp_path / "study.h5"
    measurement.write_bytes(b"the same measurement")
    other = tmp_path / "other.h5"
    other.write_bytes(b"another measurement")
    volume = Volume(known_hu(2).astype(np.float32), (1, 1, 1), modality="CT", units="HU")
    uids = []
    for run, file in enumerate((measurement, measurement, other)):
        write_reconstruction(volume, tmp_path / f"out{run}", method="fbp", input_file=file)
        ds = pydicom.dcmread(tmp_path / f"out{run}" / "IM00001.dcm")
        assert ds.PatientID  # never empty (a DICOMDIR needs it)
        uids.append((ds.StudyInstanceUID, ds.FrameOfReferenceUID, ds.PatientID))
    assert uids[0] == uids[1] and uids[2][0] != uids[0][0] and uids[2][1] != uids[0][1]
    # a site sets the study identity and the patient fields
    identity = study_identity(measurement, study="trial/{study}", patient_id="P-{study}",
                              patient_name="Site^Subject")
    write_reconstruction(volume, tmp_path / "site", method="fbp", identity=identity)
    ds = pydicom.dcmread(tmp_path / "site" / "IM00001.dcm")
    assert (ds.PatientID, str(ds.PatientName)) == ("P-study", "Site^Subject")
    assert ds.StudyInstanceUID == StudyIdentity("trial/study").study_uid


def test_std_map_is_a_parametric_map_in_the_same_study(tmp_path):
    from medrecon.outputs import write_reconstruction

    measurement = tmp_path / "study.h5"
    measurement.write_bytes(b"measurement")
    std = np.random.default_rng(8).random((3, 6, 5)).astype(np.float32) * 7.3
    volume = Volume(std, (2, 1, 1), origin=(3, 4, 5), orientation=ORIENTATION, modality="CT",
                    units="HU")
    write_reconstruction(volume, tmp_path / "recon", method="dds", input_file=measurement)
    write_reconstruction(volume, tmp_path / "std", method="dds std", input_file=measurement,
                         parametric=True)
    pmap = pydicom.dcmread(tmp_path / "std" / "IM00001.dcm")
    recon = pydicom.dcmread(tmp_path / "recon" / "IM00001.dcm")
    assert pmap.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    assert pmap.StudyInstanceUID == recon.StudyInstanceUID
    assert pmap.FrameOfReferenceUID == recon.FrameOfReferenceUID
    assert "FloatPixelData" in pmap and "RescaleSlope" not in pmap
    back = read_dicom(tmp_path / "std")
    np.testing.assert_array_equal(back.array, std)  # float32, exactly
    np.testing.assert_allclose(back.affine_lps(), volume.affine_lps(), atol=1e-6)


def dicom_cli(*args: object) -> None:
    from medrecon.cli import main

    assert main([str(a) for a in args]) == 0


def square_ct_source(folder: Path) -> Path:
    """An oblique CT series with square pixels (``simulate ct`` needs them) and a
    patient: a head-like disc in air."""
    rows, cols = np.mgrid[:40, :40]
    hu = np.where((rows - 20) ** 2 + (cols - 19) ** 2 < 15**2, 40.0, -1000.0)
    volume = Volume(np.stack([hu, hu + 10]), spacing=(3.0, 0.8, 0.8), origin=ORIGIN,
                    orientation=ORIENTATION, modality="CT", units="HU")
    write_dicom_series(volume, folder)
    for path in dicom_files(folder):
        rewrite(path, lambda ds: [setattr(ds, k, v) for k, v in (
            ("PatientName", PATIENT_NAME), ("PatientID", PATIENT_ID),
            ("PatientBirthDate", "19700101"), ("AccessionNumber", "A7"))])
    return folder


@pytest.mark.parametrize("command", ["recon", "run"])
def test_cli_output_keeps_the_dicom_source(tmp_path, command, capsys):
    folder = square_ct_source(tmp_path / "series")
    source = read_dicom(folder)
    dicom_cli("simulate", "ct", folder, "--views", 30, "-o", tmp_path / "s.h5")
    if command == "recon":
        out = tmp_path / "out"
        dicom_cli("recon", "ct", tmp_path / "s.h5", "-o", out, "--dicom", "patient_id=X")
    else:
        dicom_cli("run", "ct-sparse-fbp", tmp_path / "s.h5", "-o", tmp_path / "runs",
                  "--set", "outputs.formats=[dicom,nifti]")
        (out,) = (tmp_path / "runs").glob("*_dicom")
    capsys.readouterr()
    derived = read_dicom(out)
    src, ds = source.source[0], derived.source[0]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID",
                    "FrameOfReferenceUID", "AccessionNumber"):
        assert ds[keyword].value == src[keyword].value, keyword
    np.testing.assert_allclose(derived.affine_lps(), source.affine_lps(), atol=1e-4)
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    if command == "run":  # the NIfTI beside it has the same geometry
        from medrecon.data.nifti import read_nifti

        (nii,) = (tmp_path / "runs").glob("*.nii.gz")
        np.testing.assert_allclose(read_nifti(nii).affine_lps(), source.affine_lps(),
                                   atol=1e-4)


def test_bad_dicom_option_is_one_clear_line(tmp_path, capsys):
    from medrecon.cli import main

    dicom_cli("simulate", "ct", "phantom", "--size", 16, "--views", 8, "-o", tmp_path / "s.h5")
    capsys.readouterr()
    code = main(["recon", "ct", str(tmp_path / "s.h5"), "-o", str(tmp_path / "out"),
                 "--dicom", "patient=X"])
    err = capsys.readouterr().err
    assert code == 2 and "--dicom" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_malformed_embedded_source_is_one_clear_error(tmp_path):
    import h5py

    from medrecon.data.dicom_source import read_dicom_source

    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("dicom_source", data=np.frombuffer(b'{"format": 1}', np.uint8))
    with pytest.raises(InputError, match="s.h5: dicom_source"):
        read_dicom_source(path)


def test_nifti_affine_agrees_with_dicom2nifti(series, tmp_path):
    """Oblique multi-slice series: every voxel of medrecon's NIfTI lands, through both
    affines, on the voxel of dicom2nifti's NIfTI with the same value."""
    dicom2nifti = pytest.importorskip("dicom2nifti")
    import nibabel as nib

    from medrecon.data.nifti import write_nifti

    folder, _ = series
    for extra in ("README", "DICOMDIR"):
        (folder / extra).unlink()
    ours = nib.load(write_nifti(read_dicom(folder), tmp_path / "ours.nii.gz"))
    dicom2nifti.dicom_series_to_nifti(str(folder), str(tmp_path / "theirs.nii.gz"),
                                      reorient_nifti=False)
    theirs = nib.load(tmp_path / "theirs.nii.gz")
    a, b = np.asarray(ours.dataobj), np.asarray(theirs.dataobj)
    assert a.size == b.size
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in a.shape], indexing="ij"), -1)
    ijk = ijk.reshape(-1, 3)
    world = ijk @ ours.affine[:3, :3].T + ours.affine[:3, 3]
    there = (world - theirs.affine[:3, 3]) @ np.linalg.inv(theirs.affine[:3, :3]).T
    np.testing.assert_allclose(there, np.rint(there), atol=1e-3)
    index = tuple(np.rint(there).astype(int).T)
    np.testing.assert_allclose(b[index], a[tuple(ijk.T)], atol=1e-3)


def test_tiny_mr_values_are_not_taken_for_zeros(tmp_path):
    """Review find: values all below 1e-6 passed the integer test and were stored as 0."""
    values = np.array([0.0, 3e-7, 9e-7]).reshape(1, 1, 3)
    volume = Volume(values, spacing=(1, 1, 1), modality="MR")
    write_dicom_series(volume, tmp_path / "mr")
    np.testing.assert_allclose(read_dicom(tmp_path / "mr").array, values, rtol=1e-4)


def test_window_of_a_medrecon_mr_source_is_scaled_once(tmp_path):
    """Review find: the source's window (in its stored values) was multiplied by the new
    scale without undoing the source's, so a re-derived series showed blank."""
    volume = Volume(np.linspace(0, 0.5, 128).reshape(2, 8, 8), spacing=(1, 1, 1),
                    modality="MR")
    write_dicom_series(volume, tmp_path / "a")
    source = read_dicom(tmp_path / "a")
    write_dicom_series(replace(source, array=source.array + 0.0), tmp_path / "b")
    first, second = (pydicom.dcmread(sorted((tmp_path / f).glob("*.dcm"))[0]) for f in "ab")
    assert float(second.WindowWidth) == pytest.approx(float(first.WindowWidth), rel=1e-3)
    assert float(second.WindowCenter) <= 32768


def test_dicom_source_headers_that_are_not_objects_are_one_error(tmp_path):
    """Review find: a header that is not a JSON object raised AttributeError."""
    import json

    from medrecon.data.dicom_source import DATASET, FORMAT, VERSION, read_dicom_source

    record = {"format": FORMAT, "version": VERSION, "shape": [1, 2, 2],
              "spacing": [1, 1, 1], "origin": [0, 0, 0],
              "orientation": np.eye(3).tolist(), "modality": "CT", "units": "HU",
              "headers": [1]}
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(DATASET, data=np.frombuffer(json.dumps(record).encode(), np.uint8))
    with pytest.raises(InputError, match="s.h5: dicom_source: malformed"):
        read_dicom_source(path)
