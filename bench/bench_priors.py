"""Diffusion solvers with the default priors against the best classical methods.

Held-out images, never used in training:

- CT: procedural phantom slices with seeds from 10000 (training used ``phantom:N``,
  seeds 0 .. N-1), abdomen and thorax alternating, 256 x 256, parallel beam at 30 and
  60 views over a half turn, Poisson noise of 2e5 photons per ray; and, as a real
  image, pydicom's ``CT_small.dcm`` (128 x 128) under the same scans.
- MRI: augmented slices of the MNI152 template from the held-out block
  (:data:`medrecon.data.mni.HELDOUT_SLICES`, seeds from 10000), 8 birdcage coils,
  256 x 256, 1D random masks with an 8 % centre at R = 4 and 8, complex Gaussian noise
  1e-3 per component; and, as an image of another kind, the MR phantom (seed 3).

Every method goes through the same pipeline functions as the command line and the
protocols, with their default parameters (TV, CG-SENSE and L1-wavelet weights, DDS,
RMP-VI and DPS steps). Prints one Markdown table (mean PSNR in dB with data range
max - min for CT and the maximum for MRI, mean SSIM, seconds per image, network
evaluations) and the best classical method per row.

    python bench/bench_priors.py [--images 2] [--ct-prior PATH] [--mri-prior PATH]
                                 [--only ct|mri] [--methods dds,rmpvi,dps]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from medrecon.data.kspace_simulate import simulate_kspace
from medrecon.data.kspace_write import write_kspace_file
from medrecon.data.mni import HELDOUT_SLICES, mni152_slice
from medrecon.data.mr_phantom import mr_phantom
from medrecon.data.phantom import ct_phantom
from medrecon.data.sinogram_simulate import simulate_sinogram
from medrecon.operators.ct_geometry import CTGeometry
from medrecon.priors.defaults import load_named_prior
from medrecon.run import reconstruct_study
from medrecon.studies import open_study
from medrecon.studies.ct import CTStudy

CT_CLASSICAL = ("fbp", "tv")
MRI_CLASSICAL = ("cgsense", "l1wavelet")
Run = Callable[[str], tuple[dict[str, float], int]]


def ct_images(count: int) -> Iterator[tuple[str, np.ndarray, float]]:
    """(label, HU image, pixel size) of the held-out CT images."""
    for k in range(count):
        phantom = ct_phantom(256, seed=10_000 + k, region=("abdomen", "thorax")[k % 2])
        yield "phantom 256", phantom.image, phantom.pixel_size
    try:
        import pydicom
        from pydicom.data import get_testdata_file

        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        yield "CT_small 128", hu.astype(np.float32), float(ds.PixelSpacing[0])
    except (ImportError, OSError, AttributeError):
        return


def mri_images(count: int) -> Iterator[tuple[str, np.ndarray]]:
    """(label, complex image) of the held-out MRI images."""
    for k in range(count):
        yield "MNI held-out", mni152_slice(10_000 + k, slices=HELDOUT_SLICES)
    yield "MR phantom", mr_phantom(256, seed=3)


def ct_runs(image: np.ndarray, pixel: float, views: int, prior) -> Run:
    shape = image.shape
    geometry = CTGeometry.parallel(shape, views, pixel_size=pixel)
    sino = simulate_sinogram(image, geometry, noise="poisson:2e5",
                             generator=torch.Generator().manual_seed(views))

    study = CTStudy(Path(f"ct_{views}_views"), sino)

    def run(method: str) -> tuple[dict[str, float], int]:
        result = reconstruct_study(study, method, {}, prior=prior,
                                   generator=torch.Generator().manual_seed(0))
        return result.metrics, sum(r.nfe for r in result.records)
    return run


def mri_runs(image: np.ndarray, acceleration: int, prior, folder: Path) -> Run:
    sim = simulate_kspace(image[None], coils=8, pattern="random", acceleration=acceleration,
                          center_fraction=0.08, sigma=1e-3, seed=acceleration)
    path = folder / f"k{acceleration}_{len(list(folder.iterdir()))}.h5"
    write_kspace_file(path, sim.kspace, mask=sim.mask, trajectory=None,
                      reference=sim.reference, image_shape=sim.image_shape)

    def run(method: str) -> tuple[dict[str, float], int]:
        with open_study(path, "mri") as study:
            result = reconstruct_study(study, method, {}, prior=prior,
                                       generator=torch.Generator().manual_seed(0))
        return result.metrics, sum(r.nfe for r in result.records)
    return run


def table_rows(label: str, cases: list[Run], methods: tuple[str, ...],
               classical: tuple[str, ...]) -> list[str]:
    scores: dict[str, list[tuple[float, float, float, int]]] = {}
    for run in cases:
        for method in classical + methods:
            start = time.perf_counter()
            metrics, nfe = run(method)
            scores.setdefault(method, []).append(
                (metrics["psnr"], metrics["ssim"], time.perf_counter() - start, nfe))
    mean = {m: [float(np.mean([s[i] for s in v])) for i in range(4)] for m, v in scores.items()}
    best = max(classical, key=lambda m: mean[m][0])
    rows = []
    for method in (best, *methods):
        psnr, ssim, seconds, nfe = mean[method]
        gap = "" if method == best else f"{psnr - mean[best][0]:+.2f}"
        rows.append(f"| {label} | {method}{' (best classical)' if method == best else ''} | "
                    f"{psnr:.2f} | {ssim:.3f} | {seconds:.1f} | {int(nfe)} | {gap} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2, help="held-out images per modality")
    parser.add_argument("--ct-prior", default=None)
    parser.add_argument("--mri-prior", default=None)
    parser.add_argument("--only", choices=("ct", "mri"), default=None)
    parser.add_argument("--methods", default="dds,rmpvi,dps")
    args = parser.parse_args()
    methods = tuple(args.methods.split(","))
    torch.manual_seed(0)
    print("| case | method | PSNR dB | SSIM | s / image | NFE | vs best classical |")
    print("|---|---|---|---|---|---|---|", flush=True)
    if args.only in (None, "ct"):
        prior, _ = load_named_prior(args.ct_prior or "default", "ct")
        images = list(ct_images(args.images))
        for views in (30, 60):
            by_kind: dict[str, list[Run]] = {}
            for label, image, pixel in images:
                by_kind.setdefault(label, []).append(ct_runs(image, pixel, views, prior))
            for label, cases in by_kind.items():
                for row in table_rows(f"CT {label}, {views} views", cases, methods,
                                      CT_CLASSICAL):
                    print(row, flush=True)
    if args.only in (None, "mri"):
        prior, _ = load_named_prior(args.mri_prior or "default", "mri")
        with tempfile.TemporaryDirectory() as tmp:
            images = list(mri_images(args.images))
            for acceleration in (4, 8):
                by_kind = {}
                for label, image in images:
                    by_kind.setdefault(label, []).append(
                        mri_runs(image, acceleration, prior, Path(tmp)))
                for label, cases in by_kind.items():
                    for row in table_rows(f"MRI {label}, 8 coils, R={acceleration}", cases,
                                          methods, MRI_CLASSICAL):
                        print(row, flush=True)


if __name__ == "__main__":
    main()
