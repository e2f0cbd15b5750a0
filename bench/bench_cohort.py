"""A cohort run three ways: sequential, two shards at once, and Dask with two workers.

Makes ``--studies`` simulated CT studies (``--size`` squared phantoms, 60 parallel views,
Poisson noise 2e5 photons, different seeds) and runs ``ct-sparse-tv`` over the folder
into a fresh output folder each time, as a user would from the command line:

- sequential: ``medrecon run ct-sparse-tv IN -o OUT`` (torch's default threads);
- sharded: ``--shard 1/2`` and ``--shard 2/2`` started together (one thread each), the
  wall time until both have finished;
- Dask: ``--executor dask --workers 2`` (a local cluster, one thread per worker), cluster
  start and shutdown included.

Prints the wall time of each and its ratio to the sequential run, and checks that every
way wrote every study exactly once and the same images (byte-identical NIfTI for the
one-thread runs).

    python bench/bench_cohort.py [--studies 8] [--size 128] [--iterations 100]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def medrecon(*args: object, threads: int | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen([sys.executable, "-m", "medrecon.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(*runs: subprocess.Popen) -> list[str]:
    outputs = []
    for run in runs:
        out, err = run.communicate()
        if run.returncode != 0:
            raise SystemExit(f"a run failed ({run.returncode}):\n{out}\n{err}")
        outputs.append(out)
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cohort"
        root.mkdir()
        finish(*[medrecon("simulate", "ct", "phantom", "--size", args.size, "--views", 60,
                          "--noise", "poisson:2e5", "--seed", k, "-o", root / f"p{k:02d}.h5")
                 for k in range(args.studies)])
        tv = ["--set", f"solver.params.iterations={args.iterations}"]
        ways = {
            "sequential": lambda out: [medrecon("run", "ct-sparse-tv", root, "-o", out, *tv)],
            "2 shards at once": lambda out: [
                medrecon("run", "ct-sparse-tv", root, "-o", out, *tv, "--shard", f"{k}/2",
                         "--threads", 1, threads=1) for k in (1, 2)],
            "dask, 2 workers": lambda out: [
                medrecon("run", "ct-sparse-tv", root, "-o", out, *tv, "--executor", "dask",
                         "--workers", 2)],
        }
        times, images = {}, {}
        for way, start in ways.items():
            out = Path(tmp) / re.sub(r"\W+", "_", way)
            begin = time.perf_counter()
            outputs = finish(*start(out))
            times[way] = time.perf_counter() - begin
            done = sorted(m for text in outputs for m in re.findall(r"\] (\S+): done in", text))
            if done != [f"p{k:02d}" for k in range(args.studies)]:
                raise SystemExit(f"{way}: studies done {done}")
            images[way] = {p.name: p.read_bytes() for p in sorted(out.glob("*.nii.gz"))}
        same = images["2 shards at once"] == images["dask, 2 workers"]
        print(f"{args.studies} studies, CT {args.size}^2, 60 views, TV {args.iterations} "
              f"iterations, {os.cpu_count()} cores")
        print(f"{'way':<20}{'wall s':>9}{'vs sequential':>15}")
        for way, seconds in times.items():
            print(f"{way:<20}{seconds:>9.1f}{seconds / times['sequential']:>14.2f}x")
        print(f"one-thread images byte-identical (shards vs dask): {same}")


if __name__ == "__main__":
    main()
