"""The guided-diffusion ADM UNet, laid out so that published state dicts load strictly.

Dhariwal and Nichol, "Diffusion models beat GANs on image synthesis", NeurIPS 2021
(the "ADM" architecture, Section 3 and Table 1), as published in openai/guided-diffusion
(``guided_diffusion/unet.py``, ``UNetModel``; ``script_util.py``, ``create_model``).
This is an independent implementation of that layout: module names and parameter
shapes match the published ones, so a checkpoint of that code (for instance the
AAPM CT and fastMRI knee models of DDS, Chung, Lee and Ye, ICLR 2024) loads with
``load_state_dict(strict=True)``.

The network predicts the noise ``eps`` of ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``
from ``x_t`` and the timestep ``t`` (and, with ``learn_sigma``, the interpolation
weights of the variance in ``C`` further channels, Nichol and Dhariwal 2021, eq. 15).
Layout (``ds`` is the downsampling factor, attention where ``ds`` is listed):

- ``time_embed``: ``Linear(c, 4c), SiLU, Linear(4c, 4c)`` on the sinusoidal embedding
  ``[cos(t w_k), sin(t w_k)]``, ``w_k = 10000^(-k / (c/2))`` (Vaswani et al. 2017).
- ``input_blocks``: a 3x3 conv, then per level ``num_res_blocks`` x (ResBlock
  [+ AttentionBlock]) and, except at the last level, a downsampling ResBlock
  (``resblock_updown``) or a ``Downsample``.
- ``middle_block``: ResBlock, AttentionBlock, ResBlock.
- ``output_blocks``: mirror with ``num_res_blocks + 1`` blocks per level on the
  concatenated skip, upsampling at the end of each level but the first.
- ``out``: GroupNorm(32), SiLU, zero-initialised 3x3 conv.

Example:
    >>> cfg = ADMConfig(image_size=32, num_channels=32, num_res_blocks=1,
    ...                 channel_mult=(1, 2), attention_resolutions=(16,), num_head_channels=16,
    ...                 in_channels=1, learn_sigma=True)
    >>> net = ADMUNet(cfg)
    >>> net(torch.zeros(1, 1, 32, 32), torch.tensor([10.0])).shape
    torch.Size([1, 2, 32, 32])
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike

import torch
import torch.nn.functional as F
from torch import nn

from medrecon.errors import InputError
from medrecon.priors.checkpoint import load_torch_file
from medrecon.priors.network import VPEpsDenoiser

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ADMConfig:
    """``create_model`` arguments of guided-diffusion (``script_util.py``).

    ``attention_resolutions`` are image sizes (as in the command-line flag
    ``"32,16,8"``); attention goes where ``image_size // ds`` is one of them.
    ``channel_mult`` empty picks the published default for the image size.
    ``num_head_channels = -1`` uses ``num_heads`` heads, else ``C // num_head_channels``.
    ``legacy_attention`` is ``not use_new_attention_order`` (QKV split per head first).
    """

    image_size: int = 256
    num_channels: int = 128
    num_res_blocks: int = 2
    channel_mult: tuple[float, ...] = ()
    attention_resolutions: tuple[int, ...] = (16, 8)
    num_heads: int = 4
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    learn_sigma: bool = False
    in_channels: int = 3
    dropout: float = 0.0
    legacy_attention: bool = True

    def resolved_channel_mult(self) -> tuple[float, ...]:
        """The channel multipliers, with ``create_model``'s defaults per image size."""
        if self.channel_mult:
            return tuple(self.channel_mult)
        defaults = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4),
                    320: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
        if self.image_size not in defaults:
            raise InputError(None, "channel_mult",
                             f"no default for image_size {self.image_size}; give it")
        return defaults[self.image_size]

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def attention_ds(self) -> tuple[int, ...]:
        return tuple(self.image_size // r for r in self.attention_resolutions)


#: ADM 256x256 unconditional ImageNet (guided-diffusion README, "256x256 model
#: (unconditional)" flags); the published model has about 552M parameters.
ADM_IMAGENET256_UNCOND = ADMConfig(
    image_size=256, num_channels=256, num_res_blocks=2, attention_resolutions=(32, 16, 8),
    num_head_channels=64, resblock_updown=True, use_scale_shift_norm=True, learn_sigma=True,
    in_channels=3)

#: DDS AAPM CT 256 (HJ-harry/DDS, ``configs/vp/AAPM256.yml``): one real channel.
ADM_DDS_AAPM256 = ADMConfig(
    image_size=256, num_channels=256, num_res_blocks=1, attention_resolutions=(16,),
    num_heads=4, num_head_channels=64, resblock_updown=True, use_scale_shift_norm=True,
    learn_sigma=True, in_channels=1)

#: DDS fastMRI knee 320, complex (HJ-harry/DDS, ``configs/vp/fastmri_knee_320_complex.yml``):
#: two channels (real, imaginary). DDS's ``create_model`` maps 320 to the 256 multipliers;
#: ``320 // 16 = 20`` is no ``ds``, so only the middle block has attention.
ADM_DDS_FASTMRI320 = ADMConfig(
    image_size=320, num_channels=256, num_res_blocks=1, attention_resolutions=(16,),
    num_heads=4, num_head_channels=64, resblock_updown=True, use_scale_shift_norm=True,
    learn_sigma=True, in_channels=2)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t w_k), sin(t w_k)]``, ``w_k = max_period^(-k/half)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups, computed in float32 (as ADM's ``normalization``)."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class Upsample(nn.Module):
    """Nearest-neighbour x2, optionally followed by a 3x3 conv (``conv``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


class Downsample(nn.Module):
    """Strided 3x3 conv (``op``) or 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        self.op = (nn.Conv2d(channels, out_channels, 3, stride=2, padding=1) if use_conv
                   else nn.AvgPool2d(2, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """ADM residual block: ``skip(x) + out_layers(in_layers(x) + emb)``.

    With ``use_scale_shift_norm`` the embedding gives ``(scale, shift)`` and the first
    normalisation of ``out_layers`` becomes ``GN(h) (1 + scale) + shift`` (adaptive
    group normalisation, Dhariwal and Nichol 2021, Section 3). ``up``/``down`` resample
    ``h`` (between the activation and the conv) and ``x`` without parameters.
    """

    def __init__(self, channels: int, emb_channels: int, dropout: float,
                 out_channels: int | None = None, use_scale_shift_norm: bool = False,
                 up: bool = False, down: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm
                                 else out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(out_channels), nn.SiLU(),
                                        nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers[:-1](x)
        h = self.in_layers[-1](self.h_upd(h))
        x = self.x_upd(x)
        e = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over pixels, ``x + proj_out(attn(qkv(norm(x))))``.

    ``qkv`` and ``proj_out`` are 1x1 ``Conv1d`` (as published). Legacy order splits the
    ``3C`` channels per head into ``(q, k, v)``; the new order splits into ``q, k, v``
    first and then heads. Scores are ``q^T k / sqrt(d)`` per head (``d`` its width).
    """

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1,
                 legacy: bool = True):
        super().__init__()
        if num_head_channels != -1:
            if channels % num_head_channels:
                raise InputError(None, "num_head_channels",
                                 f"{num_head_channels} does not divide {channels} channels")
            num_heads = channels // num_head_channels
        self.num_heads, self.legacy = num_heads, legacy
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))
        n, heads = flat.shape[-1], self.num_heads
        if self.legacy:
            q, k, v = qkv.reshape(b * heads, 3 * c // heads, n).chunk(3, dim=1)
        else:
            q, k, v = (part.reshape(b * heads, c // heads, n) for part in qkv.chunk(3, dim=1))
        scale = (c // heads) ** -0.25
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        weight = weight.float().softmax(dim=-1).to(weight.dtype)
        h = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, n)
        return (flat + self.proj_out(h)).reshape(b, c, *spatial)


class TimestepSequential(nn.Sequential):
    """A sequence of layers; ResBlocks also receive the time embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class ADMUNet(nn.Module):
    """The ADM ``UNetModel`` (unconditional, 2D): ``eps = net(x (B, C, H, W), t (B,))``.

    Returns ``(B, out_channels, H, W)``; with ``learn_sigma`` the first ``C`` channels
    are ``eps``. H and W must be divisible by ``2^(len(channel_mult) - 1)``.
    """

    def __init__(self, config: ADMConfig):
        super().__init__()
        self.config = config
        c, mult = config.num_channels, config.resolved_channel_mult()
        emb_dim = 4 * c
        heads_up = config.num_heads_upsample if config.num_heads_upsample != -1 \
            else config.num_heads

        def res(ch_in: int, ch_out: int, **kw: bool) -> ResBlock:
            return ResBlock(ch_in, emb_dim, config.dropout, ch_out,
                            config.use_scale_shift_norm, **kw)

        def attn(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, config.num_head_channels, config.legacy_attention)

        self.time_embed = nn.Sequential(nn.Linear(c, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        ch = input_ch = int(mult[0] * c)
        self.input_blocks = nn.ModuleList(
            [TimestepSequential(nn.Conv2d(config.in_channels, ch, 3, padding=1))])
        skip_chans, ds = [ch], 1
        for level, m in enumerate(mult):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(m * c))]
                ch = int(m * c)
                if ds in config.attention_ds:
                    layers.append(attn(ch, config.num_heads))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_chans.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(TimestepSequential(
                    res(ch, ch, down=True) if config.resblock_updown
                    else Downsample(ch, True, ch)))
                skip_chans.append(ch)
                ds *= 2
        self.middle_block = TimestepSequential(res(ch, ch), attn(ch, config.num_heads),
                                               res(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(config.num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), int(m * c))]
                ch = int(m * c)
                if ds in config.attention_ds:
                    layers.append(attn(ch, heads_up))
                if level and i == config.num_res_blocks:
                    layers.append(res(ch, ch, up=True) if config.resblock_updown
                                  else Upsample(ch, True, ch))
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(),
                                 nn.Conv2d(input_ch, config.out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.config.num_channels).to(x.dtype))
        skips = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


def read_state_dict(state_dict_or_path: Mapping[str, torch.Tensor] | str | PathLike[str],
                    ) -> tuple[str, dict[str, torch.Tensor]]:
    """``(source name, state dict)`` from a mapping or a ``torch.save`` file.

    Files load with ``torch.load(weights_only=True)`` on the CPU; a file that is not
    a checkpoint, or holds no mapping of tensors, raises :class:`InputError`.
    """
    if isinstance(state_dict_or_path, Mapping):
        return "state dict", dict(state_dict_or_path)
    source = str(state_dict_or_path)
    state = load_torch_file(source, "weights-only torch checkpoint")
    if not isinstance(state, Mapping):
        raise InputError(source, None, f"holds a {type(state).__name__}, not a state dict")
    return source, dict(state)


def load_state_dict_strict(net: nn.Module, state: Mapping[str, torch.Tensor],
                           source: str) -> None:
    """``net.load_state_dict(state, strict=True)`` with one-line errors naming the key.

    Checks every key and shape first, so that a bad checkpoint ends with
    ``source: KEY: missing`` (or ``unexpected``, or ``shape A, expected B``).
    """
    expected = net.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise InputError(source, key, "missing from the checkpoint")
        got = state[key]
        if not isinstance(got, torch.Tensor):
            raise InputError(source, key, f"is a {type(got).__name__}, not a tensor")
        if got.shape != value.shape:
            raise InputError(source, key, f"shape {tuple(got.shape)}, expected "
                             f"{tuple(value.shape)}")
    for key in state:
        if key not in expected:
            raise InputError(source, key, "unexpected key (not in this architecture)")
    net.load_state_dict(state, strict=True)
    logger.info("loaded %d tensors from %s", len(expected), source)


def load_adm(state_dict_or_path: Mapping[str, torch.Tensor] | str | PathLike[str],
             config: ADMConfig, *, n_train: int = 1000, beta_start: float = 1e-4,
             beta_end: float = 0.02, scale: float = 1.0, offset: float = 0.0,
             device: torch.device | str = "cpu") -> VPEpsDenoiser:
    """Build :class:`ADMUNet` from ``config``, load a guided-diffusion state dict strictly,
    and wrap it as a VE denoiser (:class:`~medrecon.priors.network.VPEpsDenoiser`,
    linear betas as in DDS's configs). One channel is a real image, two a complex one.

    A path is read with ``torch.load(weights_only=True)``; a missing, unexpected or
    mis-shaped key raises :class:`~medrecon.errors.InputError` naming the key.
    """
    if config.in_channels not in (1, 2):
        raise InputError(None, "in_channels",
                         f"medrecon images have 1 (real) or 2 (complex) channels, "
                         f"not {config.in_channels}")
    source, state = read_state_dict(state_dict_or_path)
    net = ADMUNet(config)
    load_state_dict_strict(net, state, source)
    net = net.to(device).eval()
    return VPEpsDenoiser(net, is_complex=config.in_channels == 2, n_train=n_train,
                         beta_start=beta_start, beta_end=beta_end, scale=scale,
                         offset=offset).to(device)
