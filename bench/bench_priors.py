"""Diffusion solvers with the default priors against the best classical methods.

Held-out images, never used in training or tuning:

- CT: procedural phantom slices with seeds from 10000 (training used ``phantom:N``,
  seeds 0 .. N-1), abdomen and thorax alternating, 256 x 256, parallel beam at 30 and
  60 views over a half turn, Poisson noise of 2e5 photons per ray; and, as a real
  image, pydicom's ``CT_small.dcm`` (128 x 128) under the same scans at the low and
  the high end of the dose range (2e4 and 1e6 photons per ray).
- MRI: augmented slices of the MNI152 template from the held-out block
  (:data:`medrecon.data.mni.HELDOUT_SLICES`, seeds from 10000), 8 birdcage coils,
  256 x 256, 1D random masks with an 8 % centre at R = 4 and 8, complex Gaussian noise
  1e-3 per component; the MR phantom (seed 3), an image of another kind; and, as a
  real image, pydicom's ``MR_small.dcm`` at its native 64 x 64 (magnitude with a
  smooth synthetic phase, 8 coils) at noise 1e-3 and 2e-2 of its maximum.

Of pydicom's test files only ``CT_small.dcm`` and ``MR_small.dcm`` are used, for
evaluation only. Every method goes through the same path as the command line and the
protocols (:func:`medrecon.run.reconstruct_study`) with its default parameters;
a method may be given as ``NAME+adapt`` (test-time adaptation on, its defaults) or
``NAME@K`` (``K`` steps). Prints one Markdown table (mean PSNR in dB with data range
max - min for CT and the maximum for MRI, mean SSIM, seconds per image, network
evaluations) and the best classical method per row. ``--paper-dps`` adds DPS at its
paper setting (1000 steps) on the rows of the real images (CT_small and MR_small; slow:
minutes per row).

    python bench/bench_priors.py [--images 2] [--ct-prior PATH] [--mri-prior PATH]
                                 [--only ct|mri] [--methods dds,dds+adapt,rmpvi,dps]
                                 [--real-only] [--paper-dps]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
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
MRI_CLASSICAL = ("zf", "cgsense", "l1wavelet", "tv")
CT_PHOTONS = {"phantom 256": ("2e5",), "CT_small 128": ("2e4", "2e5", "1e6")}
MRI_NOISE = {"MNI held-out": (1e-3,), "MR phantom": (1e-3,), "MR_small 64": (1e-3, 2e-2)}
Run = Callable[[str], tuple[dict[str, float], int]]


def variant(spec: str) -> tuple[str, dict[str, object]]:
    """``dds`` -> ``("dds", {})``; ``dds+adapt`` -> adaptation on; ``dps@1000`` -> 1000 steps."""
    name, _, steps = spec.partition("@")
    name, _, adapt = name.partition("+")
    given: dict[str, object] = {"adapt": {}} if adapt == "adapt" else {}
    if steps:
        given["steps"] = int(steps)
    return name, given


def ct_images(count: int) -> Iterator[tuple[str, np.ndarray, float]]:
    """(label, HU image, pixel size) of the held-out CT images."""
    for k in range(count):
        phantom = ct_phantom(256, seed=10_000 + k, region=("abdomen", "thorax")[k % 2])
        yield "phantom 256", phantom.image, phantom.pixel_size
    ds = _pydicom_file("CT_small.dcm")
    if ds is not None:
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        yield "CT_small 128", hu.astype(np.float32), float(ds.PixelSpacing[0])


def mri_images(count: int) -> Iterator[tuple[str, np.ndarray]]:
    """(label, complex image) of the held-out MRI images."""
    for k in range(count):
        yield "MNI held-out", mni152_slice(10_000 + k, slices=HELDOUT_SLICES)
    yield "MR phantom", mr_phantom(256, seed=3)
    ds = _pydicom_file("MR_small.dcm")
    if ds is not None:
        magnitude = ds.pixel_array.astype(np.float32)
        magnitude /= magnitude.max()
        c = (np.arange(magnitude.shape[0]) - magnitude.shape[0] / 2) / (magnitude.shape[0] / 2)
        yy, xx = np.meshgrid(c, c, indexing="ij")
        yield "MR_small 64", magnitude * np.exp(1j * np.pi * (0.3 * xx + 0.2 * yy**2))


def _pydicom_file(name: str):
    try:
        import pydicom
        from pydicom.data import get_testdata_file

        return pydicom.dcmread(get_testdata_file(name))
    except (ImportError, OSError, AttributeError, TypeError):
        return None


def _study_run(open_case: Callable[[], object], prior) -> Run:
    def run(spec: str) -> tuple[dict[str, float], int]:
        name, given = variant(spec)
        with open_case() as study:
            result = reconstruct_study(study, name, given, prior=prior,
                                       generator=torch.Generator().manual_seed(0))
        return result.metrics, sum(r.nfe for r in result.records)
    return run


def ct_sinogram(image: np.ndarray, pixel: float, views: int, photons: str):
    """The CT scan of these rows: parallel beam over a half turn, Poisson noise of
    ``photons`` per ray, the generator seeded with the number of views."""
    geometry = CTGeometry.parallel(image.shape, views, pixel_size=pixel)
    return simulate_sinogram(image, geometry, noise=f"poisson:{photons}",
                             generator=torch.Generator().manual_seed(views))


def ct_runs(image: np.ndarray, pixel: float, views: int, photons: str, prior) -> Run:
    sino = ct_sinogram(image, pixel, views, photons)
    return _study_run(lambda: nullcontext(CTStudy(Path(f"ct_{views}_views"), sino)), prior)


def mri_runs(image: np.ndarray, acceleration: int, sigma: float, prior,
             folder: Path) -> Run:
    # 1D random column masks with an 8 % centre as fastMRI; the 64-wide real slice has too
    # few columns for that at R = 8 and gets a 2D Poisson-disc mask with a 12 x 12 centre
    pattern, centre = ("poisson", 0.19) if image.shape[-1] < 128 else ("random", 0.08)
    sim = simulate_kspace(image[None], coils=8, pattern=pattern, acceleration=acceleration,
                          center_fraction=centre, sigma=sigma, seed=acceleration)
    path = folder / f"k{acceleration}_{len(list(folder.iterdir()))}.h5"
    write_kspace_file(path, sim.kspace, mask=sim.mask, trajectory=None,
                      reference=sim.reference, image_shape=sim.image_shape)
    return _study_run(lambda: open_study(path, "mri"), prior)


def table_rows(label: str, cases: list[Run], methods: tuple[str, ...],
               classical: tuple[str, ...]) -> list[str]:
    """Every classical method (the best marked) and every diffusion method, with the gap of
    each to the best classical one."""
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
    for method in classical + methods:
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
    parser.add_argument("--methods", default="dds,dds+adapt,rmpvi,dps")
    parser.add_argument("--real-only", action="store_true",
                        help="only the rows of real images (CT_small, MR_small)")
    parser.add_argument("--paper-dps", action="store_true",
                        help="add DPS at 1000 steps on the CT_small and MR_small rows (slow)")
    args = parser.parse_args()
    methods = tuple(args.methods.split(","))
    real = ("CT_small 128", "MR_small 64")
    torch.manual_seed(0)
    print("| case | method | PSNR dB | SSIM | s / image | NFE | vs best classical |")
    print("|---|---|---|---|---|---|---|", flush=True)

    def emit(label: str, cases: list[Run], row_methods: tuple[str, ...],
             classical: tuple[str, ...]) -> None:
        for row in table_rows(label, cases, row_methods, classical):
            print(row, flush=True)

    if args.only in (None, "ct"):
        prior, _ = load_named_prior(args.ct_prior or "default", "ct")
        images = [i for i in ct_images(args.images) if not args.real_only or i[0] in real]
        for views in (30, 60):
            for kind, photon_levels in CT_PHOTONS.items():
                for photons in photon_levels:
                    cases = [ct_runs(image, pixel, views, photons, prior)
                             for label, image, pixel in images if label == kind]
                    if not cases:
                        continue
                    extra = ("dps@1000",) if args.paper_dps and kind in real else ()
                    emit(f"CT {kind}, {views} views, {photons} photons", cases,
                         methods + extra, CT_CLASSICAL)
    if args.only in (None, "mri"):
        prior, _ = load_named_prior(args.mri_prior or "default", "mri")
        images = [i for i in mri_images(args.images) if not args.real_only or i[0] in real]
        with tempfile.TemporaryDirectory() as tmp:
            for acceleration in (4, 8):
                for kind, levels in MRI_NOISE.items():
                    for sigma in levels:
                        cases = [mri_runs(image, acceleration, sigma, prior, Path(tmp))
                                 for label, image in images if label == kind]
                        extra = ("dps@1000",) if args.paper_dps and kind in real else ()
                        if cases:
                            emit(f"MRI {kind}, 8 coils, R={acceleration}, noise {sigma:g}",
                                 cases, methods + extra, MRI_CLASSICAL)


if __name__ == "__main__":
    main()
