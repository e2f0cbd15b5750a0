"""score_sde's NCSN++ (VE), laid out so that published state dicts load strictly.

Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole, "Score-based generative modeling
through stochastic differential equations", ICLR 2021 (NCSN++, Appendix H), as
published in yang-song/score_sde_pytorch (``models/ncsnpp.py``, ``layerspp.py``,
``up_or_down_sampling.py``). This is an independent implementation of that layout:
every module sits at the index of ``all_modules`` where score_sde puts it, with the
same parameter names (``Conv_0``, ``Dense_0``, ``GroupNorm_0``, ``NIN_0.W`` ...) and
shapes, and the ``sigmas`` buffer, so the ``model`` entry of a score_sde checkpoint
loads with ``strict=True`` once its ``module.`` prefix is removed.

The network returns the VE score ``s(x, sigma) ~= grad log p_sigma(x)`` for
``x = x0 + sigma z`` (``scale_by_sigma``: the raw output divided by ``sigma``), with a
Gaussian Fourier embedding of ``log sigma`` (Tancik et al. 2020) and, for data in
``[0, 1]`` (``centered=False``), the input mapped to ``2 x - 1`` inside the network.
:class:`VEScoreDenoiser` turns it into the denoiser contract by Tweedie's formula,
``D(x, sigma) = x + sigma^2 s(x, sigma)``.

Supported options: ``resblock_type='biggan'`` (BigGAN-style residual up/down
blocks, all published NCSN++ configs), FIR (``[1, 3, 3, 1]``, Zhang 2019) or naive
resampling, ``progressive`` in ``none | output_skip | residual`` and
``progressive_input`` in ``none | input_skip | residual``, ``fourier`` or
``positional`` embeddings. Attention is placed by level (``image_size / 2^level``
in ``attn_resolutions``) as score_sde builds it; score_sde's forward tests the
runtime width instead, which agrees at the trained size and lets this network
run on other sizes too.

Example:
    >>> cfg = NCSNppConfig(image_size=16, nf=16, ch_mult=(1, 2), num_res_blocks=1,
    ...                    attn_resolutions=(8,), num_channels=2, num_scales=10)
    >>> net = NCSNpp(cfg)
    >>> net(torch.rand(1, 2, 16, 16), torch.tensor([1.0])).shape
    torch.Size([1, 2, 16, 16])
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike

import torch
import torch.nn.functional as F
from torch import nn

from medrecon.errors import InputError
from medrecon.priors.adm import load_state_dict_strict, read_state_dict
from medrecon.priors.network import from_channels, to_channels


@dataclass(frozen=True)
class NCSNppConfig:
    """The ``config.model`` / ``config.data`` fields of score_sde that shape NCSN++."""

    image_size: int = 256
    num_channels: int = 3
    centered: bool = False
    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.0
    resamp_with_conv: bool = True
    conditional: bool = True
    fir: bool = True
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    resblock_type: str = "biggan"
    progressive: str = "output_skip"
    progressive_input: str = "input_skip"
    progressive_combine: str = "sum"
    embedding_type: str = "fourier"
    fourier_scale: float = 16.0
    init_scale: float = 0.0
    scale_by_sigma: bool = True
    sigma_min: float = 0.01
    sigma_max: float = 348.0
    num_scales: int = 2000

    def __post_init__(self) -> None:
        allowed = {"resblock_type": ("biggan",), "progressive": ("none", "output_skip",
                                                                   "residual"),
                   "progressive_input": ("none", "input_skip", "residual"),
                   "progressive_combine": ("sum", "cat"),
                   "embedding_type": ("fourier", "positional")}
        for name, choices in allowed.items():
            if getattr(self, name) not in choices:
                raise InputError(None, name, f"{getattr(self, name)!r} is not one of "
                                 f"{', '.join(choices)}")


#: score_sde ``configs/ve/celebahq_256_ncsnpp_continuous.py`` on
#: ``default_celeba_configs`` (CelebA-HQ 256, RGB): sigma_max 348, 2000 scales.
NCSNPP_CELEBAHQ256 = NCSNppConfig()

#: Score-MRI (Chung and Ye, Medical Image Analysis 2022),
#: ``configs/ve/fastmri_knee_320_ncsnpp_continuous.py`` on score_sde's
#: ``default_lsun_configs`` (sigma_max 378, 2000 scales); one real (magnitude)
#: channel is our reading of that repository; set ``num_channels`` to match a file.
NCSNPP_FASTMRI_KNEE320 = NCSNppConfig(
    image_size=320, num_channels=1, nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4,
    attn_resolutions=(16,), progressive="none", progressive_input="residual",
    sigma_max=378.0)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(channels // 4, 32), channels, eps=1e-6)


def _conv(c_in: int, c_out: int, size: int = 3, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, size, stride=stride, padding=padding if size == 3 else 0)


class FIR(nn.Module):
    """Separable FIR resampling by 2 (``upfirdn2d``, Karras et al., StyleGAN2 2020).

    ``up``: zero insertion, then the normalised kernel ``k k^T / sum^2`` times 4;
    ``down``: the normalised kernel, then every second sample. The kernel is a
    non-persistent buffer, as score_sde keeps it out of the state dict.
    """

    def __init__(self, kernel: Sequence[int], up: bool):
        super().__init__()
        k = torch.as_tensor(kernel, dtype=torch.float32)
        k2 = torch.outer(k, k) / k.sum() ** 2
        self.up, self.taps = up, len(kernel)
        self.register_buffer("kernel", k2 * (4 if up else 1), persistent=False)

    def filter(self, x: torch.Tensor, pad: tuple[int, int], stride: int = 1) -> torch.Tensor:
        """Depthwise convolution with the (flipped) kernel after padding ``pad`` each side."""
        c = x.shape[1]
        weight = self.kernel.flip(0, 1).to(x.dtype).expand(c, 1, -1, -1)
        x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
        return F.conv2d(x, weight, stride=stride, groups=c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.taps - 2
        if self.up:
            b, c, h, w = x.shape
            z = x.new_zeros(b, c, 2 * h, 2 * w)
            z[..., ::2, ::2] = x
            return self.filter(z, ((p + 1) // 2 + 1, p // 2))
        return self.filter(x, ((p + 1) // 2, p // 2), stride=2)


class Naive(nn.Module):
    """Nearest-neighbour x2 upsampling or 2x2 mean downsampling."""

    def __init__(self, up: bool):
        super().__init__()
        self.up = up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest") if self.up \
            else F.avg_pool2d(x, 2)


def _resampler(config: NCSNppConfig, up: bool) -> nn.Module:
    return FIR(config.fir_kernel, up) if config.fir else Naive(up)


class NIN(nn.Module):
    """Per-pixel linear map ``y = x W + b`` over channels (parameters ``W (in, out)``, ``b``)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.W = nn.Parameter(torch.empty(c_in, c_out))
        self.b = nn.Parameter(torch.zeros(c_out))
        nn.init.xavier_uniform_(self.W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,cd->bdhw", x, self.W) + self.b[:, None, None]


class AttnBlockpp(nn.Module):
    """Single-head pixel self-attention, ``(x + NIN_3(softmax(q^T k / sqrt C) v)) / sqrt 2``."""

    def __init__(self, channels: int, skip_rescale: bool):
        super().__init__()
        self.skip_rescale = skip_rescale
        self.GroupNorm_0 = _group_norm(channels)
        self.NIN_0, self.NIN_1 = NIN(channels, channels), NIN(channels, channels)
        self.NIN_2, self.NIN_3 = NIN(channels, channels), NIN(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h = self.GroupNorm_0(x)
        q, k, v = (m(h).reshape(b, c, -1) for m in (self.NIN_0, self.NIN_1, self.NIN_2))
        w = torch.einsum("bci,bcj->bij", q, k).mul(c**-0.5).softmax(dim=-1)
        h = self.NIN_3(torch.einsum("bij,bcj->bci", w, v).reshape(b, c, hh, ww))
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN residual block with optional up/down resampling of both paths:
    ``h = Conv_1(drop(act(GN_1(Conv_0(rs(act(GN_0 x))) + Dense_0(act(temb))))))``,
    output ``(Conv_2(rs(x)) + h) / sqrt 2`` (``Conv_2`` a 1x1 conv when shapes change)."""

    def __init__(self, config: NCSNppConfig, c_in: int, c_out: int | None = None,
                 up: bool = False, down: bool = False):
        super().__init__()
        c_out = c_out or c_in
        self.skip_rescale = config.skip_rescale
        self.GroupNorm_0 = _group_norm(c_in)
        self.resample = _resampler(config, up) if up or down else nn.Identity()
        self.Conv_0 = _conv(c_in, c_out)
        if config.conditional:
            self.Dense_0 = nn.Linear(4 * config.nf, c_out)
            nn.init.zeros_(self.Dense_0.bias)
        self.GroupNorm_1 = _group_norm(c_out)
        self.Dropout_0 = nn.Dropout(config.dropout)
        self.Conv_1 = _conv(c_out, c_out)
        if c_in != c_out or up or down:
            self.Conv_2 = _conv(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        h = self.resample(F.silu(self.GroupNorm_0(x)))
        x = self.resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(F.silu(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(F.silu(self.GroupNorm_1(h))))
        if hasattr(self, "Conv_2"):
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class Resample(nn.Module):
    """score_sde ``layerspp.Upsample`` / ``Downsample``: resampling with an optional
    3x3 conv; with FIR and a conv the two are fused (``Conv2d_0``), else ``Conv_0``."""

    def __init__(self, config: NCSNppConfig, c_in: int, c_out: int, up: bool, with_conv: bool):
        super().__init__()
        self.up, self.with_conv, self.fir = up, with_conv, config.fir
        self.resample = _resampler(config, up)
        if with_conv and config.fir:
            self.Conv2d_0 = nn.Conv2d(c_in, c_out, 3)
        elif with_conv:
            self.Conv_0 = _conv(c_in, c_out, stride=1 if up else 2, padding=1 if up else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.with_conv:
            return self.resample(x)
        if not self.fir:
            return self.Conv_0(self.resample(x)) if self.up else self.Conv_0(F.pad(x, (0, 1, 0, 1)))
        conv, fir = self.Conv2d_0, self.resample
        p = fir.taps - 2
        if self.up:
            # transposed stride-2 conv with the flipped kernel, then the FIR filter
            weight = conv.weight.flip(2, 3).transpose(0, 1)
            h = F.conv_transpose2d(x, weight, stride=2)
            return fir.filter(h, ((p - 2 + 1) // 2 + 1, (p - 2) // 2 + 1)) \
                + conv.bias[:, None, None]
        h = fir.filter(x, ((p + 2 + 1) // 2, (p + 2) // 2))
        return F.conv2d(h, conv.weight, conv.bias, stride=2)


class Combine(nn.Module):
    """Input-skip combiner: ``Conv_0(pyramid)`` (1x1) summed with or stacked on ``h``."""

    def __init__(self, c_in: int, c_out: int, method: str):
        super().__init__()
        self.Conv_0, self.method = _conv(c_in, c_out, 1), method

    def forward(self, pyramid: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        p = self.Conv_0(pyramid)
        return torch.cat([p, h], dim=1) if self.method == "cat" else p + h


class GaussianFourierProjection(nn.Module):
    """``[sin(2 pi W s), cos(2 pi W s)]`` with fixed random ``W ~ N(0, scale^2)``."""

    def __init__(self, size: int, scale: float):
        super().__init__()
        self.W = nn.Parameter(torch.randn(size) * scale, requires_grad=False)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        proj = s[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([proj.sin(), proj.cos()], dim=-1)


def positional_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """DDPM sinusoidal embedding ``[sin(t w_k), cos(t w_k)]``, ``w_k = 10000^(-k/(half-1))``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) / (half - 1)
                      * torch.arange(half, dtype=torch.float32, device=t.device))
    args = t.float()[:, None] * freqs[None]
    return F.pad(torch.cat([args.sin(), args.cos()], dim=1), (0, dim % 2))


class NCSNpp(nn.Module):
    """NCSN++: ``score = net(x (B, C, H, W), time_cond (B,))``.

    ``time_cond`` is ``sigma`` for the Fourier embedding (continuous VE training) or
    the index into ``sigmas`` for the positional one. Sides must be divisible by
    ``2^(len(ch_mult) - 1)``.
    """

    def __init__(self, config: NCSNppConfig):
        super().__init__()
        self.config = cfg = config
        nf, levels = cfg.nf, len(cfg.ch_mult)
        attn_level = [cfg.image_size // 2**i in cfg.attn_resolutions for i in range(levels)]
        self.attn_level = attn_level
        sigmas = torch.exp(torch.linspace(math.log(cfg.sigma_max), math.log(cfg.sigma_min),
                                          cfg.num_scales, dtype=torch.float64))
        self.register_buffer("sigmas", sigmas)
        mods: list[nn.Module] = []
        if cfg.embedding_type == "fourier":
            mods.append(GaussianFourierProjection(nf, cfg.fourier_scale))
        if cfg.conditional:
            mods += [nn.Linear(2 * nf if cfg.embedding_type == "fourier" else nf, 4 * nf),
                     nn.Linear(4 * nf, 4 * nf)]
        channels = cfg.num_channels

        def block(c_in: int, c_out: int | None = None, **kw: bool) -> ResnetBlockBigGANpp:
            return ResnetBlockBigGANpp(cfg, c_in, c_out, **kw)

        def attn(c: int) -> AttnBlockpp:
            return AttnBlockpp(c, cfg.skip_rescale)

        mods.append(_conv(channels, nf))
        skips, c, pyramid_c = [nf], nf, channels
        for level in range(levels):
            for _ in range(cfg.num_res_blocks):
                mods.append(block(c, nf * cfg.ch_mult[level]))
                c = nf * cfg.ch_mult[level]
                if attn_level[level]:
                    mods.append(attn(c))
                skips.append(c)
            if level != levels - 1:
                mods.append(block(c, down=True))
                if cfg.progressive_input == "input_skip":
                    mods.append(Combine(pyramid_c, c, cfg.progressive_combine))
                    c *= 2 if cfg.progressive_combine == "cat" else 1
                elif cfg.progressive_input == "residual":
                    mods.append(Resample(cfg, pyramid_c, c, up=False, with_conv=True))
                    pyramid_c = c
                skips.append(c)
        c = skips[-1]
        mods += [block(c), attn(c), block(c)]
        for level in reversed(range(levels)):
            for _ in range(cfg.num_res_blocks + 1):
                mods.append(block(c + skips.pop(), nf * cfg.ch_mult[level]))
                c = nf * cfg.ch_mult[level]
            if attn_level[level]:
                mods.append(attn(c))
            if cfg.progressive == "output_skip":
                mods += [_group_norm(c), _conv(c, channels)]
            elif cfg.progressive == "residual" and level == levels - 1:
                mods += [_group_norm(c), _conv(c, c)]
                pyramid_c = c
            elif cfg.progressive == "residual":
                mods.append(Resample(cfg, pyramid_c, c, up=True, with_conv=True))
                pyramid_c = c
            if level != 0:
                mods.append(block(c, up=True))
        if cfg.progressive != "output_skip":
            mods += [_group_norm(c), _conv(c, channels)]
        self.all_modules = nn.ModuleList(mods)
        self.pyramid_down = _resampler(cfg, up=False)
        self.pyramid_up = _resampler(cfg, up=True)

    def forward(self, x: torch.Tensor, time_cond: torch.Tensor) -> torch.Tensor:
        cfg, levels = self.config, len(self.config.ch_mult)
        mods = iter(self.all_modules)
        if cfg.embedding_type == "fourier":
            used_sigmas = time_cond
            temb = next(mods)(time_cond.log())
        else:
            used_sigmas = self.sigmas[time_cond.long()].to(x.dtype)
            temb = positional_embedding(time_cond, cfg.nf)
        temb = temb.to(x.dtype)
        if cfg.conditional:
            first = next(mods)
            temb = next(mods)(F.silu(first(temb)))
        else:
            temb = None
        if not cfg.centered:
            x = 2 * x - 1
        pyramid_in = x
        hs = [next(mods)(x)]
        for level in range(levels):
            for _ in range(cfg.num_res_blocks):
                h = next(mods)(hs[-1], temb)
                if self.attn_level[level]:
                    h = next(mods)(h)
                hs.append(h)
            if level != levels - 1:
                h = next(mods)(hs[-1], temb)
                if cfg.progressive_input == "input_skip":
                    pyramid_in = self.pyramid_down(pyramid_in)
                    h = next(mods)(pyramid_in, h)
                elif cfg.progressive_input == "residual":
                    pyramid_in = _merge(next(mods)(pyramid_in), h, cfg.skip_rescale)
                    h = pyramid_in
                hs.append(h)
        h = hs[-1]
        h = next(mods)(h, temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)
        pyramid = None
        for level in reversed(range(levels)):
            for _ in range(cfg.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if self.attn_level[level]:
                h = next(mods)(h)
            if cfg.progressive == "output_skip":
                branch = _norm_act_conv(mods, h)
                pyramid = branch if pyramid is None else self.pyramid_up(pyramid) + branch
            elif cfg.progressive == "residual" and level == levels - 1:
                pyramid = _norm_act_conv(mods, h)
            elif cfg.progressive == "residual":
                pyramid = _merge(next(mods)(pyramid), h, cfg.skip_rescale)
                h = pyramid
            if level != 0:
                h = next(mods)(h, temb)
        if cfg.progressive == "output_skip":
            h = pyramid
        else:
            h = _norm_act_conv(mods, h)
        if cfg.scale_by_sigma:
            h = h / used_sigmas.reshape(-1, 1, 1, 1).to(h.dtype)
        return h


def _norm_act_conv(mods: Iterator[nn.Module], h: torch.Tensor) -> torch.Tensor:
    """The next two modules, a GroupNorm and a conv, as ``conv(silu(norm(h)))``."""
    norm = next(mods)
    return next(mods)(F.silu(norm(h)))


def _merge(a: torch.Tensor, b: torch.Tensor, rescale: bool) -> torch.Tensor:
    return (a + b) / math.sqrt(2.0) if rescale else a + b


class VEScoreDenoiser(nn.Module):
    """A VE score network ``score(x (B, C, H, W), sigma (B,))`` as the denoiser contract,
    by Tweedie's formula ``D(x, sigma) = x + sigma^2 score(x, sigma)`` (no input scaling:
    VE data are ``x0 + sigma z``). ``scale, offset``: ``data = scale * x + offset``."""

    def __init__(self, net: nn.Module, *, is_complex: bool, scale: float = 1.0,
                 offset: float = 0.0):
        super().__init__()
        self.net, self.is_complex = net, is_complex
        self.scale, self.offset = scale, offset

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        channels, batch = to_channels(x, self.is_complex)
        dtype = next(self.net.parameters()).dtype
        s = torch.as_tensor(sigma, dtype=dtype, device=x.device).reshape(-1)
        s = s.expand(channels.shape[0]) if s.numel() == 1 else s
        h = channels.to(dtype)
        out = h + s.reshape(-1, 1, 1, 1) ** 2 * self.net(h, s)
        return from_channels(out.to(channels.dtype), batch, self.is_complex).to(x.dtype)


def score_sde_state_dict(checkpoint: Mapping[str, object], *, ema: bool,
                         net: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """The network's state dict from a score_sde checkpoint.

    A checkpoint saved by score_sde's ``save_checkpoint`` is ``{"model", "ema",
    "optimizer", "step"}``; ``model`` holds the ``DataParallel`` state dict (keys
    ``module.*``). With ``ema``, the EMA ``shadow_params`` (one per trainable
    parameter, in ``parameters()`` order) replace the trainable weights. A bare state
    dict, with or without the prefix, is taken as it is.
    """
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, Mapping):
        raise InputError(source, "model", "is not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if not ema:
        return state
    shadow = checkpoint.get("ema", {})
    shadow = shadow.get("shadow_params") if isinstance(shadow, Mapping) else None
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    if not isinstance(shadow, list) or len(shadow) != len(names):
        raise InputError(source, "ema.shadow_params",
                         f"expected a list of {len(names)} tensors")
    state.update(zip(names, shadow, strict=True))
    return state


def load_ncsnpp(state_dict_or_path: Mapping[str, torch.Tensor] | str | PathLike[str],
                config: NCSNppConfig, *, ema: bool = True, scale: float = 1.0,
                offset: float = 0.0, device: torch.device | str = "cpu") -> VEScoreDenoiser:
    """Build :class:`NCSNpp`, load a score_sde checkpoint (or state dict) strictly, and
    wrap it as :class:`VEScoreDenoiser`; one channel is real, two complex.

    Needs ``embedding_type='fourier'`` and ``scale_by_sigma`` (the network must take
    ``sigma`` and return the score). Files load with ``torch.load(weights_only=True)``.
    """
    if config.num_channels not in (1, 2):
        raise InputError(None, "num_channels", f"medrecon images have 1 (real) or 2 "
                         f"(complex) channels, not {config.num_channels}")
    if config.embedding_type != "fourier" or not config.scale_by_sigma:
        raise InputError(None, "embedding_type", "the denoiser needs a Fourier "
                         "(continuous sigma) embedding and scale_by_sigma")
    source, checkpoint = read_state_dict(state_dict_or_path)
    net = NCSNpp(config)
    has_ema = ema and "ema" in checkpoint
    load_state_dict_strict(net, score_sde_state_dict(checkpoint, ema=has_ema, net=net,
                                                     source=source), source)
    net = net.to(device).eval()
    return VEScoreDenoiser(net, is_complex=config.num_channels == 2, scale=scale,
                           offset=offset).to(device)
