"""Training network priors: EDM loss, augmentation, resume, data sets."""

from __future__ import annotations

import logging
import math

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from medrecon.data.dicom import write_dicom_series
from medrecon.data.volume import Volume
from medrecon.errors import InputError
from medrecon.operators.mri import fft2c
from medrecon.priors.checkpoint import load_prior, read_checkpoint
from medrecon.priors.datasets import TrainingSet, combine_coils, load_training_set
from medrecon.priors.network import EDMDenoiser
from medrecon.priors.training import (
    TrainConfig,
    edm_loss,
    loss_plot_path,
    sample_batch,
    train_prior,
    train_prior_main,
)
from medrecon.priors.unet import UNetBackbone, UNetConfig

TINY = UNetConfig(in_channels=1, channels=(8, 16), attention_levels=(False, True), norm_groups=4,
                  head_channels=8)


def squares(n: int = 6, size: int = 40) -> TrainingSet:
    """Piecewise-constant images: a bright square on a dark background."""
    g = torch.Generator().manual_seed(0)
    images = []
    for _ in range(n):
        image = torch.full((1, size, size), -0.5)
        top, left = torch.randint(0, size - 16, (2,), generator=g).tolist()
        image[:, top:top + 16, left:left + 16] = 0.5
        images.append(image)
    return TrainingSet(tuple(images), "ct", 1000.0, 0.0, "HU", "HU / 1000", ("squares",), ())


def config(steps: int, **kw) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=8, crop=32, lr=2e-3, ema_decay=0.9, seed=3,
                       **({"checkpoint_every": 1000, "log_every": 10} | kw))


def test_edm_loss_matches_closed_form_for_a_known_network():
    # F = 0 gives D = c_skip x, so the loss is lambda(s) mean |c_skip (x0 + s n) - x0|^2
    class Zero(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, c):
            return self.w * x

    denoiser = EDMDenoiser(Zero(), is_complex=False, sigma_data=0.5)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 1, 8, 8, generator=g), torch.randn(3, 1, 8, 8, generator=g)
    sigma = torch.tensor([0.1, 1.0, 5.0])
    s, sd = sigma.reshape(-1, 1, 1, 1), 0.5
    c_skip = sd**2 / (s**2 + sd**2)
    expected = ((s**2 + sd**2) / (s * sd) ** 2 * (c_skip * (x0 + s * noise) - x0) ** 2)
    torch.testing.assert_close(edm_loss(denoiser, x0, sigma, noise),
                               expected.mean(dim=(1, 2, 3)))


def test_sample_batch_crops_flips_and_rotates():
    image = torch.arange(36.0).reshape(1, 6, 6)
    batch = sample_batch([image], 64, 6, torch.Generator().manual_seed(0))
    variants = {tuple(b.flatten().tolist()) for b in batch}
    assert len(variants) == 8  # the dihedral group of the square, all eight seen
    for b in batch:
        assert sorted(b.flatten().tolist()) == list(range(36))
    crops = sample_batch([image], 16, 3, torch.Generator().manual_seed(1))
    assert crops.shape == (16, 1, 3, 3)


def test_loss_decreases_and_outputs_are_written(tmp_path):
    out = tmp_path / "prior.pt"
    result = train_prior(squares(), out, config(40), architecture=TINY)
    losses = np.array(result.losses)
    assert len(losses) == 40 and result.steps_run == 40
    assert losses[-10:].mean() < 0.75 * losses[:10].mean()
    assert loss_plot_path(out).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoint = read_checkpoint(out)
    assert checkpoint.step == 40 and checkpoint.metadata["recipe"]["seed"] == 3
    assert checkpoint.metadata["image_size"] == [32, 32]
    # the trained prior denoises a larger image better than the untrained network
    prior = load_prior(out, modality="ct")
    torch.manual_seed(0)
    untrained = EDMDenoiser(UNetBackbone(TINY).eval(), is_complex=False)
    clean = torch.full((96, 96), -0.5)
    clean[30:60, 20:70] = 0.5
    noisy = clean + 0.5 * torch.randn(96, 96, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        trained_err = (prior(noisy, 0.5) - clean).square().mean()
        untrained_err = (untrained(noisy, 0.5) - clean).square().mean()
    assert trained_err < 0.7 * untrained_err


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    data = squares()
    straight = train_prior(data, tmp_path / "straight.pt", config(6), architecture=TINY)
    train_prior(data, tmp_path / "part.pt", config(3), architecture=TINY)
    resumed = train_prior(data, tmp_path / "resumed.pt", config(6),
                          resume=tmp_path / "part.pt")
    assert resumed.steps_run == 3
    np.testing.assert_allclose(resumed.losses, straight.losses, rtol=1e-6, atol=1e-7)
    a, b = read_checkpoint(tmp_path / "straight.pt"), read_checkpoint(tmp_path / "resumed.pt")
    for key in a.ema:
        torch.testing.assert_close(a.ema[key], b.ema[key], rtol=1e-5, atol=1e-6)
    assert b.step == 6 and torch.equal(a.rng, b.rng)


def test_trains_and_loads_on_device(tmp_path, device):
    out = tmp_path / "p.pt"
    result = train_prior(squares(2), out, config(2), architecture=TINY, device=device)
    assert all(math.isfinite(v) for v in result.losses)
    prior = load_prior(out, device)
    x = torch.zeros(1, 32, 32, device=device)
    with torch.no_grad():
        assert torch.isfinite(prior(x, 0.3)).all() and prior(x, 0.3).device == x.device


def test_output_folder_is_refused_before_training(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        train_prior(squares(2), tmp_path, config(2), architecture=TINY)


def test_resume_refuses_a_finished_or_foreign_checkpoint(tmp_path):
    data = squares()
    train_prior(data, tmp_path / "p.pt", config(2), architecture=TINY)
    with pytest.raises(InputError, match="step"):
        train_prior(data, tmp_path / "q.pt", config(2), resume=tmp_path / "p.pt")
    mri = TrainingSet(tuple(torch.zeros(2, 32, 32) for _ in range(2)), "mri", 1.0, 0.0,
                      "relative", "p99", ("x",), ())
    with pytest.raises(InputError, match="modality"):
        train_prior(mri, tmp_path / "q.pt", config(4), resume=tmp_path / "p.pt")


def _nifti(path, array):
    nib.save(nib.Nifti1Image(np.asarray(array, np.float32), np.eye(4)), path)


def test_dataset_skips_a_corrupt_file_and_names_it(tmp_path, caplog):
    folder = tmp_path / "scans"
    folder.mkdir()
    volume = np.zeros((48, 40, 3), np.float32)
    volume[10:30, 5:25] = 40.0
    _nifti(folder / "a.nii.gz", volume)
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    with caplog.at_level(logging.WARNING, logger="medrecon.priors.datasets"):
        data = load_training_set([folder], modality="ct", crop=32)
    assert "broken.nii.gz" in caplog.text
    assert data.skipped == (str(folder / "broken.nii.gz"),)
    assert len(data.images) == 3 and data.images[0].shape == (1, 40, 48)
    assert data.images[0].max() == pytest.approx(0.04)  # HU / 1000


def test_dataset_reads_dicom_series_folders_and_skips_a_corrupt_series(tmp_path):
    hu = np.full((2, 40, 36), -1000.0, np.float32)
    hu[:, 8:30, 6:28] = 50.0
    root = tmp_path / "study"
    root.mkdir()
    write_dicom_series(Volume(array=hu, spacing=(2.0, 0.8, 0.8), modality="CT", units="HU"),
                       root / "series1", modality="CT")
    broken = root / "series2"
    broken.mkdir()
    (broken / "IM0001.dcm").write_bytes(b"DICM" + bytes(50))
    data = load_training_set([root], modality="ct", crop=32)
    assert len(data.images) == 2 and data.skipped == (str(broken),)
    torch.testing.assert_close(data.images[0][0], torch.from_numpy(hu[0]) / 1000)


def test_dataset_without_readable_images(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no readable CT images"):
        load_training_set([folder], modality="ct", crop=32)
    _nifti(folder / "small.nii", np.ones((16, 16, 2)))
    with pytest.raises(InputError, match="at least 32 x 32"):
        load_training_set([folder], modality="ct", crop=32)
    with pytest.raises(InputError, match="no such file"):
        load_training_set([tmp_path / "nowhere"], modality="ct", crop=32)


def test_phantom_source():
    data = load_training_set(["phantom:2"], modality="ct", crop=64)
    assert len(data.images) == 2 and data.images[0].shape == (1, 256, 256)
    assert data.images[0].min() == pytest.approx(-1.0, abs=0.05)  # air
    with pytest.raises(InputError, match="CT priors only"):
        load_training_set(["phantom:2"], modality="mri", crop=64)
    with pytest.raises(InputError, match="phantom:N"):
        load_training_set(["phantom:x"], modality="ct", crop=64)


def _smooth_object(n: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    magnitude = torch.exp(-(x**2 + y**2) / 0.3)
    return (magnitude * torch.exp(1j * (0.8 * x - 0.5 * y))).to(torch.complex64)


def test_combine_coils_keeps_object_phase_with_real_sensitivities():
    n = 64
    m = _smooth_object(n)
    y, x = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    maps = torch.stack([1.2 + 0.5 * x, 1.0 - 0.4 * y, 0.8 + 0.3 * x * y]).to(torch.complex64)
    combined = combine_coils(maps * m)
    expected = m * maps.abs().square().sum(0).sqrt()
    inside = m.abs() > 0.2
    error = (combined - expected)[inside].abs().max() / expected[inside].abs().max()
    assert error < 0.02
    torch.testing.assert_close(combine_coils(m[None]), m)


def test_mri_from_fastmri_file_normalised_to_p99(tmp_path):
    n = 48
    m = _smooth_object(n)
    maps = torch.stack([torch.ones(n, n), 0.5 * torch.ones(n, n)]).to(torch.complex64)
    kspace = fft2c(maps * m)[None].repeat(2, 1, 1, 1).numpy()
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("kspace", data=kspace)
    data = load_training_set([tmp_path / "a.h5"], modality="mri", crop=32)
    assert len(data.images) == 2 and data.images[0].shape == (2, n, n)
    image = torch.complex(data.images[0][0], data.images[0][1])
    assert torch.quantile(image.abs().flatten(), 0.99) == pytest.approx(1.0, rel=1e-3)
    ratio = image / m
    inside = m.abs() > 0.2
    assert (ratio[inside] - ratio[inside].mean()).abs().max() < 0.02 * ratio[inside].abs().mean()


def test_train_prior_main_end_to_end(tmp_path):
    out = train_prior_main(["phantom:2"], modality="ct", output=tmp_path / "ct.pt", steps=2,
                           batch_size=1, crop=64, seed=0, log_every=1)
    prior = load_prior(out, modality="ct")
    assert prior.scale == 1000.0 and not prior.is_complex
    recipe = read_checkpoint(out).metadata["recipe"]
    assert recipe["data"] == ["phantom:2"] and recipe["steps"] == 2
    with pytest.raises(InputError, match="steps"):
        train_prior_main(["phantom:2"], modality="ct", output=tmp_path / "x.pt", steps=0)
    with pytest.raises(InputError, match="does not exist"):
        train_prior_main(["phantom:2"], modality="ct", output=tmp_path / "no" / "x.pt", steps=1)
    assert math.isfinite(read_checkpoint(out).losses[-1])
