"""Diffusion solvers on a 256 x 256 CT problem: wall time, network evaluations, overhead.

For DPS, DDS and RMP-VI with a small untrained network prior (EDM-preconditioned
:class:`~medrecon.priors.network.TinyDenoiserNet`; the timing does not depend on
the weights), prints the wall time, the number of network evaluations (NFE), the
time spent in the network and in the CT operator, and the solver overhead: the
fraction of the wall time outside both.

    python bench/bench_diffusion.py [--size 256] [--views 60] [--steps 50] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from medrecon.data.phantom import ct_phantom, hu_to_mu
from medrecon.operators.base import LinearOperator
from medrecon.operators.ct import CTProjector
from medrecon.operators.ct_geometry import CTGeometry
from medrecon.priors.network import EDMDenoiser, TinyDenoiserNet
from medrecon.solvers.dds import dds
from medrecon.solvers.dps import dps
from medrecon.solvers.problem import Problem
from medrecon.solvers.rmpvi import rmpvi
from medrecon.solvers.schedules import karras


class Stopwatch:
    """Accumulates the wall time of the calls it wraps (synchronising CUDA)."""

    def __init__(self, device: torch.device):
        self.seconds, self.device = 0.0, device

    def __enter__(self):
        self._start = time.perf_counter()

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - self._start


class TimedOperator(LinearOperator):
    """``A`` with the time of every forward/adjoint/normal added to a stopwatch."""

    def __init__(self, op: LinearOperator, watch: Stopwatch):
        super().__init__(op.domain_shape, op.range_shape, op.dtype, op.device,
                         name=f"timed {op.name}")
        self.op, self.watch = op, watch

    def _forward(self, x):
        with self.watch:
            return self.op(x)

    def _adjoint(self, y):
        with self.watch:
            return self.op.H(y)


class TimedDenoiser(torch.nn.Module):
    """The denoiser with its forward passes and the network's backward passes
    (through module backward hooks) added to a stopwatch."""

    def __init__(self, denoiser: EDMDenoiser, watch: Stopwatch):
        super().__init__()
        self.denoiser, self.watch = denoiser, watch
        self.is_complex, self.scale, self.offset = False, denoiser.scale, denoiser.offset
        denoiser.net.register_full_backward_pre_hook(lambda *_: watch.__enter__())
        denoiser.net.register_full_backward_hook(lambda *_: watch.__exit__())

    def forward(self, x, sigma):
        with self.watch:
            return self.denoiser(x, sigma)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=60)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--width", type=int, default=32, help="network width (channels)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    phantom = ct_phantom(args.size, seed=5)
    geometry = CTGeometry.parallel((args.size, args.size), args.views,
                                   pixel_size=phantom.pixel_size)
    truth = torch.as_tensor(hu_to_mu(phantom.image), dtype=torch.float32, device=device)
    net = TinyDenoiserNet(1, args.width).to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    base = EDMDenoiser(net, is_complex=False, scale=0.02, offset=0.0)
    sigmas = karras(0.01, 20.0, args.steps, device=device)
    runs = {
        "dps": lambda P, D: dps(P, D, sigmas, zeta=0.5, generator=_gen(device)),
        "dds": lambda P, D: dds(P, D, sigmas, generator=_gen(device)),
        "rmpvi": lambda P, D: rmpvi(P, D, karras(0.01, 20.0, args.steps // 5 + 1, device=device),
                                    inner_iter=5, generator=_gen(device)),
    }
    print(f"torch {torch.__version__}, {device}, threads {torch.get_num_threads()}; CT "
          f"{args.size}^2, {args.views} views; network width {args.width}, "
          f"{sum(p.numel() for p in net.parameters())} parameters")
    print(f"{'solver':<8}{'NFE':>6}{'wall s':>9}{'network s':>11}{'operator s':>12}"
          f"{'overhead':>10}")
    for name, run in runs.items():
        net_watch, op_watch = Stopwatch(device), Stopwatch(device)
        A = TimedOperator(CTProjector(geometry, device=device), op_watch)
        with torch.no_grad():
            y = A(truth)
        op_watch.seconds = 0.0
        problem = Problem(A, y, sigma_y=0.01)
        start = time.perf_counter()
        result = run(problem, TimedDenoiser(base, net_watch))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
        overhead = (wall - net_watch.seconds - op_watch.seconds) / wall
        print(f"{name:<8}{result.nfe:>6}{wall:>9.2f}{net_watch.seconds:>11.2f}"
              f"{op_watch.seconds:>12.2f}{overhead:>10.1%}", flush=True)


def _gen(device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(0)


if __name__ == "__main__":
    main()
