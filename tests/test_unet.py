"""The UNet backbone (MONAI's diffusion UNet) as the raw network of an EDM prior."""

from __future__ import annotations

import pytest
import torch

from medrecon.priors.network import EDMDenoiser
from medrecon.priors.unet import UNetBackbone, UNetConfig


def tiny(channels: int = 1) -> UNetBackbone:
    torch.manual_seed(0)
    config = UNetConfig(in_channels=channels, channels=(8, 16), attention_levels=(False, True),
                        norm_groups=4, head_channels=8)
    net = UNetBackbone(config).eval()
    # MONAI zero-initialises the output convolution; perturb every weight so that the
    # output depends on the input and the timestep
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    return net


@pytest.mark.parametrize("channels", [1, 2])
def test_forward_shape_and_channels(channels):
    net = tiny(channels)
    x = torch.randn(3, channels, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = net(x, torch.tensor([-1.0, 0.0, 0.5]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_timestep_is_scaled_c_noise_fed_to_monai():
    net = tiny()
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    c = torch.tensor([-0.73, 0.31])
    with torch.no_grad():
        ours = net(x, c)
        reference = net.unet(x, net.config.timestep_scale * c)
    torch.testing.assert_close(ours, reference)


def test_float_timesteps_change_the_output_continuously():
    net = tiny()
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = net(x, torch.tensor([0.1]))
        b = net(x, torch.tensor([0.1 + 1e-4]))
        c = net(x, torch.tensor([0.6]))
    near, far = (a - b).abs().max(), (a - c).abs().max()
    assert 0 < near < 0.1 * far


def test_scalar_c_noise_broadcasts_over_the_batch():
    net = tiny()
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(net(x, torch.tensor(0.2)), net(x, torch.tensor([0.2, 0.2])))


@pytest.mark.parametrize("size", [(96, 96), (128, 128), (37, 45)])
def test_fully_convolutional_any_size(size):
    net = tiny()
    x = torch.randn(1, 1, *size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = net(x, torch.tensor([0.0]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_batch_items_are_independent():
    net = tiny()
    x = torch.randn(2, 1, 24, 24, generator=torch.Generator().manual_seed(6))
    c = torch.tensor([-0.5, 0.4])
    with torch.no_grad():
        both = net(x, c)
        one = net(x[1:], c[1:])
    torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=1e-4)


def test_edm_wrapping_is_finite_and_identity_at_small_sigma():
    denoiser = EDMDenoiser(tiny(2), is_complex=True)
    x = torch.randn(2, 32, 32, dtype=torch.complex64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        out = denoiser(x, torch.tensor([1.0, 10.0]))
        near = denoiser(x, 1e-4)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    # c_skip -> 1 and c_out -> 0 as sigma -> 0 (Karras et al. 2022, Table 1)
    assert (near - x).abs().max() < 1e-3


def test_config_round_trip_and_validation():
    config = UNetConfig(in_channels=2, channels=(8, 16, 16), attention_levels=(False, False, True),
                        norm_groups=8)
    assert UNetConfig.from_dict(config.to_dict()) == config
    assert config.multiple == 4
    with pytest.raises(ValueError):
        UNetConfig(in_channels=3)
    with pytest.raises(ValueError):
        UNetConfig(channels=(12, 16), attention_levels=(False, True), norm_groups=8)
    with pytest.raises(KeyError):
        UNetConfig.from_dict({"depth": 3})
