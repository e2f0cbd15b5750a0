"""``medrecon demo``: the main job on bundled data.

Sparse-view CT: the bundled 60-view sinogram of a 256 x 256 abdomen phantom is
reconstructed with FBP, CGLS and TV; each result is written as a PNG figure
(reconstruction, reference, error) and a NIfTI volume, and a table of PSNR,
SSIM and time is printed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from medrecon.ct_pipeline import reconstruct_sinogram, solver_params
from medrecon.data.atomic import check_output_path
from medrecon.data.samples import CT_SAMPLE, sample_path
from medrecon.data.sinogram import read_sinogram
from medrecon.errors import InputError
from medrecon.outputs import write_reconstruction
from medrecon.progress import ProgressBar

DEMO_CT_METHODS = ("fbp", "cgls", "tv")


def run_demo(output: Path, device: torch.device, echo: Callable[[str], None]) -> list[dict]:
    """Run the CT demo into folder ``output`` (created if missing); returns the table rows."""
    check_output_path(output)
    if output.exists() and not output.is_dir():
        raise InputError(output, "output", "is a file; the demo writes into a folder")
    output.mkdir(exist_ok=True)
    sinogram = read_sinogram(sample_path())
    g = sinogram.geometry
    echo(f"sparse-view CT: {CT_SAMPLE}, {g.image_shape[0]}x{g.image_shape[1]} image, "
         f"{g.n_views} {g.beam}-beam views, noise {sinogram.noise}")
    rows = []
    for method in DEMO_CT_METHODS:
        params = solver_params(method, sinogram, device=device)
        with ProgressBar(method) as progress:
            result = reconstruct_sinogram(sinogram, method, params, device=device,
                                          callback=progress)
        for suffix in (".png", ".nii.gz"):
            write_reconstruction(result.volume, output / f"ct_{method}{suffix}", method=method,
                                 reference=sinogram.reference, metrics=result.metrics)
        rows.append({"method": method, **result.metrics,
                     "iterations": result.reconstruction.iterations,
                     "seconds": result.reconstruction.timings["total"]})
    echo(f"{'method':<8}{'PSNR dB':>9}{'SSIM':>8}{'iters':>7}{'time s':>8}")
    for row in rows:
        echo(f"{row['method']:<8}{row['psnr']:>9.2f}{row['ssim']:>8.3f}{row['iterations']:>7d}"
             f"{row['seconds']:>8.2f}")
    echo(f"figures and NIfTI volumes in {output}/")
    return rows
