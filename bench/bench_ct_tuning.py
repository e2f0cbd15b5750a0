"""DDS and RMP-VI settings on held-out generated CT crops of CT_small's size (tuning set).

The images are the central 128 x 128 of ``ct_mix_phantom(256, seed)`` for seeds 50000 to
50003 (the default CT prior saw ``ctmix`` seeds 0 .. 767 and phantom seeds 0 .. 511):
tissue filling the field of view at 0.5 to 1.6 mm pixels, as in pydicom's CT_small.dcm,
which is never used here. Each is scanned at 30 parallel views with 2e5 photons and at 60
views with 2e4 photons. Every setting runs through :func:`medrecon.run.reconstruct_study`
(the path of the command line); prints mean PSNR (dB, data range max - min) over all
scans and per scan kind, and seconds.

    python bench/bench_ct_tuning.py [--settings JSON] [--prior REFERENCE]
                                    [--scans 30:2e5,60:2e4]

``JSON`` is a list of ``[method, parameters]``; the default compares TV, DDS and RMP-VI
at their defaults and DDS and RMP-VI with one change at a time (about 25 minutes on one
thread). ``--prior`` takes a prior reference (:mod:`medrecon.priors.defaults`; default: the
shipped CT prior), to compare a retrained prior on the same scans; ``--scans`` lists
``views:photons`` (default: :data:`SCANS`).
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import numpy as np
from bench_priors import ct_sinogram
from settings_table import print_settings_table

from medrecon.data.phantom import ct_mix_phantom
from medrecon.priors.defaults import load_named_prior
from medrecon.studies.ct import CTStudy

SEEDS = (50_000, 50_001, 50_002, 50_003)
SCANS = ((30, "2e5"), (60, "2e4"))
DEFAULT_SETTINGS = [
    ["tv", {}], ["dds", {}], ["rmpvi", {}],
    ["dds", {"eta": 0.5}], ["dds", {"eta": 0.0}],
    ["dds", {"noise_sigma_min": 0.0, "sigma_min": 0.02}], ["dds", {"noise_sigma_min": 2.0}],
    ["dds", {"noise_sigma_min": 4.0}],
    ["dds", {"relative_gamma": 30}], ["dds", {"relative_gamma": 300}],
    ["dds", {"n_samples": 4}], ["rmpvi", {"sigma_min": 0.02}],
    ["rmpvi", {"gamma": 1.0}], ["rmpvi", {"gamma": 4.0}],
    ["rmpvi", {"steps": 11, "inner_iter": 5}], ["rmpvi", {"steps": 3, "inner_iter": 25}],
]


def scans(kinds: tuple[tuple[int, str], ...] = SCANS) -> list[tuple[str, object]]:
    """``(label, sinogram)`` of every held-out crop under every ``(views, photons)`` of
    ``kinds``."""
    out = []
    for seed in SEEDS:
        phantom = ct_mix_phantom(256, seed=seed)
        image = phantom.image[64:192, 64:192].astype(np.float32)
        for views, photons in kinds:
            out.append((f"{views} views, {photons}",
                        ct_sinogram(image, phantom.pixel_size, views, photons)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=json.dumps(DEFAULT_SETTINGS))
    parser.add_argument("--prior", default="default")
    parser.add_argument("--scans", default=",".join(f"{v}:{p}" for v, p in SCANS))
    args = parser.parse_args()
    prior, _ = load_named_prior(args.prior, "ct")
    chosen = tuple((int(v), p) for v, p in (s.split(":") for s in args.scans.split(",")))
    cases = scans(chosen)
    kinds = [f"{v} views, {p}" for v, p in chosen]
    print_settings_table(json.loads(args.settings),
                         [(label, partial(CTStudy, Path(label), sinogram))
                          for label, sinogram in cases], kinds, prior)


if __name__ == "__main__":
    main()
