"""Warnings of implausible reconstructions: a data residual far from the noise level, an
image much brighter or darker than the baseline, non-finite values, the solver's own
warnings; in :class:`StudyResult`, the JSON report and the log."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from medrecon.data.kspace_simulate import coil_maps, simulate_kspace
from medrecon.data.mr_phantom import mr_phantom
from medrecon.methods import METHODS
from medrecon.operators.mri import CartesianMRI
from medrecon.solvers.problem import Problem
from medrecon.studies import plausibility_warnings
from medrecon.studies.mri import MRITask, sampled_columns

SIZE = 64


def _task(acceleration: float = 8.0, sigma: float = 2e-2, seed: int = 0) -> MRITask:
    """An 8-coil Cartesian slice with the true coil maps (no ESPIRiT: quick)."""
    sim = simulate_kspace(mr_phantom(SIZE, seed=seed)[None], coils=8, pattern="random",
                          acceleration=acceleration, center_fraction=0.1, sigma=sigma,
                          seed=seed)
    mask = torch.from_numpy(sim.mask)
    operator = CartesianMRI((SIZE, SIZE), mask=mask, maps=coil_maps(8, (SIZE, SIZE)))
    y = torch.from_numpy(sim.kspace[0])
    scale = float(y.abs().max())
    k = (torch.arange(SIZE) - SIZE // 2) / SIZE
    radius = torch.hypot(k[:, None], k[None, :])
    return MRITask(Problem(operator, y / scale), radius, scale,
                   sampled_columns(mask, (SIZE, SIZE)))


def _warnings(task: MRITask, name: str, **given) -> list[str]:
    record = METHODS[name]
    result = record.run(task, record.parameters("mri", given))
    return plausibility_warnings(task, result, fits_data=record.fits_data)


@pytest.fixture(scope="module")
def noisy_r8() -> MRITask:
    return _task()


@pytest.mark.parametrize("name", ["zf", "cgsense", "l1wavelet", "tv"])
def test_defaults_on_noisy_r8_data_give_no_warning(noisy_r8, name):
    assert _warnings(noisy_r8, name) == []


def test_undamped_cg_sense_run_long_is_warned_of(noisy_r8):
    """CG-SENSE without damping (neither weight), 300 iterations, on noisy R = 8 data:
    the noise is amplified (the image several times brighter than zero-filling)."""
    warnings = _warnings(noisy_r8, "cgsense", weight=0.0, noise_weight=0.0, iterations=300)
    assert any("bright" in w and "amplified noise" in w for w in warnings), warnings


def test_a_huge_tv_weight_is_warned_of(noisy_r8):
    warnings = _warnings(noisy_r8, "tv", weight=1.0)
    assert any("does not fit the data" in w or "unexplained" in w for w in warnings), warnings


def test_a_huge_tikhonov_weight_darkens_and_leaves_the_data_unexplained(noisy_r8):
    warnings = _warnings(noisy_r8, "cgsense", weight=3.0)
    assert any("darker" in w for w in warnings) and any("unexplained" in w for w in warnings)


def test_residual_far_below_the_noise_is_overfitting():
    """One coil at R = 2 (fewer data than unknowns): plain CG-SENSE fits the noise."""
    sim = simulate_kspace(mr_phantom(SIZE, seed=1)[None], coils=1, pattern="random",
                          acceleration=2.0, center_fraction=0.2, sigma=1e-2, seed=1)
    mask = torch.from_numpy(sim.mask)
    y = torch.from_numpy(sim.kspace[0, 0])
    k = (torch.arange(SIZE) - SIZE // 2) / SIZE
    task = MRITask(Problem(CartesianMRI((SIZE, SIZE), mask=mask), y), torch.hypot(
        k[:, None], k[None, :]), 1.0, sampled_columns(mask, (SIZE, SIZE)))
    warnings = _warnings(task, "cgsense", weight=0.0, noise_weight=0.0, iterations=50)
    assert any("fits the noise" in w for w in warnings), warnings


def test_nan_and_the_solvers_own_warnings_are_collected(noisy_r8):
    record = METHODS["cgsense"].run(noisy_r8, METHODS["cgsense"].parameters("mri"))
    told = replace(record, info={**record.info, "warnings": ["dds: adaptation diverged"]})
    assert plausibility_warnings(noisy_r8, told, where="slice 2: ") == [
        "slice 2: dds: adaptation diverged"]
    image = record.image.clone()
    image[0, 0] = float("nan")
    warnings = plausibility_warnings(noisy_r8, replace(record, image=image))
    assert len(warnings) == 1 and "1 NaN or infinite" in warnings[0]


def test_zero_filling_is_not_checked_against_the_noise(noisy_r8):
    """Zero-filling does not fit the data: its residual says nothing."""
    low_noise = _task(acceleration=4.0, sigma=1e-3)
    assert _warnings(low_noise, "zf") == []


# ----------------------------------------------------------------------- study, report, log
def _kspace_file(path, sigma: float):
    from medrecon.data.kspace_write import write_kspace_file

    sim = simulate_kspace(mr_phantom(SIZE, seed=2)[None], coils=4, pattern="random",
                          acceleration=3.0, center_fraction=0.2, sigma=sigma, seed=2)
    return write_kspace_file(path, sim.kspace, mask=sim.mask, reference=sim.reference)


def test_warnings_reach_the_study_result_the_report_and_the_log(tmp_path, caplog):
    from medrecon import run as runner
    from medrecon.protocol import load_protocol

    study = _kspace_file(tmp_path / "noisy.h5", 2e-2)
    out = tmp_path / "out"
    out.mkdir()
    messages: list[str] = []
    good = load_protocol("mri-cartesian-cgsense")
    bad = load_protocol("mri-cartesian-cgsense", ["solver.params.weight=3.0",
                                                  "outputs.naming=\"{study}_bad\""])
    with caplog.at_level(logging.WARNING, logger="medrecon.run"):
        runner.run_protocol(good, [study], out, echo=messages.append)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        runner.run_protocol(bad, [study], out, echo=messages.append)
    report = json.loads((out / "noisy_cgsense.json").read_text())
    assert report["warnings"] == []
    report = json.loads((out / "noisy_bad.json").read_text())
    assert report["warnings"] and any("darker" in w for w in report["warnings"])
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert logged == [f"noisy.h5: {w}" for w in report["warnings"]]
    assert any(m.endswith(f"{len(report['warnings'])} warnings") or m.endswith("1 warning")
               for m in messages), messages


def test_ct_study_result_carries_warnings(tmp_path):
    """A CT study: CGLS with many iterations on few noisy views fits the noise."""
    from medrecon.data.phantom import ct_phantom
    from medrecon.data.sinogram import write_sinogram
    from medrecon.data.sinogram_simulate import simulate_sinogram
    from medrecon.operators.ct_geometry import CTGeometry
    from medrecon.run import reconstruct_study
    from medrecon.studies import open_study

    phantom = ct_phantom(32, seed=1)
    geometry = CTGeometry.parallel((32, 32), 12, pixel_size=phantom.pixel_size)
    path = tmp_path / "s.h5"
    write_sinogram(simulate_sinogram(phantom.image, geometry, noise="poisson:1e4",
                                     generator=torch.Generator().manual_seed(0)), path)
    with open_study(path, "ct") as study:
        good = reconstruct_study(study, "fbp", {})
        bad = reconstruct_study(study, "cgls", {"iterations": 200})
    assert good.warnings == ()
    assert any("fits the noise" in w for w in bad.warnings), bad.warnings
    assert np.isfinite(bad.volume.array).all()
