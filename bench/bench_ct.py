"""CT speed benchmark: projector and classical solver wall times.

Prints, for 256^2 and 512^2 parallel-beam (and fan-beam) scans, the forward and
back projection time per slice (median of repeats) and the FBP, CGLS (50
iterations) and TV (200 iterations) reconstruction times, on CPU and on CUDA
when present.

    python bench/bench_ct.py [--sizes 256 512] [--views 60] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medrecon.data.phantom import ct_phantom, hu_to_mu
from medrecon.operators.ct import CTProjector, cuda_available
from medrecon.operators.ct_geometry import CTGeometry
from medrecon.solvers import solve
from medrecon.solvers.problem import Problem


def _timed(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _row(device: torch.device, beam: str, mu: torch.Tensor, pixel_size: float, views: int,
         repeats: int) -> str:
    size = mu.shape[-1]
    if beam == "parallel":
        g = CTGeometry.parallel((size, size), views, pixel_size=pixel_size)
    else:
        g = CTGeometry.fan((size, size), views, pixel_size=pixel_size)
    A = CTProjector(g, device=device)
    x = mu.to(device)
    y = A(x)
    fp = _timed(lambda: A(x), repeats, device)
    bp = _timed(lambda: A.adjoint(y), repeats, device)
    problem = Problem(A, y)
    fbp = _timed(lambda: solve("fbp", problem), 1, device)
    cgls = _timed(lambda: solve("cgls", problem, n_iter=50, tol=0.0), 1, device)
    tv = _timed(lambda: solve("tv", problem, weight=1e-4, n_iter=200), 1, device)
    return (f"{device.type:<7}{beam:<9}{size:>5}{views:>6}{fp * 1e3:>9.1f}{bp * 1e3:>9.1f}"
            f"{fbp:>8.2f}{cgls:>10.2f}{tv:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--views", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if cuda_available() else [])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"devices {[d.type for d in devices]}")
    print(f"{'device':<7}{'beam':<9}{'size':>5}{'views':>6}{'FP ms':>9}{'BP ms':>9}"
          f"{'FBP s':>8}{'CGLS50 s':>10}{'TV200 s':>9}")
    for device in devices:
        for size in args.sizes:
            phantom = ct_phantom(size, seed=0)
            mu = torch.as_tensor(hu_to_mu(phantom.image)).float()
            for beam in ("parallel", "fan"):
                print(_row(device, beam, mu, phantom.pixel_size, args.views, args.repeats),
                      flush=True)


if __name__ == "__main__":
    main()
