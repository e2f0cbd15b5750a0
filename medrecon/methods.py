"""One record per reconstruction method: the only place that names a method.

A :class:`Method` holds everything the application knows of a method: the solver
function (:mod:`medrecon.solvers`, imported when first used so that ``medrecon --help``
and ``medrecon protocols ...`` import no torch), the modalities it reconstructs, its
typed, frozen parameter model (pydantic) with the defaults of each modality, whether it
needs a prior, and the one function that turns the user's *relative*, data-independent
settings into the solver's absolute arguments for one :class:`Task` of a study. The
command line's ``--method`` choices, the protocol schema, the runner, the studies and
the README's parameter table all read :data:`METHODS`.

Relative parameters (one name, one meaning at every level of the application; the
solvers' own arguments of the same role are absolute and named in their docstrings):

- ``weight`` of ``tv`` (CT): times ``||A||^2 s``, ``s`` the 99.5th percentile of ``|x|``
  after 10 CGLS iterations, so one number serves every geometry and pixel size;
- ``weight`` of ``tv`` (MRI): times ``2 max |A^H y|``; of ``l1wavelet``: times
  ``max |W A^H y|`` (the weight above which the solution is zero); of ``cgsense``: times
  ``||A||^2`` (the Tikhonov weight of the normal equations). ``||A||`` is the operator's
  computed norm (power iteration, cached per task), so Cartesian and non-Cartesian
  operators of one scan, whatever their scaling, get the same regularisation;
- ``noise_weight`` of ``cgsense`` and ``l1wavelet``: the part of the weight that follows
  the scan's noise, ``nu = sigma / (||A|| q)`` (``sigma`` the estimated noise of the
  data, ``q`` the 99th percentile of the rough image's magnitude: the noise relative to
  the bright tissue). CG-SENSE's Tikhonov weight is ``(weight + noise_weight nu^2)
  ||A||^2`` = ``weight ||A||^2 + noise_weight sigma^2 / q^2``, the posterior mode under
  a Gaussian image prior of standard deviation ``q / sqrt(noise_weight)``; L1-wavelet's
  is ``weight max |W A^H y| + noise_weight sigma^2 / q`` (``= noise_weight nu^2 ||A||^2
  q``), the mode under a Laplace prior of scale ``q / noise_weight`` on the wavelet
  coefficients. Without it the weights that suit the benchmark's noise (1e-3 of the
  image) amplify noise at realistic levels (1e-2 .. 2e-2: CG-SENSE and L1-wavelet fell
  below zero-filling on real brain data);
- ``relative_gamma`` of ``dds``: the data-consistency weight of Chung, Lee & Ye (ICLR
  2024, eq. 13) is ``relative_gamma / ||A'||^2`` with ``A'`` the operator in the prior's
  space, for data whose noise in the prior's space ``sigma_y / ||A'||`` is at most
  ``reference_noise``; noisier data get ``(reference_noise / noise)^2`` of it (the
  Bayesian weight ``r^2 / sigma_y^2`` of a denoised image of fixed error ``r``, see
  :func:`dds_gamma`);
- noise levels ``sigma_max``/``sigma_min`` are in the prior's space (the EDM schedule,
  Karras et al. 2022, eq. 5, rho 7); DDS's schedule ends at ``max(sigma_min,
  noise_sigma_min nu)`` (:func:`dds_sigma_min`), and its ``warm_start`` keeps only the
  levels at or below it, started from the task's rough image; ``zeta`` of ``dps`` is the
  solver's own (absolute) weight, and so is ``gamma`` of ``rmpvi`` for data whose noise
  is at most its ``reference_noise``; above it the excess over Bayes' rule shrinks
  (:func:`rmpvi_gamma`).

>>> sorted(METHODS) == sorted(names())
True
>>> METHODS["dds"].parameters("mri").eta, METHODS["dds"].parameters("ct").eta
(0.5, 1.0)
>>> names("ct")
('fbp', 'cgls', 'sirt', 'tv', 'dds', 'rmpvi', 'dps')
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    import torch

    from medrecon.priors.base import Denoiser
    from medrecon.solvers.problem import Callback, Problem, Reconstruction

MODALITIES = ("ct", "mri")
FBP_FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
TV_SCALE_ITERATIONS = 10
"""CGLS iterations of the rough CT image whose 99.5th percentile scales the TV weight."""


# -------------------------------------------------------------------- parameter models
class Params(BaseModel):
    """A method's parameters: typed, frozen, no unknown keys, no silent coercion."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


Iterations = Annotated[int, Field(ge=1, description="iterations")]
Relative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Sigma = Annotated[float, Field(gt=0, allow_inf_nan=False,
                               description="noise level in the prior's space")]


class FBPParams(Params):
    filter: Literal["ram-lak", "shepp-logan", "cosine", "hamming", "hann"] = Field(
        "ram-lak", description="reconstruction filter")


class NoParams(Params):
    """A method without parameters (zero-filling)."""


class CGLSParams(Params):
    iterations: Iterations = 30


class SIRTParams(Params):
    iterations: Iterations = 200


NoiseWeight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class CGSENSEParams(Params):
    iterations: Iterations = 30
    weight: Relative = Field(1e-3, description="Tikhonov weight relative to ||A||^2")
    noise_weight: NoiseWeight = Field(
        50.0, description="adds noise_weight * nu^2 to weight, nu the scan's relative noise")


class L1WaveletParams(Params):
    iterations: Iterations = 100
    weight: Relative = Field(1e-5, description="relative to max |W A^H y|")
    noise_weight: NoiseWeight = Field(
        15.0, description="adds noise_weight * nu^2 ||A||^2 q, nu the scan's relative noise")


class TVParams(Params):
    iterations: Iterations = 200
    weight: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        3e-4, description="relative: CT ||A||^2 times the image scale, MRI 2 max |A^H y|")


class _Schedule(Params):
    steps: Annotated[int, Field(ge=1, description="noise levels")] = 50
    sigma_max: Sigma = 10.0
    sigma_min: Sigma = 0.02

    @model_validator(mode="after")
    def _ordered(self) -> _Schedule:
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min:g}) must be below sigma_max "
                             f"({self.sigma_max:g})")
        return self


class AdaptParams(Params):
    """Test-time adaptation of the prior to the scan (DDS's ``adapt``): converted to
    :class:`medrecon.solvers.adapt.Adaptation` for the solver."""

    steps: Annotated[int, Field(ge=1, description="Adam steps per adapted noise level")] = 1
    lr: Annotated[float, Field(gt=0, allow_inf_nan=False,
                               description="Adam's learning rate")] = 2e-3
    rank: Annotated[int, Field(ge=1, description="LoRA rank")] = 4
    every: Annotated[int, Field(ge=1, description="adapt at every k-th noise level")] = 1


class DDSParams(_Schedule):
    sigma_min: Sigma = 0.005
    eta: Annotated[float, Field(ge=0, le=1, description="DDIM re-noising (1: full)")] = 1.0
    relative_gamma: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        100.0, description="data-consistency weight relative to 1/||A'||^2 at noise up to "
                           "reference_noise")
    reference_noise: Relative = Field(
        8e-3, description="noise level sigma_y/||A'|| (prior space) above which the data "
                          "weight falls as (reference_noise/noise)^2; 0: fixed")
    noise_sigma_min: Relative = Field(
        3.0, description="the schedule ends at max(sigma_min, noise_sigma_min * noise), "
                         "noise = sigma_y/||A'|| (prior space); 0: at sigma_min")
    cg_iter: Annotated[int, Field(ge=1, description="CG steps of data consistency")] = 5
    warm_start: Relative = Field(
        0.3, description="start from the rough image at the schedule's first level at or "
                         "below this (prior space), running only those levels; 0: from "
                         "noise at sigma_max")
    n_samples: Annotated[int, Field(ge=1, description="samples averaged; 2 or more also "
                                                      "give a std map")] = 4
    adapt: AdaptParams | None = Field(
        None, description="test-time adaptation of the prior to the scan (None: off)")


class RMPVIParams(_Schedule):
    steps: Annotated[int, Field(ge=2, description="noise levels")] = 6
    sigma_min: Sigma = 0.005
    inner_iter: Annotated[int, Field(ge=1, description="iterations per noise level")] = 10
    gamma: Annotated[float, Field(gt=0, allow_inf_nan=False,
                                  description="data weight over Bayes' rule (1)")] = 2.0
    reference_noise: Relative = Field(
        0.006, description="noise level sigma_y/||A'|| (prior space) above which gamma falls "
                         "towards 1 as reference_noise/noise; 0: fixed")
    cg_iter: Annotated[int, Field(ge=1, description="CG steps of each data step")] = 5


class DPSParams(_Schedule):
    steps: Annotated[int, Field(ge=1, description="noise levels")] = 100
    sigma_min: Sigma = 0.005
    zeta: Annotated[float, Field(gt=0, allow_inf_nan=False,
                                 description="step zeta / ||y - A D(x)||")] = 10.0
    n_samples: Annotated[int, Field(ge=1, description="samples; more give a std map")] = 1


# -------------------------------------------------------------------- what a method sees
class Task(Protocol):
    """One solve of a study (a CT batch of slices, an MRI slice), built by
    :mod:`medrecon.studies`: the problem in solver units and what settings derive from."""

    modality: str
    problem: Problem
    sigma_y: float | None
    """The noise level of ``problem.y`` given by the user (``None``: estimate it)."""

    def operator_norm(self) -> float:
        """``||A||`` (power iteration with a fixed seed, computed once per task)."""

    def noise_level(self) -> float:
        """``sigma_y`` if given, else the noise level estimated from the data."""

    def image_level(self) -> float:
        """``q``: the 99th percentile of the rough image's magnitude."""

    def relative_noise(self) -> float:
        """``nu = sigma / (||A|| q)``: the noise relative to the image level."""

    def prior_in_units(self, denoiser: Denoiser) -> Denoiser:
        """``denoiser`` re-expressed in this task's units (same network)."""

    def rough_image(self) -> torch.Tensor:
        """A rough regularised least-squares image (computed once per task)."""


Prepare = Callable[[Task, Any, "Denoiser | None", "torch.Generator | None"],
                   tuple["Problem", dict[str, Any]]]


@dataclass(frozen=True)
class Method:
    """Everything about one reconstruction method (see the module docstring)."""

    name: str
    summary: str
    modalities: tuple[str, ...]
    params: type[Params]
    load_solver: Callable[[], Callable[..., Reconstruction]]
    prepare: Prepare
    needs_prior: bool = False
    fits_data: bool = True
    """Whether the method fits the data (checked against the noise level after the
    solve); not zero-filling and FBP, which only invert."""
    modality_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Where a modality's best value differs from the model's default."""

    def parameters(self, modality: str, given: Mapping[str, Any] | None = None) -> Params:
        """The validated parameters for ``modality``: ``given`` (``None`` values = the
        default) over the modality's defaults over the model's. Raises pydantic's
        ``ValidationError`` for a bad value or an unknown name."""
        values = dict(self.modality_defaults.get(modality, {}))
        values.update({k: v for k, v in (given or {}).items() if v is not None})
        return self.params.model_validate(values)

    def defaults(self, modality: str) -> dict[str, Any]:
        """The default value of every parameter for ``modality``."""
        return self.parameters(modality).model_dump()

    def run(self, task: Task, params: Params, *, prior: Denoiser | None = None,
            generator: torch.Generator | None = None,
            callback: Callback | None = None) -> Reconstruction:
        """Solve ``task`` with ``params``; the result's ``method`` is this method's name."""
        if self.needs_prior and prior is None:
            raise ValueError(f"{self.name} needs a prior")
        problem, arguments = self.prepare(task, params, prior, generator)
        solver = self.load_solver()
        start = time.perf_counter()
        result = solver(problem, callback=callback, **arguments)
        if problem.operator.device.type == "cuda":
            import torch

            torch.cuda.synchronize(problem.operator.device)
        seconds = time.perf_counter() - start
        return replace(result, timings={**result.timings, "total": seconds})


# -------------------------------------------------------------------- settings per method
def _fbp(task: Task, p: FBPParams, prior, generator):
    return task.problem, {"filter": p.filter}


def _zf(task: Task, p: NoParams, prior, generator):
    # a task of non-Cartesian data offers density compensation weights (``density()``,
    # medrecon.studies.mri); Cartesian and CT tasks have none
    density = getattr(task, "density", None)
    weights = density() if density is not None else None
    return task.problem, ({} if weights is None else {"density": weights})


def _cgls(task: Task, p: CGLSParams, prior, generator):
    from medrecon.solvers.problem import Problem

    problem = task.problem
    return Problem(problem.operator, problem.y, sigma_y=task.sigma_y or 0.0), \
        {"n_iter": p.iterations}


def _sirt(task: Task, p: SIRTParams, prior, generator):
    return task.problem, {"n_iter": p.iterations}


def _soft_sense(task: Task):
    """The task's problem with both ESPIRiT map sets where its study offers one (Cartesian
    multi-coil MRI, :mod:`medrecon.studies.mri_sets`: its ``(2 H, W)`` solution is
    combined by the study), else the task's problem. The two sets are orthonormal per
    pixel, so the operator norm is the one-set operator's."""
    soft = getattr(task, "soft_sense_problem", None)
    return (soft() if soft is not None else None) or task.problem


def _cgsense(task: Task, p: CGSENSEParams, prior, generator):
    weight = p.weight + (p.noise_weight * task.relative_noise() ** 2 if p.noise_weight else 0.0)
    return _soft_sense(task), {"weight": weight * task.operator_norm() ** 2,
                               "n_iter": p.iterations}


def _adjoint_max(task: Task, transform: Callable | None = None) -> float:
    adjoint = task.problem.operator.H(task.problem.y)
    if transform is not None:
        adjoint = transform(adjoint)
    return float(adjoint.abs().max())


def _l1wavelet(task: Task, p: L1WaveletParams, prior, generator):
    from medrecon.operators.wavelet import Wavelet2D

    A = task.problem.operator
    W = Wavelet2D(A.domain_shape, dtype=A.dtype, device=A.device)
    norm = task.operator_norm()
    weight = p.weight * _adjoint_max(task, W)
    if p.noise_weight:
        weight += p.noise_weight * task.relative_noise() ** 2 * norm**2 * task.image_level()
    return _soft_sense(task), {"weight": weight, "n_iter": p.iterations, "operator_norm": norm}


def _tv(task: Task, p: TVParams, prior, generator):
    norm = task.operator_norm()
    arguments: dict[str, Any] = {"n_iter": p.iterations, "operator_norm": norm}
    if task.modality == "ct":  # attenuation is non-negative
        import torch

        from medrecon.solvers.classical import cgls

        rough = cgls(task.problem, n_iter=TV_SCALE_ITERATIONS).image
        scale = float(torch.quantile(rough.abs().flatten().float(), 0.995))
        arguments.update(weight=p.weight * norm**2 * scale, nonnegative=True)
    else:
        arguments.update(weight=p.weight * 2 * _adjoint_max(task))
    return task.problem, arguments


def _diffusion(task: Task, p: _Schedule, prior, generator, sigma_min: float | None = None
               ) -> tuple[Problem, dict[str, Any], Denoiser]:
    from medrecon.solvers.problem import Problem
    from medrecon.solvers.schedules import karras

    problem = Problem(task.problem.operator, task.problem.y, sigma_y=task.noise_level())
    denoiser = task.prior_in_units(prior)
    sigma_min = p.sigma_min if sigma_min is None else sigma_min
    arguments = {"denoiser": denoiser, "sigmas": karras(sigma_min, p.sigma_max, p.steps),
                 "generator": generator}
    return problem, arguments, denoiser


def noise_factor(noise: float, reference: float) -> float:
    """``min(1, (reference / noise)^2)``: how much of DDS's data weight data of noise level
    ``noise`` keep against data at ``reference`` (1 for ``reference = 0``: no adaptation)."""
    if not (reference > 0 and noise > reference):
        return 1.0
    return (reference / noise) ** 2


def prior_space_noise(task: Task, denoiser: Denoiser) -> tuple[float, float]:
    """``(||A'||, sigma_y / ||A'||)``: the norm of the task's operator in the prior's
    intensity space ``A' = scale A`` and the data's noise relative to it."""
    norm = task.operator_norm() * denoiser.scale
    return norm, task.noise_level() / norm


def dds_sigma_min(task: Task, p: DDSParams, denoiser: Denoiser) -> float:
    """Where DDS's schedule ends: ``max(sigma_min, noise_sigma_min * nu)``, ``nu`` the
    data's noise in the prior's space (:func:`prior_space_noise`). The data fix the
    image only to about their noise; below that level each step draws detail from the
    prior alone (a posterior sample's texture, which costs PSNR against the posterior
    mean), so noisier scans stop earlier, with the same number of steps."""
    if not p.noise_sigma_min:
        return p.sigma_min
    return min(max(p.sigma_min, p.noise_sigma_min * prior_space_noise(task, denoiser)[1]),
               p.sigma_max / 2)


def dds_gamma(task: Task, p: DDSParams, denoiser: Denoiser) -> float:
    """DDS's data weight for ``task`` in the prior's space ``A' = scale A``:
    ``relative_gamma / ||A'||^2 * min(1, (reference_noise / nu)^2)`` with
    ``nu = sigma_y / ||A'||`` the noise of the data in the prior's intensity space
    (``sigma_y`` the task's noise level, given or estimated).

    The data-consistency step ``min_x ||x - x0||^2 + gamma ||A' x - y||^2`` is the
    posterior mode of ``x`` between a denoised image ``x0`` of error ``r`` per pixel and
    data of noise ``sigma_y`` when ``gamma = r^2 / sigma_y^2``; the fixed weight
    ``relative_gamma / ||A'||^2`` (Chung, Lee & Ye's eq. 13, made independent of the
    operator's scale) is that weight for ``r = sqrt(relative_gamma) reference_noise``
    at noise ``reference_noise``. For noisier data the same ``r`` gives the weight
    above: it falls as ``1 / sigma_y^2`` instead of pulling the image to the noise; at
    lower noise it stays (the CG steps bound the fit anyway)."""
    norm, noise = prior_space_noise(task, denoiser)
    return p.relative_gamma / norm**2 * noise_factor(noise, p.reference_noise)


def _prior_grid(task: Task, prior) -> Task:
    """The task as the prior sees it where its study offers one (an MRI image under half
    the prior's training size on a finer grid, both ESPIRiT map sets where there are
    two; :mod:`medrecon.studies.mri_resolution`: its solution is brought back by the
    study), else ``task``."""
    fine = getattr(task, "prior_grid_task", None)
    return (fine(prior) if fine is not None else None) or task


def _dds(task: Task, p: DDSParams, prior, generator):
    # on the prior's grid the weight stays the task's: r^2 / sigma_y^2 (r the denoised
    # image's error per pixel, sigma_y the data's noise) does not depend on the grid
    units = task.prior_in_units(prior)
    gamma, sigma_min = dds_gamma(task, p, units), dds_sigma_min(task, p, units)
    task = _prior_grid(task, prior)
    problem, arguments, denoiser = _diffusion(task, p, prior, generator, sigma_min)
    arguments = {**arguments, "eta": p.eta, "gamma": gamma, "cg_iter": p.cg_iter,
                 "n_samples": p.n_samples}
    if p.warm_start:
        from medrecon.solvers.schedules import truncated

        arguments.update(sigmas=truncated(arguments["sigmas"], p.warm_start),
                         x_init=task.rough_image())
    if p.adapt is not None:
        from medrecon.solvers.adapt import Adaptation

        arguments["adapt"] = Adaptation(steps=p.adapt.steps, lr=p.adapt.lr, rank=p.adapt.rank,
                                        every=p.adapt.every)
    return problem, arguments


def rmpvi_gamma(task: Task, p: RMPVIParams, denoiser: Denoiser) -> float:
    """RMP-VI's data weight over Bayes' rule for ``task``: ``1 + (gamma - 1) *
    min(1, reference_noise / nu)``, ``nu`` the data's noise in the prior's space
    (:func:`prior_space_noise`; ``gamma`` itself for ``reference_noise = 0`` or
    ``gamma <= 1``). Its weight ``r_s^2 / sigma_y^2`` already follows the noise (Bayes'
    rule); ``gamma > 1`` puts the data above it, which sharpens clean scans and fits the
    noise of noisy ones, so the excess over Bayes' rule shrinks as the noise grows."""
    if not (p.reference_noise > 0 and p.gamma > 1):
        return p.gamma
    noise = prior_space_noise(task, denoiser)[1]
    return 1 + (p.gamma - 1) * noise_factor(noise, p.reference_noise) ** 0.5


def _rmpvi(task: Task, p: RMPVIParams, prior, generator):
    gamma = rmpvi_gamma(task, p, task.prior_in_units(prior))
    task = _prior_grid(task, prior)
    problem, arguments, _ = _diffusion(task, p, prior, generator)
    return problem, {**arguments, "inner_iter": p.inner_iter, "gamma": gamma,
                     "cg_iter": p.cg_iter, "x_init": task.rough_image(), "zeta": None}


def _dps(task: Task, p: DPSParams, prior, generator):
    problem, arguments, _ = _diffusion(task, p, prior, generator)
    return problem, {**arguments, "zeta": p.zeta, "n_samples": p.n_samples}


# -------------------------------------------------------------------- solver imports
def _solver_fbp():
    from medrecon.solvers.classical import fbp
    return fbp


def _solver_cgls():
    from medrecon.solvers.classical import cgls
    return cgls


def _solver_sirt():
    from medrecon.solvers.classical import sirt
    return sirt


def _solver_tv():
    from medrecon.solvers.classical import tv
    return tv


def _solver_zf():
    from medrecon.solvers.zero_filled import zero_filled
    return zero_filled


def _solver_cgsense():
    from medrecon.solvers.cgsense import cgsense
    return cgsense


def _solver_l1wavelet():
    from medrecon.solvers.l1wavelet import l1wavelet
    return l1wavelet


def _solver_dds():
    from medrecon.solvers.dds import dds
    return dds


def _solver_rmpvi():
    from medrecon.solvers.rmpvi import rmpvi
    return rmpvi


def _solver_dps():
    from medrecon.solvers.dps import dps
    return dps


_CT, _MRI, _BOTH = ("ct",), ("mri",), ("ct", "mri")

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("fbp", "filtered back-projection (ASTRA)", _CT, FBPParams, _solver_fbp, _fbp,
           fits_data=False),
    Method("cgls", "conjugate gradient least squares", _CT, CGLSParams, _solver_cgls, _cgls),
    Method("sirt", "simultaneous iterative reconstruction, non-negative", _CT, SIRTParams,
           _solver_sirt, _sirt),
    Method("zf", "zero-filled inverse FFT / adjoint NUFFT, coil-combined", _MRI, NoParams,
           _solver_zf, _zf, fits_data=False),
    Method("cgsense", "CG-SENSE with Tikhonov regularisation", _MRI, CGSENSEParams,
           _solver_cgsense, _cgsense),
    Method("l1wavelet", "FISTA with an L1 penalty on db4 wavelets", _MRI, L1WaveletParams,
           _solver_l1wavelet, _l1wavelet),
    Method("tv", "total variation by Chambolle-Pock PDHG", _BOTH, TVParams, _solver_tv, _tv,
           modality_defaults={"mri": {"iterations": 100, "weight": 3e-3}}),
    Method("dds", "decomposed diffusion sampling, CG data consistency", _BOTH, DDSParams,
           _solver_dds, _dds, needs_prior=True,
           modality_defaults={"mri": {"eta": 0.5, "relative_gamma": 1000.0,
                                      "reference_noise": 1.2e-3, "noise_sigma_min": 0.0,
                                      "cg_iter": 15}}),
    Method("rmpvi", "reverse mean propagation by score-based variational inference", _BOTH,
           RMPVIParams, _solver_rmpvi, _rmpvi, needs_prior=True,
           modality_defaults={"mri": {"cg_iter": 15, "reference_noise": 0.0}}),
    Method("dps", "diffusion posterior sampling", _BOTH, DPSParams, _solver_dps, _dps,
           needs_prior=True),
)}
"""Every method, by name. Defaults: TV's CT weight is the best of 3e-5 .. 1e-3 on the
bundled 60-view sample; the MRI TV weight was tuned on the 8-coil 256 x 256 phantom at
R = 4 and 8. CG-SENSE (weight 1e-3, noise_weight 50, 30 iterations) and L1-wavelet
(weight 1e-5, noise_weight 15, 100 iterations) were tuned on generated 256 x 256 slices
(MNI152 training slices with and without scalp, fat and skull, body phantoms; 8 coils,
R = 4 with 8 % and R = 8 with 5 % centre, noise 1e-3 .. 2e-2 of the image): at 2e-2 the
old fixed weights (CG-SENSE 1e-2, L1 1e-5) gave 28.2 and 21.4 dB on a held-out brain
slice at R = 4 (zero-filling 27.5), these 29.7 and 32.7 dB; at 1e-3 CG-SENSE gains
2.8 dB (37.8), L1-wavelet stays (40.7). DDS (CT): eta 1, relative_gamma 100, sigma_min
0.02 gave 32.0 dB / 0.857 on a held-out phantom slice (seed 10000, 60 views) against
30.1 dB / 0.776 for eta 0.5, relative_gamma 30, sigma_min 0.005; on MRI a held-out brain
slice at R = 8 gained 1 dB from 15 CG iterations, sigma_min 0.005, eta 0.5 and
relative_gamma 1000 (28.9 against 27.5 dB). Those were tuned at 2e5 photons (CT) and
noise 1e-3 (MRI): reference_noise is the noise those scans have in the prior's space
(8e-3 for the CT slice, 1.1e-3 .. 1.2e-3 for brain slices), above which the data weight
falls (:func:`dds_gamma`); with 30 steps at 2e-2 on a held-out brain slice this gave
33.3 dB against 16.2 (R = 4), at 2e4 photons on the CT slice 25.2 against 23.4 dB.
DDS's CT schedule ends at ``max(0.005, 3 nu)`` (:func:`dds_sigma_min`): on the held-out
crops of bench/bench_ct_tuning.py 33.37 / 31.52 / 38.54 dB at 30 views 2e5, 60 views
2e4 and 60 views 1e6 photons, against 33.30 / 30.83 / 37.50 for the fixed end at 0.02;
on MRI ``noise_sigma_min`` 2 and 4 lowered DDS (bench/bench_mri_tuning.py), so it is 0 there.
DDS's warm start at 0.3 with 4 samples (Chung, Sim & Ye's CCDF: the rough image re-noised
to the first level at or below 0.3, 13 to 20 of the 50 levels per sample): on the CT
crops 34.42 / 32.27 dB (30 views 2e5, 60 views 2e4) against 33.72 / 31.76 for one sample
from noise, in about the same time (4 samples from noise: 34.55 / 32.23 at 3.7 times
the time; warm start 1.0: 34.57 / 32.27; 0.15 from the TV image: 33.84 / 32.29; 8
samples: +0.11 dB at 1.7 times the time); on the MRI tuning set 41.94 / 30.67 / 34.36 /
29.06 dB against 41.32 / 30.45 / 33.80 / 28.31 (R = 4 and 8, noise 1e-3 and 2e-2), at
1.14 times the time side by side (2 chains: 33.84 mean against 34.01, in half the time).
Starting from the TV image instead of the rough image gave the same (within 0.08 dB) at
more cost.
RMP-VI: the CG data step (Pi-GDM's Gaussian Jacobian with the full ``A A^H``) with
gamma 2 and 6 levels of 10 iterations (50 evaluations): on held-out CT phantom slices
29.97 / 28.88 dB at 30 views (DDS at 50 steps 25.87 / 26.22), on a held-out brain slice
at R = 4 34.77 dB with 15 CG steps (DDS 33.92); the former gradient step with gamma 30
and 21 x 10 (200 evaluations) gave 28.3 dB on the 60-view slice. Its data weight
``r_s^2 / sigma_y^2`` already follows the noise; on CT the excess of gamma over Bayes'
rule shrinks above ``reference_noise`` 0.006 (:func:`rmpvi_gamma`): on the held-out crops of
bench/bench_ct_tuning.py 31.31 / 33.36 / 35.18 / 40.33 dB at 30 and 60 views with 2e4
photons, 30 views 2e5 and 60 views 1e6, against 30.93 / 32.63 / 35.18 / 40.33 for the fixed
gamma 2 (reference 0.008: 31.32 / 33.18); on MRI it lowered every row of
bench/bench_mri_tuning.py (reference 0.0012 and 0.006), so it is off there.
DPS: zeta 10, 100 steps."""


def names(modality: str | None = None) -> tuple[str, ...]:
    """The methods that reconstruct ``modality`` (all methods for ``None``), in order."""
    return tuple(n for n, m in METHODS.items() if modality is None or modality in m.modalities)


def method(name: str, modality: str | None = None) -> Method:
    """The record of ``name``; ``ValueError`` naming the choices if it is unknown or does
    not reconstruct ``modality``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(names(modality))}")
    record = METHODS[name]
    if modality is not None and modality not in record.modalities:
        raise ValueError(f"{name} does not reconstruct {modality}; {modality} methods: "
                         f"{', '.join(names(modality))}")
    return record


def parameter_table() -> str:
    """The README's table of methods and parameters (defaults per modality), as Markdown."""
    lines = ["| method | modality | parameters (default) |", "|---|---|---|"]
    for record in METHODS.values():
        base = record.defaults(record.modalities[0])
        shown = ", ".join(f"`{k}` ({_show(v)})" for k, v in base.items()) or "none"
        for modality in record.modalities[1:]:
            other = {k: v for k, v in record.defaults(modality).items() if base[k] != v}
            if other:
                shown += f"; {modality.upper()}: " + ", ".join(
                    f"`{k}` {_show(v)}" for k, v in other.items())
        lines.append(f"| `{record.name}` | {', '.join(record.modalities)} | {shown} |")
    return "\n".join(lines)


def _show(value: Any) -> str:
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)
