"""DDS: decomposed diffusion sampling (Chung, Lee, Ye, "Decomposed diffusion sampler
for accelerating large-scale inverse problems", ICLR 2024, Algorithm 1; VE form of
ALGORITHMS.md).

For each step ``sigma_i -> sigma_{i-1}``:

1. ``x0 = D(x_i, sigma_i)``, no gradient through the network;
2. data consistency in the clean space by ``cg_iter`` conjugate-gradient iterations
   started at ``x0`` (batched, conjugated complex inner products, early stop at
   ``cg_tol``):
   - noisy data (``sigma_y > 0``): ``(I + gamma A^H A) x = x0 + gamma A^H y``
     (Tikhonov-regularised step towards the data, eq. 14 of the paper);
   - noiseless data: ``A^H A x = A^H y`` from ``x0``, so ``x`` stays in
     ``x0 + range(A^H)`` (the Krylov subspace, Prop. 2);
3. DDIM re-noising with ``eta``: ``eps = (x_i - x0) / sigma_i``,
   ``x_{i-1} = x + sigma_{i-1} (eta z + sqrt(1 - eta^2) eps)``.

Warm start (``x_init``): the chain starts at ``x_init + sigmas[0] z`` instead of
``sigmas[0] z`` (Chung, Sim & Ye, "Come-closer-diffuse-faster", CVPR 2022, eq. 8 in VE
form), for a schedule that begins below ``sigma_max``
(:func:`medrecon.solvers.schedules.truncated`): from a rough estimate, a few levels
suffice, and the network evaluations saved pay for several samples whose mean is closer
to the posterior mean than one sample.

The output is the last data-consistent ``x`` (the mean over samples). Paper: 50 network
evaluations with ``eta = 0.5``; 5 CG iterations. The official code omits the complex conjugate in
its CG inner products; :func:`medrecon.solvers.linalg.conjugate_gradient` does not.

Scan-adaptive prior (``adapt``, :class:`medrecon.solvers.adapt.Adaptation`): step 1
uses a copy ``D_phi`` of the prior with adapters ``phi`` (LoRA on a network's
convolutions, a mean shift of a Gaussian prior), and at every ``adapt.every``-th noise
level ``adapt.steps`` Adam steps fit them to the data through step 1's Tweedie estimate,
``min_phi sum_b ||A D_phi(x_i, sigma_i) - y||^2 / ||y||^2`` with ``x_i`` fixed (Barbano,
Denker, Chung et al., "Steerable conditional diffusion", arXiv 2308.14409, whose code
puts the CG step inside the loss; Chung and Ye, DDIP, ECCV 2024, arXiv 2407.10641).
The evaluation of the last Adam step is step 1's ``x0``, so the update it gives acts
from the next level on (no extra network evaluation;
:class:`medrecon.solvers.adapt.TestTimeAdapter`). The adapters start at zero (the adapted
prior equals the base), persist across noise levels and are discarded after the call;
one set serves the whole batch. A diverging adaptation falls back to the base prior for
the remaining steps, with a warning in ``info["warnings"]``.
"""

from __future__ import annotations

import torch

from medrecon.priors.base import Denoiser, denoise_checked, prior_space, standard_noise
from medrecon.solvers.adapt import Adaptation, TestTimeAdapter
from medrecon.solvers.linalg import conjugate_gradient
from medrecon.solvers.problem import Callback, Problem, Reconstruction
from medrecon.solvers.sampling import sample_statistics, start_noise
from medrecon.solvers.schedules import check_descending


def dds(problem: Problem, denoiser: Denoiser, sigmas: torch.Tensor, *, eta: float = 0.5,
        cg_iter: int = 5, cg_tol: float = 1e-6, gamma: float = 1.0, noisy: bool | None = None,
        n_samples: int = 1, generator: torch.Generator | None = None,
        callback: Callback | None = None, adapt: Adaptation | None = None,
        x_init: torch.Tensor | None = None) -> Reconstruction:
    """Reconstruct by DDS; ``sigmas`` descending (``len(sigmas)`` network evaluations per
    sample). ``noisy`` picks the data-consistency form (default: ``sigma_y > 0``);
    ``gamma`` is in the prior's intensity space. The image is the mean of the samples,
    ``residual`` its relative data residual per batch item (one product with ``A``,
    after the last step); ``callback(i, n, x_i)`` gets each data-consistent estimate
    (prior space). ``adapt`` adapts the prior to the scan (module docstring; ``None``:
    plain DDS); ``info["adaptation"]`` then holds ``losses`` (the relative data fit
    before each Adam step), ``steps`` (Adam steps taken) and ``fell_back``, and
    ``info["warnings"]`` (always present) any warning. ``nfe`` counts every forward
    evaluation of the network, those of the adaptation's extra Adam steps included (one
    step per level adds none; the backward passes are not counted). ``x_init`` (data
    units, the shape of one sample) warm-starts the chain at ``x_init + sigmas[0] z``
    (module docstring)."""
    check_descending(sigmas)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    space = prior_space(problem, denoiser)
    A, y = space.problem.operator, space.problem.y
    noisy = problem.sigma_y > 0 if noisy is None else noisy
    ndim = len(A.domain_shape)
    aty = A.H(y)
    levels = [float(s) for s in sigmas] + [0.0]
    x = start_noise(space.problem, n_samples, levels[0], generator)
    if x_init is not None:
        x = x + space.to_prior(x_init)
    n_steps = 0
    tuner = None if adapt is None else TestTimeAdapter(adapt, denoiser, space, "dds")

    def damped_normal(v: torch.Tensor) -> torch.Tensor:
        return torch.add(v, A.normal(v), alpha=gamma)

    with torch.no_grad():
        for i, (s, s_next) in enumerate(zip(levels[:-1], levels[1:])):
            if tuner is None:
                x0 = denoise_checked(denoiser, x, s, i)
            else:  # test-time adaptation of the prior, then its denoised image
                x0 = tuner.denoise(x, s, i)
            # data consistency by conjugate gradients, started at the denoised image
            if noisy:
                x_dc, _, _ = conjugate_gradient(damped_normal, torch.add(x0, aty, alpha=gamma),
                                                x0, n_iter=cg_iter, tol=cg_tol, ndim=ndim)
            else:
                x_dc, _, _ = conjugate_gradient(A.normal, aty.expand_as(x0), x0,
                                                n_iter=cg_iter, tol=cg_tol, ndim=ndim)
            n_steps = i + 1
            if callback is not None:
                callback(i + 1, len(levels) - 1, x_dc)
            if s_next == 0:
                break
            # DDIM re-noising (VE): keep sqrt(1 - eta^2) of the predicted noise
            eps = (x - x0) / s
            x = x_dc + s_next * (eta * standard_noise(x, generator) + (1 - eta**2) ** 0.5 * eps)
        samples = space.to_data(x_dc)
        mean, std = sample_statistics(samples)
        # CG on the normal equations never forms A x: one product, for the final image
        residual = problem.residual(mean)
    info: dict[str, object] = {"eta": eta, "cg_iter": cg_iter, "noisy": noisy,
                               "warnings": [] if tuner is None else list(tuner.warnings)}
    if tuner is not None:
        info["adaptation"] = tuner.info()
    return Reconstruction(image=mean, method="dds", iterations=n_steps,
                          residual=residual,
                          nfe=n_samples * (n_steps if tuner is None else tuner.evaluations),
                          samples=samples, std=std, info=info)
