"""DDS and RMP-VI settings on held-out generated MRI slices of MR_small's size (tuning set).

The images are held-out MNI152 slices resampled so that the head fills a 64 x 64 field
of view (:func:`bench_prior_resolution.fov_filling_slice`, seeds 10000 to 10003: slices
the default MRI prior never saw; ``--kind head``: heads of the mixed MR family made from
those held-out slices, :func:`medrecon.data.mr_mix.head_slice`, with skull, scalp and a
drawn contrast), with 8 simulated coils, 2D Poisson-disc masks with a
12 x 12 centre at R = 4 and 8 and complex Gaussian noise 1e-3 and 2e-2 of the image
(bench_priors' MR_small rows, on images never used for evaluation there; pydicom's
MR_small.dcm is never used here). Every setting runs through
:func:`medrecon.run.reconstruct_study` (the path of the command line); prints mean PSNR
(dB) over all scans and per scan kind, and seconds.

    python bench/bench_mri_tuning.py [--settings JSON] [--images 4] [--prior REFERENCE]
                                     [--kind mni|head]

``JSON`` is a list of ``[method, parameters]`` (default: L1-wavelet, TV, DDS and RMP-VI
at their defaults); ``--prior`` takes a prior reference
(:mod:`medrecon.priors.defaults`; default: the shipped MRI prior).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from functools import partial
from pathlib import Path

from bench_prior_resolution import fov_filling_slice
from settings_table import print_settings_table

from medrecon.data.kspace_simulate import simulate_kspace
from medrecon.data.kspace_write import write_kspace_file
from medrecon.priors.defaults import load_named_prior
from medrecon.studies import open_study

FIRST_SEED = 10_000
SCANS = ((4, 1e-3), (4, 2e-2), (8, 1e-3), (8, 2e-2))
DEFAULT_SETTINGS = [["l1wavelet", {}], ["tv", {}], ["dds", {}], ["rmpvi", {}]]


def write_scans(folder: Path, images: int, kind: str = "mni") -> list[tuple[str, Path]]:
    """``(label, k-space file)`` of every held-out slice under every scan of :data:`SCANS`."""
    out = []
    for k in range(images):
        image = fov_filling_slice(FIRST_SEED + k, kind=kind)[None]
        for acceleration, sigma in SCANS:
            sim = simulate_kspace(image, coils=8, pattern="poisson", acceleration=acceleration,
                                  center_fraction=0.19, sigma=sigma, seed=acceleration)
            path = folder / f"r{acceleration}_{sigma:g}_{k}.h5"
            write_kspace_file(path, sim.kspace, mask=sim.mask, trajectory=None,
                              reference=sim.reference, image_shape=sim.image_shape)
            out.append((f"R={acceleration}, {sigma:g}", path))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=json.dumps(DEFAULT_SETTINGS))
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--prior", default="default")
    parser.add_argument("--kind", choices=("mni", "head"), default="mni")
    args = parser.parse_args()
    prior, _ = load_named_prior(args.prior, "mri")
    kinds = [f"R={r}, {s:g}" for r, s in SCANS]
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(label, partial(open_study, path, "mri"))
                 for label, path in write_scans(Path(tmp), args.images, args.kind)]
        print_settings_table(json.loads(args.settings), cases, kinds, prior)


if __name__ == "__main__":
    main()
