"""The noise process that VP (DDPM) networks were trained with.

Lives with the priors because the adapters of :mod:`medrecon.priors.network` need it
to turn a timestep network into a denoiser; :mod:`medrecon.solvers.schedules` builds
its VP sigmas from the same function (and re-exports it).
"""

from __future__ import annotations

import torch


def vp_alpha_bar(n_train: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """``abar_t`` for t = 0 .. n_train - 1 of the linear-beta DDPM schedule."""
    betas = torch.linspace(beta_start, beta_end, n_train, dtype=torch.float64, device=device)
    return torch.cumprod(1 - betas, dim=0)
