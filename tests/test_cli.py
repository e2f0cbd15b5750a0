"""The command line end to end: simulate, reconstruct, info, demo, and bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pydicom
import pytest

from medrecon.cli import EXIT_BAD_INPUT, main
from medrecon.data.dicom import read_dicom
from medrecon.data.nifti import read_nifti
from medrecon.data.priors import default_prior_path
from medrecon.data.sinogram import read_sinogram
from tests.test_dicom import PATIENT_ID, PATIENT_NAME, write_ct_series

SIZE, VIEWS = 64, 40


def run(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its content hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sinogram(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sino") / "phantom.h5"
    assert main(["simulate", "ct", "phantom", "--size", str(SIZE), "--views", str(VIEWS),
                 "--noise", "poisson:1e6", "-o", str(path)]) == 0
    return path


def test_simulate_writes_the_sinogram_layout(sinogram):
    sino = read_sinogram(sinogram)
    assert sino.data.shape == (1, VIEWS, sino.geometry.n_detectors)
    assert sino.reference.shape == (1, SIZE, SIZE) and sino.image_units == "HU"
    assert sino.noise == "poisson:1e6"


@pytest.mark.parametrize("method,extra", [("fbp", ["--filter", "hann"]),
                                          ("cgls", ["--iterations", "10"]),
                                          ("sirt", ["--iterations", "20"]),
                                          ("tv", ["--iterations", "20"])])
def test_recon_each_method(capsys, sinogram, tmp_path, method, extra):
    out = tmp_path / f"{method}.nii.gz"
    code, stdout, _ = run(capsys, "recon", "ct", sinogram, "--method", method, *extra, "-o", out)
    assert code == 0 and f"wrote {out}" in stdout and "psnr" in stdout
    volume = read_nifti(out)
    assert volume.array.shape == (1, SIZE, SIZE) and np.isfinite(volume.array).all()
    reference = read_sinogram(sinogram).reference
    assert np.corrcoef(volume.array.ravel(), reference.ravel())[0, 1] > 0.8


def test_output_formats_agree(capsys, sinogram, tmp_path):
    """NIfTI, HDF5 and DICOM hold the same HU image (DICOM to its integer step); PNG exists."""
    outputs = {"nii": tmp_path / "x.nii", "h5": tmp_path / "x.h5", "png": tmp_path / "x.png",
               "dicom": tmp_path / "series"}
    for path in outputs.values():
        assert run(capsys, "recon", "ct", sinogram, "-o", path)[0] == 0
    nifti = read_nifti(outputs["nii"]).array
    with h5py.File(outputs["h5"], "r") as f:
        stored = f["reconstruction"][()]
        assert f.attrs["method"] == "fbp" and "psnr" in f.attrs["metrics"]
    np.testing.assert_allclose(stored, nifti, atol=1e-3)
    dicom = read_dicom(outputs["dicom"])
    assert dicom.array.shape == nifti.shape
    np.testing.assert_allclose(dicom.array, nifti, atol=0.5 + 1e-3 * np.abs(nifti).max())
    assert outputs["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_info_never_prints_patient_identity(capsys, tmp_path):
    folder = tmp_path / "ct"
    write_ct_series(folder)
    code, out, _ = run(capsys, "info", folder)
    assert code == 0 and "DICOM" in out
    for secret in (PATIENT_NAME, PATIENT_ID, "Doe", "19700101"):
        assert secret not in out


def test_info_on_sinogram(capsys, sinogram):
    code, out, _ = run(capsys, "info", sinogram)
    assert code == 0 and "parallel" in out and str(VIEWS) in out


def test_dicom_to_sinogram_to_dicom(capsys, tmp_path):
    """A DICOM series goes through simulation and reconstruction and back to DICOM."""
    folder = tmp_path / "ct"
    hu = np.zeros((2, 48, 48), np.int16) - 1000
    yy, xx = np.mgrid[:48, :48] - 23.5
    hu[:, xx**2 + yy**2 < 18**2] = 40
    write_ct_series(folder, hu, extras=False)
    for file in folder.glob("*.dcm"):
        ds = pydicom.dcmread(file)
        ds.PixelSpacing = ["0.8", "0.8"]
        ds.save_as(file)
    sino, out = tmp_path / "s.h5", tmp_path / "recon"
    assert run(capsys, "simulate", "ct", folder, "--views", 90, "-o", sino)[0] == 0
    assert read_sinogram(sino).data.shape[0] == 2
    assert run(capsys, "recon", "ct", sino, "--method", "cgls", "-o", out)[0] == 0
    back = read_dicom(out)
    assert back.array.shape == (2, 48, 48)
    assert abs(float(np.median(back.array[:, 20:28, 20:28])) - 40.0) < 15.0


# ------------------------------------------------------------------------ bad input
def expect_bad_input(capsys, *args, names: str, says: str) -> str:
    code, out, err = run(capsys, *args)
    assert code == EXIT_BAD_INPUT, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert names in lines[0] and says in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


def test_truncated_dicom(capsys, tmp_path):
    folder = tmp_path / "ct"
    write_ct_series(folder)
    victim = sorted(folder.glob("*.dcm"))[2]
    victim.write_bytes(victim.read_bytes()[:300])
    before = tree(folder)
    expect_bad_input(capsys, "simulate", "ct", folder, "--views", 10, "-o", tmp_path / "s.h5",
                     names=victim.name, says="")
    assert tree(folder) == before and not (tmp_path / "s.h5").exists()


def test_text_file_is_not_dicom(capsys, tmp_path):
    text = tmp_path / "notes.dcm"
    text.write_text("not an image")
    expect_bad_input(capsys, "info", text, names="notes.dcm", says="DICOM")


def _rewrite(src: Path, dst: Path, change) -> Path:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        change(f)
    return dst


@pytest.mark.parametrize("case,change,says", [
    ("detectors", lambda f: f.attrs.__setitem__("n_detectors", 7), "detector"),
    ("angles", lambda f: (f.__delitem__("angles"), f.create_dataset("angles", data=np.zeros(3))),
     "angle"),
    ("nan", lambda f: f["sinogram"].__setitem__((0, 0, 0), np.nan), "NaN"),
    ("inf", lambda f: f["sinogram"].__setitem__((0, 1, 1), np.inf), "infinite"),
    ("missing", lambda f: f.__delitem__("sinogram"), "sinogram"),
])
def test_bad_sinogram(capsys, sinogram, tmp_path, case, change, says):
    bad = _rewrite(sinogram, tmp_path / f"{case}.h5", change)
    before = tree(tmp_path)
    out = tmp_path / "out.nii.gz"
    expect_bad_input(capsys, "recon", "ct", bad, "-o", out, names=bad.name, says=says)
    assert tree(tmp_path) == before


def test_not_hdf5(capsys, tmp_path):
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    expect_bad_input(capsys, "recon", "ct", bad, "-o", tmp_path / "o.nii", names="broken.h5",
                     says="")


def test_output_in_missing_folder(capsys, sinogram, tmp_path):
    out = tmp_path / "nowhere" / "x.nii.gz"
    expect_bad_input(capsys, "recon", "ct", sinogram, "-o", out, names="nowhere",
                     says="does not exist")
    assert not out.parent.exists()


def test_unknown_output_suffix(capsys, sinogram, tmp_path):
    expect_bad_input(capsys, "recon", "ct", sinogram, "-o", tmp_path / "x.jpg", names="x.jpg",
                     says="output format")


def test_unknown_method(capsys, sinogram, tmp_path):
    code, _, err = run(capsys, "recon", "ct", sinogram, "--method", "magic", "-o",
                       tmp_path / "x.nii")
    assert code == 2 and "magic" in err and "--method" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_missing_input(capsys, tmp_path):
    expect_bad_input(capsys, "recon", "ct", tmp_path / "absent.h5", "-o", tmp_path / "x.nii",
                     names="absent.h5", says="")


def test_cuda_without_gpu_is_a_clear_error(capsys, sinogram, tmp_path):
    from medrecon.operators.ct import cuda_available

    if cuda_available():
        pytest.skip("a GPU is present")
    expect_bad_input(capsys, "recon", "ct", sinogram, "--device", "cuda", "-o",
                     tmp_path / "x.nii", names="cuda", says="")


def test_bad_noise_spec(capsys, tmp_path):
    expect_bad_input(capsys, "simulate", "ct", "phantom", "--views", 5, "--noise", "poisson:-1",
                     "-o", tmp_path / "s.h5", names="--noise", says="positive")
    assert not list(tmp_path.iterdir())


def test_demo_runs(capsys, tmp_path):
    """The main job: CT and MRI, classical beside diffusion, with the bundled priors."""
    code, out, _ = run(capsys, "demo", "-o", tmp_path / "demo")
    assert code == 0
    rows = {line.split()[1]: line.split() for line in out.splitlines()
            if line.split() and line.split()[0] in ("CT", "MRI")}
    assert set(rows) == {"ct-sparse-tv", "ct-sparse-dds", "mri-cartesian-l1wavelet",
                         "mri-cartesian-dds"}
    psnr = {name: float(row[2]) for name, row in rows.items()}
    assert psnr["ct-sparse-tv"] > 28 and psnr["ct-sparse-dds"] > 28
    assert psnr["mri-cartesian-l1wavelet"] > 35 and psnr["mri-cartesian-dds"] > 35
    # 4 warm-started chains, each on the levels of the 50-level schedule below 0.3
    nfe = int(rows["ct-sparse-dds"][-1])
    assert nfe % 4 == 0 and 4 * 10 <= nfe < 4 * 50 and int(rows["ct-sparse-tv"][-1]) == 0
    names = {p.name for p in (tmp_path / "demo").iterdir()}
    for stem in ("ct_sparse_60_tv", "ct_sparse_60_dds", "mri_brain_r4_l1wavelet",
                 "mri_brain_r4_dds"):
        assert {f"{stem}.json", f"{stem}.nii.gz", f"{stem}.png"} <= names


def test_npy_sinogram_with_geometry_options(capsys, sinogram, tmp_path):
    sino = read_sinogram(sinogram)
    npy = tmp_path / "s.npy"
    np.save(npy, sino.data[0])
    out = tmp_path / "x.h5"
    code, _, _ = run(capsys, "recon", "ct", npy, "--image-size", SIZE, "--pixel-size",
                     sino.geometry.pixel_size, "-o", out)
    assert code == 0
    h5 = tmp_path / "ref.h5"
    assert run(capsys, "recon", "ct", sinogram, "-o", h5)[0] == 0
    with h5py.File(out, "r") as a, h5py.File(h5, "r") as b:
        np.testing.assert_allclose(a["reconstruction"][()], b["reconstruction"][()], atol=1e-2)
    expect_bad_input(capsys, "recon", "ct", npy, "-o", tmp_path / "y.h5",
                     names="--image-size", says="needed")


def test_train_prior_and_resume(capsys, tmp_path):
    out = tmp_path / "prior.pt"
    code, stdout, _ = run(capsys, "train-prior", "phantom:1", "--modality", "ct", "--steps", 2,
                          "--batch-size", 2, "--crop", 32, "-o", out)
    assert code == 0 and out.is_file() and (tmp_path / "prior_loss.png").is_file()
    resumed = tmp_path / "more.pt"
    code, _, _ = run(capsys, "train-prior", "phantom:1", "--modality", "ct", "--steps", 3,
                     "--batch-size", 2, "--crop", 32, "--resume", out, "-o", resumed)
    assert code == 0 and resumed.is_file()
    expect_bad_input(capsys, "train-prior", tmp_path / "empty", "--modality", "ct", "--steps", 1,
                     "-o", tmp_path / "x.pt", names="empty", says="")


def test_recon_with_the_default_priors(capsys, sinogram, tmp_path):
    out = tmp_path / "dds.nii.gz"
    code, stdout, _ = run(capsys, "recon", "ct", sinogram, "--method", "dds", "--steps", 6,
                          "-o", out)
    # of the 6-level schedule the warm start runs the 3 levels at or below 0.3
    assert code == 0 and "dds, 3 iterations" in stdout
    reference = read_sinogram(sinogram).reference
    volume = read_nifti(out).array
    assert np.corrcoef(volume.ravel(), reference.ravel())[0, 1] > 0.8
    kspace = tmp_path / "k.h5"
    assert run(capsys, "simulate", "mri", "phantom", "--size", 64, "--coils", 4,
               "--acceleration", 2, "--center-fraction", 0.25, "-o", kspace)[0] == 0
    code, stdout, _ = run(capsys, "recon", "mri", kspace, "--method", "rmpvi", "--steps", 3,
                          "-o", tmp_path / "r.h5")
    assert code == 0 and "psnr" in stdout
    expect_bad_input(capsys, "recon", "mri", kspace, "--method", "dds", "--prior", sinogram,
                     "-o", tmp_path / "x.h5", names=sinogram.name, says="not a medrecon prior")
    prior = tmp_path / "ct.pt"
    prior.write_bytes(default_prior_path("ct").read_bytes())
    expect_bad_input(capsys, "recon", "mri", kspace, "--method", "dds", "--prior", prior,
                     "-o", tmp_path / "x.h5", names="metadata.modality", says="a ct prior")
    assert not (tmp_path / "x.h5").exists()


def test_cli_method_choices_are_the_methods():
    """``--method`` offers exactly the records of :mod:`medrecon.methods`, in order."""
    from medrecon.cli import recon_ct, recon_mri
    from medrecon.methods import names

    for command, modality in ((recon_ct, "ct"), (recon_mri, "mri")):
        option = next(p for p in command.params if p.name == "method")
        assert tuple(option.type.choices) == names(modality)


def _branch_patterns() -> list:
    import re

    from medrecon.methods import METHODS

    alternatives = "|".join(sorted(METHODS, key=len, reverse=True))
    quoted = rf"""["'](?:{alternatives})["']"""
    who = r"(?<!self\.)\b(?:method|method_name|solver_name|(?:solver|record|method)\.name)"
    return [
        re.compile(rf"(?:==|!=)\s*{quoted}"),                     # x == "tv"
        re.compile(rf"{quoted}\s*(?:==|!=)"),                     # "tv" == x
        re.compile(rf"\bin\s*[(\[{{]\s*{quoted}"),                # in ("dds", ...
        re.compile(rf"{quoted}\s*,\s*{quoted}"),                  # ("dds", "rmpvi") lists
        re.compile(rf"{who}\s*(?:==|!=|(?:not\s+)?in\b)"),        # method == ..., x.name in
        re.compile(r"\bin\s+[A-Z_]*(?:METHODS|SOLVERS)\b(?!\.)"),  # in DIFFUSION_METHODS
    ]


def _branches(lines) -> list[int]:
    patterns = _branch_patterns()
    return [number for number, line in enumerate(lines, start=1)
            if any(p.search(line.split("#", 1)[0]) for p in patterns)]


def _method_branches() -> list[str]:
    """Lines outside medrecon/methods.py that branch on a method's name."""
    root = Path(__file__).resolve().parents[1]
    found = []
    for folder in ("medrecon", "operators", "data"):
        for path in sorted((root / folder).rglob("*.py")):
            if path == root / "medrecon" / "methods.py":
                continue
            lines = path.read_text().splitlines()
            found += [f"{path.relative_to(root)}:{n}: {lines[n - 1].strip()}"
                      for n in _branches(lines)]
    return found


def test_the_branch_scan_sees_the_old_pipelines_branches():
    """The scan below finds what the deleted pipelines did."""
    old = ['    if method == "fbp":', '    if method in DIFFUSION_METHODS:',
           '    elif protocol.solver.name in ("dds", "rmpvi"):',
           'DIFFUSION_METHODS = ("dds", "rmpvi", "dps")', '    if "tv" != name:',
           '    nonnegative = method_name == "tv"']
    assert _branches(old) == list(range(1, len(old) + 1))
    fine = ['    return torch.cat([p, h]) if self.method == "cat" else p + h',
            '    record = METHODS[protocol.solver.name]', '    for name in names("ct"):',
            '    users = ", ".join(n for n, m in METHODS.items() if m.needs_prior)',
            '    return uid.is_valid and uid.name != str(uid)']
    assert _branches(fine) == []


def test_no_branching_on_method_names_outside_the_records():
    """What differs between methods lives in medrecon.methods.METHODS; nothing else
    asks which method it is running (the old pipelines did, and drifted apart)."""
    assert _method_branches() == []
