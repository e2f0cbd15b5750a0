"""The embedded default priors, and the recipe that trains them.

``ct.pt``: an EDM prior (:class:`medrecon.priors.unet.UNetConfig` default, about 1.1 M
parameters) trained in four stages, in HU / 1000: on slices of the procedural CT phantom
family (``phantom:N``, seeds 0..N-1, abdomen and thorax alternating), then fine-tuned
(the recipe's ``finetune`` stages, :mod:`medrecon.priors.training`) on those and the mixed
family ``ctmix:N`` (head, neck, trabecular bone, several pixel sizes, kernel blur and
CT-like noise), whose anatomy and texture are closer to scans: 2000 steps, then 28000
more on the same data, then 40000 more with another seed (new crops and noise draws);
the third and fourth stages were added, and the third later doubled, when longer
training was measured to help on held-out images.

``mri.pt``: the same network with two channels (complex images) trained on augmented
axial slices of the MNI152 T1 template that nilearn ships (``mni152:N``, see
:mod:`medrecon.data.mni`), each divided by the 99th percentile of its magnitude.

Both are weights-only exports (:func:`medrecon.priors.checkpoint.export_prior`): the
moving average of the weights, the metadata with the full recipe, and the loss curve.
A recipe's ``finetune`` entry (a dict, or a list of dicts for several stages) is a stage
that starts from the previous stage's export, with the values it gives (data, steps,
batch size, learning rate; the rest is the previous stage's).
Retrain one with ``python -m medrecon.priors.defaults ct`` (or ``mri``); on this project's
2-core CPU the recipe's steps took the minutes given in the README. Training is
deterministic given the seed on one machine; BLAS differences between machines change
the last digits of the weights, not the quality.

This package is assets and plain data only: it imports nothing of medrecon above
``medrecon.errors``. Loading a prior by reference (``default``, a path, ``adm:PATH``,
``ncsnpp:PATH``) is :func:`medrecon.priors.defaults.load_named_prior`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from medrecon.errors import InputError

DEFAULT_PRIORS = {"ct": "ct.pt", "mri": "mri.pt"}

RECIPES: dict[str, dict[str, object]] = {
    "ct": {"data": ["phantom:512"], "steps": 6000, "batch_size": 16, "crop": 64, "lr": 4e-4,
           "ema_decay": 0.999, "seed": 0,
           "finetune": [{"data": ["phantom:512", "ctmix:768"], "steps": 2000, "batch_size": 8,
                        "lr": 1e-4}, {"steps": 28000}, {"steps": 40000, "seed": 1}]},
    "mri": {"data": ["mni152:512"], "steps": 6000, "batch_size": 16, "crop": 64, "lr": 4e-4,
            "ema_decay": 0.999, "seed": 0},
}


def default_prior_path(modality: str) -> Path:
    """Path of the embedded default prior of ``modality`` (``"ct"`` or ``"mri"``)."""
    if modality not in DEFAULT_PRIORS:
        raise InputError(None, "modality", f"no default prior for {modality!r}; "
                         f"there are {sorted(DEFAULT_PRIORS)}")
    path = Path(str(resources.files(__name__).joinpath(DEFAULT_PRIORS[modality])))
    if not path.is_file():
        raise InputError(path, "prior", "the default prior is missing from this installation "
                         f"(retrain it with python -m medrecon.priors.defaults {modality})")
    return path

