"""Prior checkpoints: round trip, safe loading, refusal of bad files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from medrecon.errors import InputError
from medrecon.priors.checkpoint import (
    Checkpoint,
    load_prior,
    prior_metadata,
    read_checkpoint,
    save_checkpoint,
)
from medrecon.priors.network import EDMDenoiser
from medrecon.priors.unet import UNetBackbone, UNetConfig


def config(channels: int) -> UNetConfig:
    return UNetConfig(in_channels=channels, channels=(8, 16), attention_levels=(False, True),
                      norm_groups=4, head_channels=8)


def make(tmp_path: Path, modality: str = "ct") -> tuple[Path, Checkpoint, UNetBackbone]:
    arch = config(1 if modality == "ct" else 2)
    torch.manual_seed(0)
    net, avg = UNetBackbone(arch), UNetBackbone(arch)
    with torch.no_grad():
        for p in avg.parameters():
            p.normal_(0, 0.05)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(1, arch.in_channels, 8, 8), torch.zeros(1)).square().sum().backward()
    optimizer.step()
    metadata = prior_metadata(modality=modality, scale=1000.0 if modality == "ct" else 1.0,
                              offset=0.0, units="HU" if modality == "ct" else "relative",
                              method="test", image_size=(32, 32), sigma_data=0.5,
                              architecture=arch, recipe={"steps": 3, "data": ["phantom:2"]})
    checkpoint = Checkpoint(metadata=metadata, weights=net.state_dict(), ema=avg.state_dict(),
                            optimizer=optimizer.state_dict(), step=3, losses=[3.0, 2.0, 1.5],
                            rng=torch.Generator().manual_seed(5).get_state())
    path = save_checkpoint(checkpoint, tmp_path / f"{modality}.pt")
    return path, checkpoint, avg


def test_round_trip(tmp_path):
    path, original, _ = make(tmp_path)
    loaded = read_checkpoint(path)
    assert loaded.metadata == original.metadata
    assert loaded.step == 3 and loaded.losses == [3.0, 2.0, 1.5]
    for key, value in original.weights.items():
        torch.testing.assert_close(loaded.weights[key], value, rtol=0, atol=0)
    for key, value in original.ema.items():
        torch.testing.assert_close(loaded.ema[key], value, rtol=0, atol=0)
    assert torch.equal(loaded.rng, original.rng)
    torch.testing.assert_close(loaded.optimizer["state"][0]["exp_avg"],
                               original.optimizer["state"][0]["exp_avg"], rtol=0, atol=0)


def test_file_loads_with_weights_only_and_is_plain(tmp_path):
    path, _, _ = make(tmp_path)
    record = torch.load(path, weights_only=True)
    assert record["format"] == "medrecon-prior" and record["format_version"] == 1
    assert record["metadata"]["parametrisation"] == "edm"
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_load_prior_uses_ema_weights_and_metadata(tmp_path, modality):
    path, _, avg = make(tmp_path, modality)
    prior = load_prior(path, "cpu", modality=modality)
    assert isinstance(prior, EDMDenoiser)
    assert prior.is_complex == (modality == "mri")
    assert prior.scale == (1000.0 if modality == "ct" else 1.0) and prior.sigma_data == 0.5
    reference = EDMDenoiser(avg.eval(), is_complex=modality == "mri", sigma_data=0.5)
    dtype = torch.complex64 if modality == "mri" else torch.float32
    x = torch.randn(2, 24, 24, dtype=dtype, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(prior(x, 0.7), reference(x, 0.7))
    assert not any(p.requires_grad for p in prior.parameters())


def test_wrong_modality_is_refused(tmp_path):
    path, _, _ = make(tmp_path, "ct")
    with pytest.raises(InputError, match="metadata.modality"):
        load_prior(path, modality="mri")


def _resave(path: Path, edit) -> Path:
    record = torch.load(path, weights_only=True)
    edit(record)
    out = path.with_name("edited.pt")
    torch.save(record, out)
    return out


@pytest.mark.parametrize(("edit", "field"), [
    (lambda r: r.pop("ema"), "ema"),
    (lambda r: r["metadata"].pop("sigma_data"), "metadata.sigma_data"),
    (lambda r: r["metadata"].update(layout="complex"), "metadata.layout"),
    (lambda r: r["metadata"].update(parametrisation="vp"), "metadata.parametrisation"),
    (lambda r: r["metadata"]["architecture"].update(in_channels=2), "metadata.architecture"),
    (lambda r: r["metadata"]["normalisation"].update(scale=-1.0), "metadata.normalisation"),
    (lambda r: r.update(format_version=99), "format_version"),
    (lambda r: r.update(format="other"), "format"),
    (lambda r: r["ema"].pop(next(iter(r["ema"]))), "ema"),
])
def test_bad_fields_are_named(tmp_path, edit, field):
    path, _, _ = make(tmp_path)
    bad = _resave(path, edit)
    with pytest.raises(InputError) as info:
        load_prior(bad)
    assert info.value.field == field and info.value.source == str(bad)


class Payload:
    def __reduce__(self):
        return (print, ("executed",))


@pytest.mark.parametrize("content", ["text", "empty", "pickle"])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "text":
        path.write_text("not a checkpoint\n")
    elif content == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"format": "medrecon-prior", "x": Payload()}, path)
    with pytest.raises(InputError, match="bad.pt") as info:
        read_checkpoint(path)
    assert info.value.field is None


def test_truncated_checkpoint(tmp_path):
    path, _, _ = make(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a medrecon prior checkpoint"):
        read_checkpoint(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_prior(tmp_path / "none.pt")
    _, checkpoint, _ = make(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        save_checkpoint(checkpoint, tmp_path / "missing" / "x.pt")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    _, checkpoint, _ = make(tmp_path)
    target = tmp_path / "new.pt"

    def broken(*args, **kwargs):
        raise pickle.PicklingError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(pickle.PicklingError):
        save_checkpoint(checkpoint, target)
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.pt"]


def test_metadata_checks_layout():
    with pytest.raises(ValueError):
        prior_metadata(modality="mri", scale=1, offset=0, units="", method="", image_size=(8, 8),
                       sigma_data=0.5, architecture=config(1), recipe={})
