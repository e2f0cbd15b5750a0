"""NIfTI writing and reading: LPS to RAS affine, voxel layout, bad input."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medrecon.data.dicom import read_dicom
from medrecon.data.nifti import LPS_TO_RAS, nifti_affine, read_nifti, write_nifti
from medrecon.data.volume import Volume
from medrecon.errors import InputError
from tests.test_dicom import ORIENTATION, positions_by_instance, write_ct_series


@pytest.fixture
def dicom_volume(tmp_path: Path) -> tuple[Volume, Path]:
    folder = tmp_path / "series"
    write_ct_series(folder)
    return read_dicom(folder), folder


def test_affine_reproduces_every_image_position(dicom_volume, tmp_path):
    volume, folder = dicom_volume
    path = write_nifti(volume, tmp_path / "ct.nii.gz")
    affine = nib.load(path).affine
    expected = positions_by_instance(folder)
    for k, ipp in enumerate(expected):
        lps = LPS_TO_RAS @ affine @ [0, 0, k, 1]
        np.testing.assert_allclose(lps[:3], ipp, atol=1e-4)


def test_voxel_layout_is_col_row_slice(dicom_volume, tmp_path):
    volume, _ = dicom_volume
    data = np.asanyarray(nib.load(write_nifti(volume, tmp_path / "ct.nii")).dataobj)
    assert data.shape == volume.shape[::-1]
    assert data[3, 5, 2] == volume.array[2, 5, 3]


def test_header_codes_and_units(dicom_volume, tmp_path):
    volume, _ = dicom_volume
    header = nib.load(write_nifti(volume, tmp_path / "ct.nii.gz")).header
    assert int(header["sform_code"]) == 1 and int(header["qform_code"]) == 1
    assert header.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(header.get_qform(), nifti_affine(volume), atol=1e-4)


@pytest.mark.parametrize("name", ["ct.nii", "ct.nii.gz"])
def test_round_trip_keeps_array_and_affine(dicom_volume, tmp_path, name):
    volume, _ = dicom_volume
    back = read_nifti(write_nifti(volume, tmp_path / name))
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.array.dtype == volume.array.dtype
    np.testing.assert_allclose(back.affine_lps(), volume.affine_lps(), atol=1e-4)
    np.testing.assert_allclose(back.orientation, ORIENTATION, atol=1e-6)
    np.testing.assert_allclose(back.spacing, volume.spacing, rtol=1e-6)
    assert (back.modality, back.units) == ("CT", "HU")
    assert back.source is None


def test_foreign_axes_keep_affine_semantics(tmp_path):
    ras = np.array([[0.0, 0.0, 2.0, -10.0],
                    [-1.5, 0.0, 0.0, 20.0],
                    [0.0, 3.0, 0.0, 5.0],
                    [0.0, 0.0, 0.0, 1.0]])
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    nib.save(nib.Nifti1Image(data, ras), tmp_path / "foreign.nii.gz")
    volume = read_nifti(tmp_path / "foreign.nii.gz")
    np.testing.assert_allclose(volume.affine_lps(), LPS_TO_RAS @ ras, atol=1e-6)
    assert volume.spacing == pytest.approx((2.0, 3.0, 1.5))  # (k, j, i) column norms
    assert volume.array[2, 1, 3] == data[3, 1, 2]
    assert (volume.modality, volume.units) == ("OT", "")


def test_metre_units_are_converted_to_mm(tmp_path):
    image = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.diag([0.001, 0.002, 0.003, 1]))
    image.header.set_xyzt_units(xyz="meter")
    nib.save(image, tmp_path / "m.nii")
    assert read_nifti(tmp_path / "m.nii").spacing == pytest.approx((3.0, 2.0, 1.0))


def test_4d_with_one_volume_is_accepted(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5, 1), np.float32), np.eye(4)), tmp_path / "a.nii")
    assert read_nifti(tmp_path / "a.nii").shape == (5, 4, 3)


@pytest.mark.parametrize(("data", "message"), [
    (np.ones((3, 4, 5, 2), np.float32), "only 3D"),
    (np.full((3, 4, 5), np.nan, np.float32), "NaN"),
], ids=["4d", "nan"])
def test_bad_nifti_content(tmp_path, data, message):
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(InputError, match=message) as info:
        read_nifti(path)
    assert str(path) in str(info.value)


def test_not_a_nifti(tmp_path):
    path = tmp_path / "text.nii"
    path.write_text("not an image\n" * 40)
    with pytest.raises(InputError, match="NIfTI") as info:
        read_nifti(path)
    assert str(path) in str(info.value)


def test_truncated_nifti(dicom_volume, tmp_path):
    path = write_nifti(dicom_volume[0], tmp_path / "ct.nii")
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(InputError, match=path.name):
        read_nifti(path)


def test_write_errors_leave_nothing(dicom_volume, tmp_path):
    volume, _ = dicom_volume
    before = sorted(tmp_path.iterdir())
    with pytest.raises(InputError, match="does not exist"):
        write_nifti(volume, tmp_path / "missing" / "ct.nii.gz")
    with pytest.raises(InputError, match=r"\.nii"):
        write_nifti(volume, tmp_path / "ct.img")
    assert sorted(tmp_path.iterdir()) == before


def test_inputs_are_not_modified(dicom_volume, tmp_path):
    volume, _ = dicom_volume
    path = write_nifti(volume, tmp_path / "ct.nii.gz")
    content = path.read_bytes()
    read_nifti(path)
    assert path.read_bytes() == content
