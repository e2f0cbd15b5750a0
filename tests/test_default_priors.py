"""The embedded default priors: shipped, small, trained by their recipe, and denoising
held-out images far better than doing nothing; the MNI152 training source."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrecon.data.mni import HELDOUT_SLICES, TRAIN_SLICES, mni152_slice
from medrecon.data.phantom import ct_phantom
from medrecon.data.priors import default_prior_path
from medrecon.errors import InputError
from medrecon.priors.adm import ADM_DDS_AAPM256, ADMUNet, load_adm
from medrecon.priors.checkpoint import load_prior, read_checkpoint
from medrecon.priors.datasets import load_training_set
from medrecon.priors.defaults import (
    _architecture,
    load_named_prior,
    parse_prior_reference,
    recipe_stages,
)
from medrecon.priors.ncsnpp import NCSNpp, VEScoreDenoiser
from medrecon.priors.network import EDMDenoiser, VPEpsDenoiser
from tests.test_published_layouts import SMALL_ADM, SMALL_NCSN, randomised


@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_default_prior_ships_with_its_recipe(modality):
    path = default_prior_path(modality)
    assert path.stat().st_size < 25 * 2**20
    checkpoint = read_checkpoint(path)
    recipe = checkpoint.metadata["recipe"]
    stages = recipe_stages(modality)
    for key, value in stages[-1].items():
        assert recipe[key] == value, key
    assert checkpoint.step == stages[-1]["steps"] == len(checkpoint.losses)
    assert checkpoint.optimizer is None  # a weights-only export
    if len(stages) == 1:  # the loss fell (mean of the last 500 steps against the first 500)
        assert np.mean(checkpoint.losses[-500:]) < 0.5 * np.mean(checkpoint.losses[:500])
    else:  # fine-tuned from each previous stage's export, as the recipe says (the init
        # chain of the metadata, newest first); the last stage still lowered the loss
        # (shipped CT: 0.129 over its first 500 steps, 0.120 over its last 500)
        for earlier in reversed(stages[:-1]):
            recipe = recipe["init"]
            assert recipe["modality"] == modality
            assert recipe["steps"] == earlier["steps"]
            recipe = recipe["recipe"]
            assert recipe["data"] == earlier["data"] and recipe["lr"] == earlier["lr"]
        assert "init" not in recipe
        assert np.mean(checkpoint.losses[-500:]) < 0.97 * np.mean(checkpoint.losses[:500])


def test_recipe_stages_chain_each_finetune_entry_onto_the_previous_stage(monkeypatch):
    import medrecon.priors.defaults as defaults

    base = {"data": ["phantom:4"], "steps": 10, "lr": 1e-3, "seed": 0}
    monkeypatch.setitem(defaults.RECIPES, "ct", {**base, "finetune": {"steps": 5}})
    assert recipe_stages("ct") == [base, {**base, "steps": 5}]
    monkeypatch.setitem(defaults.RECIPES, "ct", {**base, "finetune": [
        {"data": ["ctmix:4"], "lr": 1e-4, "steps": 5}, {"steps": 7}]})
    second = {**base, "data": ["ctmix:4"], "lr": 1e-4, "steps": 5}
    assert recipe_stages("ct") == [base, second, {**second, "steps": 7}]
    monkeypatch.setitem(defaults.RECIPES, "ct", base)
    assert recipe_stages("ct") == [base]


def _denoising_gain(prior, clean: torch.Tensor, sigma: float) -> float:
    """MSE of the noisy input over MSE of the prior's estimate, in prior space."""
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(clean.shape, generator=g, dtype=clean.real.dtype)
    if clean.is_complex():
        noise = torch.complex(noise, torch.randn(clean.shape, generator=g))
    noisy = clean + sigma * noise
    with torch.no_grad():
        estimate = prior(noisy, sigma)
    return float((noisy - clean).abs().square().mean() / (estimate - clean).abs().square().mean())


@pytest.mark.parametrize("sigma,gain", [(0.05, 3.0), (0.2, 8.0)])
def test_ct_prior_denoises_a_held_out_phantom(sigma, gain):
    prior = load_prior(default_prior_path("ct"), modality="ct")
    clean = torch.from_numpy(ct_phantom(128, seed=10_003).image)[None] / 1000.0
    assert _denoising_gain(prior, clean, sigma) > gain


@pytest.mark.parametrize("sigma,gain", [(0.05, 3.0), (0.2, 8.0)])
def test_mri_prior_denoises_a_held_out_slice(sigma, gain):
    prior = load_prior(default_prior_path("mri"), modality="mri")
    image = torch.from_numpy(mni152_slice(10_001, size=128, slices=HELDOUT_SLICES))
    clean = image / torch.quantile(image.abs().flatten(), 0.99)
    assert _denoising_gain(prior, clean[None], sigma) > gain


def test_mni152_slices_are_deterministic_complex_and_held_out_apart():
    a, b = mni152_slice(5), mni152_slice(5)
    assert a.dtype == np.complex64 and a.shape == (256, 256)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(np.angle(a[np.abs(a) > 0.1]), 0)  # a smooth phase is applied
    assert set(TRAIN_SLICES).isdisjoint(HELDOUT_SLICES)
    data = load_training_set(["mni152:3"], modality="mri", crop=64)
    assert len(data.images) == 3 and data.images[0].shape == (2, 256, 256)
    with pytest.raises(InputError, match="MRI priors only"):
        load_training_set(["mni152:3"], modality="ct", crop=64)
    with pytest.raises(InputError, match="positive"):
        load_training_set(["mni152:0"], modality="mri", crop=64)


# ---------------------------------------------------------------- priors by reference


def test_prior_references_parse():
    assert parse_prior_reference("default") == ("default", "")
    assert parse_prior_reference("adm:/w/model.pt") == ("adm", "/w/model.pt")
    assert parse_prior_reference("ncsnpp:ck.pth") == ("ncsnpp", "ck.pth")
    assert parse_prior_reference("medrecon:p.pt") == ("medrecon", "p.pt")
    assert parse_prior_reference("runs/p.pt") == ("medrecon", "runs/p.pt")
    with pytest.raises(InputError, match="names no file"):
        parse_prior_reference("adm:")


def test_default_and_medrecon_checkpoint_by_reference():
    prior, path = load_named_prior("default", "ct")
    assert isinstance(prior, EDMDenoiser) and path == default_prior_path("ct")
    again, _ = load_named_prior(f"medrecon:{path}", "ct")
    assert isinstance(again, EDMDenoiser) and not again.is_complex
    with pytest.raises(InputError, match="ct prior"):
        load_named_prior(str(path), "mri")


def _sidecar(path, config, **options):
    import dataclasses
    import json

    fields = {k: list(v) if isinstance(v, tuple) else v
              for k, v in dataclasses.asdict(config).items()}
    path.with_suffix(".json").write_text(json.dumps({"config": fields, **options}))


def test_adm_state_dict_by_reference(tmp_path):
    net = randomised(ADMUNet(SMALL_ADM))
    path = tmp_path / "adm.pt"
    torch.save(net.state_dict(), path)
    # no sidecar: DDS's published layout of the modality (not built here: 100s of MB)
    assert _architecture("adm", path, "ct") == (ADM_DDS_AAPM256, {})
    _sidecar(path, SMALL_ADM, scale=2.0)
    prior, where = load_named_prior(f"adm:{path}", "mri")
    assert isinstance(prior, VPEpsDenoiser) and prior.is_complex and where == path
    assert prior.scale == 2.0 and not any(p.requires_grad for p in prior.parameters())
    direct = load_adm(path, SMALL_ADM, scale=2.0)
    x = torch.randn(1, 32, 32, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(prior(x, 0.5), direct(x, 0.5), rtol=0, atol=0)
    with pytest.raises(InputError, match="2 channels, but a ct prior"):
        load_named_prior(f"adm:{path}", "ct")


def test_ncsnpp_checkpoint_by_reference(tmp_path):
    net = randomised(NCSNpp(SMALL_NCSN))
    path = tmp_path / "checkpoint_8.pth"
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    with pytest.raises(InputError, match="carries no architecture"):
        load_named_prior(f"ncsnpp:{path}", "mri")
    _sidecar(path, SMALL_NCSN, ema=False)
    prior, _ = load_named_prior(f"ncsnpp:{path}", "mri")
    assert isinstance(prior, VEScoreDenoiser) and prior.is_complex
    x, s = torch.rand(1, 2, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([2.0])
    with torch.no_grad():
        torch.testing.assert_close(prior.net(x, s), net(x, s), rtol=0, atol=0)
    path.with_suffix(".json").write_text('{"config": {"no_such_field": 1}}')
    with pytest.raises(InputError, match="config.no_such_field"):
        load_named_prior(f"ncsnpp:{path}", "mri")
    with pytest.raises(InputError, match="no such file"):
        load_named_prior(f"adm:{tmp_path / 'missing.pt'}", "ct")
