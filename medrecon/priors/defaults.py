"""Priors by reference, and retraining the embedded defaults from their recipes.

A prior reference (the ``prior:`` of a protocol, ``--prior`` on the command line) is
one of:

- ``default``: the embedded default prior of the modality
  (:func:`medrecon.data.priors.default_prior_path`);
- ``PATH`` or ``medrecon:PATH``: a medrecon checkpoint
  (:func:`medrecon.priors.checkpoint.load_prior`);
- ``adm:PATH``: a guided-diffusion ADM state dict (:func:`medrecon.priors.adm.load_adm`);
- ``ncsnpp:PATH``: a score_sde NCSN++ checkpoint or state dict
  (:func:`medrecon.priors.ncsnpp.load_ncsnpp`).

A published state dict carries no architecture, so ``adm:`` and ``ncsnpp:`` read it
from a JSON file beside the weights, ``PATH`` with the suffix ``.json``::

    {"config": {"image_size": 256, "num_channels": 256, ...},   # ADMConfig / NCSNppConfig
     "scale": 1.0, "offset": 0.0}                     # data = scale * x + offset

with, besides ``scale`` and ``offset``, ``n_train``, ``beta_start``, ``beta_end``
(ADM) or ``ema`` (NCSN++). Without that file an ``adm:`` reference uses DDS's
published layout of the modality (:data:`~medrecon.priors.adm.ADM_DDS_AAPM256` for
CT, :data:`~medrecon.priors.adm.ADM_DDS_FASTMRI320` for MRI); ``ncsnpp:`` needs it.
The channels must fit the modality: one (real) for CT, two (complex) for MRI.

Retrain an embedded default with ``python -m medrecon.priors.defaults ct`` (or
``mri``): the recipe is :data:`medrecon.data.priors.RECIPES`, trained stage by stage
(:func:`recipe_stages`: each ``finetune`` stage starts from the previous stage's export;
``--init PATH`` starts the first of them from a given checkpoint instead); the full
checkpoints (with the optimiser, for resuming) go to ``--work``, and the weights-only
export replaces the shipped ``ct.pt`` / ``mri.pt`` unless ``--output`` names another file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from pathlib import Path

import torch

from medrecon.data.priors import DEFAULT_PRIORS, RECIPES, default_prior_path
from medrecon.errors import InputError

KINDS = ("medrecon", "adm", "ncsnpp")
CHANNELS = {"ct": 1, "mri": 2}
_LOADER_OPTIONS = {"adm": ("n_train", "beta_start", "beta_end", "scale", "offset"),
                   "ncsnpp": ("ema", "scale", "offset")}


def parse_prior_reference(name: str | os.PathLike[str]) -> tuple[str, str]:
    """``(kind, target)`` of a prior reference: ``("default", "")``, or a kind of
    :data:`KINDS` with its path (a bare path is a medrecon checkpoint)."""
    text = os.fspath(name)
    if text == "default":
        return "default", ""
    kind, sep, rest = text.partition(":")
    if sep and kind in KINDS:
        if not rest:
            raise InputError(None, "prior", f"{text!r} names no file after '{kind}:'")
        return kind, rest
    return "medrecon", text


def load_named_prior(name: str | os.PathLike[str], modality: str,
                     device: torch.device | str = "cpu"):
    """``(prior, path)`` for a prior reference (see the module docstring); a prior of
    another modality or channel layout is refused with :class:`InputError`."""
    kind, target = parse_prior_reference(name)
    if kind == "default":
        path = default_prior_path(modality)
        kind = "medrecon"
    else:
        path = Path(target).expanduser()
    if kind == "medrecon":
        from medrecon.priors.checkpoint import load_prior

        return load_prior(path, device, modality=modality), path
    if modality not in CHANNELS:
        raise InputError(None, "modality", f"expected one of {sorted(CHANNELS)}, "
                         f"got {modality!r}")
    if not path.is_file():
        raise InputError(path, None, "no such file")
    config, options = _architecture(kind, path, modality)
    if kind == "adm":
        from medrecon.priors.adm import load_adm

        prior = load_adm(path, config, device=device, **options)
    else:
        from medrecon.priors.ncsnpp import load_ncsnpp

        prior = load_ncsnpp(path, config, device=device, **options)
    return prior.eval().requires_grad_(False), path


def _architecture(kind: str, path: Path, modality: str):
    """The network config and loader options of an ``adm:`` / ``ncsnpp:`` reference."""
    if kind == "adm":
        from medrecon.priors.adm import ADM_DDS_AAPM256, ADM_DDS_FASTMRI320, ADMConfig

        config_class, presets = ADMConfig, {"ct": ADM_DDS_AAPM256, "mri": ADM_DDS_FASTMRI320}
        channels_field = "in_channels"
    else:
        from medrecon.priors.ncsnpp import NCSNppConfig

        config_class, presets, channels_field = NCSNppConfig, {}, "num_channels"
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        if modality not in presets:
            raise InputError(sidecar, None, f"a {kind} state dict carries no architecture: "
                             f"give it in this JSON file (see medrecon.priors.defaults)")
        config, options = presets[modality], {}
    else:
        try:
            record = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(sidecar, None, f"not a readable JSON file ({exc})") from None
        if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
            raise InputError(sidecar, "config", f"expected an object of {config_class.__name__} "
                             "fields")
        known = {f.name for f in dataclasses.fields(config_class)}
        unknown = sorted(set(record["config"]) - known)
        if unknown:
            raise InputError(sidecar, f"config.{unknown[0]}", f"not a field of "
                             f"{config_class.__name__}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in record["config"].items()}
        try:
            config = config_class(**values)
        except (TypeError, ValueError) as exc:
            raise InputError(sidecar, "config", str(exc)) from None
        options = {k: v for k, v in record.items() if k != "config"}
        bad = sorted(set(options) - set(_LOADER_OPTIONS[kind]))
        if bad:
            raise InputError(sidecar, bad[0], f"unknown option; {kind} takes "
                             f"{', '.join(_LOADER_OPTIONS[kind])}")
    channels = getattr(config, channels_field)
    if channels != CHANNELS[modality]:
        layout = "complex (2 channels)" if modality == "mri" else "real (1 channel)"
        raise InputError(path, channels_field, f"the network has {channels} channels, but a "
                         f"{modality} prior takes {layout} images")
    return config, options


def main(argv: list[str] | None = None) -> None:
    """Retrain an embedded default prior from its recipe (see the module docstring)."""
    from medrecon.priors.checkpoint import export_prior

    parser = argparse.ArgumentParser(prog="python -m medrecon.priors.defaults",
                                     description="Retrain an embedded default prior from "
                                     "its recipe (medrecon.data.priors.RECIPES).")
    parser.add_argument("modality", choices=sorted(RECIPES))
    parser.add_argument("--work", type=Path, default=Path("prior-training"),
                        help="folder for the full checkpoints and their loss curves")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=None,
                        help="override the last stage's steps (to train in parts: resumes)")
    parser.add_argument("--init", type=Path, default=None,
                        help="a recipe with fine-tuning stages: start the first of them "
                        "from this checkpoint instead of training the first stage")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    stages = recipe_stages(args.modality)
    if args.init is not None and len(stages) == 1:
        raise InputError(None, "--init", f"the {args.modality} recipe has no fine-tuning stage")
    if args.steps is not None:
        stages[-1]["steps"] = args.steps
    args.work.mkdir(parents=True, exist_ok=True)
    init = args.init
    for index, stage in enumerate(stages):
        name = args.modality if index == 0 else \
            f"{args.modality}_finetune{index if index > 1 else ''}"
        if index == 0 and init is not None:
            continue  # the first stage's export is given
        full = _train_stage(stage, args.modality, args.work / f"{name}_full.pt", init,
                            args.device)
        if index < len(stages) - 1:
            init = args.work / f"{name}.pt"
            export_prior(full, init)
    output = args.output
    if output is None:
        import medrecon.data.priors as assets

        output = Path(assets.__file__).with_name(DEFAULT_PRIORS[args.modality])
    export_prior(full, output)
    logging.info("wrote %s", output)


def recipe_stages(modality: str) -> list[dict[str, object]]:
    """The training stages of ``modality``'s recipe (:data:`~medrecon.data.priors.RECIPES`):
    the recipe without its ``finetune`` entry, then, where there is one, one stage per
    fine-tuning entry (a dict, or a list of them), each the previous stage with that
    entry's values.

    >>> [(s["steps"], s["lr"]) for s in recipe_stages("ct")]
    [(6000, 0.0004), (2000, 0.0001), (28000, 0.0001), (40000, 0.0001)]
    """
    recipe = dict(RECIPES[modality])
    finetune = recipe.pop("finetune", [])
    stages = [recipe]
    for entry in [finetune] if isinstance(finetune, dict) else finetune:
        stages.append({**stages[-1], **entry})
    return stages


def _train_stage(stage: dict[str, object], modality: str, full: Path, init: Path | None,
                 device: str) -> Path:
    """Train (or resume) one stage into the full checkpoint ``full``; returns it."""
    from medrecon.priors.checkpoint import read_checkpoint
    from medrecon.priors.datasets import load_training_set
    from medrecon.priors.training import TrainConfig, train_prior

    stage = dict(stage)
    data = load_training_set(stage.pop("data"), modality=modality, crop=stage["crop"])
    config = TrainConfig(**stage, checkpoint_every=250, log_every=100)
    done = read_checkpoint(full).step if full.is_file() else 0
    if done < config.steps:
        train_prior(data, full, config, device=device,
                    resume=full if full.is_file() else None, init=init)
    return full


if __name__ == "__main__":
    main()
