"""The network-prior backbone: MONAI's noise-conditioned diffusion UNet as ``F(x, c_noise)``.

The raw network of an EDM prior (Karras, Aittala, Aila, Laine, NeurIPS 2022, Table 1)
maps a preconditioned image ``c_in x`` of shape ``(B, C, H, W)`` and the noise
embedding input ``c_noise = ln(sigma) / 4`` of shape ``(B,)`` to ``(B, C, H, W)``;
:class:`medrecon.priors.network.EDMDenoiser` wraps it into ``D(x, sigma)``.

The backbone is MONAI's :class:`monai.networks.nets.DiffusionModelUNet` (the ADM-style
UNet of Dhariwal and Nichol 2021 as kept by MONAI Generative): residual blocks with
group normalisation and a sinusoidal timestep embedding (Ho et al. 2020, sec. 4),
self-attention where :attr:`UNetConfig.attention_levels` asks for it and always in the
middle block. The timestep embedding takes any float tensor; it is fed
``timestep_scale * c_noise``. With ``timestep_scale = 250`` the EDM range
``c_noise in [-2.9, 1.1]`` (sigma 0.002 .. 80) spans about the 1000 units that the
sinusoidal frequencies ``exp(-ln(10^4) k / (d/2))`` were designed for; with 1 the
lower half of the frequencies would be constant over the whole noise range.

The network is fully convolutional: a prior trained on crops serves larger images.
Inputs whose sides are not multiples of ``2^(levels-1)`` are reflect-padded to the
next multiple and cropped back.

>>> import torch
>>> net = UNetBackbone(UNetConfig(in_channels=1, channels=(8, 8), attention_levels=(False, True),
...                               norm_groups=4, head_channels=8))
>>> net(torch.zeros(2, 1, 20, 20), torch.tensor([-1.0, 0.5])).shape
torch.Size([2, 1, 20, 20])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from torch import nn

#: limits of an architecture record (a checkpoint's is checked before a network is built)
MAX_LEVELS = 8
MAX_WIDTH = 1024
MAX_RES_BLOCKS = 8


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`UNetBackbone` (a plain record: it is stored in checkpoints).

    Attributes:
        in_channels: image channels, 1 for real (CT) and 2 for complex (MRI) images;
            the network outputs as many.
        channels: feature width per resolution level (each level halves the size).
        attention_levels: self-attention at each level (same length as ``channels``).
        res_blocks: residual blocks per level.
        norm_groups: group-normalisation groups (must divide every width).
        head_channels: channels per attention head.
        timestep_scale: the network's timestep is ``timestep_scale * c_noise``.

    The default (about 1.1 M parameters) runs one 256 x 256 forward in about 0.14 s on
    two CPU cores.
    """

    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 64, 64)
    attention_levels: tuple[bool, ...] = (False, False, False, True)
    res_blocks: int = 1
    norm_groups: int = 16
    head_channels: int = 32
    timestep_scale: float = 250.0

    def __post_init__(self) -> None:
        # field by field, before anything is built: a checkpoint's record is untrusted
        # (wrong types, zero or huge sizes); each problem is a ValueError naming the field
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"{name}: {why}")

        def integer(name: str, value: object, low: int, high: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise bad(name, f"must be an integer from {low} to {high}, got {value!r}")

        integer("in_channels", self.in_channels, 1, 2)
        for name in ("channels", "attention_levels"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not 1 <= len(value) <= MAX_LEVELS:
                raise bad(name, f"must be a list of 1 to {MAX_LEVELS} values, got {value!r}")
        if len(self.channels) != len(self.attention_levels):
            raise bad("attention_levels", f"{len(self.attention_levels)} values for "
                      f"{len(self.channels)} channel levels")
        for width in self.channels:
            integer("channels", width, 1, MAX_WIDTH)
        if not all(isinstance(a, bool) for a in self.attention_levels):
            raise bad("attention_levels", f"must be true/false values, got "
                      f"{list(self.attention_levels)!r}")
        integer("res_blocks", self.res_blocks, 1, MAX_RES_BLOCKS)
        integer("norm_groups", self.norm_groups, 1, MAX_WIDTH)
        if any(c % self.norm_groups for c in self.channels):
            raise bad("norm_groups", f"{self.norm_groups} must divide every width "
                      f"{list(self.channels)}")
        integer("head_channels", self.head_channels, 1, MAX_WIDTH)
        scale = self.timestep_scale
        if (isinstance(scale, bool) or not isinstance(scale, (int, float))
                or not math.isfinite(scale) or not 0 < scale <= 1e6):
            raise bad("timestep_scale", f"must be a positive number, got {scale!r}")

    def to_dict(self) -> dict[str, object]:
        """Plain types only (lists, numbers, bools), for checkpoint metadata."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, record: dict[str, object]) -> UNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``KeyError``, bad values
        ``ValueError`` or ``TypeError``."""
        if not isinstance(record, dict) or not all(isinstance(k, str) for k in record):
            raise TypeError("architecture: not a dictionary of named fields")
        names = {f.name for f in fields(cls)}
        unknown = set(record) - names
        if unknown:
            raise KeyError(f"unknown architecture fields {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}
        return cls(**values)

    @property
    def multiple(self) -> int:
        """Image sides are padded to a multiple of this (``2^(levels-1)``)."""
        return 2 ** (len(self.channels) - 1)


class UNetBackbone(nn.Module):
    """``F(x (B, C, H, W), c_noise (B,)) -> (B, C, H, W)``, MONAI's diffusion UNet inside."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = config = config or UNetConfig()
        self.unet = DiffusionModelUNet(
            spatial_dims=2, in_channels=config.in_channels, out_channels=config.in_channels,
            num_res_blocks=config.res_blocks, channels=tuple(config.channels),
            attention_levels=tuple(config.attention_levels), norm_num_groups=config.norm_groups,
            num_head_channels=config.head_channels)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        m = self.config.multiple
        pad_h, pad_w = -h % m, -w % m
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        t = (self.config.timestep_scale * c_noise.reshape(-1)).to(x.dtype)
        if t.numel() == 1:
            t = t.expand(x.shape[0])
        out = self.unet(x, t)
        return out[..., :h, :w]
