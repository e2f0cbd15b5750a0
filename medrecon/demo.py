"""``medrecon demo``: the main job on bundled data with the bundled default priors.

Two studies, each reconstructed by a classical protocol and a diffusion protocol
from ``protocols/`` through the same runner as ``medrecon run``:

- sparse-view CT: the bundled 60-view sinogram of a 256 x 256 abdomen phantom
  (``ct_sparse_60.h5``), with ``ct-sparse-tv`` and ``ct-sparse-dds``;
- accelerated MRI: the bundled 8-coil R = 4 k-space of a held-out brain slice
  (``mri_brain_r4.h5``), with ``mri-cartesian-l1wavelet`` and ``mri-cartesian-dds``.

Every result is written as NIfTI, a PNG figure and a JSON report into the output
folder, and a table of PSNR, SSIM, time and network evaluations is printed with
the diffusion result beside the classical one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from medrecon.cohort import study_name
from medrecon.data.samples import CT_SAMPLE, MRI_SAMPLE, sample_path
from medrecon.errors import MedreconError
from medrecon.protocol import load_protocol
from medrecon.run import prepare_output, run_protocol

DEMO_STUDIES = (
    ("CT", CT_SAMPLE, ("ct-sparse-tv", "ct-sparse-dds")),
    ("MRI", MRI_SAMPLE, ("mri-cartesian-l1wavelet", "mri-cartesian-dds")),
)


def run_demo(output: Path, device: torch.device, echo: Callable[[str], None]) -> list[dict]:
    """Run the demo into folder ``output`` (created if missing); returns the table rows."""
    output = prepare_output(output)
    overrides = [f"device={'cpu' if device.type == 'cpu' else 'cuda'}"]
    rows = []
    for modality, sample, names in DEMO_STUDIES:
        path = sample_path(sample)
        echo(f"{modality}: {sample}")
        for name in names:
            protocol = load_protocol(name, overrides)
            summary = run_protocol(protocol, [path], output, overwrite=True, echo=echo)
            if summary.failed:
                raise MedreconError(f"demo: {name} failed on {sample}: "
                                    f"{summary.failed[0].message}")
            stem = protocol.outputs.stem(study_name(path, path.parent), protocol.solver.name)
            report = json.loads((output / f"{stem}.json").read_text())
            rows.append({"study": modality, "protocol": name, "method": report["solver"],
                         **report["metrics"], "seconds": report["timings"]["total"],
                         "nfe": report["nfe"]})
    echo(f"{'study':<6}{'protocol':<26}{'PSNR dB':>9}{'SSIM':>8}{'time s':>8}{'NFE':>6}")
    for row in rows:
        echo(f"{row['study']:<6}{row['protocol']:<26}{row['psnr']:>9.2f}{row['ssim']:>8.3f}"
             f"{row['seconds']:>8.1f}{row['nfe']:>6d}")
    echo(f"figures, NIfTI volumes and JSON reports in {output}/")
    return rows
