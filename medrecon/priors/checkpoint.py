"""Network-prior checkpoints: weights plus a small metadata record, loaded safely.

A checkpoint is one ``torch.save`` file of plain types and tensors only, so that it
loads with ``torch.load(weights_only=True)`` (no pickled code runs):

==================  ==============================================================
key                 value
==================  ==============================================================
``format``          ``"medrecon-prior"``
``format_version``  ``1``
``metadata``        plain dict, see below
``weights``         state dict of the raw network (the training weights)
``ema``             state dict of the exponential moving average of the weights;
                    the prior is built from these
``optimizer``       Adam state dict (``None`` in a weights-only export)
``step``            optimisation steps done
``losses``          float64 tensor ``(step,)``: the loss of every step
``rng``             uint8 tensor: the training ``torch.Generator`` state (resume)
==================  ==============================================================

``metadata`` holds ``modality`` (``"ct"`` / ``"mri"``), ``layout`` (``"real"`` /
``"complex"``, two channels), ``normalisation`` (``scale``, ``offset``, ``units``,
``method``: data = ``scale * x + offset``; CT: ``x = HU / 1000``, i.e. scale 1000,
offset 0, units ``"HU"``, so air is -1 and water 0, ``x = mu / mu_water - 1``; MRI:
each complex image divided by the 99th percentile of its magnitude, scale 1, units
``"relative"``), ``image_size`` (training crop ``[H, W]``), ``parametrisation``
(``"edm"``), ``sigma_data``, ``architecture`` (:class:`UNetConfig` as a dict) and
``recipe`` (data sources, steps, seed, learning rate...).

>>> prior = load_prior("ct_prior.pt", "cpu", modality="ct")  # doctest: +SKIP
>>> denoised = prior(noisy_image, 0.1)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medrecon.data.atomic import atomic_file
from medrecon.errors import InputError
from medrecon.priors.network import EDMDenoiser
from medrecon.priors.unet import UNetBackbone, UNetConfig

FORMAT = "medrecon-prior"
FORMAT_VERSION = 1
MODALITIES = {"ct": "real", "mri": "complex"}
METADATA_FIELDS = ("modality", "layout", "normalisation", "image_size", "parametrisation",
                   "sigma_data", "architecture", "recipe")


@dataclass
class Checkpoint:
    """The content of a checkpoint file (see the module docstring)."""

    metadata: dict[str, object]
    weights: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, object] | None = None
    step: int = 0
    losses: list[float] = field(default_factory=list)
    rng: torch.Tensor | None = None


def prior_metadata(*, modality: str, scale: float, offset: float, units: str, method: str,
                   image_size: tuple[int, int], sigma_data: float, architecture: UNetConfig,
                   recipe: Mapping[str, object]) -> dict[str, object]:
    """The metadata record of an EDM prior (checks ``modality`` against the layout)."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {sorted(MODALITIES)}, got {modality!r}")
    layout = MODALITIES[modality]
    if architecture.in_channels != (2 if layout == "complex" else 1):
        raise ValueError(f"a {modality} prior needs {layout} images, but the architecture has "
                         f"{architecture.in_channels} channels")
    return {"modality": modality, "layout": layout,
            "normalisation": {"scale": float(scale), "offset": float(offset), "units": units,
                              "method": method},
            "image_size": [int(n) for n in image_size], "parametrisation": "edm",
            "sigma_data": float(sigma_data), "architecture": architecture.to_dict(),
            "recipe": dict(recipe)}


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike[str]) -> Path:
    """Write ``checkpoint`` atomically (temporary name, then rename)."""
    record = {"format": FORMAT, "format_version": FORMAT_VERSION,
              "metadata": checkpoint.metadata,
              "weights": {k: v.detach().cpu() for k, v in checkpoint.weights.items()},
              "ema": {k: v.detach().cpu() for k, v in checkpoint.ema.items()},
              "optimizer": _to_cpu(checkpoint.optimizer), "step": int(checkpoint.step),
              "losses": torch.tensor(checkpoint.losses, dtype=torch.float64),
              "rng": None if checkpoint.rng is None else checkpoint.rng.cpu()}
    with atomic_file(path) as tmp:
        torch.save(record, tmp)
    return Path(path)


def _to_cpu(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def load_torch_file(path: str | os.PathLike[str], what: str) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU; a missing file or one that does
    not unpickle as plain tensors and containers raises :class:`InputError` saying it is
    not ``what``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(path, None, f"not a {what}: not a torch file, or one holding code "
                         "(only plain tensors and containers are loaded)") from None
    except MemoryError:
        raise InputError(path, None, f"not a {what} (declares more data than fits in "
                         "memory)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError,
            TypeError, KeyError, IndexError, OverflowError, NotImplementedError,
            struct.error) as exc:  # a corrupt zip archive or pickle stream
        raise InputError(path, None, f"not a {what} ({_brief(exc)})") from None


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and validate a checkpoint (``weights_only=True``); raises :class:`InputError`
    naming the file and the field for anything that is not a medrecon prior checkpoint."""
    path = Path(path)
    record = load_torch_file(path, "medrecon prior checkpoint")
    if not isinstance(record, dict) or not isinstance(record.get("format"), str) or \
            record.get("format") != FORMAT:
        raise InputError(path, "format", f"not a medrecon prior checkpoint (expected format "
                         f"{FORMAT!r})")
    version = record.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version != FORMAT_VERSION:
        raise InputError(path, "format_version", f"unsupported version {version!r} "
                         f"(this medrecon reads {FORMAT_VERSION})")
    for key in ("metadata", "weights", "ema", "step", "losses"):
        if key not in record:
            raise InputError(path, key, "missing")
    metadata = record["metadata"]
    if not isinstance(metadata, dict):
        raise InputError(path, "metadata", "not a dictionary")
    _check_metadata(path, metadata)
    for key in ("weights", "ema"):
        state = record[key]
        if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(
                v, torch.Tensor) for k, v in state.items()):
            raise InputError(path, key, "not a state dict of tensors")
    losses = record["losses"]
    if not isinstance(losses, torch.Tensor) or losses.ndim != 1 or losses.is_complex():
        raise InputError(path, "losses", "not a 1-D real tensor")
    step = record["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InputError(path, "step", f"must be a non-negative integer, got {step!r}")
    if record.get("optimizer") is not None and not isinstance(record["optimizer"], dict):
        raise InputError(path, "optimizer", "not a dictionary (an Adam state dict)")
    rng = record.get("rng")
    if rng is not None and (not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8):
        raise InputError(path, "rng", "not a uint8 generator state")
    return Checkpoint(metadata=metadata, weights=record["weights"], ema=record["ema"],
                      optimizer=record.get("optimizer"), step=int(record["step"]),
                      losses=losses.tolist(), rng=record.get("rng"))


def export_prior(source: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """Write the weights-only export of the checkpoint ``source`` to ``output``: the
    moving average stands for both weight sets (stored once), no optimiser and no
    generator state, so it is about a quarter of a full checkpoint and cannot resume."""
    checkpoint = read_checkpoint(source)
    ema = {k: v.detach().clone() for k, v in checkpoint.ema.items()}
    return save_checkpoint(Checkpoint(metadata=checkpoint.metadata, weights=ema, ema=ema,
                                      optimizer=None, step=checkpoint.step,
                                      losses=checkpoint.losses, rng=None), output)


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:120]}" if text else type(exc).__name__


def _number(value: object) -> bool:
    """Whether ``value`` is a finite int or float (not a bool)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _check_metadata(path: Path, metadata: dict[str, object]) -> None:
    for key in METADATA_FIELDS:
        if key not in metadata:
            raise InputError(path, f"metadata.{key}", "missing")
    modality, layout = metadata["modality"], metadata["layout"]
    if not isinstance(modality, str) or modality not in MODALITIES:
        raise InputError(path, "metadata.modality", f"must be one of {sorted(MODALITIES)}, "
                         f"got {modality!r}")
    if not isinstance(layout, str) or layout != MODALITIES[modality]:
        raise InputError(path, "metadata.layout", f"a {modality} prior has {MODALITIES[modality]}"
                         f" images, got {layout!r}")
    if metadata["parametrisation"] != "edm":
        raise InputError(path, "metadata.parametrisation",
                         f"expected 'edm', got {metadata['parametrisation']!r}")
    norm = metadata["normalisation"]
    if not isinstance(norm, dict):
        raise InputError(path, "metadata.normalisation", "not a dictionary")
    for key in ("scale", "offset"):
        if not _number(norm.get(key)):
            raise InputError(path, "metadata.normalisation", f"needs numbers 'scale' and "
                             f"'offset', got {key}={norm.get(key)!r}")
    if not norm["scale"] > 0:
        raise InputError(path, "metadata.normalisation", f"scale must be positive, "
                         f"got {norm['scale']}")
    sigma_data = metadata["sigma_data"]
    if not _number(sigma_data) or not sigma_data > 0:
        raise InputError(path, "metadata.sigma_data", f"must be positive, got {sigma_data!r}")
    size = metadata["image_size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 65536
                       for n in size)):
        raise InputError(path, "metadata.image_size", f"must be two positive sizes [H, W], "
                         f"got {size!r}")
    architecture = metadata["architecture"]
    if not isinstance(architecture, dict):
        raise InputError(path, "metadata.architecture", "not a dictionary")
    try:
        config = UNetConfig.from_dict(architecture)
    except (KeyError, ValueError, TypeError) as exc:
        message = str(exc).strip("'\"")
        field, _, problem = message.partition(": ")
        if problem and field.isidentifier():
            raise InputError(path, f"metadata.architecture.{field}", problem) from None
        raise InputError(path, "metadata.architecture", message) from None
    if config.in_channels != (2 if layout == "complex" else 1):
        raise InputError(path, "metadata.architecture", f"{config.in_channels} channels do not "
                         f"fit the {layout} layout")


def build_network(path: str | os.PathLike[str], checkpoint: Checkpoint, *, ema: bool = True,
                  device: torch.device | str = "cpu") -> UNetBackbone:
    """The raw network of ``checkpoint`` with its EMA (or training) weights on ``device``."""
    try:
        config = UNetConfig.from_dict(checkpoint.metadata["architecture"])
        net = UNetBackbone(config)
    except (KeyError, ValueError, TypeError, ZeroDivisionError, IndexError, AssertionError,
            RuntimeError) as exc:  # MONAI refuses some combinations only when building
        raise InputError(path, "metadata.architecture", f"cannot build the network "
                         f"({_brief(exc)})") from None
    key = "ema" if ema else "weights"
    state = checkpoint.ema if ema else checkpoint.weights
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        names = ", ".join((missing + unexpected)[:3])
        raise InputError(path, key, f"does not fit the architecture ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected tensors: {names})")
    for name, tensor in expected.items():
        given = state[name]
        if given.shape != tensor.shape or not (given.is_floating_point() or
                                               given.dtype == tensor.dtype):
            raise InputError(path, f"{key}.{name}", f"shape {tuple(given.shape)} "
                             f"{given.dtype} does not fit the architecture's "
                             f"{tuple(tensor.shape)} {tensor.dtype}")
        if given.is_floating_point() and not bool(torch.isfinite(given).all()):
            raise InputError(path, f"{key}.{name}", "contains NaN or infinite values")
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InputError(path, key, f"does not fit the architecture ({_brief(exc)})") from None
    return net.to(device)


def load_prior(path: str | os.PathLike[str], device: torch.device | str = "cpu", *,
               modality: str | None = None) -> EDMDenoiser:
    """An :class:`EDMDenoiser` built from the checkpoint at ``path`` alone (EMA weights,
    evaluation mode, float32 on ``device``).

    Args:
        modality: the modality the caller needs (``"ct"`` / ``"mri"``); a checkpoint of
            another modality or channel layout raises :class:`InputError`.
    """
    checkpoint = read_checkpoint(path)
    metadata = checkpoint.metadata
    if modality is not None and metadata["modality"] != modality:
        raise InputError(path, "metadata.modality", f"a {metadata['modality']} prior "
                         f"({metadata['layout']} images), but a {modality} prior "
                         f"({MODALITIES.get(modality, '?')} images) is needed")
    net = build_network(path, checkpoint, device=device).eval()
    norm = metadata["normalisation"]
    prior = EDMDenoiser(net, is_complex=metadata["layout"] == "complex",
                        sigma_data=float(metadata["sigma_data"]), scale=float(norm["scale"]),
                        offset=float(norm["offset"]))
    return prior.requires_grad_(False)
