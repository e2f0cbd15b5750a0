"""Diffusion solvers with a trained CT prior against the best classical method.

Held-out phantom slices (seeds from 10000, never used in training: training uses
``phantom:N`` with seeds 0 .. N-1), 256 x 256, parallel beam at 30 and 60 views,
Poisson noise of 2e5 photons; TV with the command line's default weight as the
classical reference. Prints PSNR (data range max - min of the slice, HU), SSIM,
time and network evaluations per solver.

    python bench/bench_priors.py PRIOR.pt [--images 2] [--steps 50]
"""

from __future__ import annotations

import argparse
import time

import torch

from medrecon.ct_pipeline import image_metrics, reconstruct_sinogram, solver_params
from medrecon.data.phantom import MU_WATER, ct_phantom
from medrecon.data.sinogram import simulate_sinogram
from medrecon.operators.ct import CTProjector
from medrecon.operators.ct_geometry import CTGeometry
from medrecon.priors.checkpoint import build_network, read_checkpoint
from medrecon.priors.network import EDMDenoiser
from medrecon.solvers import solve
from medrecon.solvers.problem import Problem
from medrecon.solvers.schedules import karras


def attenuation_prior(path: str) -> EDMDenoiser:
    """The CT prior (trained on x = HU / 1000) mapped to attenuation: mu = mu_w (1 + x)."""
    checkpoint = read_checkpoint(path)
    net = build_network(path, checkpoint, ema=True, device="cpu").eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return EDMDenoiser(net, is_complex=False, sigma_data=checkpoint.metadata["sigma_data"],
                       scale=MU_WATER, offset=MU_WATER)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prior")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    prior = attenuation_prior(args.prior)
    sigmas = karras(0.005, 10.0, args.steps)
    runs = {
        "dds": lambda P: solve("dds", P, denoiser=prior, sigmas=sigmas, eta=0.5, gamma=1e3,
                               generator=torch.Generator().manual_seed(0)),
        "rmpvi": lambda P: solve("rmpvi", P, denoiser=prior,
                                 sigmas=karras(0.005, 10.0, args.steps // 5 + 1), inner_iter=5,
                                 generator=torch.Generator().manual_seed(0)),
        "dps": lambda P: solve("dps", P, denoiser=prior, sigmas=karras(0.005, 10.0, 4 * args.steps),
                               zeta=1.0, generator=torch.Generator().manual_seed(0)),
    }
    print(f"{'views':>5}  {'method':<7}{'PSNR dB':>9}{'SSIM':>7}{'time s':>8}{'NFE':>6}")
    for views in (30, 60):
        rows: dict[str, list] = {}
        for k in range(args.images):
            phantom = ct_phantom(256, seed=10_000 + k, region=("abdomen", "thorax")[k % 2])
            geometry = CTGeometry.parallel((256, 256), views, pixel_size=phantom.pixel_size)
            sino = simulate_sinogram(phantom.image, geometry, noise="poisson:2e5",
                                     generator=torch.Generator().manual_seed(k))
            start = time.perf_counter()
            tv = reconstruct_sinogram(sino, "tv", solver_params("tv", sino))
            rows.setdefault("tv", []).append((tv.metrics, time.perf_counter() - start, 0))
            A = CTProjector(geometry)
            problem = Problem(A, torch.as_tensor(sino.data, dtype=torch.float32),
                              sigma_y=float(2e5 ** -0.5))
            for name, run in runs.items():
                start = time.perf_counter()
                result = run(problem)
                image = sino.to_image_units(result.image.numpy().astype("float64"))
                rows.setdefault(name, []).append((image_metrics(image, sino.reference),
                                                  time.perf_counter() - start, result.nfe))
        for name, items in rows.items():
            n = len(items)
            psnr = sum(m["psnr"] for m, _, _ in items) / n
            ssim = sum(m["ssim"] for m, _, _ in items) / n
            seconds = sum(t for _, t, _ in items) / n
            print(f"{views:>5}  {name:<7}{psnr:>9.2f}{ssim:>7.3f}{seconds:>8.1f}"
                  f"{items[0][2]:>6d}", flush=True)


if __name__ == "__main__":
    main()
