"""Scan-adaptive DDS (test-time LoRA adaptation of the prior) against plain DDS, CT.

Cases: 256 x 256 parallel-beam CT at 30 and 60 views over a half turn, Poisson noise
of 2e5 photons per ray (the scans of ``bench/bench_priors.py``), on

- held-out procedural phantom slices (seeds from 10000, never used in training; the
  rows the defaults of :class:`medrecon.solvers.adapt.Adaptation` were tuned on), and
- pydicom's ``CT_small.dcm`` (128 x 128, resampled bilinearly to 256 x 256 with half
  the pixel size so that the cost is that of a 256 x 256 slice): an independent check,
  never used for tuning.

DDS runs with the shipped CT prior and the method's CT defaults, through the same
preparation as the command line (:data:`medrecon.methods.METHODS` ``["dds"]``), with
and without ``adapt``; the same generator seed, so both see the same noise. After a
warm-up the two are timed interleaved (``--repeats`` pairs; the median ratio is
printed), in wall-clock seconds and in this process's CPU seconds (the steadier measure
on a shared machine). PSNR / SSIM with data range max - min of the reference (HU).

    python bench/bench_adapt.py [--images 1] [--views 30,60] [--repeats 1]
                                [--steps S] [--lr LR] [--rank R] [--every E]
                                [--only phantom|ct_small]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from medrecon.data.phantom import ct_phantom
from medrecon.data.sinogram_simulate import simulate_sinogram
from medrecon.methods import METHODS
from medrecon.operators.ct_geometry import CTGeometry
from medrecon.priors.defaults import load_named_prior
from medrecon.solvers.adapt import Adaptation
from medrecon.solvers.dds import dds
from medrecon.studies.ct import CTStudy, image_metrics


def ct_small_256() -> tuple[np.ndarray, float] | None:
    """pydicom's CT_small.dcm in HU, resampled to 256 x 256, and its pixel size."""
    try:
        import pydicom
        from pydicom.data import get_testdata_file
    except ImportError:
        return None
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    image = torch.nn.functional.interpolate(
        torch.as_tensor(hu, dtype=torch.float32)[None, None], size=(256, 256),
        mode="bilinear", align_corners=False)[0, 0].numpy()
    return image, float(ds.PixelSpacing[0]) * hu.shape[0] / 256


def images(count: int, only: str | None) -> list[tuple[str, np.ndarray, float]]:
    out = []
    if only in (None, "phantom"):
        for k in range(count):
            phantom = ct_phantom(256, seed=10_000 + k, region=("abdomen", "thorax")[k % 2])
            out.append((f"phantom {10_000 + k}", phantom.image, phantom.pixel_size))
    if only in (None, "ct_small"):
        small = ct_small_256()
        if small is not None:
            out.append(("CT_small 256", *small))
    return out


class Case:
    """One scan, prepared once: DDS's problem and arguments as the application builds
    them; :meth:`run` reconstructs (``adapt`` or plain) and scores against the image."""

    def __init__(self, image: np.ndarray, pixel: float, views: int, prior):
        geometry = CTGeometry.parallel(image.shape, views, pixel_size=pixel)
        self.sinogram = simulate_sinogram(image, geometry, noise="poisson:2e5",
                                          generator=torch.Generator().manual_seed(views))
        study = CTStudy(Path(f"ct_{views}_views"), self.sinogram)
        record = METHODS["dds"]
        task = study.task()
        self.problem, self.arguments = record.prepare(task, record.parameters("ct"), prior,
                                                      None)

    def run(self, adapt: Adaptation | None, sigmas: torch.Tensor | None = None):
        arguments = dict(self.arguments, generator=torch.Generator().manual_seed(0))
        arguments.pop("adapt", None)  # this benchmark's setting, not the method default's
        if sigmas is not None:
            arguments["sigmas"] = sigmas
        start, cpu = time.perf_counter(), time.process_time()
        result = dds(self.problem, adapt=adapt, **arguments)
        seconds = (time.perf_counter() - start, time.process_time() - cpu)
        image = self.sinogram.to_image_units(result.image.numpy().astype(np.float64))
        return image_metrics(image, self.sinogram.reference), seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1, help="held-out phantom slices")
    parser.add_argument("--views", default="30,60")
    parser.add_argument("--repeats", type=int, default=1, help="timed pairs per case")
    parser.add_argument("--only", choices=("phantom", "ct_small"), default=None)
    defaults = Adaptation()
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--rank", type=int, default=defaults.rank)
    parser.add_argument("--every", type=int, default=defaults.every)
    args = parser.parse_args()
    adapt = Adaptation(steps=args.steps, lr=args.lr, rank=args.rank, every=args.every)
    prior, _ = load_named_prior("default", "ct")
    print(f"adaptation: {adapt}; torch threads {torch.get_num_threads()}")
    print("| case | views | plain PSNR / SSIM | adapted PSNR / SSIM | PSNR gain dB | "
          "plain s (CPU s) | adapted s (CPU s) | time ratio (CPU) | fell back |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    warmed = False
    for label, image, pixel in images(args.images, args.only):
        for views in map(int, args.views.split(",")):
            case = Case(image, pixel, views, prior)
            if not warmed:  # thread pools, allocator, first-call costs
                short = case.arguments["sigmas"][:3]
                case.run(None, short)
                case.run(adapt, short)
                warmed = True
            times: dict[str, list[tuple[float, float]]] = {"plain": [], "adapted": []}
            for _ in range(args.repeats):  # interleaved: both see the same machine load
                plain, seconds, _ = case.run(None)
                times["plain"].append(seconds)
                adapted, seconds, result = case.run(adapt)
                times["adapted"].append(seconds)
            wall, cpu = ([statistics.median(a[k] / p[k] for a, p in
                                            zip(times["adapted"], times["plain"]))
                          for k in (0, 1)])
            spent = {name: tuple(statistics.median(t[k] for t in v) for k in (0, 1))
                     for name, v in times.items()}
            print(f"| {label} | {views} | {plain['psnr']:.2f} / {plain['ssim']:.3f} | "
                  f"{adapted['psnr']:.2f} / {adapted['ssim']:.3f} | "
                  f"{adapted['psnr'] - plain['psnr']:+.2f} | "
                  f"{spent['plain'][0]:.1f} ({spent['plain'][1]:.1f}) | "
                  f"{spent['adapted'][0]:.1f} ({spent['adapted'][1]:.1f}) | "
                  f"{wall:.2f} ({cpu:.2f}) | {result.info['adaptation']['fell_back']} |",
                  flush=True)


if __name__ == "__main__":
    main()
