"""MRI studies end to end: simulation, ESPIRiT + SENSE reconstruction, command line, bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from medrecon.cli import main
from medrecon.data.dicom import read_dicom
from medrecon.data.kspace import FastMRIFile
from medrecon.data.kspace_simulate import simulate_kspace
from medrecon.data.kspace_write import write_kspace_file
from medrecon.data.mr_phantom import mr_phantom
from medrecon.data.nifti import read_nifti
from medrecon.run import reconstruct_study
from medrecon.studies import open_study
from medrecon.studies.mri import calibration_width, centre_crop, fastmri_metrics
from tests.test_cli import expect_bad_input, run, tree


def reconstruct_kspace_file(path, method: str, **given):
    """``method`` with the user's parameters ``given`` on the k-space file at ``path``,
    by the one path of ``medrecon run`` and ``medrecon recon``."""
    with open_study(path, "mri") as study:
        return reconstruct_study(study, method, given)


def _write(path, *, size=256, coils=8, pattern="random", acceleration=4.0, center=0.08,
           sigma=0.0, seed=0, mask_seed=None):
    sim = simulate_kspace(mr_phantom(size, seed=seed)[None], coils=coils, pattern=pattern,
                          acceleration=acceleration, center_fraction=center, sigma=sigma,
                          seed=seed if mask_seed is None else mask_seed)
    write_kspace_file(path, sim.kspace, mask=sim.mask, trajectory=sim.trajectory,
                      reference=sim.reference, image_shape=sim.image_shape)
    return path


@pytest.fixture(scope="module")
def r4_file(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("mri") / "r4.h5", sigma=2e-3)


def test_cgsense_beats_zero_filled_at_r4(r4_file):
    """8 coils, 256 x 256, R = 4, 1D random mask with 8 % centre (the issue's case)."""
    zf = reconstruct_kspace_file(r4_file, "zf").metrics
    cg = reconstruct_kspace_file(r4_file, "cgsense").metrics
    assert cg["psnr"] > zf["psnr"] + 2.0 and cg["ssim"] > zf["ssim"] + 0.05, (zf, cg)


def test_l1wavelet_beats_cgsense_at_r8(tmp_path):
    """The issue's R = 8 case, over three fastMRI mask seeds (fastMRI's own random
    stream). Measured PSNR / SSIM, CG-SENSE against L1-wavelet: seed 0 20.39 / 0.693 and
    20.65 / 0.701, seed 1 22.04 / 0.720 and 22.96 / 0.758, seed 2 21.66 / 0.718 and
    22.35 / 0.740 (seeds 3 and 4: level within 0.06 dB)."""
    gains = []
    for mask_seed in range(3):
        path = _write(tmp_path / f"r8_{mask_seed}.h5", acceleration=8.0, sigma=1e-3, seed=3,
                      mask_seed=mask_seed)
        cg = reconstruct_kspace_file(path, "cgsense").metrics
        l1 = reconstruct_kspace_file(path, "l1wavelet").metrics
        gains.append((l1["psnr"] - cg["psnr"], l1["ssim"] - cg["ssim"]))
    psnr_gain, ssim_gain = (sum(g) / len(gains) for g in zip(*gains))
    assert min(g for g, _ in gains) > 0 and psnr_gain > 0.4 and ssim_gain > 0.01, gains


def _psnr_of(path, *runs: tuple[str, dict]) -> list[float]:
    """PSNR of each ``(method, parameters)`` on one study file; the defaults (no
    parameters given) must warn of nothing."""
    values = []
    with open_study(path, "mri") as study:
        for name, given in runs:
            result = reconstruct_study(study, name, given)
            assert given or result.warnings == (), (name, result.warnings)
            values.append(result.metrics["psnr"])
    return values


@pytest.mark.parametrize("acceleration,center,gain", [
    (4.0, 0.08, 1.5), pytest.param(8.0, 0.05, 0.0, marks=pytest.mark.slow)])
def test_classical_methods_hold_above_zero_filling_at_realistic_noise(tmp_path, acceleration,
                                                                      center, gain):
    """The issue: with k-space noise 20 times the benchmark's (2e-2 of the image), the
    old fixed L1 weight (``noise_weight`` 0) amplifies the noise to about zero-filling
    (measured 19.1 against 18.5 dB at R = 4, the new default 21.9; at R = 8 18.3 against
    18.7 for the new one, 16.3 for zero-filling); the noise-aware
    weights keep CG-SENSE and L1-wavelet well above zero-filling and warn of nothing
    (256 x 256, 8 coils, 1D random mask; the phantom's sharp edges fill the k-space
    periphery, so this needs the empty-row noise estimate too)."""
    path = _write(tmp_path / "noisy.h5", acceleration=acceleration, center=center,
                  sigma=2e-2, seed=5)
    zf, cg, l1, l1_fixed = _psnr_of(path, ("zf", {}), ("cgsense", {}), ("l1wavelet", {}),
                                    ("l1wavelet", {"noise_weight": 0.0}))
    assert cg > zf + 1.0 and l1 > zf + 2.0, (zf, cg, l1)
    assert l1 > l1_fixed + gain, (l1, l1_fixed)


@pytest.mark.slow
def test_tv_beats_cgsense_at_r4(r4_file):
    cg = reconstruct_kspace_file(r4_file, "cgsense").metrics
    tv = reconstruct_kspace_file(r4_file, "tv").metrics
    assert tv["psnr"] > cg["psnr"] + 1.0 and tv["ssim"] > cg["ssim"], (cg, tv)


def fov_filling_slice(seed: int, size: int = 64, fraction: float = 1.0) -> np.ndarray:
    """A held-out MNI slice (complex, with its smooth phase) resampled so that the
    central ``fraction`` of the head's bounding box is the field of view: at 1 the head
    touches every edge; below 1 the field of view cuts through the head, as it cuts
    through pydicom's MR_small.dcm."""
    from scipy import ndimage

    from medrecon.data.mni import HELDOUT_SLICES, mni152_slice

    x = mni152_slice(seed, size=256, slices=HELDOUT_SLICES)
    head = np.abs(x) > 0.1 * np.abs(x).max()
    rows, cols = np.flatnonzero(head.any(1)), np.flatnonzero(head.any(0))
    side = fraction * min(rows[-1] - rows[0], cols[-1] - cols[0])
    t = np.linspace(-side / 2, side / 2, size)
    grid = np.meshgrid((rows[0] + rows[-1]) / 2 + t, (cols[0] + cols[-1]) / 2 + t,
                       indexing="ij")
    out = ndimage.map_coordinates(x.real, grid, order=1) \
        + 1j * ndimage.map_coordinates(x.imag, grid, order=1)
    return (out / np.abs(out).max()).astype(np.complex64)


@pytest.fixture(scope="module")
def fov_filling_kspace():
    """A FOV-filling 64 x 64 slice, 8 coils, 2D Poisson-disc R = 4 with a 12 x 12 centre
    (bench_priors' MR_small rows)."""
    sim = simulate_kspace(fov_filling_slice(20_000)[None], coils=8, pattern="poisson",
                          acceleration=4, center_fraction=0.19, sigma=1e-3, seed=4)
    return sim


def test_espirit_support_covers_a_fov_filling_object(fov_filling_kspace):
    """ESPIRiT on a 12 x 12 calibration region: with SigPy's fixed 6 x 6 kernel (49
    patches, all 49 singular values kept) the maps vanished on 6 % of this object and
    on half of MR_small.dcm (zero-filling 15 dB there instead of 26); the kernel chosen
    from the data keeps the object whole and the maps close to the coils' away from the
    edges (where the wrap-around of the field of view leaves two eigenvalues near 1)."""
    from medrecon.data.kspace_simulate import coil_maps
    from medrecon.operators.coils import espirit_kernel_width, espirit_maps

    sim = fov_filling_kspace
    kspace = torch.from_numpy(sim.kspace[0])
    width = calibration_width(torch.from_numpy(sim.mask), kspace.shape)
    assert width == 12
    assert espirit_kernel_width(sim.kspace[0], width) < 6
    obj = sim.reference[0] > 0.05 * sim.reference[0].max()
    maps = espirit_maps(kspace, width).numpy()
    support = np.sum(np.abs(maps) ** 2, axis=0) > 0
    assert support[obj].all(), support[obj].mean()
    old = espirit_maps(kspace, width, kernel_width=6).numpy()
    assert (np.sum(np.abs(old) ** 2, axis=0) > 0)[obj].mean() < 0.97  # the cause
    inner = (slice(12, -12), slice(12, -12))
    match = np.abs(np.sum(maps.conj() * coil_maps(8, (64, 64)).numpy(), axis=0))[inner]
    assert match.min() > 0.99, match.min()


def test_espirit_kernel_width_keeps_uecker_setting():
    """A 24 x 24 region of 8-coil data over-determines a 6 x 6 kernel (361 patches):
    the default of Uecker et al. (2014) and SigPy stays."""
    from medrecon.operators.coils import espirit_kernel_width

    sim = simulate_kspace(mr_phantom(128, seed=1)[None], coils=8, pattern="random",
                          acceleration=4, center_fraction=0.2, sigma=1e-3, seed=0)
    assert espirit_kernel_width(sim.kspace[0], 24) == 6


@pytest.mark.parametrize("acceleration,fraction", [(4, 1.0), (8, 1.0), (4, 0.7), (8, 0.7)])
def test_classical_methods_beat_zero_filling_on_a_fov_filling_64_slice(tmp_path,
                                                                     acceleration,
                                                                     fraction):
    """bench_priors' MR_small case on a generated slice (zero-filling, CG-SENSE,
    L1-wavelet in dB, measured): head touching the edges 24.2, 41.1, 36.2 at R = 4 and
    22.4, 33.3, 30.9 at R = 8 (with SigPy's 6 x 6 kernel 20.8, 15.0, 12.7 and 20.3,
    14.3, 12.0); field of view cutting through the head 23.6, 35.2, 38.7 and 22.3, 28.6,
    30.9 (with one ESPIRiT map set, no soft SENSE: CG-SENSE 18.9 and 14.7, L1 17.9 and
    12.2)."""
    sim = simulate_kspace(fov_filling_slice(20_000, fraction=fraction)[None], coils=8,
                          pattern="poisson", acceleration=acceleration, center_fraction=0.19,
                          sigma=1e-3, seed=acceleration)
    path = tmp_path / "fov.h5"
    write_kspace_file(path, sim.kspace, mask=sim.mask, trajectory=None,
                      reference=sim.reference, image_shape=sim.image_shape)
    zf, cg, l1 = _psnr_of(path, ("zf", {}), ("cgsense", {}), ("l1wavelet", {}))
    assert zf > 20.0 and cg > zf + 4.0 and l1 > zf + 4.0, (zf, cg, l1)


def test_soft_sense_second_map_set_where_the_field_of_view_cuts_the_object():
    """Uecker et al.'s second ESPIRiT map set: non-empty along the edges of a field of
    view that cuts through the head (the coil images jump across the periodic edge),
    orthonormal to the first set there, empty on an object inside the field of view;
    the two-set operator is the sum of two SENSE operators, with its adjoint."""
    from medrecon.operators.coils import espirit_maps, espirit_second_set
    from medrecon.operators.map_sets import SoftSENSE
    from medrecon.operators.mri import CartesianMRI
    from medrecon.studies.mri_sets import combine

    sim = simulate_kspace(fov_filling_slice(20_000, fraction=0.7)[None], coils=8,
                          pattern="poisson", acceleration=4, center_fraction=0.19,
                          sigma=1e-3, seed=4)
    kspace, mask = torch.from_numpy(sim.kspace[0]), torch.from_numpy(sim.mask)
    first = espirit_maps(kspace, 12)
    second = espirit_second_set(kspace, 12, first)
    used = second.abs().pow(2).sum(0) > 0
    edge = torch.zeros(64, 64, dtype=torch.bool)
    edge[:4], edge[-4:], edge[:, :4], edge[:, -4:] = True, True, True, True
    assert used[edge].float().mean() > 0.3 and used[16:-16, 16:-16].float().mean() < 0.05
    overlap = (first.conj() * second).sum(0).abs()[used]
    assert float(overlap.max()) < 1e-4
    assert torch.allclose(second.abs().pow(2).sum(0)[used], torch.ones(()), atol=1e-4)

    inside = simulate_kspace(mr_phantom(64, seed=1)[None], coils=8, pattern="poisson",
                             acceleration=4, center_fraction=0.19, sigma=1e-3, seed=4)
    k_in = torch.from_numpy(inside.kspace[0])
    assert not bool(espirit_second_set(k_in, 12, espirit_maps(k_in, 12)).abs().any())

    op = SoftSENSE(CartesianMRI((64, 64), mask=mask, maps=first), second)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 64, dtype=torch.complex64, generator=g)
    y = torch.randn(8, 64, 64, dtype=torch.complex64, generator=g)
    parts = CartesianMRI((64, 64), mask=mask, maps=first)(x[:64]) \
        + CartesianMRI((64, 64), mask=mask, maps=second)(x[64:])
    assert torch.allclose(op(x), parts, atol=1e-5)
    lhs, rhs = torch.vdot(op(x).flatten(), y.flatten()), torch.vdot(x.flatten(),
                                                                    op.H(y).flatten())
    assert abs(lhs - rhs) / abs(lhs) < 1e-5
    assert torch.allclose(op.normal(x), op.H(op(x)), atol=1e-4)
    assert torch.allclose(combine(x, 64).abs(), (x[:64].abs() ** 2 + x[64:].abs() ** 2).sqrt())


def test_calibration_width_of_masks():
    mask = torch.zeros(64, dtype=torch.bool)
    mask[32 - 10:32 + 10] = True
    assert calibration_width(mask, (64, 64)) == 20
    square = torch.zeros(40, 50, dtype=torch.bool)
    square[20 - 6:20 + 6, 25 - 6:25 + 6] = True
    assert calibration_width(square, (40, 50)) == 12
    assert calibration_width(None, (64, 64)) == 24


def test_centre_crop_and_metrics_conventions():
    image = torch.arange(36.0).reshape(6, 6)
    assert centre_crop(image, (2, 4)).tolist() == [image[2, 1:5].tolist(), image[3, 1:5].tolist()]
    ref = np.ones((2, 8, 8), np.float32)
    ref[0, 0, 0] = 4.0
    # fastMRI PSNR: data range = the volume's maximum (4), MSE over the whole volume
    metrics = fastmri_metrics(ref + 0.1, ref)
    assert metrics["psnr"] == pytest.approx(20 * np.log10(4.0 / 0.1))


@pytest.mark.parametrize("pattern", ["radial", "spiral"])
def test_non_cartesian_file_round_trip(tmp_path, pattern):
    path = _write(tmp_path / f"{pattern}.h5", size=64, coils=4, pattern=pattern,
                  acceleration=2.0)
    with FastMRIFile(path) as f:
        assert f.trajectory is not None and f.image_shape == (64, 64)
    zf = reconstruct_kspace_file(path, "zf").metrics
    cg = reconstruct_kspace_file(path, "cgsense", iterations=15).metrics
    assert cg["psnr"] > zf["psnr"] and cg["ssim"] > 0.5, (zf, cg)


# ----------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "k.h5"
    assert main(["simulate", "mri", "phantom", "--size", "64", "--coils", "4",
                 "--center-fraction", "0.25", "--acceleration", "3", "-o", str(path)]) == 0
    return path


def test_recon_mri_refuses_a_parameter_the_method_does_not_take(capsys, small_file, tmp_path):
    expect_bad_input(capsys, "recon", "mri", small_file, "--method", "zf", "--iterations", 10,
                     "-o", tmp_path / "zf.h5", names="--iterations", says="zf takes no")
    assert not (tmp_path / "zf.h5").exists()


@pytest.mark.parametrize("method", ["zf", "cgsense", "l1wavelet", "tv"])
def test_recon_mri_each_method(capsys, small_file, tmp_path, method):
    out = tmp_path / f"{method}.h5"
    iterations = [] if method == "zf" else ["--iterations", "10"]  # zf takes none
    code, stdout, _ = run(capsys, "recon", "mri", small_file, "--method", method,
                          *iterations, "-o", out)
    assert code == 0 and "psnr" in stdout
    with h5py.File(out, "r") as f:
        recon = f["reconstruction"][()]
    assert recon.shape == (1, 64, 64) and np.isfinite(recon).all()


def test_recon_mri_output_formats(capsys, small_file, tmp_path):
    nii, dicom = tmp_path / "x.nii.gz", tmp_path / "series"
    for out in (nii, dicom, tmp_path / "x.png"):
        assert run(capsys, "recon", "mri", small_file, "-o", out)[0] == 0
    volume = read_dicom(dicom)
    assert volume.modality == "MR" and volume.array.shape == (1, 64, 64)
    np.testing.assert_allclose(volume.array, read_nifti(nii).array,
                               atol=2 * float(np.abs(volume.array).max()) / 65535 + 1e-6)


def test_simulate_mri_patterns(capsys, tmp_path):
    for pattern in ("equispaced", "poisson", "radial", "spiral"):
        out = tmp_path / f"{pattern}.h5"
        code, stdout, _ = run(capsys, "simulate", "mri", "phantom", "--size", 64, "--coils", 2,
                              "--pattern", pattern, "--acceleration", 2, "--center-fraction",
                              0.25, "--noise", "gaussian:0.001", "-o", out)
        assert code == 0 and pattern in stdout
        with FastMRIFile(out) as f:
            assert f.coils == 2 and (f.trajectory is not None) == (pattern in ("radial",
                                                                                "spiral"))


def _copy_with(src, dst, change):
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        change(f)
    return dst


@pytest.mark.parametrize("case,change,names,says", [
    ("rank", lambda f: (f.__delitem__("kspace"),
                        f.create_dataset("kspace", data=np.zeros((4, 4), np.complex64))),
     "kspace", ""),
    ("missing", lambda f: f.__delitem__("kspace"), "kspace", ""),
    ("maskwidth", lambda f: (f.__delitem__("mask"),
                             f.create_dataset("mask", data=np.ones(10, bool))), "mask", ""),
    ("nan", lambda f: f["kspace"].__setitem__((0, 0, 32, 32), np.nan), "kspace", "NaN"),
])
def test_bad_kspace_files(capsys, small_file, tmp_path, case, change, names, says):
    bad = _copy_with(small_file, tmp_path / f"{case}.h5", change)
    before = tree(tmp_path)
    line = expect_bad_input(capsys, "recon", "mri", bad, "-o", tmp_path / "out.h5",
                            names=bad.name, says=says)
    assert names in line
    assert tree(tmp_path) == before


def test_trajectory_out_of_range(capsys, tmp_path):
    path = _write(tmp_path / "radial.h5", size=32, coils=2, pattern="radial", acceleration=2.0)
    with h5py.File(path, "r+") as f:
        f["trajectory"][0, 0] = 4.0
    expect_bad_input(capsys, "recon", "mri", path, "-o", tmp_path / "o.h5", names="trajectory",
                     says="")
    assert not (tmp_path / "o.h5").exists()


def test_corrupt_hdf5_and_too_small_calibration(capsys, small_file, tmp_path):
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(small_file.read_bytes()[:2000])
    expect_bad_input(capsys, "recon", "mri", corrupt, "-o", tmp_path / "o.h5",
                     names="corrupt.h5", says="")
    narrow = tmp_path / "narrow.h5"
    assert main(["simulate", "mri", "phantom", "--size", "64", "--coils", "4",
                 "--center-fraction", "0.04", "-o", str(narrow)]) == 0  # 3 centre lines
    expect_bad_input(capsys, "recon", "mri", narrow, "-o", tmp_path / "o.h5", names="mask",
                     says="at least 4")
