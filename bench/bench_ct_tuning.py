"""DDS and RMP-VI settings on held-out generated CT crops of CT_small's size (tuning set).

The images are the central 128 x 128 of ``ct_mix_phantom(256, seed)`` for seeds 50000 to
50003 (the default CT prior saw ``ctmix`` seeds 0 .. 767 and phantom seeds 0 .. 511):
tissue filling the field of view at 0.5 to 1.6 mm pixels, as in pydicom's CT_small.dcm,
which is never used here. Each is scanned at 30 parallel views with 2e5 photons and at 60
views with 2e4 photons. Every setting runs through :func:`medrecon.run.reconstruct_study`
(the path of the command line); prints mean PSNR (dB, data range max - min) over all
scans and per scan kind, and seconds.

    python bench/bench_ct_tuning.py [--settings JSON] [--prior REFERENCE]

``JSON`` is a list of ``[method, parameters]``; the default compares TV, DDS and RMP-VI
at their defaults and DDS and RMP-VI with one change at a time (about 25 minutes on one
thread). ``--prior`` takes a prior reference (:mod:`medrecon.priors.defaults`; default: the
shipped CT prior), to compare a retrained prior on the same scans.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from medrecon.data.phantom import ct_mix_phantom
from medrecon.data.sinogram_simulate import simulate_sinogram
from medrecon.operators.ct_geometry import CTGeometry
from medrecon.priors.defaults import load_named_prior
from medrecon.run import reconstruct_study
from medrecon.studies.ct import CTStudy

SEEDS = (50_000, 50_001, 50_002, 50_003)
SCANS = ((30, "2e5"), (60, "2e4"))
DEFAULT_SETTINGS = [
    ["tv", {}], ["dds", {}], ["rmpvi", {}],
    ["dds", {"eta": 0.5}], ["dds", {"eta": 0.0}],
    ["dds", {"sigma_min": 0.005}], ["dds", {"sigma_min": 0.05}], ["dds", {"sigma_min": 0.1}],
    ["dds", {"relative_gamma": 30}], ["dds", {"relative_gamma": 300}],
    ["dds", {"n_samples": 4}], ["rmpvi", {"sigma_min": 0.02}],
    ["rmpvi", {"gamma": 1.0}], ["rmpvi", {"gamma": 4.0}],
    ["rmpvi", {"steps": 11, "inner_iter": 5}], ["rmpvi", {"steps": 3, "inner_iter": 25}],
]


def scans() -> list[tuple[str, object]]:
    """``(label, sinogram)`` of every held-out crop under every scan of :data:`SCANS`."""
    out = []
    for seed in SEEDS:
        phantom = ct_mix_phantom(256, seed=seed)
        image = phantom.image[64:192, 64:192].astype(np.float32)
        for views, photons in SCANS:
            geometry = CTGeometry.parallel(image.shape, views, pixel_size=phantom.pixel_size)
            sinogram = simulate_sinogram(image, geometry, noise=f"poisson:{photons}",
                                         generator=torch.Generator().manual_seed(views))
            out.append((f"{views} views, {photons}", sinogram))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=json.dumps(DEFAULT_SETTINGS))
    parser.add_argument("--prior", default="default")
    args = parser.parse_args()
    prior, _ = load_named_prior(args.prior, "ct")
    cases = scans()
    kinds = [f"{v} views, {p}" for v, p in SCANS]
    print("| method | parameters | mean PSNR | " + " | ".join(kinds) + " | s |")
    print("|---|---|---|" + "---|" * len(kinds) + "---|", flush=True)
    for name, params in json.loads(args.settings):
        start, psnr = time.perf_counter(), {}
        for label, sinogram in cases:
            result = reconstruct_study(CTStudy(Path(label), sinogram), name, params,
                                       prior=prior, generator=torch.Generator().manual_seed(0))
            psnr.setdefault(label, []).append(result.metrics["psnr"])
        every = [v for values in psnr.values() for v in values]
        cells = " | ".join(f"{np.mean(psnr[k]):.2f}" for k in kinds)
        print(f"| {name} | {json.dumps(params)} | {np.mean(every):.2f} | {cells} | "
              f"{time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
