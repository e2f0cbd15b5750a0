"""Site fine-tuning (``medrecon train-prior --init``) measured end to end.

The "site" is procedural CT anatomy at a field of view the first-stage default prior
never saw: abdomen and thorax slices at a 250 mm display field of view (0.98 mm pixels,
256 x 256; the first stage's ``phantom`` slices are 400 mm, 1.56 mm pixels, while the
later stages' ``ctmix`` slices span 0.5 to 1.6 mm). It has 96 training slices, written
as 6 DICOM series of 16 (phantom seeds 20000-20095), and 4 held-out slices (seeds
30000-30003), scanned at 30 parallel views with Poisson noise of 2e5 photons. The prior
``--init`` (a CT prior reference: ``default``, or an earlier default exported with
``git show f92e4cf:data/priors/ct.pt > FIRST.pt``) is fine-tuned on the DICOM folder
through :func:`medrecon.priors.training.train_prior_main` (the ``train-prior``
command's path) for ``--steps`` steps (default: the command's 300). Then TV, DDS and
RMP-VI at their defaults reconstruct the held-out slices and pydicom's ``CT_small.dcm``
(the sinograms of ``bench/bench_priors.py``; evaluation only) with the init and with the
fine-tuned prior, through :func:`medrecon.run.reconstruct_study` (seed 0). Prints a
Markdown table: mean PSNR (dB, data range max - min) and SSIM per scan kind, the
held-out slices' PSNRs, and the training time.

    python bench/bench_site_finetune.py [--steps 300] [--init default] [--workdir DIR]
                                        [--also phantom:512,ctmix:768]

``--also`` adds training sources to the site's folder (generated ``phantom:N`` /
``ctmix:N``, as in the default prior's recipe, or other folders), to keep what the init
knows while it learns the site.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from bench_priors import _study_run, ct_images, ct_sinogram

from medrecon.data.dicom import write_dicom_series
from medrecon.data.phantom import ct_phantom
from medrecon.data.volume import Volume
from medrecon.priors.defaults import load_named_prior
from medrecon.priors.training import train_prior_main
from medrecon.studies.ct import CTStudy

PIXEL = 250 / 256
TRAIN_SEEDS = range(20_000, 20_096)
HELDOUT_SEEDS = range(30_000, 30_004)
METHODS = ("tv", "dds", "rmpvi")


def site_slice(seed: int) -> np.ndarray:
    """One slice of the site in HU: a phantom at the site's 250 mm field of view."""
    return ct_phantom(256, seed=seed, region=("abdomen", "thorax")[seed % 2],
                      pixel_size=PIXEL).image.astype(np.float32)


def write_site(folder: Path) -> None:
    """The site's training scans: 6 DICOM series of 16 slices."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in range(6):
        seeds = TRAIN_SEEDS[16 * p:16 * (p + 1)]
        volume = Volume(np.stack([site_slice(s) for s in seeds]), spacing=(5.0, PIXEL, PIXEL),
                        modality="CT", units="HU")
        write_dicom_series(volume, folder / f"patient{p:02d}", modality="CT",
                           series_description="site CT")


def cases() -> list[tuple[str, object]]:
    """``(kind, sinogram)``: the held-out site slices and CT_small."""
    out = [("site held-out, 30 views 2e5", ct_sinogram(site_slice(s), PIXEL, 30, "2e5"))
           for s in HELDOUT_SEEDS]
    for _, hu, pixel in ct_images(0):  # no phantoms: CT_small alone, if pydicom has it
        for views, photons in ((30, "2e5"), (60, "2e4")):
            out.append((f"CT_small, {views} views {photons}",
                        ct_sinogram(hu, pixel, views, photons)))
    return out


def evaluate(method: str, prior, scans) -> dict[str, list[tuple[float, float]]]:
    """``{kind: [(PSNR, SSIM) per scan]}`` of ``method`` at its defaults with ``prior``."""
    scores: dict[str, list[tuple[float, float]]] = {}
    for kind, sino in scans:
        metrics, _ = _study_run(partial(CTStudy, Path(kind), sino), prior)(method)
        scores.setdefault(kind, []).append((metrics["psnr"], metrics["ssim"]))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--init", default="default")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--also", default="", help="more training sources, comma-separated")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        write_site(work / "scans")
        start = time.perf_counter()
        sources = [work / "scans", *filter(None, args.also.split(","))]
        tuned_path = train_prior_main(sources, modality="ct", init=args.init,
                                      steps=args.steps, output=work / "ct_site.pt",
                                      log_every=10_000)
        seconds = time.perf_counter() - start
        priors = {"init": load_named_prior(args.init, "ct")[0],
                  "fine-tuned": load_named_prior(str(tuned_path), "ct")[0]}
        scans = cases()
        kinds = list(dict.fromkeys(kind for kind, _ in scans))
        print("| method | prior | " + " | ".join(f"{k} PSNR / SSIM" for k in kinds)
              + " | held-out slices |")
        print("|---|---|" + "---|" * len(kinds) + "---|", flush=True)
        for method in METHODS:
            for label, prior in priors.items() if method != "tv" else [("none", None)]:
                scores = evaluate(method, prior, scans)
                cells = " | ".join(
                    f"{np.mean([p for p, _ in scores[k]]):.2f} / "
                    f"{np.mean([s for _, s in scores[k]]):.3f}" for k in kinds)
                slices = " ".join(f"{p:.2f}" for p, _ in scores[kinds[0]])
                print(f"| {method} | {label} | {cells} | {slices} |", flush=True)
    print(f"\nfine-tuning: {args.steps or 'default'} steps in {seconds:.0f} s "
          f"({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
