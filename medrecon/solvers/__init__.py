"""Reconstruction methods, each a plain function over a :class:`Problem`.

:data:`SOLVERS` is the one explicit name-to-function table (no reflection, no
registration by import); :func:`solve` looks a name up, runs it and records the
wall time in the result's ``timings``.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from medrecon.solvers.cgsense import cgsense
from medrecon.solvers.classical import cgls, fbp, sirt, tv
from medrecon.solvers.dds import dds
from medrecon.solvers.dps import dps
from medrecon.solvers.l1wavelet import l1wavelet
from medrecon.solvers.problem import Callback, Problem, Reconstruction
from medrecon.solvers.rmpvi import rmpvi
from medrecon.solvers.zero_filled import zero_filled

SOLVERS = {"fbp": fbp, "cgls": cgls, "sirt": sirt, "tv": tv,
           "zf": zero_filled, "cgsense": cgsense, "l1wavelet": l1wavelet,
           "dps": dps, "dds": dds, "rmpvi": rmpvi}

__all__ = ["SOLVERS", "Problem", "Reconstruction", "solve"]


def solve(method: str, problem: Problem, *, callback: Callback | None = None,
          **params) -> Reconstruction:
    """Run solver ``method`` on ``problem`` with keyword ``params``; adds ``timings["total"]``."""
    if method not in SOLVERS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(SOLVERS)}")
    start = time.perf_counter()
    result = SOLVERS[method](problem, callback=callback, **params)
    if problem.operator.device.type == "cuda":
        torch.cuda.synchronize(problem.operator.device)
    elapsed = time.perf_counter() - start
    return dataclasses.replace(result, timings={**result.timings, "total": elapsed})
