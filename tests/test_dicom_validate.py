"""Every kind of DICOM output passes dciodvfy (dicom3tools) with no error.

Output kinds: CT and MR image series (with and without a DICOM source, float and
integer values), Secondary Capture, the Parametric Map of a standard-deviation map,
a derived series of an enhanced multi-frame source, and the DICOM outputs of the
command line (``simulate`` from DICOM then ``recon``, and ``run``). Skipped where
dciodvfy is not installed (``.ci/run`` installs it: apt package dicom3tools, and sets
``MEDRECON_REQUIRE_DCIODVFY`` so that there the tests fail instead).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medrecon.cli import main
from medrecon.data.dicom import StudyIdentity, read_dicom, write_dicom_series
from medrecon.data.dicom_pmap import write_parametric_map
from medrecon.data.volume import Volume
from medrecon.outputs import write_reconstruction
from tests.test_dicom import ORIENTATION, square_ct_source, write_ct_series, write_enhanced

DCIODVFY = shutil.which("dciodvfy")
if DCIODVFY is None and os.environ.get("MEDRECON_REQUIRE_DCIODVFY"):  # CI: never skip
    raise RuntimeError("dciodvfy (dicom3tools) is required here but not installed")
pytestmark = pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (dicom3tools) not installed")


def dciodvfy(path: Path) -> list[str]:
    """dciodvfy's report on one file (it writes to stderr)."""
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return (result.stdout + result.stderr).splitlines()


def assert_valid(folder: Path, iod: str) -> list[str]:
    """No ``Error`` line for any file of ``folder``, and the IOD dciodvfy recognised is
    ``iod``; returns the warnings (for the README's list)."""
    files = sorted(folder.glob("*.dcm"))
    assert files, folder
    warnings = []
    for file in files:
        lines = dciodvfy(file)
        errors = [line for line in lines if line.startswith("Error")]
        assert not errors, (file, errors)
        assert iod in lines, (file, lines)
        warnings += [line for line in lines if line.startswith("Warning")]
    return warnings


def oblique(array: np.ndarray, modality: str, units: str) -> Volume:
    return Volume(array, spacing=(2.5, 0.7, 0.9), origin=(-100.5, 20.25, 33.0),
                  orientation=ORIENTATION, modality=modality, units=units)


FLOAT_HU = np.random.default_rng(0).normal(0, 300, size=(3, 12, 10)).astype(np.float32)
MAGNITUDE = np.abs(np.random.default_rng(1).normal(0, 1e-3, size=(3, 12, 10)))


@pytest.mark.parametrize(("name", "volume", "iod"), [
    ("ct_float_hu", oblique(FLOAT_HU, "CT", "HU"), "CTImage"),
    ("ct_mu", oblique(np.abs(FLOAT_HU) * 1e-4, "CT", "1/mm"), "CTImage"),
    ("mr_float", oblique(MAGNITUDE, "MR", "a.u."), "MRImage"),
    ("mr_signed", oblique(MAGNITUDE - 5e-4, "MR", "a.u."), "MRImage"),
    ("mr_integer", oblique(np.rint(MAGNITUDE * 4e7), "MR", ""), "MRImage"),
    ("secondary_capture", oblique(MAGNITUDE, "OT", ""), "SCImage"),
])
def test_series_without_source_validate(tmp_path, name, volume, iod):
    write_dicom_series(volume, tmp_path / name, identity=StudyIdentity("study 1"))
    assert_valid(tmp_path / name, iod)


def test_derived_ct_series_validates(tmp_path):
    write_ct_series(tmp_path / "src")
    volume = read_dicom(tmp_path / "src")
    write_dicom_series(replace(volume, array=volume.array + 0.4), tmp_path / "derived")
    assert_valid(tmp_path / "derived", "CTImage")


def test_derived_series_of_an_enhanced_source_validates(tmp_path):
    write_ct_series(tmp_path / "src", extras=False)
    enhanced = write_enhanced(tmp_path / "src", tmp_path / "enhanced.dcm")
    write_dicom_series(read_dicom(enhanced), tmp_path / "derived")
    assert_valid(tmp_path / "derived", "CTImage")


@pytest.mark.parametrize(("modality", "units"), [("CT", "HU"), ("MR", "a.u.")])
def test_parametric_map_without_source_validates(tmp_path, modality, units):
    std = oblique(np.abs(FLOAT_HU) / 100, modality, units)
    write_parametric_map(std, tmp_path / "std", identity=StudyIdentity("study 1"))
    assert_valid(tmp_path / "std", "ParametricMap")


def test_parametric_map_of_a_dicom_source_validates(tmp_path):
    write_ct_series(tmp_path / "src")
    volume = read_dicom(tmp_path / "src")
    std = replace(volume, array=np.abs(volume.array) / 1000 + 0.01)
    write_reconstruction(std, tmp_path / "std", method="dds std", parametric=True)
    assert_valid(tmp_path / "std", "ParametricMap")


def run(capsys, *args: object) -> str:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 0, (out, err)
    return out


def test_cli_outputs_of_a_dicom_ct_validate(tmp_path, capsys):
    square_ct_source(tmp_path / "src")
    run(capsys, "simulate", "ct", tmp_path / "src", "--views", 40, "-o", tmp_path / "s.h5")
    run(capsys, "recon", "ct", tmp_path / "s.h5", "-o", tmp_path / "out")
    assert_valid(tmp_path / "out", "CTImage")
    run(capsys, "run", "ct-sparse-fbp", tmp_path / "s.h5", "-o", tmp_path / "runs",
        "--set", "outputs.formats=[dicom]")
    (folder,) = (tmp_path / "runs").glob("*_dicom")
    assert_valid(folder, "CTImage")


def test_cli_outputs_of_a_phantom_validate(tmp_path, capsys):
    run(capsys, "simulate", "ct", "phantom", "--size", 32, "--views", 30, "-o",
        tmp_path / "s.h5")
    run(capsys, "recon", "ct", tmp_path / "s.h5", "-o", tmp_path / "out",
        "--dicom", "patient_id=SITE-1", "--dicom", "study=trial 4")
    assert_valid(tmp_path / "out", "CTImage")


def test_cli_outputs_of_a_dicom_mr_validate(tmp_path, capsys):
    image = np.zeros((1, 32, 32))
    image[0, 8:24, 6:26] = 300.0
    source = Volume(image, spacing=(4.0, 1.2, 1.2), origin=(5.0, -7.0, 11.0),
                    orientation=ORIENTATION, modality="MR")
    write_dicom_series(source, tmp_path / "src")
    run(capsys, "simulate", "mri", tmp_path / "src", "--coils", 2, "--acceleration", 2,
        "--center-fraction", 0.25, "-o", tmp_path / "k.h5")
    run(capsys, "recon", "mri", tmp_path / "k.h5", "--method", "zf", "-o", tmp_path / "out")
    assert_valid(tmp_path / "out", "MRImage")
    out = pydicom.dcmread(next((tmp_path / "out").glob("*.dcm")))
    src = pydicom.dcmread(next((tmp_path / "src").glob("*.dcm")))
    assert out.StudyInstanceUID == src.StudyInstanceUID
