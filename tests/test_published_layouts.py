"""Published checkpoint layouts: guided-diffusion ADM UNet and score_sde NCSN++."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medrecon.errors import InputError
from medrecon.priors.adm import (
    ADM_DDS_AAPM256,
    ADM_DDS_FASTMRI320,
    ADM_IMAGENET256_UNCOND,
    ADMConfig,
    ADMUNet,
    AttentionBlock,
    load_adm,
    timestep_embedding,
)
from medrecon.priors.ncsnpp import (
    FIR,
    NCSNPP_CELEBAHQ256,
    NCSNPP_FASTMRI_KNEE320,
    NCSNpp,
    NCSNppConfig,
    Resample,
    VEScoreDenoiser,
    load_ncsnpp,
    positional_embedding,
)
from medrecon.priors.network import VPEpsDenoiser

SMALL_ADM = ADMConfig(image_size=32, num_channels=32, num_res_blocks=1, channel_mult=(1, 2),
                      attention_resolutions=(16,), num_head_channels=16, resblock_updown=True,
                      learn_sigma=True, in_channels=2)
SMALL_NCSN = NCSNppConfig(image_size=16, nf=16, ch_mult=(1, 2), num_res_blocks=1,
                          attn_resolutions=(8,), num_channels=2, num_scales=10)


def randomised(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Replace every parameter by random values (the zero inits hide wiring errors)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return net.eval()


def meta_count(net_class, config) -> int:
    with torch.device("meta"):
        net = net_class(config)
    return sum(p.numel() for p in net.parameters())


# ---------------------------------------------------------------- ADM


def test_adm_parameter_count_matches_published_256_unconditional():
    # guided-diffusion 256x256 unconditional ImageNet model: 552,814,086 parameters
    assert meta_count(ADMUNet, ADM_IMAGENET256_UNCOND) == 552_814_086


def test_adm_dds_layouts_have_published_names_and_shapes():
    with torch.device("meta"):
        ct, mri = ADMUNet(ADM_DDS_AAPM256), ADMUNet(ADM_DDS_FASTMRI320)
    ct_sd, mri_sd = ct.state_dict(), mri.state_dict()
    assert ct_sd["input_blocks.0.0.weight"].shape == (256, 1, 3, 3)
    assert ct_sd["out.2.weight"].shape == (2, 256, 3, 3)          # learn_sigma: 2 C
    assert mri_sd["input_blocks.0.0.weight"].shape == (256, 2, 3, 3)
    assert mri_sd["out.2.weight"].shape == (4, 256, 3, 3)
    assert ct_sd["time_embed.0.weight"].shape == (1024, 256)
    assert ct_sd["middle_block.1.qkv.weight"].shape == (3 * 1024, 1024, 1)  # conv1d
    assert ct_sd["middle_block.0.emb_layers.1.weight"].shape == (2 * 1024, 1024)
    # 256 // 16 = 16 is a ds of the CT model: attention at 16x16, not in the 320 model
    assert any(re.fullmatch(r"input_blocks\.\d+\.1\.qkv\.weight", k) for k in ct_sd)
    assert not any(re.fullmatch(r"(input|output)_blocks\.\d+\.1\.qkv\.weight", k)
                   for k in mri_sd)
    # one down-sampling ResBlock per level but the last (resblock_updown), no Downsample conv
    assert not any(".op." in k for k in ct_sd)
    assert len(ct.input_blocks) == 1 + 6 * 1 + 5 and len(ct.output_blocks) == 6 * 2


def test_adm_state_dict_names_follow_published_patterns():
    keys = ADMUNet(SMALL_ADM).state_dict().keys()
    pattern = re.compile(
        r"time_embed\.[02]\.(weight|bias)"
        r"|input_blocks\.0\.0\.(weight|bias)"
        r"|(input_blocks\.\d+|middle_block|output_blocks\.\d+)\.\d+\."
        r"(in_layers\.[02]|emb_layers\.1|out_layers\.[03]|skip_connection"
        r"|norm|qkv|proj_out)\.(weight|bias)"
        r"|out\.[02]\.(weight|bias)")
    bad = [k for k in keys if not pattern.fullmatch(k)]
    assert not bad
    for key in ("input_blocks.0.0.weight", "time_embed.0.weight", "time_embed.2.bias",
                "out.2.weight", "middle_block.1.qkv.weight", "middle_block.1.proj_out.weight",
                "input_blocks.1.0.in_layers.0.weight", "input_blocks.2.0.emb_layers.1.weight",
                "output_blocks.0.0.skip_connection.weight", "output_blocks.1.2.out_layers.3.bias"):
        assert key in keys, key


def test_adm_forward_shape_and_reload_strict(tmp_path):
    net = randomised(ADMUNet(SMALL_ADM))
    x, t = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(1)), \
        torch.tensor([3.0, 700.0])
    with torch.no_grad():
        out = net(x, t)
    assert out.shape == (2, 4, 32, 32) and torch.isfinite(out).all()
    path = tmp_path / "adm.pt"
    torch.save(net.state_dict(), path)
    prior = load_adm(path, SMALL_ADM)
    assert isinstance(prior, VPEpsDenoiser) and prior.is_complex
    with torch.no_grad():
        torch.testing.assert_close(prior.net(x, t), out, rtol=0, atol=0)
        image = torch.randn(2, 32, 32, dtype=torch.complex64,
                            generator=torch.Generator().manual_seed(2))
        denoised = prior(image, torch.tensor([0.1, 5.0]))
    assert denoised.shape == image.shape and torch.isfinite(torch.view_as_real(denoised)).all()


def test_adm_real_prior_from_one_channel():
    cfg = ADMConfig(image_size=16, num_channels=32, num_res_blocks=1, channel_mult=(1, 1),
                    attention_resolutions=(8,), in_channels=1, learn_sigma=True)
    prior = load_adm(randomised(ADMUNet(cfg)).state_dict(), cfg)
    assert not prior.is_complex
    with torch.no_grad():
        assert torch.isfinite(prior(torch.randn(16, 16), 1.0)).all()


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("middle_block.1.qkv.weight"), "middle_block.1.qkv.weight: missing"),
    (lambda sd: sd.__setitem__("out.2.weight", torch.zeros(2, 32, 3, 3)),
     "out.2.weight: shape (2, 32, 3, 3), expected (4, 32, 3, 3)"),
    (lambda sd: sd.__setitem__("label_emb.weight", torch.zeros(3)), "label_emb.weight"),
])
def test_adm_bad_state_dict_names_the_key(edit, message):
    sd = ADMUNet(SMALL_ADM).state_dict()
    edit(sd)
    with pytest.raises(InputError, match=re.escape(message)):
        load_adm(sd, SMALL_ADM)


def test_not_a_checkpoint_is_one_clear_error(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="weights.pt: not a weights-only torch checkpoint"):
        load_adm(path, SMALL_ADM)
    with pytest.raises(InputError, match="in_channels"):
        load_adm({}, ADM_IMAGENET256_UNCOND)


@pytest.mark.parametrize("legacy", [True, False])
def test_adm_attention_matches_scaled_dot_product_attention(legacy):
    gen = torch.Generator().manual_seed(3)
    block = randomised(AttentionBlock(64, num_head_channels=16, legacy=legacy))
    x = torch.randn(2, 64, 4, 4, generator=gen)
    with torch.no_grad():
        qkv = block.qkv(block.norm(x.reshape(2, 64, 16)))             # (B, 3C, N)
        if legacy:   # per head: (q, k, v) blocks of 16 channels
            q, k, v = qkv.reshape(2, 4, 48, 16).split(16, dim=2)
        else:        # q, k, v first, then heads
            q, k, v = (p.reshape(2, 4, 16, 16) for p in qkv.chunk(3, dim=1))
        ref = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2),
                                             v.transpose(-1, -2))  # (B, heads, N, d)
        ref = block.proj_out(ref.transpose(-1, -2).reshape(2, 64, 16)) + x.reshape(2, 64, 16)
        torch.testing.assert_close(block(x), ref.reshape(2, 64, 4, 4), rtol=1e-5, atol=1e-5)


def test_timestep_embedding_closed_form():
    emb = timestep_embedding(torch.tensor([0.0, 2.0]), 6)
    freqs = 10000.0 ** (-np.arange(3) / 3)
    expected = np.concatenate([np.cos(2 * freqs), np.sin(2 * freqs)])
    np.testing.assert_allclose(emb[1].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(emb[0].numpy(), [1, 1, 1, 0, 0, 0])


# ---------------------------------------------------------------- NCSN++


def test_ncsnpp_published_layout_names():
    with torch.device("meta"):
        sd = NCSNpp(NCSNPP_CELEBAHQ256).state_dict()
    assert sd["sigmas"].shape == (2000,)
    assert sd["all_modules.0.W"].shape == (128,)                   # Fourier features, nf
    assert sd["all_modules.1.weight"].shape == (512, 256)          # Dense: 2 nf -> 4 nf
    assert sd["all_modules.2.weight"].shape == (512, 512)
    assert sd["all_modules.3.weight"].shape == (128, 3, 3, 3)      # first conv
    assert sd["all_modules.4.Dense_0.weight"].shape == (128, 512)  # first ResnetBlock
    assert sd["all_modules.4.GroupNorm_0.weight"].shape == (128,)
    pattern = re.compile(r"sigmas|all_modules\.\d+\.(W|weight|bias|"
                         r"(Conv_[012]|Dense_0|GroupNorm_[01]|Conv2d_0)\.(weight|bias)|"
                         r"NIN_[0-3]\.[Wb])")
    assert all(pattern.fullmatch(k) for k in sd)
    assert any(k.endswith("NIN_3.W") for k in sd)
    with torch.device("meta"):
        knee = NCSNpp(NCSNPP_FASTMRI_KNEE320).state_dict()
    # progressive_input='residual' with FIR: fused down-sampling convs Conv2d_0 (no padding)
    assert any(k.endswith("Conv2d_0.weight") for k in knee)
    assert knee["all_modules.3.weight"].shape == (128, 1, 3, 3)


@pytest.mark.parametrize("progressive", ["none", "output_skip", "residual"])
@pytest.mark.parametrize("progressive_input", ["none", "input_skip", "residual"])
@pytest.mark.parametrize("fir", [True, False])
def test_ncsnpp_options_run(progressive, progressive_input, fir):
    cfg = NCSNppConfig(image_size=16, nf=16, ch_mult=(1, 2), num_res_blocks=1,
                       attn_resolutions=(8,), num_channels=1, num_scales=10, fir=fir,
                       progressive=progressive, progressive_input=progressive_input)
    net = randomised(NCSNpp(cfg))
    with torch.no_grad():
        out = net(torch.rand(2, 1, 16, 16), torch.tensor([0.5, 3.0]))
    assert out.shape == (2, 1, 16, 16) and torch.isfinite(out).all()


def test_ncsnpp_score_sde_checkpoint_round_trip(tmp_path):
    net = randomised(NCSNpp(SMALL_NCSN))
    model = {f"module.{k}": v for k, v in net.state_dict().items()}
    gen = torch.Generator().manual_seed(4)
    shadow = [torch.randn(p.shape, generator=gen) for p in net.parameters() if p.requires_grad]
    path = tmp_path / "checkpoint_8.pth"
    torch.save({"model": model, "ema": {"decay": 0.999, "num_updates": 3,
                                        "shadow_params": shadow}, "step": 8}, path)
    x, s = torch.rand(2, 2, 16, 16, generator=gen), torch.tensor([0.3, 20.0])
    raw = load_ncsnpp(path, SMALL_NCSN, ema=False)
    with torch.no_grad():
        torch.testing.assert_close(raw.net(x, s), net(x, s), rtol=0, atol=0)
    averaged = load_ncsnpp(path, SMALL_NCSN, ema=True)
    trainable = [p for p in averaged.net.parameters() if p.requires_grad]
    assert all(torch.equal(p, q) for p, q in zip(trainable, shadow, strict=True))
    assert torch.equal(averaged.net.all_modules[0].W, net.all_modules[0].W)  # not trained


def test_ncsnpp_bad_checkpoint_names_the_key():
    sd = NCSNpp(SMALL_NCSN).state_dict()
    sd["all_modules.4.Conv_0.weight"] = torch.zeros(1)
    with pytest.raises(InputError, match=r"all_modules\.4\.Conv_0\.weight: shape \(1,\)"):
        load_ncsnpp({"model": sd}, SMALL_NCSN)
    del sd["sigmas"]
    with pytest.raises(InputError, match="sigmas: missing"):
        load_ncsnpp(sd, SMALL_NCSN)


def test_ncsnpp_scale_by_sigma_and_centering():
    net = randomised(NCSNpp(SMALL_NCSN))
    x = torch.rand(1, 2, 16, 16, generator=torch.Generator().manual_seed(5))
    raw_cfg = NCSNppConfig(**{**SMALL_NCSN.__dict__, "scale_by_sigma": False, "centered": True})
    raw = NCSNpp(raw_cfg)
    raw.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(net(x, torch.tensor([4.0])),
                                   raw(2 * x - 1, torch.tensor([4.0])) / 4.0)


@pytest.mark.parametrize("up", [True, False])
def test_fir_resampling_matches_numpy(up):
    k = np.array([1.0, 3.0, 3.0, 1.0])
    k1 = k / k.sum() * (2 if up else 1)
    x = np.random.default_rng(6).standard_normal((8, 8))

    def along(a, axis):
        a = np.moveaxis(a, axis, -1)
        if up:
            z = np.zeros((*a.shape[:-1], 2 * a.shape[-1]))
            z[..., ::2] = a
            out = np.stack([np.convolve(np.pad(r, (2, 1)), k1, "valid") for r in z])
        else:
            out = np.stack([np.convolve(np.pad(r, (1, 1)), k1, "valid")[::2] for r in a])
        return np.moveaxis(out, -1, axis)

    expected = along(along(x, 0), 1)
    got = FIR((1, 3, 3, 1), up)(torch.from_numpy(x)[None, None].float())[0, 0]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_ve_score_denoiser_is_tweedie_for_gaussian_data():
    class GaussianScore(torch.nn.Module):
        """Exact score of x0 ~ N(0, v I) under VE noise: -x / (v + sigma^2)."""

        def __init__(self):
            super().__init__()
            self.v = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, x, s):
            return -x / (self.v + s.reshape(-1, 1, 1, 1) ** 2)

    prior = VEScoreDenoiser(GaussianScore(), is_complex=True)
    x = torch.randn(3, 8, 8, dtype=torch.complex64, generator=torch.Generator().manual_seed(7))
    sigma = torch.tensor([0.5, 1.0, 3.0])
    with torch.no_grad():
        got = prior(x, sigma)
    expected = x * (2.0 / (2.0 + sigma**2)).reshape(-1, 1, 1)   # posterior mean
    torch.testing.assert_close(got, expected)


def test_ncsnpp_denoiser_finite_on_complex_image():
    prior = load_ncsnpp(randomised(NCSNpp(SMALL_NCSN)).state_dict(), SMALL_NCSN)
    image = torch.randn(16, 16, dtype=torch.complex64, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        out = prior(image, 2.0)
    assert out.shape == image.shape and torch.isfinite(torch.view_as_real(out)).all()
    with pytest.raises(InputError, match="num_channels"):
        load_ncsnpp({}, NCSNPP_CELEBAHQ256)


def test_unknown_option_is_rejected():
    with pytest.raises(InputError, match="resblock_type"):
        NCSNppConfig(resblock_type="ddpm")


@pytest.mark.parametrize("up", [True, False])
def test_fused_fir_conv_equals_resample_then_conv_in_the_interior(up):
    # upfirdn2d fusion (Karras et al. 2020): FIR up x2 then 3x3 conv, or 3x3 conv then FIR
    # down x2, are the same linear shift-invariant maps; only the borders differ.
    layer = Resample(NCSNppConfig(), 3, 4, up=up, with_conv=True).double()
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    fir = FIR((1, 3, 3, 1), up).double()
    conv = layer.Conv2d_0
    with torch.no_grad():
        ref = (F.conv2d(fir(x), conv.weight, conv.bias, padding=1) if up
               else fir(F.conv2d(x, conv.weight, conv.bias, padding=1)))
        got = layer(x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got[..., 3:-3, 3:-3], ref[..., 3:-3, 3:-3])


def test_adm_conv_resampling_layout_without_resblock_updown():
    cfg = ADMConfig(**{**SMALL_ADM.__dict__, "resblock_updown": False})
    net = randomised(ADMUNet(cfg))
    sd = net.state_dict()
    assert sd["input_blocks.2.0.op.weight"].shape == (32, 32, 3, 3)    # strided conv
    assert sd["output_blocks.1.2.conv.weight"].shape == (64, 64, 3, 3)  # after res + attn
    with torch.no_grad():
        assert net(torch.randn(1, 2, 32, 32), torch.tensor([5.0])).shape == (1, 4, 32, 32)


def test_ncsnpp_positional_embedding_divides_by_indexed_sigma():
    cfg = NCSNppConfig(**{**SMALL_NCSN.__dict__, "embedding_type": "positional"})
    net = randomised(NCSNpp(cfg))
    raw = NCSNpp(NCSNppConfig(**{**cfg.__dict__, "scale_by_sigma": False}))
    raw.load_state_dict(net.state_dict())
    x, t = torch.rand(2, 2, 16, 16), torch.tensor([0, 7])
    sigmas = np.exp(np.linspace(np.log(348.0), np.log(0.01), 10))
    with torch.no_grad():
        torch.testing.assert_close(net(x, t) * torch.tensor(sigmas[[0, 7]]).float()
                                   .reshape(-1, 1, 1, 1), raw(x, t), rtol=1e-5, atol=1e-5)
    emb = positional_embedding(torch.tensor([3.0]), 8)[0].numpy()
    freqs = np.exp(-np.log(10000.0) / 3 * np.arange(4))
    np.testing.assert_allclose(emb, np.concatenate([np.sin(3 * freqs), np.cos(3 * freqs)]),
                               rtol=1e-6)
