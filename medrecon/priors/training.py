"""Training an EDM network prior by denoising score matching, with resumable checkpoints.

Loss (Karras, Aittala, Aila, Laine, NeurIPS 2022, eq. 2 with Table 1 "Training"):

    L = E_{x0, sigma, n} [ lambda(sigma) || D(x0 + sigma n, sigma) - x0 ||^2 ],
    ln sigma ~ N(P_mean, P_std^2),  lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2,

with ``P_mean = -1.2``, ``P_std = 1.2``, ``sd = sigma_data`` and ``D`` the EDM-preconditioned
network (:class:`medrecon.priors.network.EDMDenoiser`), averaged over pixels. Adam, an
exponential moving average of the weights with warm-up ``min(decay, (1 + k) / (10 + k))``
at step ``k`` (the prior is built from the average), and augmentation by random crops,
flips and 90 degree rotations. On CUDA the forward runs under bfloat16 autocast.

Every random draw (crops, flips, rotations, sigma, noise) comes from one CPU
``torch.Generator`` seeded with ``seed``, whose state is stored in every checkpoint
with the weights, the average, the optimiser and the step, so a resumed run continues
exactly the loss curve of an uninterrupted one. The network is initialised from
``seed`` too.

Fine-tuning (``init``: ``"default"``, the shipped prior of the modality, or a checkpoint
path) starts the network and its moving average from the init checkpoint's average (the
prior itself), with a fresh Adam and generator and its own step count, so ``steps`` is
the number of fine-tuning steps. The architecture, the intensity map (``scale``,
``offset``, units) and ``sigma_data`` are the init's, so the fine-tuned prior drops into
the same studies; data normalised otherwise are mapped into the init's space. The
recipe records the init (``recipe.init``: reference, path, sha256, modality, steps, and
its recipe) besides the fine-tuning data and steps. The default learning rate for
fine-tuning, :data:`FINETUNE_LR` (1e-4), is half the from-scratch default
:data:`DEFAULT_LR` (and a quarter of the 4e-4 the shipped priors were trained with): a
fresh Adam's first steps move every weight by about the learning rate, which at 2e-4
undoes part of what the init learned before the site data pay it back. Fine-tuning the
shipped CT prior on 96 site slices (README), the held-out EDM loss after 60 steps went
from 0.211 to 0.196 at 1e-4, 0.197 at 5e-5, 0.198 at 2e-5 and only 0.205 at 2e-4.
A fine-tuning run resumes like any other (``resume``; ``init`` may be given
again and must then be the same file).

>>> data = load_training_set(["phantom:8"], modality="ct", crop=64)  # doctest: +SKIP
>>> result = train_prior(data, "ct_prior.pt", TrainConfig(steps=2000))  # doctest: +SKIP
>>> site = load_training_set(["site_scans/"], modality="ct", crop=64)  # doctest: +SKIP
>>> tuned = train_prior(site, "/tmp/ct_site.pt", TrainConfig(steps=300, lr=FINETUNE_LR),
...                     init="default")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from medrecon.data.atomic import atomic_file, check_output_path
from medrecon.data.digest import file_sha256
from medrecon.data.priors import default_prior_path
from medrecon.errors import InputError
from medrecon.priors.checkpoint import (
    MODALITIES,
    Checkpoint,
    build_network,
    prior_metadata,
    read_checkpoint,
    save_checkpoint,
)
from medrecon.priors.datasets import TrainingSet, load_training_set
from medrecon.priors.defaults import parse_prior_reference
from medrecon.priors.network import EDMDenoiser, from_channels, to_channels
from medrecon.priors.unet import UNetBackbone, UNetConfig
from medrecon.progress import progress_bar

logger = logging.getLogger(__name__)

DEFAULT_LR = 2e-4
FINETUNE_LR = 1e-4
DEFAULT_STEPS = 20000
FINETUNE_STEPS = 300


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe (stored in the checkpoint's metadata)."""

    steps: int = DEFAULT_STEPS
    batch_size: int = 8
    crop: int = 64
    lr: float = DEFAULT_LR
    ema_decay: float = 0.999
    seed: int = 0
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_data: float = 0.5
    checkpoint_every: int = 1000
    log_every: int = 50

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "crop", "checkpoint_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise InputError(None, name, f"must be a positive integer, got "
                                 f"{getattr(self, name)!r}")
        if not self.lr > 0:
            raise InputError(None, "lr", f"must be positive, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise InputError(None, "ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        if self.seed < 0:
            raise InputError(None, "seed", f"must be non-negative, got {self.seed}")


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_prior` did: the checkpoint, the loss of every step, the steps
    done in this call and their wall time."""

    checkpoint: Path
    losses: tuple[float, ...]
    steps_run: int
    seconds: float


def edm_loss(denoiser: EDMDenoiser, x0: torch.Tensor, sigma: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
    """Per-image EDM loss ``lambda(sigma) mean |D(x0 + sigma n, sigma) - x0|^2`` (``(B,)``)
    for channel images ``x0`` ``(B, C, H, W)``, ``sigma`` ``(B,)`` and noise ``n``."""
    s = sigma.reshape(-1, 1, 1, 1)
    noisy, batch = x0 + s * noise, x0.shape[:1]
    denoised, _ = to_channels(denoiser(from_channels(noisy, batch, denoiser.is_complex), sigma),
                              denoiser.is_complex)
    sd = denoiser.sigma_data
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    return weight * (denoised.float() - x0).square().mean(dim=(1, 2, 3))


def sample_batch(images: Sequence[torch.Tensor], batch_size: int, crop: int,
                 generator: torch.Generator) -> torch.Tensor:
    """``(batch_size, C, crop, crop)`` random crops of random images, each flipped with
    probability 1/2 and rotated by a random multiple of 90 degrees."""
    picks = torch.randint(len(images), (batch_size,), generator=generator).tolist()
    batch = []
    for n in picks:
        image = images[n]
        h, w = image.shape[-2:]
        top = int(torch.randint(h - crop + 1, (), generator=generator))
        left = int(torch.randint(w - crop + 1, (), generator=generator))
        rot, flip = torch.randint(4, (2,), generator=generator).tolist()
        patch = image[:, top:top + crop, left:left + crop]
        patch = torch.rot90(patch.flip(-1) if flip % 2 else patch, rot, dims=(-2, -1))
        batch.append(patch)
    return torch.stack(batch)


def plot_losses(losses: Sequence[float], path: str | os.PathLike[str]) -> Path:
    """Write the loss curve (per step and a running mean) as a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    values = torch.tensor(list(losses), dtype=torch.float64)
    window = max(1, min(100, len(values) // 10))
    smooth = torch.nn.functional.avg_pool1d(values[None, None], window, 1)[0, 0]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.semilogy(range(1, len(values) + 1), values.numpy(), lw=0.5, alpha=0.4, label="step")
    ax.semilogy(range(window, len(values) + 1), smooth.numpy(), lw=1.5,
                label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("EDM loss")
    ax.legend()
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def loss_plot_path(checkpoint: str | os.PathLike[str]) -> Path:
    """The loss curve's PNG beside a checkpoint: ``prior.pt`` -> ``prior_loss.png``."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}_loss.png")


@dataclass(frozen=True)
class InitPrior:
    """The prior a fine-tuning run starts from (:func:`read_init`)."""

    reference: str
    path: Path
    sha256: str
    checkpoint: Checkpoint

    @property
    def record(self) -> dict[str, object]:
        """What the fine-tuned checkpoint's ``recipe.init`` says about this prior."""
        metadata = self.checkpoint.metadata
        return {"reference": self.reference, "path": str(self.path), "sha256": self.sha256,
                "modality": metadata["modality"], "steps": self.checkpoint.step,
                "recipe": metadata.get("recipe", {})}


def read_init(reference: str | os.PathLike[str], modality: str) -> InitPrior:
    """The init prior of a fine-tuning run: ``"default"`` (the shipped prior of
    ``modality``) or a medrecon checkpoint path. An unreadable file, or a prior of the
    other modality (1 channel for CT, 2 for MRI), raises :class:`InputError` naming it."""
    if modality not in MODALITIES:
        raise InputError(None, "modality", f"must be 'ct' or 'mri', got {modality!r}")
    text = os.fspath(reference)
    kind, target = parse_prior_reference(text)
    if kind not in ("default", "medrecon"):
        raise InputError(None, "init", f"{text!r}: only medrecon checkpoints (or 'default') "
                         f"can be fine-tuned, not {kind} state dicts")
    path = default_prior_path(modality) if kind == "default" else Path(target).expanduser()
    if path.is_dir():
        raise InputError(path, "init", "is a folder, expected a prior checkpoint (.pt)")
    checkpoint = read_checkpoint(path)
    found = checkpoint.metadata["modality"]
    if found != modality:
        names = {"ct": "a CT prior (1 channel, real)", "mri": "an MRI prior (2 channels, "
                 "complex)"}
        raise InputError(path, "metadata.modality", f"{names[found]} cannot be fine-tuned on "
                         f"{modality.upper()} images (--modality {modality})")
    build_network(path, checkpoint)  # the weights fit the recorded architecture
    return InitPrior(text, path, file_sha256(path), checkpoint)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_not_init(output: str | os.PathLike[str], init: str | os.PathLike[str]) -> None:
    """Refuse an ``output`` (or its loss curve) that would overwrite the init checkpoint."""
    output = Path(output)
    for target in (output, loss_plot_path(output)):
        if _same_file(target, Path(init)):
            raise InputError(output, "output", f"would overwrite the init prior {init}; "
                             "write the fine-tuned prior to another file")


def check_resume(resume: str | os.PathLike[str], checkpoint: Checkpoint, modality: str,
                 steps: int, init: InitPrior | None) -> dict[str, object] | None:
    """Check that ``checkpoint`` (read from ``resume``) can continue a run of ``steps``
    steps on ``modality`` images (and, with ``init``, that it is a fine-tuning run of
    that init); returns its ``recipe.init`` (``None`` for a from-scratch run)."""
    if checkpoint.metadata["modality"] != modality:
        raise InputError(resume, "metadata.modality", f"a {checkpoint.metadata['modality']}"
                         f" checkpoint cannot continue on {modality} data")
    if checkpoint.step >= steps:
        raise InputError(resume, "step", f"already trained {checkpoint.step} steps; ask "
                         f"for more than that")
    recipe = checkpoint.metadata.get("recipe")
    recorded = recipe.get("init") if isinstance(recipe, dict) else None
    recorded = recorded if isinstance(recorded, dict) else None
    if init is not None and recorded is None:
        raise InputError(resume, "recipe.init", f"a from-scratch run, not a fine-tuning run "
                         f"of {init.path}; resume it without --init, or fine-tune without "
                         "--resume")
    if init is not None and recorded.get("sha256") != init.sha256:
        raise InputError(resume, "recipe.init", f"fine-tuned from {recorded.get('path')}, not "
                         f"from {init.path}; resume it without --init")
    return recorded


def _to_init_space(data: TrainingSet, norm: dict[str, object]) -> TrainingSet:
    """``data`` in the init prior's intensity map (``value = scale * x + offset``)."""
    scale, offset = float(norm["scale"]), float(norm["offset"])
    if (data.scale, data.offset) == (scale, offset):
        return data
    if str(norm.get("units", "")) != data.units:
        raise InputError(None, "data", f"{data.units} images cannot be mapped into the init "
                         f"prior's {norm.get('units')!r} intensities")
    a, b = data.scale / scale, (data.offset - offset) / scale
    images = tuple(a * im + b for im in data.images)
    return dataclasses.replace(data, images=images, scale=scale, offset=offset,
                               method=str(norm.get("method", data.method)))


class _State:
    """Network, average, optimiser, generator, step and losses of one training run."""

    def __init__(self, net: UNetBackbone, config: TrainConfig, device: torch.device):
        self.net = net.to(device)
        self.ema = [p.detach().clone() for p in self.net.parameters()]
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.losses: list[float] = []

    def update_ema(self, decay: float) -> None:
        decay = min(decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, [p.detach() for p in self.net.parameters()],
                                 1 - decay)

    def ema_state(self) -> dict[str, torch.Tensor]:
        names = [name for name, _ in self.net.named_parameters()]
        state = dict(self.net.state_dict())
        state.update(zip(names, self.ema, strict=True))
        return state

    def load(self, checkpoint: Checkpoint) -> None:
        self.net.load_state_dict(checkpoint.weights)
        ema = checkpoint.ema
        with torch.no_grad():
            for (name, _), avg in zip(self.net.named_parameters(), self.ema, strict=True):
                avg.copy_(ema[name])
        if checkpoint.optimizer is not None:
            self.optimizer.load_state_dict(checkpoint.optimizer)
        if checkpoint.rng is not None:
            self.generator.set_state(checkpoint.rng)
        self.step, self.losses = checkpoint.step, list(checkpoint.losses)


def train_prior(data: TrainingSet, output: str | os.PathLike[str], config: TrainConfig, *,
                architecture: UNetConfig | None = None, device: torch.device | str = "cpu",
                resume: str | os.PathLike[str] | None = None,
                init: str | os.PathLike[str] | InitPrior | None = None) -> TrainResult:
    """Train (or continue training, or fine-tune) an EDM prior on ``data`` up to
    ``config.steps`` steps.

    Writes the checkpoint to ``output`` every ``config.checkpoint_every`` steps and at the
    end, each time with the loss curve beside it (:func:`loss_plot_path`). ``resume``
    continues from a checkpoint of the same modality (its architecture, weights,
    average, optimiser, generator and step are used; ``architecture`` is ignored; the
    learning rate is ``config.lr``). ``init`` (``"default"``, a checkpoint path or an
    :class:`InitPrior`) fine-tunes that prior (module docstring): its architecture,
    intensity map and ``sigma_data`` are used, an ``architecture`` that differs is
    refused, and ``output`` must not be the init file. Resuming a fine-tuning run needs
    no ``init``; given, it must be the run's init.
    """
    output = check_output_path(output)
    if output.is_dir():
        raise InputError(output, "output", "is a folder, expected a checkpoint file name")
    device = torch.device(device)
    if init is not None and not isinstance(init, InitPrior):
        init = read_init(init, data.modality)
    if init is not None:
        if init.checkpoint.metadata["modality"] != data.modality:
            raise InputError(init.path, "metadata.modality", f"a "
                             f"{init.checkpoint.metadata['modality'].upper()} prior cannot be "
                             f"fine-tuned on {data.modality.upper()} images")
        check_not_init(output, init.path)
        init_arch = UNetConfig.from_dict(init.checkpoint.metadata["architecture"])
        if architecture is not None and architecture != init_arch:
            raise InputError(init.path, "architecture", "a fine-tuned prior keeps the init "
                             "prior's architecture; drop the architecture option")
    arch = architecture or UNetConfig(in_channels=data.channels)
    checkpoint = None
    tuned = init.record if init is not None else None  # recipe.init of the output
    source = init.checkpoint.metadata if init is not None else None  # intensity map
    if resume is not None:
        checkpoint = read_checkpoint(resume)
        recorded = check_resume(resume, checkpoint, data.modality, config.steps, init)
        if recorded is not None:
            tuned, source = recorded, checkpoint.metadata
            if recorded.get("path"):
                check_not_init(output, str(recorded["path"]))
        net = build_network(resume, checkpoint, ema=False)
        arch = net.config
    elif init is not None:
        net = build_network(init.path, init.checkpoint, ema=True)
        arch = net.config
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            net = UNetBackbone(arch)
    if arch.in_channels != data.channels:
        raise InputError(None, "architecture", f"{arch.in_channels} channels do not fit "
                         f"{data.modality} images ({data.channels} channels)")
    recipe: dict[str, object] = {}
    if source is not None:  # fine-tuning: the init's intensity map and sigma_data
        data = _to_init_space(data, source["normalisation"])
        config = dataclasses.replace(config, sigma_data=float(source["sigma_data"]))
        recipe = {"init": tuned}
    metadata = prior_metadata(
        modality=data.modality, scale=data.scale, offset=data.offset, units=data.units,
        method=data.method, image_size=(config.crop, config.crop),
        sigma_data=config.sigma_data, architecture=arch,
        recipe={**asdict(config), "data": list(data.sources), "images": len(data.images),
                "skipped": list(data.skipped),
                "resumed_from": None if resume is None else str(resume), **recipe})
    state = _State(net, config, device)
    if checkpoint is not None:
        state.load(checkpoint)
        for group in state.optimizer.param_groups:
            group["lr"] = config.lr
    images = [im.to(device) for im in data.images]
    too_small = [n for n, im in enumerate(images) if min(im.shape[-2:]) < config.crop]
    if too_small:
        raise InputError(None, "crop", f"{len(too_small)} images are smaller than {config.crop}")
    denoiser = EDMDenoiser(state.net, is_complex=data.modality == "mri",
                           sigma_data=config.sigma_data).train()
    start, t0 = state.step, time.perf_counter()
    with progress_bar(config.steps, "train-prior", "step", initial=start) as bar:
        pending: list[torch.Tensor] = []
        while state.step < config.steps:
            pending.append(_step(state, denoiser, images, config, device))
            state.step += 1
            bar.update(1)
            if state.step % config.log_every == 0 or state.step == config.steps or \
                    state.step % config.checkpoint_every == 0:
                state.losses.extend(torch.stack(pending).tolist())
                pending.clear()
                recent = state.losses[-config.log_every:]
                logger.info("step %d: loss %.4g (mean of last %d)", state.step,
                            sum(recent) / len(recent), len(recent))
            if state.step % config.checkpoint_every == 0 or state.step == config.steps:
                _save(state, metadata, output)
    return TrainResult(output, tuple(state.losses), state.step - start,
                       time.perf_counter() - t0)


def _step(state: _State, denoiser: EDMDenoiser, images: Sequence[torch.Tensor],
          config: TrainConfig, device: torch.device) -> torch.Tensor:
    """One Adam step on a fresh batch; returns the batch loss (on ``device``)."""
    g = state.generator
    x0 = sample_batch(images, config.batch_size, config.crop, g)
    sigma = (config.p_mean + config.p_std * torch.randn(config.batch_size, generator=g)).exp()
    noise = torch.randn(x0.shape, generator=g)
    sigma, noise = sigma.to(device, non_blocking=True), noise.to(device, non_blocking=True)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                        enabled=device.type == "cuda"):
        loss = edm_loss(denoiser, x0, sigma, noise).mean()
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    state.update_ema(config.ema_decay)
    return loss.detach()


def _save(state: _State, metadata: dict[str, object], output: Path) -> None:
    save_checkpoint(Checkpoint(metadata=metadata, weights=state.net.state_dict(),
                               ema=state.ema_state(), optimizer=state.optimizer.state_dict(),
                               step=state.step, losses=state.losses,
                               rng=state.generator.get_state()), output)
    plot_losses(state.losses, loss_plot_path(output))
    logger.info("step %d: wrote %s", state.step, output)


def train_prior_main(data_paths: Sequence[str | os.PathLike[str]], *, modality: str,
                     output: str | os.PathLike[str], steps: int | None = None,
                     batch_size: int = 8, crop: int = 64, lr: float | None = None,
                     ema_decay: float = 0.999, seed: int = 0,
                     device: torch.device | str = "cpu",
                     resume: str | os.PathLike[str] | None = None,
                     init: str | os.PathLike[str] | None = None,
                     log_every: int = 50) -> Path:
    """The ``medrecon train-prior`` command: read the data, train (from scratch, or
    fine-tune ``init``: ``"default"`` or a checkpoint), write the checkpoint (and its loss
    curve); returns the checkpoint path. ``steps`` defaults to :data:`DEFAULT_STEPS`
    (:data:`FINETUNE_STEPS` when fine-tuning) and ``lr`` to the resumed run's, else
    :data:`DEFAULT_LR` (:data:`FINETUNE_LR` when fine-tuning). Checkpoints are written
    every ``ceil(steps / 10)`` steps (at most every 1000) and at the end. Bad input
    (device, output, init, resume, data) raises :class:`InputError` before any training."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", None, "cuda was asked for but no GPU is usable")
    check_output_path(output)
    if Path(output).is_dir():
        raise InputError(output, "output", "is a folder, expected a checkpoint file name")
    prior = read_init(init, modality) if init is not None else None
    if prior is not None:
        check_not_init(output, prior.path)
    previous = read_checkpoint(resume) if resume is not None else None
    recipe = previous.metadata.get("recipe") if previous is not None else None
    recipe = recipe if isinstance(recipe, dict) else {}
    finetune = prior is not None or isinstance(recipe.get("init"), dict)
    if steps is None:
        steps = FINETUNE_STEPS if finetune else DEFAULT_STEPS
    if lr is None:
        recorded = recipe.get("lr")
        lr = (float(recorded) if isinstance(recorded, (int, float))
              else FINETUNE_LR if finetune else DEFAULT_LR)
    config = TrainConfig(steps=steps, batch_size=batch_size, crop=crop, lr=lr,
                         ema_decay=ema_decay, seed=seed, log_every=log_every,
                         checkpoint_every=max(1, min(1000, math.ceil(steps / 10))))
    if previous is not None:
        recorded = check_resume(resume, previous, modality, config.steps, prior)
        if recorded is not None and recorded.get("path"):
            check_not_init(output, str(recorded["path"]))
    data = load_training_set(data_paths, modality=modality, crop=crop)
    result = train_prior(data, output, config, device=device, resume=resume, init=prior)
    logger.info("trained %d steps in %.1f s, final loss %.4g", result.steps_run, result.seconds,
                result.losses[-1])
    return result.checkpoint
