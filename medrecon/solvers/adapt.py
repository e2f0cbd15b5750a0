"""Scan-adaptive priors: test-time adaptation of a denoiser to one scan's data.

A prior trained on one distribution meets a scan from another (a phantom prior on a
patient, another anatomy, another dose). Following Barbano, Denker, Chung, Roh,
Arridge, Maass, Jin, Ye, "Steerable conditional diffusion for out-of-distribution
adaptation in imaging inverse problems" (SCD, arXiv 2308.14409; later versions "... in
medical image reconstruction") and Chung and Ye, "Deep diffusion image prior for
efficient OOD adaptation in 3D inverse problems" (DDIP, ECCV 2024, arXiv 2407.10641),
the diffusion solver (:func:`medrecon.solvers.dds.dds`) fits a few parameters ``phi``
of an adapted copy ``D_phi`` of the denoiser to the measured data at each (or each
``every``-th) noise level, with the noisy iterate ``x_t`` held fixed:

    phi <- Adam step on  L(phi) = sum_b ||A D_phi(x_t, sigma_t) - y||^2 / ||y||^2,

SCD's adaptation objective, the data fit of the Tweedie estimate over the LoRA
parameters only (SCD's code takes it after the CG step and adds a small TV term), in
the prior's intensity space and summed over the batch; it then denoises with ``D_phi``
(the evaluation of the last Adam step: see :class:`TestTimeAdapter`) before the usual
data consistency. The base weights stay frozen; the adapted parameters carry over from
one noise level to the next and are discarded after the scan.

Parameters ``phi`` (:func:`adapted`):

- a network (an ``nn.Module`` holding ``nn.Conv2d`` layers): low-rank adapters (LoRA,
  Hu et al., ICLR 2022, eq. 3) on every ungrouped convolution, in the convolutional
  form SCD uses: ``out = conv(x) + (alpha / r) up(down(x))``, ``down`` a convolution
  with the base's kernel, stride, padding and dilation to ``r`` channels, ``up`` a
  1 x 1 convolution ``r -> out``, zero-initialised so the adapted network starts equal
  to the base. Linear layers (attention projections, the time embedding) are not
  adapted: convolutions carry almost all the weights of the UNets medrecon ships and
  loads, and SCD adapts convolutions only;
- a :class:`~medrecon.priors.gaussian.GaussianPrior` ``N(m, c)``: a bias adapter,
  the mean ``m + delta`` with a learnable ``delta`` (zero-initialised): the analogue
  of adapting the shifts of a network's normalisation layers;
- any object with a method ``adapter(rank) -> (adapted_denoiser, parameters)``: its own;
- a wrapper dataclass with a ``denoiser`` field (e.g. the units map of
  :class:`medrecon.studies.MappedPrior`): the same wrapper around the adapted inner
  denoiser.

The given denoiser is never modified: networks are deep-copied. One set of adapters
serves the whole batch (all slices of ``y``'s leading dimensions and all samples):
the adaptation is per scan, not per slice.

Example:
    >>> import torch
    >>> from medrecon.priors.network import EDMDenoiser, TinyDenoiserNet
    >>> base = EDMDenoiser(TinyDenoiserNet(1), is_complex=False)
    >>> copy, params = adapted(base, rank=2)
    >>> x = torch.randn(1, 8, 8)
    >>> bool(torch.equal(copy(x, 0.5), base(x, 0.5))), len(params)
    (True, 6)
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from medrecon.priors.base import PriorSpace, denoise_checked
from medrecon.priors.gaussian import GaussianPrior
from medrecon.solvers.linalg import sq_norm

LORA_ALPHA = 4.0
"""LoRA's ``alpha``: the adapter's output is scaled by ``alpha / rank`` (Hu et al. fix
``alpha`` to the first rank tried, so that the learning rate need not change with the
rank); with the default rank 4 the scale is 1."""

DIVERGENCE_FACTOR = 2.0
"""Adaptation stops (and the base prior takes over) when a loss exceeds this factor times
the first loss of the scan: the loss falls as the iterate approaches the data, so a
rise above the loss at the largest noise level means the optimiser diverged."""

INIT_SEED = 0
"""Seed of the ``down`` weights of fresh adapters: adapters are deterministic, and they
draw nothing from the solver's generator (plain and adapted runs see the same noise)."""


@dataclass(frozen=True)
class Adaptation:
    """Test-time adaptation settings of a diffusion solver (see the module docstring).

    Attributes:
        steps: Adam steps per noise level where it adapts (``>= 1``).
        lr: Adam's learning rate (``> 0``).
        rank: LoRA rank ``r`` (``>= 1``; unused by a Gaussian prior's bias adapter).
        every: adapt at every ``every``-th noise level, starting with the first
            (1 = all).

    The defaults were chosen with DDS's CT defaults and the shipped CT prior on a
    held-out 256 x 256 phantom slice (``bench/bench_adapt.py``) at 30 and 60 parallel
    views, paired over sampler seeds: ``lr`` 2e-3 gained 0.30 dB at 30 views and lost
    0.07 dB at 60 (3e-3: +0.36 / -0.29 dB; 1e-3: +0.01 / -0.12 dB; 5e-3 and 1e-2 lost 0.5
    to 0.9 dB at 60 views), at about 2.0 times the CPU time of plain DDS. Larger steps are
    unsafe in a way the divergence test cannot see: 1e-2 with two steps at every second
    level (in an earlier form of this loop) gave 15 dB, data-consistent noise, while the
    loss stayed below the first. One step
    at every level is what that budget (at most 3 times) allows: a second step per level
    costs a forward-backward pass more. The phantom is of the prior's own training
    distribution, where adaptation has little to correct; on a real CT slice it helps
    more (see the benchmark).
    """

    steps: int = 1
    lr: float = 2e-3
    rank: int = 4
    every: int = 1

    def __post_init__(self) -> None:
        for name in ("steps", "rank", "every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Adaptation.{name} must be an integer >= 1, got {value!r}")
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) \
                or not lr > 0:
            raise ValueError(f"Adaptation.lr must be a finite number > 0, got {lr!r}")

    def adapts_at(self, step: int) -> bool:
        """Whether noise level ``step`` (0-based) is one where the prior adapts."""
        return step % self.every == 0


class LoRAConv2d(nn.Module):
    """``conv(x) + (alpha / r) up(down(x))`` around a frozen ``nn.Conv2d`` (see the module
    docstring), evaluated as the one convolution with the merged weight
    ``W + (alpha / r) up @ down`` (the same linear map: ``down`` shares the base's kernel,
    stride, padding and dilation and ``up`` is 1 x 1). ``weight`` and ``bias`` read as the
    merged convolution's, so code that applies ``conv.weight`` itself (as score_sde's
    fused FIR resampling does) sees the adapted layer too. With ``up = 0`` the merged
    weight is exactly ``W``."""

    def __init__(self, base: nn.Conv2d, rank: int, generator: torch.Generator):
        super().__init__()
        if base.groups != 1:
            raise ValueError("LoRA adapters take ungrouped convolutions")
        self.base = base
        self.rank = rank
        self.scaling = LORA_ALPHA / rank
        w = base.weight
        self.down = nn.Conv2d(base.in_channels, rank, base.kernel_size, stride=base.stride,
                              padding=base.padding, dilation=base.dilation, bias=False,
                              padding_mode=base.padding_mode, device=w.device, dtype=w.dtype)
        self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False, device=w.device,
                            dtype=w.dtype)
        # LoRA's initialisation: down as nn.Conv2d's default bound 1/sqrt(fan_in), up zero
        fan_in = base.in_channels * math.prod(base.kernel_size)
        bound = 1.0 / math.sqrt(fan_in)
        init = torch.rand(self.down.weight.shape, generator=generator, dtype=torch.float64)
        with torch.no_grad():
            self.down.weight.copy_((2 * init - 1) * bound)
            self.up.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # conv(x) + s up(down(x)) as one convolution with the merged weight: its forward
        # costs the base's, and a forward + backward of the shipped CT prior at 256 x 256
        # takes 0.74 s of CPU against 1.05 s for the literal form's extra maps (2 cores)
        return self.base._conv_forward(x, self.weight, self.base.bias)

    @property
    def weight(self) -> torch.Tensor:
        delta = torch.einsum("or,rikl->oikl", self.up.weight[:, :, 0, 0], self.down.weight)
        return self.base.weight + self.scaling * delta

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base":
                raise
            return getattr(self.base, name)  # kernel_size, stride, in_channels, ...


class BiasAdaptedGaussian(GaussianPrior):
    """A :class:`GaussianPrior` whose mean is ``base.mean + delta`` (``delta`` learnable);
    the exact denoiser, sampler and posterior of that shifted prior."""

    def __init__(self, base: GaussianPrior):  # no super().__init__: ``mean`` is derived
        self.base_mean = base.mean.detach()
        self.delta = torch.zeros_like(self.base_mean, requires_grad=True)
        self.variance = base.variance
        self.is_complex = base.is_complex
        self.scale, self.offset = base.scale, base.offset

    @property
    def mean(self) -> torch.Tensor:  # type: ignore[override]
        return self.base_mean + self.delta


def lora_network(module: nn.Module, rank: int) -> tuple[nn.Module, list[nn.Parameter]]:
    """A deep copy of ``module`` with every ungrouped ``nn.Conv2d`` wrapped in a
    :class:`LoRAConv2d` of ``rank``; the copy's own weights are frozen and the adapters'
    are returned (in a fixed order)."""
    net = copy.deepcopy(module)
    net.requires_grad_(False)
    generator = torch.Generator().manual_seed(INIT_SEED)
    targets = [(name, child) for name, child in net.named_modules()
               if isinstance(child, nn.Conv2d) and child.groups == 1]
    if not targets:
        raise ValueError("adaptation needs a network denoiser with convolutions or a "
                         "Gaussian prior")
    params: list[nn.Parameter] = []
    for name, conv in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        wrapped = LoRAConv2d(conv, rank, generator)
        setattr(parent, attr, wrapped)
        params += [wrapped.down.weight, wrapped.up.weight]
    return net, params


def adapted(denoiser, rank: int) -> tuple[object, list[torch.Tensor]]:
    """``(adapted_denoiser, parameters)``: a copy of ``denoiser`` with fresh adapters of
    ``rank`` that starts equal to it, and the adapters' tensors to optimise (see the
    module docstring for the kinds of denoisers). ``denoiser`` is not modified."""
    own = getattr(denoiser, "adapter", None)
    if callable(own):
        return own(rank)
    if dataclasses.is_dataclass(denoiser) and not isinstance(denoiser, type) and \
            "denoiser" in {f.name for f in dataclasses.fields(denoiser)}:
        inner, params = adapted(denoiser.denoiser, rank)
        return dataclasses.replace(denoiser, denoiser=inner), params
    if isinstance(denoiser, nn.Module) and \
            any(isinstance(m, nn.Conv2d) for m in denoiser.modules()):
        return lora_network(denoiser, rank)
    if isinstance(denoiser, GaussianPrior):
        prior = BiasAdaptedGaussian(denoiser)
        return prior, [prior.delta]
    raise ValueError("adaptation needs a network denoiser with convolutions or a Gaussian prior")


class Adam:
    """Adam (Kingma and Ba, ICLR 2015, Algorithm 1) on a list of tensors, with
    ``beta1 = 0.9``, ``beta2 = 0.999``, ``eps = 1e-8``; complex tensors are updated as
    their real and imaginary parts. (``torch.optim.Adam`` would do the same, but its
    first use imports ``torch._dynamo``: seconds, once per process.)"""

    def __init__(self, params: list[torch.Tensor], lr: float, betas: tuple[float, float] = (
            0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.t = 0
        self._m = [torch.zeros_like(_real(p)) for p in params]
        self._v = [torch.zeros_like(_real(p)) for p in params]

    def step(self) -> None:
        """One update from the parameters' ``.grad`` (which it then clears)."""
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        with torch.no_grad():
            for p, m, v in zip(self.params, self._m, self._v):
                if p.grad is None:
                    continue
                g = _real(p.grad)
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                _real(p).addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-self.lr / c1)
                p.grad = None


def _real(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(x) if x.is_complex() else x


class TestTimeAdapter:
    """The denoiser of a diffusion solver that adapts to one scan (module docstring).

    ``denoise(x, sigma, step)`` returns ``D_phi(x, sigma)``. At the noise levels where
    ``settings`` adapts it evaluates ``D_phi(x, sigma)`` with gradients to ``phi`` (not to
    ``x``) and takes an Adam step on ``L(phi) = sum_b ||A D_phi(x, sigma) - y||^2 / ||y||^2``
    of ``space``'s problem, ``settings.steps`` times; the last of these evaluations is
    the denoised image it returns, so its update takes effect from the next noise level
    on. An adapting level thus costs ``steps`` network forward-backward passes and no
    further forward pass (one evaluation more per level would denoise with the updated
    adapters: adapting at every level with one step, that measured 2.9 to 3.1 times the
    CPU time of plain DDS with the shipped CT prior on a 256 x 256 slice, against 2.0 to
    2.1 times here, for the same adaptation lagging one level).

    A NaN or infinite loss, or one above :data:`DIVERGENCE_FACTOR` times the first, ends
    adaptation: that level is denoised by the base denoiser, which serves the rest of the
    run; :attr:`fell_back` is set and a warning (prefixed ``name``) is kept in
    :attr:`warnings`."""

    def __init__(self, settings: Adaptation, denoiser, space: PriorSpace, name: str):
        self.settings, self.base, self.name = settings, denoiser, name
        self.problem = space.problem
        self.current, params = adapted(denoiser, settings.rank)
        self.params = list(params)
        self.optimizer: Adam | None = Adam(self.params, settings.lr)
        self.losses: list[float] = []
        self.steps = 0
        self.evaluations = 0
        self.fell_back = False
        self.warnings: list[str] = []
        self._y_sq = self.problem.y_norm ** 2

    def loss(self, x0: torch.Tensor) -> torch.Tensor:
        """``sum_b ||A x0 - y||^2 / ||y||^2`` (``x0`` may carry a sample dimension)."""
        misfit = self.problem.operator(x0) - self.problem.y
        return (sq_norm(misfit, self.problem.range_dims) / self._y_sq).sum()

    def _diverged(self, value: float) -> bool:
        return not math.isfinite(value) or (
            bool(self.losses) and value > DIVERGENCE_FACTOR * self.losses[0])

    def _fall_back(self, step: int, value: float) -> None:
        self.fell_back, self.current = True, self.base
        self.params, self.optimizer = [], None
        self.warnings.append(f"{self.name}: test-time adaptation diverged at step {step} "
                             f"(loss {value:.4g}); fell back to the base prior")

    def denoise(self, x: torch.Tensor, sigma: float, step: int) -> torch.Tensor:
        """``D_phi(x, sigma)`` at noise level ``step``, adapting first where it adapts."""
        if self.fell_back or not self.settings.adapts_at(step):
            self.evaluations += 1
            return denoise_checked(self.current, x, sigma, step)
        x = x.detach()
        for _ in range(self.settings.steps):
            self.evaluations += 1
            with torch.enable_grad():
                x0 = self.current(x, sigma)
                loss = self.loss(x0)
                value = float(loss.detach())
                self.losses.append(value)
                if self._diverged(value):
                    self._fall_back(step, value)
                    self.evaluations += 1
                    return denoise_checked(self.base, x, sigma, step)
                loss.backward()
            self.optimizer.step()
            self.steps += 1
        # the last evaluation is the denoised image: its update acts from the next level
        return x0.detach()

    def info(self) -> dict[str, object]:
        """``{"losses": [...], "steps": Adam steps taken, "fell_back": bool}``."""
        return {"losses": list(self.losses), "steps": self.steps, "fell_back": self.fell_back}
