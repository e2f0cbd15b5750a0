"""RMP-VI: reverse mean propagation by score-based variational inference.

After Xue, Cai, Yuan, Gao (arXiv 2410.05646), as specified with corrections in
ALGORITHMS.md. The VE chain ``x0 -> x1 -> ... -> xT`` is reversed by propagating
only means: ``mu_k = E[x_k | x_{k+1} = mu_{k+1}, y]``, each found by natural-gradient
variational inference on ``q_k = N(mu, v_k I)`` with fixed precision (note eq. 16,
first line; note section 3.4 for ``v_k``)::

    d = s_{k+1}^2 - s_k^2,   v_k = (s_k^2 + v_x0) d / (s_{k+1}^2 + v_x0)
    repeat I times:  x^(l) = mu + sqrt(v_k) eps_l  (L = 0: x = mu)
        g = mean_l [ (mu_{k+1} - x^(l)) / d            transition score
                     + (D(x^(l), s_k) - x^(l)) / s_k^2  prior score (Tweedie)
                     + gamma * likelihood(x^(l)) ]      gamma = zeta ||g_tr|| / ||g_lik||
        mu = mu + s1 v_k g

The step ``s1`` defaults to ``1 / (v_k (1/d + 2/s_k^2))`` per outer step: the
curvature of the transition term is ``1/d`` and those of the prior and (with
``gamma <= 1``) likelihood terms are at most ``1/s_k^2`` each, so this bounds the
largest step at one Newton step (a fixed ``s1 = 1`` diverges at small sigma). A
likelihood strategy that knows its curvature (``score.curvature(sigma)``, as
:func:`~medrecon.solvers.likelihood.pigdm_likelihood`) replaces the second
``1/s_k^2`` by ``gamma`` times it, so any ``gamma`` is stable.
The bound holds only if the denoiser's Jacobian has eigenvalues in [0, 1], as an
exact posterior mean's does; a trained network need not. So the iteration is
safeguarded (not in the note): an iterate whose gradient norm exceeds ``backtrack``
times the last accepted one, or is not finite, is rejected, and the step of this
outer step halved. On a convex quadratic with the default step the gradient norm
decreases monotonically, so exact posteriors never trigger it.
With ``update_precision`` the scalar precision ``1/v`` is instead updated by
natural gradient, ``lambda <- (1 - s2) lambda + s2 tr(H)/n`` (note eq. 16, second
line), the Hessian trace estimated by Hutchinson probes ``z^T H z`` with a
finite-difference Hessian-vector product of the gradient ``g``.
"""

from __future__ import annotations

from functools import partial

import torch

from medrecon.priors.base import Denoiser, denoise_checked, prior_space, standard_noise
from medrecon.solvers.likelihood import LikelihoodScore, dps_likelihood, pigdm_likelihood
from medrecon.solvers.linalg import inner_real, norm
from medrecon.solvers.problem import Callback, Problem, Reconstruction
from medrecon.solvers.schedules import check_descending

LIKELIHOODS = {"network": dps_likelihood, "gaussian": pigdm_likelihood}


def rmpvi(problem: Problem, denoiser: Denoiser, sigmas: torch.Tensor, *, inner_iter: int = 20,
          n_particles: int = 0, s1: float | None = None, zeta: float | None = None,
          gamma: float = 1.0, v_x0: float = 1.0, x_init: torch.Tensor | None = None,
          likelihood: LikelihoodScore | None = None, update_precision: bool = False,
          s2: float = 0.5, probes: int = 1, backtrack: float | None = 1.5,
          operator_norm: float | None = None, jacobian: str = "network",
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
        v_x0: prior variance in the fixed precision ``v_k``.
        x_init: ``mu_T`` in data units (zeros by default).
        likelihood: the likelihood score in prior space; default
            ``dps_likelihood(problem, v_x0=v_x0)``, the DPS approximation with its
            variance inflated by the denoiser's uncertainty (stable with ``gamma = 1``).
        update_precision, s2, probes: the optional Hutchinson precision update.
        backtrack: growth of the gradient norm that rejects an iterate (``None``: never).
        operator_norm: ``||A||`` in data units for the default likelihood (power
            iteration when ``None``).
        jacobian: for the default likelihood, ``"network"`` (DPS, back-propagation
            through the denoiser) or ``"gaussian"`` (:func:`pigdm_likelihood`, no
            back-propagation; what the network priors use by default).

    Network evaluations: ``(T - 1) * I * max(L, 1)`` (plus ``probes`` per iteration
    with ``update_precision``).
    """
    check_descending(sigmas)
    space = prior_space(problem, denoiser)
    prior_norm = None if operator_norm is None else operator_norm * abs(denoiser.scale)
    if jacobian not in LIKELIHOODS:
        raise ValueError(f"jacobian must be one of {sorted(LIKELIHOODS)}, got {jacobian!r}")
    lik = likelihood or LIKELIHOODS[jacobian](space.problem, v_x0=v_x0,
                                                  operator_norm=prior_norm)
    levels = [float(s) for s in sigmas]
    mu = space.problem.image_like() if x_init is None else space.to_prior(x_init)
    ndim = len(space.problem.operator.domain_shape)
    nfe, n_dims = 0, mu[0].numel() if mu.ndim > ndim else mu.numel()
    n_steps = len(levels) - 1
    step_index = 0
    rejected = 0

    needs_grad = likelihood is not None or jacobian == "network"
    known = getattr(lik, "curvature", None) if zeta is None else None

    def curvature(s: float) -> float:
        """Bound on the curvature of the prior and likelihood terms at level ``s``."""
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
        mu, accepted = x_next.clone(), None
        for _ in range(inner_iter):
            points = [mu] if n_particles == 0 else [
                mu + v**0.5 * standard_noise(mu, generator) for _ in range(n_particles)]
            g = (sum(gradient(p, x_next, d, s) for p in points) / len(points)).detach()
            nfe += len(points)
            if backtrack is not None:
                g_norm = _norms(g, ndim)
                if accepted is not None:
                    reject = ~(g_norm <= backtrack * accepted[2])
                    mu, g, g_norm = (torch.where(reject, old, new)
                                     for old, new in zip(accepted, (mu, g, g_norm)))
                    step = torch.where(reject, step / 2, step)
                    rejected = rejected + reject.sum()
                accepted = (mu, g, g_norm)
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
                                "rejected_steps": int(rejected)})


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
