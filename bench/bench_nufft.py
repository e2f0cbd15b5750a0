"""NUFFT speed benchmark: forward, adjoint, forward + adjoint and the Toeplitz normal.

Multi-coil radial MRI (:class:`~medrecon.operators.nufft.NonCartesianMRI`, complex64):
by default a 256 x 256 image, 8 coils and 804 golden-angle half-spokes of 256 samples
(the sample count of 402 full spokes of 512 samples, 205,824 per coil). Prints the
median wall time of repeats for each operation, the one-off set-up (interpolation
tables and Toeplitz kernel), the relative difference between the Toeplitz normal and
adjoint(forward), and the speed-up of the Toeplitz normal over forward + adjoint, on
CPU and on CUDA when present.

On a small shared CPU, OpenMP threads that spin while waiting can slow torchkbnufft's
forked interpolation many times over (2 cores under load: adjoint 0.43 s with one
thread, 7 s with two); ``--threads 1`` or ``OMP_WAIT_POLICY=PASSIVE`` avoid that.

    python bench/bench_nufft.py [--size 256] [--coils 8] [--spokes 804] [--readout 256]
                                [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from medrecon.operators.nufft import NonCartesianMRI
from medrecon.operators.sampling import radial_trajectory


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _maps(coils: int, size: int, device: torch.device) -> torch.Tensor:
    """Smooth synthetic coil maps (Gaussian magnitude, linear phase), sum of squares 1."""
    axis = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    angles = torch.arange(coils) * 2 * torch.pi / coils
    cy, cx = torch.sin(angles)[:, None, None], torch.cos(angles)[:, None, None]
    magnitude = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2))
    maps = magnitude * torch.exp(1j * torch.pi * (cy * xx - cx * yy))
    maps = maps / torch.linalg.vector_norm(maps, dim=0, keepdim=True)
    return maps.to(device=device, dtype=torch.complex64)


def run(device: torch.device, size: int, coils: int, spokes: int, readout: int,
        repeats: int) -> str:
    ktraj = radial_trajectory(spokes, readout, (size, size))
    maps = _maps(coils, size, device)
    start = time.perf_counter()
    A = NonCartesianMRI((size, size), ktraj, maps, toeplitz=True, device=device)
    _sync(device)
    setup = time.perf_counter() - start
    x = torch.randn(size, size, dtype=torch.complex64,
                    generator=torch.Generator().manual_seed(0)).to(device)
    y = A(x)
    with torch.no_grad():
        forward = _timed(lambda: A(x), repeats, device)
        adjoint = _timed(lambda: A.adjoint(y), repeats, device)
        both = _timed(lambda: A.adjoint(A(x)), repeats, device)
        toeplitz = _timed(lambda: A.normal(x), repeats, device)
        exact = A.adjoint(A(x))
        difference = float(torch.linalg.vector_norm(A.normal(x) - exact)
                           / torch.linalg.vector_norm(exact))
    return (f"{device.type:<7}{size:>5}{coils:>6}{ktraj.shape[1]:>9}{setup:>9.2f}"
            f"{forward * 1e3:>10.1f}{adjoint * 1e3:>10.1f}{both * 1e3:>10.1f}"
            f"{toeplitz * 1e3:>10.1f}{both / toeplitz:>8.1f}{difference:>10.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--spokes", type=int, default=804)
    parser.add_argument("--readout", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available()
                                       else [])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, complex64, radial golden angle: "
          f"{args.spokes} half-spokes x {args.readout} samples")
    print(f"{'device':<7}{'size':>5}{'coils':>6}{'samples':>9}{'setup s':>9}{'fwd ms':>10}"
          f"{'adj ms':>10}{'f+a ms':>10}{'toep ms':>10}{'ratio':>8}{'rel diff':>10}")
    for device in devices:
        print(run(device, args.size, args.coils, args.spokes, args.readout, args.repeats),
              flush=True)


if __name__ == "__main__":
    main()
