"""Noise schedules as pure functions: descending sigmas (VE / EDM parametrisation).

Each returns ``n`` sigmas from ``sigma_max`` down to ``sigma_min`` (float64, on
``device``); samplers append the final 0 themselves where they need it.

- :func:`geometric`: ``sigma_i = sigma_max (sigma_min / sigma_max)^(i / (n - 1))``
  (Song et al., "Score-based generative modeling through SDEs", ICLR 2021, the VE SDE).
- :func:`karras`: ``(sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``
  (Karras et al., EDM, NeurIPS 2022, eq. 5; ``rho = 7``).
- :func:`truncated`: the levels of a schedule at or below a starting level, for a warm
  start from an estimate (Chung, Sim & Ye, "Come-closer-diffuse-faster", CVPR 2022).
- :func:`vp_sigmas`: the sigmas of a VP DDPM with a linear beta schedule,
  ``sigma_t = sqrt((1 - abar_t) / abar_t)``, ``abar_t = prod_{s<=t} (1 - beta_s)``
  (Ho et al., DDPM, NeurIPS 2020, with ``beta`` from 1e-4 to 0.02 over 1000 steps),
  optionally subsampled to ``n`` evenly spaced timesteps (as DDIM does).
"""

from __future__ import annotations

import torch

from medrecon.priors.noise import vp_alpha_bar  # re-exported: solvers import it from here

__all__ = ["check_descending", "geometric", "karras", "truncated", "vp_alpha_bar", "vp_sigmas"]


def _check(sigma_min: float, sigma_max: float, n: int) -> None:
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if n < 2:
        raise ValueError(f"a schedule needs at least 2 steps, got {n}")


def geometric(sigma_min: float, sigma_max: float, n: int,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """Geometric sigmas, descending."""
    _check(sigma_min, sigma_max, n)
    t = torch.linspace(0, 1, n, dtype=torch.float64, device=device)
    return sigma_max * (sigma_min / sigma_max) ** t


def karras(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0,
           device: torch.device | str = "cpu") -> torch.Tensor:
    """EDM (Karras) sigmas, descending."""
    _check(sigma_min, sigma_max, n)
    t = torch.linspace(0, 1, n, dtype=torch.float64, device=device)
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (hi + t * (lo - hi)) ** rho


def truncated(sigmas: torch.Tensor, sigma_start: float) -> torch.Tensor:
    """The levels of the descending ``sigmas`` at or below ``sigma_start``; the last level
    alone where none is. A sampler warm-started from an estimate ``x_init`` starts at
    ``x_init + sigmas[0] z`` on these levels: Chung, Sim & Ye ("Come-closer-diffuse-faster:
    accelerating conditional diffusion models for inverse problems through stochastic
    contraction", CVPR 2022, Theorem 1) show that the reverse steps contract the
    estimate's error, so a start at ``t0 < T`` (their eq. 8, ``x_t0 = sqrt(abar) x_init +
    sqrt(1 - abar) z``, VE here) needs only the ``N t0 / T`` steps below it.

    >>> truncated(torch.tensor([10.0, 1.0, 0.3, 0.1], dtype=torch.float64), 0.5).tolist()
    [0.3, 0.1]
    >>> truncated(torch.tensor([10.0, 1.0], dtype=torch.float64), 0.5).tolist()
    [1.0]
    """
    kept = sigmas[sigmas <= sigma_start]
    return kept if kept.numel() else sigmas[-1:]


def vp_sigmas(n: int | None = None, n_train: int = 1000, beta_start: float = 1e-4,
              beta_end: float = 0.02, device: torch.device | str = "cpu") -> torch.Tensor:
    """VE sigmas of the DDPM timesteps, descending; ``n`` evenly spaced ones if given."""
    alpha_bar = vp_alpha_bar(n_train, beta_start, beta_end, device)
    sigmas = ((1 - alpha_bar) / alpha_bar).sqrt().flip(0)
    if n is None:
        return sigmas
    if not 2 <= n <= n_train:
        raise ValueError(f"n must be in [2, {n_train}], got {n}")
    index = torch.linspace(0, n_train - 1, n, device=device).round().long()
    return sigmas[index]


def check_descending(sigmas: torch.Tensor) -> None:
    """Refuse a schedule that is not strictly decreasing and positive."""
    if sigmas.ndim != 1 or sigmas.numel() < 1:
        raise ValueError("sigmas must be a 1-D tensor")
    if not bool(torch.isfinite(sigmas).all()) or not bool((sigmas > 0).all()):
        raise ValueError("sigmas must be positive and finite")
    if sigmas.numel() > 1 and not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError("sigmas must be strictly decreasing")
