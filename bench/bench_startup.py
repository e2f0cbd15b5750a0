"""Start-up cost of ``medrecon info`` on a sinogram against importing the heavy stack.

Writes a small sinogram in a temporary folder, then times, interleaved and in fresh
subprocesses, ``medrecon info FILE`` against ``python -c 'import torch, astra,
scipy.ndimage'`` (what ``medrecon info`` used to import before reading anything) and
against a bare ``python -c pass``. Prints the medians and the ratio; the target is at
most one half.

    python bench/bench_startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WRITE = """
import sys
import numpy as np
from medrecon.data.sinogram import Sinogram, write_sinogram
from medrecon.operators.ct_geometry import CTGeometry
g = CTGeometry.parallel((64, 64), 30)
write_sinogram(Sinogram(np.zeros((30, g.n_detectors), np.float32), g), sys.argv[1])
"""


def _seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "sinogram.h5")
        subprocess.run([sys.executable, "-c", WRITE, path], check=True)
        commands = {
            "medrecon info": [sys.executable, "-c", "from medrecon.cli import main; main()",
                              "info", path],
            "import torch, astra, scipy.ndimage": [
                sys.executable, "-c", "import torch, astra, scipy.ndimage"],
            "python (nothing)": [sys.executable, "-c", "pass"],
        }
        for command in commands.values():  # warm the file-system cache
            _seconds(command)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, command in commands.items():
                times[name].append(_seconds(command))
    print(f"{'command':<36}{'median s':>10}{'min s':>8}{'max s':>8}")
    for name, values in times.items():
        print(f"{name:<36}{statistics.median(values):>10.3f}{min(values):>8.3f}"
              f"{max(values):>8.3f}")
    info = statistics.median(times["medrecon info"])
    before = statistics.median(times["import torch, astra, scipy.ndimage"])
    ratio = info / before
    print(f"ratio medrecon info / old imports: {ratio:.2f} (target <= 0.5: "
          f"{'met' if ratio <= 0.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
