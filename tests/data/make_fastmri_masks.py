"""Write fastmri_masks.json with the real fastMRI package (run once, never in the tests).

In a throwaway environment that reuses the installed CPU torch::

    python -m venv --system-site-packages /tmp/fmvenv
    /tmp/fmvenv/bin/pip install --no-deps fastmri        # 0.3.0
    /tmp/fmvenv/bin/python tests/data/make_fastmri_masks.py tests/data/fastmri_masks.json

Each entry is ``MaskFunc([center_fraction], [acceleration])((1, width, 2), seed=seed)``
of ``RandomMaskFunc`` or ``EquispacedMaskFractionFunc``, as a string of 0/1 columns.
"""

import json
import sys

import fastmri
import fastmri.data.subsample as subsample
import numpy as np

SETTINGS = [(368, 4, 0.08), (368, 8, 0.04), (256, 8, 0.04), (320, 4, 0.08), (372, 6, 0.06),
            (640, 8, 0.04)]
KINDS = (("random", subsample.RandomMaskFunc),
         ("equispaced_fraction", subsample.EquispacedMaskFractionFunc))


def main(path: str) -> None:
    out = {"fastmri_version": fastmri.__version__, "numpy_version": np.__version__,
           "generated_by": "tests/data/make_fastmri_masks.py", "masks": []}
    for kind, mask_func in KINDS:
        for width, acceleration, fraction in SETTINGS:
            for seed in range(20):
                mask, n_low = mask_func([fraction], [acceleration])((1, width, 2), seed=seed)
                bits = mask.numpy().reshape(-1).astype(np.uint8)
                out["masks"].append({"kind": kind, "width": width,
                                     "acceleration": acceleration,
                                     "center_fraction": fraction, "seed": seed,
                                     "num_low_frequencies": int(n_low),
                                     "columns": "".join(map(str, bits.tolist()))})
    with open(path, "w") as f:
        json.dump(out, f, indent=0)


if __name__ == "__main__":
    main(sys.argv[1])
