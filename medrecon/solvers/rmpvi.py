"""RMP-VI: reverse mean propagation by score-based variational inference.

After Xue, Cai, Yuan, Gao (arXiv 2410.05646), as specified with corrections in
ALGORITHMS.md ("RMP-VI"; the study note in ``seeds/``). The VE chain
``x0 -> x1 -> ... -> xT`` is reversed by propagating only means:
``mu_k = E[x_k | x_{k+1} = mu_{k+1}, y]``, each found by natural-gradient variational
inference on ``q_k = N(mu, v_k I)`` with fixed precision (note eq. 16, first line; note
section 3.4 for ``v_k``)::

    d = s_{k+1}^2 - s_k^2,   v_k = (s_k^2 + v_x0) d / (s_{k+1}^2 + v_x0)
    repeat I times:  x^(l) = mu + sqrt(v_k) eps_l  (L = 0: x = mu)
        g = mean_l [ (mu_{k+1} - x^(l)) / d            transition score
                     + (D(x^(l), s_k) - x^(l)) / s_k^2  prior score (Tweedie)
                     + gamma * likelihood(x^(l)) ]      gamma = zeta ||g_tr|| / ||g_lik||
        mu = mu + s1 v_k g

The data term (``data_step``)
-----------------------------
``"cg"`` (default) solves the data term of each inner iteration by conjugate gradients,
as DDS does (Chung, Lee, Ye, "Decomposed diffusion sampler for accelerating large-scale
inverse problems", ICLR 2024, Algorithm 1 and eq. 13-14). With the Gaussian
approximation ``p(x0 | x_s) ~= N(x0_hat, r_s^2 I)`` around ``x0_hat = D(x, s)``, i.e. the
Jacobian of ``D`` taken as that of a prior ``N(., v_x0 I)``, ``J_s = v_x0 / (v_x0 + s^2)``,
``r_s^2 = v_x0 s^2 / (v_x0 + s^2)`` (Pi-GDM: Song, Vahdat, Mardani, Kautz, ICLR 2023,
eq. 7), the likelihood score is, by the push-through identity and ``J_s / r_s^2 = 1/s^2``::

    grad log p(y | x_s) ~= J_s A^H (sigma_y^2 I + r_s^2 A A^H)^{-1} (y - A x0_hat)
                         = (x_dc - x0_hat) / s^2,
    x_dc = argmin_x ||y - A x||^2 / sigma_y^2 + ||x - x0_hat||^2 / r_s^2:
           (I + lam_s A^H A) x_dc = x0_hat + lam_s A^H y,   lam_s = r_s^2 / sigma_y^2,

DDS's data-consistency step with its weight given by the noise levels instead of tuned,
``cg_iter`` CG iterations started at ``x0_hat`` (batched, conjugated complex inner
products; for ``sigma_y = 0`` CG on ``A^H A x = A^H y`` from ``x0_hat``). It uses the
full ``A A^H`` where :func:`~medrecon.solvers.likelihood.pigdm_likelihood` replaces it by
``||A||^2 I``, needs no back-propagation, and is exact for a Gaussian prior
``N(m, v_x0 I)`` once CG has converged. The inner update becomes::

    g  = (mu_{k+1} - mu) / d + ((1 - gamma) x0_hat + gamma x_dc - mu) / s_k^2
    mu = mu + eta g,   eta = 1 / (1/d + max(1, gamma) / s_k^2)       (s1 v_k = eta)

With ``gamma = 1`` this is ``mu = (s_k^2 mu_{k+1} + d x_dc) / s_{k+1}^2``: the mean of
``p_k`` with ``x_dc`` as the posterior-mean estimate (note, Proposition 2.1 with
``C_x0 -> 0``), iterated to its fixed point as ``D`` is re-evaluated at the new ``mu``.
The step is the inverse of a bound on the curvature: the prior and likelihood terms
share the denoiser's Jacobian ``J_D``; the negative Hessian of their sum is
``(I - ((1 - gamma) I + gamma P) J_D) / s_k^2`` with ``P = (I + lam_s A^H A)^{-1}``, whose
eigenvalues lie in ``[0, max(1, gamma)] / s_k^2`` when those of ``J_D`` and ``P`` lie in
``[0, 1]``. ``gamma > 1`` (the note's balance, section 3.3) weighs the data above Bayes'
rule and damps the pull towards ``x0_hat`` by ``1 / gamma`` per iteration.

``"gradient"`` is the note's form: the likelihood score of ``jacobian`` (DPS or Pi-GDM,
both with ``||A||^2 I`` for ``A A^H``) and the step ``s1`` defaulting to
``1 / (v_k (1/d + 2/s_k^2))`` per outer step: the curvature of the transition term is
``1/d`` and those of the prior and (with ``gamma <= 1``) likelihood terms are at most
``1/s_k^2`` each, so this bounds the largest step at one Newton step (a fixed ``s1 = 1``
diverges at small sigma). A likelihood strategy that knows its curvature
(``score.curvature(sigma)``, as :func:`~medrecon.solvers.likelihood.pigdm_likelihood`)
replaces the second ``1/s_k^2`` by ``gamma`` times it, so any ``gamma`` is stable. Its
step is set by the stiffest (best-measured) direction of ``A``, so the iterate moves
little along the others: at 50 network evaluations it trails the CG step by 5 to 8 dB
on held-out CT phantom slices (30 and 60 views) and 5 dB on a held-out brain slice
(R = 4), and the CG step matches or beats DDS at equal evaluations there.

Safeguards
----------
The bounds hold only if the denoiser's Jacobian has eigenvalues in [0, 1], as an exact
posterior mean's does; a trained network need not. So the iteration is safeguarded (not
in the note): an iterate whose gradient norm exceeds ``backtrack`` times the smallest
accepted one of this outer step, or is not finite, is rejected (the last accepted
iterate kept), and the step of this outer step halved; so the gradient norm cannot grow
by more than ``backtrack`` in an outer step, even slowly. With particles (``L > 0``),
whose gradients fluctuate, the reference is the last accepted gradient norm instead. On
a convex quadratic with the default step the gradient norm decreases monotonically, so
exact posteriors never trigger it (until CG's inexact solve leaves a noise floor in the
gradient, where a rejection costs nothing).
With ``update_precision`` (``data_step="gradient"``) the scalar precision ``1/v`` is
instead updated by natural gradient, ``lambda <- (1 - s2) lambda + s2 tr(H)/n`` (note
eq. 16, second line), the Hessian trace estimated by Hutchinson probes ``z^T H z`` with a
finite-difference Hessian-vector product of the gradient ``g``.
"""

from __future__ import annotations

from functools import partial

import torch

from medrecon.priors.base import Denoiser, denoise_checked, prior_space, standard_noise
from medrecon.solvers.likelihood import LikelihoodScore, dps_likelihood, pigdm_likelihood
from medrecon.solvers.linalg import conjugate_gradient, inner_real, norm
from medrecon.solvers.problem import Callback, Problem, Reconstruction
from medrecon.solvers.schedules import check_descending

LIKELIHOODS = {"network": dps_likelihood, "gaussian": pigdm_likelihood}
DATA_STEPS = ("cg", "gradient")


def rmpvi(problem: Problem, denoiser: Denoiser, sigmas: torch.Tensor, *, inner_iter: int = 20,
          n_particles: int = 0, s1: float | None = None, zeta: float | None = None,
          gamma: float = 1.0, v_x0: float = 1.0, x_init: torch.Tensor | None = None,
          likelihood: LikelihoodScore | None = None, update_precision: bool = False,
          s2: float = 0.5, probes: int = 1, backtrack: float | None = 1.5,
          operator_norm: float | None = None, jacobian: str = "network",
          data_step: str = "cg", cg_iter: int = 5,
          generator: torch.Generator | None = None,
          callback: Callback | None = None) -> Reconstruction:
    """Posterior-mean estimate by RMP-VI; ``sigmas`` descending ``[s_T, ..., s_0]`` (s_0 > 0).

    Args:
        inner_iter: natural-gradient iterations ``I`` per outer step.
        n_particles: samples ``L`` per iteration; 0 evaluates at the mean.
        s1: step; ``None`` for the stable default above.
        zeta: balance ``gamma = zeta ||g_tr|| / ||g_lik||`` (note 3.3); ``None`` (default)
            uses the fixed ``gamma``. The balance is fragile: it is 0 at the start of
            each outer step (``g_tr = 0`` at ``mu = mu_{k+1}``), and on the Gaussian test
            ``zeta = 1`` barely moves from the prior while ``zeta = 10`` diverges.
        gamma: fixed likelihood weight when ``zeta`` is ``None`` (1 is Bayes' rule).
        v_x0: prior variance in the fixed precision ``v_k`` and in the Gaussian
            Jacobian ``J_s`` of the likelihood.
        x_init: ``mu_T`` in data units (zeros by default).
        likelihood: the likelihood score in prior space, overriding ``data_step`` and
            ``jacobian``; default: :func:`cg_likelihood` for ``data_step="cg"``, else
            the strategy of ``jacobian``.
        update_precision, s2, probes: the optional Hutchinson precision update
            (``data_step="gradient"`` only).
        backtrack: growth of the gradient norm that rejects an iterate (``None``: never).
        operator_norm: ``||A||`` in data units for the ``jacobian`` likelihoods (power
            iteration when ``None``); the CG step does not need it.
        jacobian: for ``data_step="gradient"``, ``"network"``
            (:func:`~medrecon.solvers.likelihood.dps_likelihood`: DPS with its variance
            inflated by the denoiser's uncertainty, back-propagation through the
            denoiser) or ``"gaussian"`` (:func:`~medrecon.solvers.likelihood.pigdm_likelihood`,
            no back-propagation).
        data_step: ``"cg"`` (default: the data term by conjugate gradients, see the
            module docstring) or ``"gradient"`` (the note's plain natural-gradient step).
        cg_iter: CG iterations per inner iteration for ``data_step="cg"`` (one
            ``A^H A`` each; no network evaluation).

    Network evaluations: ``(T - 1) * I * max(L, 1)`` (plus ``probes`` per iteration
    with ``update_precision``).
    """
    check_descending(sigmas)
    if data_step not in DATA_STEPS:
        raise ValueError(f"data_step must be one of {DATA_STEPS}, got {data_step!r}")
    if jacobian not in LIKELIHOODS:
        raise ValueError(f"jacobian must be one of {sorted(LIKELIHOODS)}, got {jacobian!r}")
    if data_step == "cg" and update_precision:
        raise ValueError("update_precision needs data_step='gradient'")
    space = prior_space(problem, denoiser)
    by_cg = likelihood is None and data_step == "cg"
    if likelihood is not None:
        lik = likelihood
    elif by_cg:
        lik = cg_likelihood(space.problem, v_x0=v_x0, cg_iter=cg_iter)
    else:
        prior_norm = None if operator_norm is None else operator_norm * abs(denoiser.scale)
        lik = LIKELIHOODS[jacobian](space.problem, v_x0=v_x0, operator_norm=prior_norm)
    levels = [float(s) for s in sigmas]
    mu = space.problem.image_like() if x_init is None else space.to_prior(x_init)
    ndim = len(space.problem.operator.domain_shape)
    nfe, n_dims = 0, mu[0].numel() if mu.ndim > ndim else mu.numel()
    n_steps = len(levels) - 1
    step_index = 0
    rejected = 0

    needs_grad = likelihood is not None or (not by_cg and jacobian == "network")
    known = getattr(lik, "curvature", None) if zeta is None else None

    def curvature(s: float) -> float:
        """Bound on the curvature of the prior and likelihood terms at level ``s``."""
        if by_cg and zeta is None:  # they share D's Jacobian (module docstring)
            return max(1.0, gamma) / s**2
        return 2.0 / s**2 if known is None else 1.0 / s**2 + gamma * known(s)

    def gradient(x, x_next, d, s):
        x = x.detach().requires_grad_(needs_grad)
        with torch.set_grad_enabled(needs_grad):
            x0 = denoise_checked(denoiser, x, s, step_index)
            g_lik = lik(x, x0, s)
        g_tr, g_pr = (x_next - x) / d, (x0.detach() - x.detach()) / s**2
        weight = gamma if zeta is None else zeta * _ratio(g_tr, g_lik, ndim)
        return g_tr + g_pr + weight * g_lik

    for k in range(n_steps):
        step_index = k
        s_next, s = levels[k], levels[k + 1]
        x_next, d = mu.detach(), s_next**2 - s**2
        v = (s**2 + v_x0) * d / (s_next**2 + v_x0)
        step = torch.full_like(_norms(mu, ndim).real, s1 if s1 is not None else
                               1.0 / (v * (1.0 / d + curvature(s))))
        mu, accepted, smallest = x_next.clone(), None, None
        for _ in range(inner_iter):
            points = [mu] if n_particles == 0 else [
                mu + v**0.5 * standard_noise(mu, generator) for _ in range(n_particles)]
            g = (sum(gradient(p, x_next, d, s) for p in points) / len(points)).detach()
            nfe += len(points)
            if backtrack is not None:
                g_norm = _norms(g, ndim)
                if accepted is not None:
                    reject = ~(g_norm <= backtrack * smallest)
                    mu, g, g_norm = (torch.where(reject, old, new)
                                     for old, new in zip(accepted, (mu, g, g_norm)))
                    step = torch.where(reject, step / 2, step)
                    rejected = rejected + reject.sum()
                accepted = (mu, g, g_norm)
                # with particles the gradient fluctuates: compare with the last one only
                smallest = g_norm if smallest is None or n_particles > 0 else \
                    torch.minimum(smallest, g_norm)
            if update_precision:
                v, extra = _hutchinson_variance(v, s2, probes, mu, g, n_dims,
                                                partial(gradient, x_next=x_next, d=d, s=s),
                                                generator)
                nfe += extra
            mu = (mu + step * v * g).detach()
        if callback is not None:
            callback(k + 1, n_steps, mu)
    image = space.to_data(mu)
    with torch.no_grad():
        residual = problem.residual(image)
    return Reconstruction(image=image, method="rmpvi", iterations=n_steps,
                          residual=residual, nfe=nfe,
                          info={"inner_iter": inner_iter, "n_particles": n_particles,
                                "data_step": data_step,
                                "rejected_steps": int(rejected)})


def cg_likelihood(problem: Problem, *, v_x0: float = 1.0, cg_iter: int = 5,
                  cg_tol: float = 1e-6) -> LikelihoodScore:
    """The likelihood score of a Gaussian prior ``N(., v_x0 I)``'s Jacobian with the exact
    ``A A^H``, by conjugate gradients: ``(x_dc - D) / sigma^2`` with ``x_dc`` the DDS
    data-consistent image, ``(I + lam A^H A) x_dc = D + lam A^H y``, ``lam = r^2 / sigma_y^2``,
    CG started at ``D`` (normal equations ``A^H A x = A^H y`` from ``D`` when ``sigma_y = 0``),
    at most ``cg_iter`` iterations, an item stopping at relative residual ``cg_tol`` (as
    DDS; CG on singular normal equations must stop once they are solved)."""
    A = problem.operator
    ndim = len(A.domain_shape)
    aty = A.H(problem.y)
    noise = problem.sigma_y**2

    def consistent(denoised: torch.Tensor, sigma: float) -> torch.Tensor:
        r2 = v_x0 * sigma**2 / (v_x0 + sigma**2)
        if noise > 0:
            lam = r2 / noise
            return conjugate_gradient(lambda u: torch.add(u, A.normal(u), alpha=lam),
                                      torch.add(denoised, aty, alpha=lam), denoised,
                                      n_iter=cg_iter, tol=cg_tol, ndim=ndim)[0]
        return conjugate_gradient(A.normal, aty.expand_as(denoised), denoised,
                                  n_iter=cg_iter, tol=cg_tol, ndim=ndim)[0]

    def score(x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
        with torch.no_grad():
            denoised = denoised.detach()
            return (consistent(denoised, sigma) - denoised) / sigma**2

    return score


def _norms(a: torch.Tensor, ndim: int) -> torch.Tensor:
    """``||a||`` per batch item, shaped to broadcast against ``a``."""
    n = norm(a, tuple(range(-ndim, 0)))
    return n.reshape(*n.shape, *(1,) * ndim)


def _ratio(a: torch.Tensor, b: torch.Tensor, ndim: int) -> torch.Tensor:
    """``||a|| / ||b||`` per batch item, shaped to broadcast (0 where ``b`` is 0)."""
    dims = tuple(range(-ndim, 0))
    na, nb = norm(a, dims), norm(b, dims)
    r = torch.where(nb > 0, na / nb.clamp_min(torch.finfo(nb.dtype).tiny), torch.zeros_like(na))
    return r.reshape(*r.shape, *(1,) * ndim)


def _hutchinson_variance(v, s2, probes, mu, g, n_dims, gradient, generator):
    """Natural-gradient update of the scalar precision ``1/v`` with ``tr(H)/n`` from
    Hutchinson probes of the finite-difference Hessian-vector product ``-(g(mu + h z) - g) / h``."""
    h = 1e-3 * v**0.5
    trace = 0.0
    for _ in range(probes):
        z = standard_noise(mu, generator)
        hz = -(gradient(mu + h * z) - g) / h
        trace = trace + float(inner_real(z, hz.detach(), tuple(range(-mu.ndim, 0))).mean()
                              ) / probes
    precision = (1 - s2) / v + s2 * max(trace / n_dims, 1e-12)
    return 1.0 / precision, probes
