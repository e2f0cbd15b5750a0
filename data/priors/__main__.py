"""Retrain an embedded default prior from its recipe: ``python -m medrecon.data.priors ct``.

The full checkpoint (with the optimiser, for resuming) goes to ``--work``; the
weights-only export that ships replaces ``ct.pt`` / ``mri.pt`` in this folder unless
``--output`` names another file.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from medrecon.data.priors import DEFAULT_PRIORS, RECIPES
from medrecon.priors.checkpoint import export_prior, read_checkpoint
from medrecon.priors.datasets import load_training_set
from medrecon.priors.training import TrainConfig, train_prior


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m medrecon.data.priors", description=__doc__)
    parser.add_argument("modality", choices=sorted(RECIPES))
    parser.add_argument("--work", type=Path, default=Path("prior-training"),
                        help="folder for the full checkpoint and its loss curve")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=None,
                        help="override the recipe's steps (to train in parts: resumes)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    recipe = dict(RECIPES[args.modality])
    data = load_training_set(recipe.pop("data"), modality=args.modality, crop=recipe["crop"])
    if args.steps is not None:
        recipe["steps"] = args.steps
    config = TrainConfig(**recipe, checkpoint_every=500, log_every=100)
    args.work.mkdir(parents=True, exist_ok=True)
    full = args.work / f"{args.modality}_full.pt"
    done = read_checkpoint(full).step if full.is_file() else 0
    if done < config.steps:
        train_prior(data, full, config, device=args.device,
                    resume=full if full.is_file() else None)
    output = args.output or Path(__file__).with_name(DEFAULT_PRIORS[args.modality])
    export_prior(full, output)
    logging.info("wrote %s", output)


if __name__ == "__main__":
    main()
