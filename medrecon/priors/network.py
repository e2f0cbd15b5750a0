"""Wrapping networks into the denoiser contract ``D(x, sigma)``.

Two parametrisations are adapted, once, so that solvers never see them:

- :class:`EDMDenoiser`: EDM preconditioning (Karras et al., NeurIPS 2022, Table 1,
  "Preconditioning"): ``D(x, s) = c_skip x + c_out F(c_in x, c_noise)`` with
  ``c_skip = sd^2 / (s^2 + sd^2)``, ``c_out = s sd / sqrt(s^2 + sd^2)``,
  ``c_in = 1 / sqrt(s^2 + sd^2)``, ``c_noise = ln(s) / 4`` and ``sd = sigma_data``.
- :class:`VPEpsDenoiser`: a variance-preserving eps-prediction network trained on
  ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (Ho et al., DDPM, 2020; the
  guided-diffusion ADM models): ``sigma = sqrt((1 - abar) / abar)``,
  ``D(x, s) = x - s eps(x / sqrt(1 + s^2), t(s))``, with the continuous timestep
  ``t(s)`` interpolated in ``log sigma`` between the trained ones. A network
  that also predicts a variance (ADM's learned sigma, ``2 C`` output channels)
  is cut to its first ``C`` channels.

Images enter in the operator's layout, ``(*batch, H, W)`` real or complex; the
adapter gives the network ``(B, C, H, W)`` real tensors (a complex image as the
two channels real and imaginary, Song, Shen, Xing, Ermon, ICLR 2022 use the same)
and returns the same layout. The adapters carry the prior's intensity map
``data = scale * x + offset`` (see :mod:`medrecon.priors.base`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medrecon.errors import OperatorShapeError
from medrecon.priors.noise import vp_alpha_bar


def to_channels(x: torch.Tensor, is_complex: bool) -> tuple[torch.Tensor, torch.Size]:
    """``(*batch, H, W)`` -> ``(B, C, H, W)`` real (C = 2 for complex, else 1)."""
    batch = x.shape[:-2]
    if is_complex != x.is_complex():
        kind = "complex" if is_complex else "real"
        raise OperatorShapeError(f"the prior takes {kind} images, got {x.dtype}")
    flat = x.reshape(-1, *x.shape[-2:])
    if is_complex:
        return torch.view_as_real(flat).permute(0, 3, 1, 2), batch
    return flat.unsqueeze(1), batch


def from_channels(y: torch.Tensor, batch: torch.Size, is_complex: bool) -> torch.Tensor:
    """Inverse of :func:`to_channels`."""
    if is_complex:
        y = torch.view_as_complex(y[:, :2].permute(0, 2, 3, 1).contiguous())
    else:
        y = y[:, 0]
    return y.reshape(*batch, *y.shape[-2:])


def _per_item(sigma: torch.Tensor | float, n: int, like: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    return sigma.reshape(-1).expand(n) if sigma.numel() == 1 else sigma.reshape(n)


class EDMDenoiser(nn.Module):
    """``net(x_in (B, C, H, W), c_noise (B,)) -> (B, C, H, W)`` with EDM preconditioning.

    Args:
        net: the raw network ``F``.
        is_complex: complex images (two channels) or real (one).
        sigma_data: ``sd``, the standard deviation of the training data (0.5 in EDM).
        scale, offset: prior space to data units, ``data = scale * x + offset``.
    """

    def __init__(self, net: nn.Module, *, is_complex: bool, sigma_data: float = 0.5,
                 scale: float = 1.0, offset: float = 0.0):
        super().__init__()
        self.net, self.is_complex = net, is_complex
        self.sigma_data, self.scale, self.offset = sigma_data, scale, offset

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        channels, batch = to_channels(x, self.is_complex)
        dtype = next(self.net.parameters()).dtype
        s = _per_item(sigma, channels.shape[0], channels).to(dtype).reshape(-1, 1, 1, 1)
        sd2 = self.sigma_data**2
        c_skip, c_in = sd2 / (s**2 + sd2), 1 / (s**2 + sd2).sqrt()
        c_out = s * self.sigma_data / (s**2 + sd2).sqrt()
        f = self.net((c_in * channels.to(dtype)), (s.log() / 4).reshape(-1))
        out = c_skip * channels.to(dtype) + c_out * f[:, : channels.shape[1]]
        return from_channels(out.to(channels.dtype), batch, self.is_complex).to(x.dtype)


class VPEpsDenoiser(nn.Module):
    """``eps_net(x (B, C, H, W), t (B,)) -> eps`` (or ``2C`` channels with learned variance)
    of a linear-beta DDPM, as a VE denoiser (see module docstring)."""

    def __init__(self, eps_net: nn.Module, *, is_complex: bool, n_train: int = 1000,
                 beta_start: float = 1e-4, beta_end: float = 0.02, scale: float = 1.0,
                 offset: float = 0.0):
        super().__init__()
        self.net, self.is_complex = eps_net, is_complex
        self.scale, self.offset = scale, offset
        alpha_bar = vp_alpha_bar(n_train, beta_start, beta_end)
        self.register_buffer("log_sigmas", 0.5 * torch.log((1 - alpha_bar) / alpha_bar),
                             persistent=False)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Continuous timestep of ``sigma``: linear interpolation of ``t`` in ``log sigma``."""
        log_s = sigma.to(self.log_sigmas.dtype).log().clamp(self.log_sigmas[0],
                                                            self.log_sigmas[-1])
        hi = torch.searchsorted(self.log_sigmas, log_s).clamp(1, len(self.log_sigmas) - 1)
        lo_v, hi_v = self.log_sigmas[hi - 1], self.log_sigmas[hi]
        return (hi - 1) + (log_s - lo_v) / (hi_v - lo_v)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        channels, batch = to_channels(x, self.is_complex)
        dtype = next(self.net.parameters()).dtype
        s = _per_item(sigma, channels.shape[0], channels)
        t = self.timestep(s).to(dtype)
        s4 = s.reshape(-1, 1, 1, 1).to(dtype)
        eps = self.net(channels.to(dtype) / (1 + s4**2).sqrt(), t)[:, : channels.shape[1]]
        out = channels.to(dtype) - s4 * eps
        return from_channels(out.to(channels.dtype), batch, self.is_complex).to(x.dtype)


class TinyDenoiserNet(nn.Module):
    """A small noise-conditioned CNN ``F(x, c_noise)`` for tests and examples (not a
    trained prior): three 3x3 convolutions with the noise level as an extra channel."""

    def __init__(self, channels: int, width: int = 16):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(channels + 1, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        level = noise.reshape(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[-2:])
        return self.layers(torch.cat([x, level.to(x.dtype)], dim=1)) / math.sqrt(2)
