"""DDS with and without prior-resolution matching on generated 64 x 64 slices.

Held-out MNI152 slices (:data:`medrecon.data.mni.HELDOUT_SLICES`, seeds from 10000)
resampled so that the head fills the 64 x 64 field of view (as ``fov_filling_slice`` of
tests/test_mri_study.py), 8 coils, 2D Poisson-disc masks with a 12 x 12 centre at R = 4
and 8, noise 1e-3 and 2e-2 (bench_priors' MR_small rows, on images never used for
evaluation there). DDS runs on the prior's grid with each factor ``f`` of ``--factors``
(1: the native grid, matching off; 2 is what
:func:`medrecon.studies.mri_resolution.resolution_factor` picks for 64 x 64), with each
number of ESPIRiT map sets of ``--sets`` (1: the second set forced empty; 2: both, the
default, :mod:`medrecon.studies.mri_sets`) and each second-set standard deviation of
``--second-std`` (default :data:`medrecon.studies.mri_sets.SECOND_SET_STD`), zero-filling
and L1-wavelet for reference. Prints a Markdown table of mean PSNR / SSIM per row.

    python bench/bench_prior_resolution.py [--images 2] [--first-seed 10000]
                                           [--factors 1,2,4] [--sets 1,2]
                                           [--second-std 0,0.015] [--steps 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import medrecon.studies.mri_resolution as resolution
import medrecon.studies.mri_sets as map_sets
from medrecon.data.kspace_simulate import simulate_kspace
from medrecon.data.kspace_write import write_kspace_file
from medrecon.priors.defaults import load_named_prior
from medrecon.run import reconstruct_study
from medrecon.studies import open_study
from medrecon.studies.mri import MRITask


def fov_filling_slice(seed: int, size: int = 64, kind: str = "mni") -> np.ndarray:
    """A held-out slice (complex) resampled so that the head's bounding box is the field
    of view (tests/test_mri_study.py's helper at ``fraction = 1``): of the MNI template
    (``kind`` ``"mni"``) or a head of the mixed MR family (``"head"``,
    :func:`medrecon.data.mr_mix.head_slice`), from the held-out template slices."""
    from scipy import ndimage

    from medrecon.data.mni import HELDOUT_SLICES, mni152_slice
    from medrecon.data.mr_mix import head_slice

    generate = {"mni": mni152_slice, "head": head_slice}[kind]
    x = generate(seed, size=256, slices=HELDOUT_SLICES)
    head = np.abs(x) > 0.1 * np.abs(x).max()
    rows, cols = np.flatnonzero(head.any(1)), np.flatnonzero(head.any(0))
    side = min(rows[-1] - rows[0], cols[-1] - cols[0])
    t = np.linspace(-side / 2, side / 2, size)
    grid = np.meshgrid((rows[0] + rows[-1]) / 2 + t, (cols[0] + cols[-1]) / 2 + t,
                       indexing="ij")
    out = ndimage.map_coordinates(x.real, grid, order=1) \
        + 1j * ndimage.map_coordinates(x.imag, grid, order=1)
    return (out / np.abs(out).max()).astype(np.complex64)


def run(path: Path, method: str, prior, factor: int | None = None,
        given: dict | None = None, sets: int = 2,
        second_std: float | None = None) -> tuple[float, float, float]:
    original = (resolution.resolution_factor, MRITask.soft_sense_problem,
                map_sets.SECOND_SET_STD)
    if factor is not None:
        resolution.resolution_factor = lambda shape, size: factor
    if sets == 1:
        MRITask.soft_sense_problem = lambda self: None
    if second_std is not None:
        map_sets.SECOND_SET_STD = second_std
    try:
        start = time.perf_counter()
        with open_study(path, "mri") as study:
            result = reconstruct_study(study, method, given or {}, prior=prior,
                                       generator=torch.Generator().manual_seed(0))
        return result.metrics["psnr"], result.metrics["ssim"], time.perf_counter() - start
    finally:
        (resolution.resolution_factor, MRITask.soft_sense_problem,
         map_sets.SECOND_SET_STD) = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=10_000)
    parser.add_argument("--factors", default="1,2")
    parser.add_argument("--sets", default="2")
    parser.add_argument("--second-std", default=None)
    parser.add_argument("--steps", type=int, default=None, help="DDS steps (default: its own)")
    parser.add_argument("--accelerations", default="4,8")
    parser.add_argument("--noise", default="1e-3,2e-2")
    args = parser.parse_args()
    prior, _ = load_named_prior("default", "mri")
    factors = [int(f) for f in args.factors.split(",")]
    given = {} if args.steps is None else {"steps": args.steps}
    stds = [None] if args.second_std is None else \
        [float(v) for v in args.second_std.split(",")]
    columns = [("zf", None, 2, None), ("l1wavelet", None, 2, None)] + [
        ("dds", f, sets, std) for f in factors for sets in map(int, args.sets.split(","))
        for std in (stds if sets == 2 else [None])]

    def heading(method, factor, sets, std):
        if factor is None:
            return method
        return f"{method} f={factor} {sets} set{'s' if sets > 1 else ''}" + (
            "" if std is None else f" std {std:g}")

    print("| R | noise | " + " | ".join(heading(*c) for c in columns) + " |")
    print("|---|---|" + "---|" * len(columns), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for acceleration in (int(a) for a in args.accelerations.split(",")):
            for sigma in (float(s) for s in args.noise.split(",")):
                scores: dict[int, list[tuple[float, float, float]]] = {}
                for k in range(args.images):
                    sim = simulate_kspace(fov_filling_slice(args.first_seed + k)[None], coils=8,
                                          pattern="poisson", acceleration=acceleration,
                                          center_fraction=0.19, sigma=sigma,
                                          seed=acceleration)
                    path = Path(tmp) / f"r{acceleration}_{sigma:g}_{k}.h5"
                    write_kspace_file(path, sim.kspace, mask=sim.mask, trajectory=None,
                                      reference=sim.reference, image_shape=sim.image_shape)
                    for i, (method, factor, sets, std) in enumerate(columns):
                        scores.setdefault(i, []).append(
                            run(path, method, prior, factor,
                                given if method == "dds" else None, sets, std))
                cells = []
                for i in range(len(columns)):
                    psnr, ssim, seconds = np.mean(scores[i], axis=0)
                    cells.append(f"{psnr:.2f} / {ssim:.3f} ({seconds:.0f} s)")
                print(f"| {acceleration} | {sigma:g} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
