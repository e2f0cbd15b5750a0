"""The table of bench_ct_tuning.py and bench_mri_tuning.py: one row per setting, the mean
PSNR over every scan and per scan kind, and seconds."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from medrecon.run import reconstruct_study


def print_settings_table(settings: Sequence[tuple[str, dict[str, Any]]],
                         cases: Sequence[tuple[str, Callable[[], Any]]], kinds: Sequence[str],
                         prior) -> None:
    """Reconstruct every case (``(kind label, a function opening its study)``, a
    :class:`medrecon.studies.Study`, which is a context manager)
    with every ``(method, parameters)`` of ``settings`` through
    :func:`medrecon.run.reconstruct_study`, seed 0; print a Markdown row per setting."""
    print("| method | parameters | mean PSNR | " + " | ".join(kinds) + " | s |")
    print("|---|---|---|" + "---|" * len(kinds) + "---|", flush=True)
    for name, params in settings:
        start, psnr = time.perf_counter(), {}
        for label, opened in cases:
            with opened() as study:
                result = reconstruct_study(study, name, params, prior=prior,
                                           generator=torch.Generator().manual_seed(0))
            psnr.setdefault(label, []).append(result.metrics["psnr"])
        every = [v for values in psnr.values() for v in values]
        cells = " | ".join(f"{np.mean(psnr[k]):.2f}" for k in kinds)
        print(f"| {name} | {json.dumps(params)} | {np.mean(every):.2f} | {cells} | "
              f"{time.perf_counter() - start:.0f} |", flush=True)
