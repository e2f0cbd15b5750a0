"""Does ``OMP_WAIT_POLICY=PASSIVE`` (:func:`medrecon.threads.apply_thread_policy`) matter?

Runs a DDS/DPS-like network loop, forward and backward of medrecon's default UNet
(:class:`medrecon.priors.unet.UNetBackbone`, EDM-wrapped) on a batch of images, in fresh
subprocesses with and without ``OMP_WAIT_POLICY=PASSIVE`` (interleaved, torch's default
thread count), while other processes keep ``--busy`` cores busy (as on a shared
machine). Prints each run's loop time, the medians and the ratio passive / default.

    python bench/bench_threads.py [--busy 1] [--repeats 3] [--iters 20] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

CHILD = """
import sys, time
import torch
from medrecon.priors.network import EDMDenoiser
from medrecon.priors.unet import UNetBackbone, UNetConfig
iters, size, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
prior = EDMDenoiser(UNetBackbone(UNetConfig()), is_complex=False)
x = torch.randn(batch, size, size)
def step():
    xi = x.clone().requires_grad_(True)
    d = prior(xi, 0.5)
    (d - x).square().sum().backward()   # a DPS-like gradient through the network
    return xi.grad
step()  # warm-up
start = time.perf_counter()
for _ in range(iters):
    step()
print(f"{time.perf_counter() - start:.4f} {torch.get_num_threads()}")
"""


def run_child(passive: bool, iters: int, size: int, batch: int) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    out = subprocess.run([sys.executable, "-c", CHILD, str(iters), str(size), str(batch)],
                         env=env, check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=1, help="CPU-busy processes alongside")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.busy)]
    times: dict[str, list[float]] = {"default": [], "PASSIVE": []}
    try:
        for i in range(args.repeats):
            for name in ("default", "PASSIVE") if i % 2 == 0 else ("PASSIVE", "default"):
                seconds, threads = run_child(name == "PASSIVE", args.iters, args.size,
                                             args.batch)
                times[name].append(seconds)
                print(f"run {i}: {name:<8} {seconds:8.2f} s  ({threads} torch threads, "
                      f"{args.busy} busy processes, {os.cpu_count()} CPUs)", flush=True)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"median default {medians['default']:.2f} s, PASSIVE {medians['PASSIVE']:.2f} s, "
          f"ratio PASSIVE / default {medians['PASSIVE'] / medians['default']:.2f} "
          f"({args.iters} forward+backward of {args.batch}x{args.size}x{args.size})")


if __name__ == "__main__":
    main()
