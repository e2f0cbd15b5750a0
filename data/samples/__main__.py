"""Regenerate the bundled samples: ``python -m medrecon.data.samples [FOLDER]``."""

import sys
from pathlib import Path

from medrecon.data.samples import CT_SAMPLE, MRI_SAMPLE, make_ct_sample, write_mri_sample
from medrecon.data.sinogram import write_sinogram

folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
write_sinogram(make_ct_sample(), folder / CT_SAMPLE)
write_mri_sample(folder / MRI_SAMPLE)
