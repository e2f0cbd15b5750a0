"""Fine-tuning a prior on a site's own images: init weights, loss, metadata, resume,
refusals, and the ``train-prior --init`` command."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medrecon.cli import EXIT_BAD_INPUT, main
from medrecon.data.dicom import write_dicom_series
from medrecon.data.nifti import write_nifti
from medrecon.data.priors import default_prior_path
from medrecon.data.volume import Volume
from medrecon.errors import InputError
from medrecon.priors.checkpoint import build_network, load_prior, read_checkpoint
from medrecon.priors.datasets import ModalityMismatch, TrainingSet, load_training_set
from medrecon.priors.defaults import load_named_prior
from medrecon.priors.training import (
    DEFAULT_LR,
    FINETUNE_LR,
    FINETUNE_STEPS,
    TrainConfig,
    edm_loss,
    read_init,
    train_prior,
)
from medrecon.priors.unet import UNetBackbone
from tests.test_training import TINY, squares


def config(steps: int, **kw) -> TrainConfig:
    return TrainConfig(**({"steps": steps, "batch_size": 8, "crop": 32, "lr": 2e-3,
                           "ema_decay": 0.9, "seed": 3, "checkpoint_every": 1000,
                           "log_every": 10} | kw))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is faster, and much faster on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def disks(n: int, seed: int, size: int = 40) -> TrainingSet:
    """The "site": dark disks on a bright background, unlike the init's squares."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = []
    for _ in range(n):
        cy, cx = (8 + torch.randint(0, size - 16, (2,), generator=g)).tolist()
        r = 5 + int(torch.randint(0, 4, (), generator=g))
        image = torch.full((1, size, size), 0.3)
        image[:, (y - cy) ** 2 + (x - cx) ** 2 <= r * r] = -0.7
        images.append(image)
    return TrainingSet(tuple(images), "ct", 1000.0, 0.0, "HU", "HU / 1000", ("site",), ())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def init_ckpt(tmp_path_factory) -> Path:
    """A tiny CT prior trained from scratch on squares (the init of the fine-tunes)."""
    path = tmp_path_factory.mktemp("init") / "squares.pt"
    train_prior(squares(), path, config(30, batch_size=4, crop=24), architecture=TINY)
    return path


@pytest.fixture(scope="module")
def mri_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mri") / "mri.pt"
    data = TrainingSet(tuple(torch.randn(2, 32, 32) * 0.3 for _ in range(2)), "mri", 1.0, 0.0,
                       "relative", "p99", ("noise",), ())
    train_prior(data, path, config(1, batch_size=1, crop=16),
                architecture=dataclasses.replace(TINY, in_channels=2))
    return path


@pytest.fixture(scope="module")
def site_folder(tmp_path_factory) -> Path:
    """A site folder: a CT DICOM series of 4 slices of disks (HU)."""
    root = tmp_path_factory.mktemp("site")
    hu = np.stack([im[0].numpy() * 1000 for im in disks(4, seed=5).images])
    write_dicom_series(Volume(array=hu, spacing=(5.0, 1.0, 1.0), modality="CT", units="HU"),
                       root / "scans", modality="CT")
    return root / "scans"


def held_loss(prior_path: Path, images: TrainingSet) -> float:
    """EDM loss of the prior's average on held images at fixed sigmas and noise."""
    checkpoint = read_checkpoint(prior_path)
    prior = load_prior(prior_path, modality="ct")
    g = torch.Generator().manual_seed(123)
    x0 = torch.stack([im[:, 4:36, 4:36] for im in images.images])
    x0 = x0.repeat(4, 1, 1, 1)
    sigma = torch.tensor([0.05, 0.2, 0.5, 1.0]).repeat_interleave(len(images.images))
    noise = torch.randn(x0.shape, generator=g)
    assert prior.sigma_data == checkpoint.metadata["sigma_data"]
    with torch.no_grad():
        return float(edm_loss(prior, x0, sigma, noise).mean())


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_finetune_starts_from_the_init_average(init_ckpt, tmp_path):
    init = read_checkpoint(init_ckpt)
    assert max_difference(init.weights, init.ema) > 1e-3  # the two weight sets differ
    out = tmp_path / "one.pt"
    train_prior(disks(4, seed=1), out, config(1, batch_size=2, lr=1e-7, seed=11),
                init=init_ckpt)
    tuned = read_checkpoint(out)
    assert tuned.step == 1 and len(tuned.losses) == 1
    # one step of 1e-7 moves every weight by about 1e-7: both sets are the init's average
    assert max_difference(tuned.weights, init.ema) < 1e-5
    assert max_difference(tuned.ema, init.ema) < 1e-5
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        fresh = UNetBackbone(TINY).state_dict()
    assert max_difference(fresh, tuned.weights) > 0.1  # not a fresh network of its seed


def test_finetune_lowers_the_loss_on_site_images(init_ckpt, tmp_path):
    site, held = disks(8, seed=1), disks(4, seed=2)
    out = tmp_path / "site.pt"
    result = train_prior(site, out, config(40, batch_size=4, crop=24, lr=1e-3),
                         init=init_ckpt)
    assert result.steps_run == 40 and len(result.losses) == 40
    before, after = held_loss(init_ckpt, held), held_loss(out, held)
    assert after < 0.8 * before, (before, after)
    assert (out.with_name("site_loss.png")).read_bytes()[:4] == b"\x89PNG"


def test_finetune_metadata_records_the_init_and_keeps_its_intensity_map(init_ckpt, tmp_path):
    init_meta = read_checkpoint(init_ckpt).metadata
    # data normalised otherwise (HU / 500) are mapped into the init's HU / 1000
    site = disks(3, seed=1)
    half = dataclasses.replace(site, images=tuple(2 * im for im in site.images), scale=500.0)
    out = tmp_path / "tuned.pt"
    train_prior(half, out, config(2, batch_size=2, crop=16, sigma_data=0.3), init=init_ckpt)
    meta = read_checkpoint(out).metadata
    assert meta["normalisation"] == init_meta["normalisation"]
    assert meta["sigma_data"] == init_meta["sigma_data"] == 0.5
    assert meta["architecture"] == init_meta["architecture"]
    recipe = meta["recipe"]
    assert recipe["init"]["path"] == str(init_ckpt)
    assert recipe["init"]["sha256"] == sha256(init_ckpt)
    assert recipe["init"]["steps"] == 30 and recipe["init"]["modality"] == "ct"
    assert recipe["init"]["recipe"]["steps"] == 30
    assert recipe["steps"] == 2 and recipe["images"] == 3 and recipe["data"] == ["site"]
    prior, _ = load_named_prior(out, "ct")
    assert (prior.scale, prior.offset, prior.sigma_data) == (1000.0, 0.0, 0.5)


def test_an_architecture_other_than_the_inits_is_refused(init_ckpt, tmp_path):
    other = dataclasses.replace(TINY, channels=(16, 16))
    with pytest.raises(InputError, match="keeps the init prior's architecture"):
        train_prior(disks(2, seed=1), tmp_path / "x.pt", config(1), architecture=other,
                    init=init_ckpt)
    train_prior(disks(2, seed=1), tmp_path / "y.pt", config(1, batch_size=1, crop=16),
                architecture=TINY,
                init=init_ckpt)
    assert not (tmp_path / "x.pt").exists()


def test_a_finetuning_run_resumes_exactly(init_ckpt, tmp_path):
    site = disks(4, seed=1)
    straight = train_prior(site, tmp_path / "straight.pt", config(4, batch_size=2, crop=16),
                           init=init_ckpt)
    train_prior(site, tmp_path / "part.pt", config(2, batch_size=2, crop=16), init=init_ckpt)
    resumed = train_prior(site, tmp_path / "resumed.pt", config(4, batch_size=2, crop=16),
                          resume=tmp_path / "part.pt")
    assert resumed.steps_run == 2
    np.testing.assert_allclose(resumed.losses, straight.losses, rtol=1e-6, atol=1e-7)
    a, b = read_checkpoint(tmp_path / "straight.pt"), read_checkpoint(tmp_path / "resumed.pt")
    for key in a.ema:
        torch.testing.assert_close(a.ema[key], b.ema[key], rtol=1e-5, atol=1e-6)
    assert b.metadata["recipe"]["init"] == a.metadata["recipe"]["init"]
    assert b.metadata["recipe"]["resumed_from"] == str(tmp_path / "part.pt")
    # the same init may be named again; another, or a from-scratch checkpoint, may not
    train_prior(site, tmp_path / "again.pt", config(3, batch_size=2, crop=16),
                resume=tmp_path / "part.pt", init=init_ckpt)
    with pytest.raises(InputError, match="fine-tuned from"):
        train_prior(site, tmp_path / "x.pt", config(3), resume=tmp_path / "part.pt",
                    init=tmp_path / "straight.pt")
    with pytest.raises(InputError, match="a from-scratch run, not a fine-tuning run"):
        train_prior(site, tmp_path / "x.pt", config(31), resume=init_ckpt, init=init_ckpt)


def test_init_refusals(init_ckpt, mri_ckpt, tmp_path):
    site = disks(2, seed=1)
    with pytest.raises(InputError, match="would overwrite the init prior"):
        train_prior(site, init_ckpt, config(1), init=init_ckpt)
    with pytest.raises(InputError, match="an MRI prior .* cannot be fine-tuned on CT"):
        read_init(mri_ckpt, "ct")
    with pytest.raises(InputError, match="a CT prior .* cannot be fine-tuned on MRI"):
        read_init(init_ckpt, "mri")
    with pytest.raises(InputError, match="only medrecon checkpoints"):
        read_init("adm:model.pt", "ct")
    assert read_init("default", "ct").path == default_prior_path("ct")


def test_dataset_refuses_images_of_the_other_modality(tmp_path):
    image = np.full((2, 40, 40), 10.0, np.float32)
    image[:, 10:30, 10:30] = 300.0
    mr = tmp_path / "mr"
    write_dicom_series(Volume(array=image, spacing=(5.0, 1.0, 1.0), modality="MR"), mr,
                       modality="MR")
    with pytest.raises(ModalityMismatch, match="MR images; a CT prior"):
        load_training_set([mr], modality="ct", crop=32)
    assert len(load_training_set([mr], modality="mri", crop=32).images) == 2
    ct = tmp_path / "site" / "ct"
    ct.parent.mkdir()
    write_dicom_series(Volume(array=image - 1000, spacing=(5.0, 1.0, 1.0), modality="CT",
                              units="HU"), ct, modality="CT")
    with pytest.raises(ModalityMismatch, match="CT images; an MRI prior"):
        load_training_set([ct], modality="mri", crop=32)
    # in a folder beside good CT images an MR series is refused, not skipped
    (tmp_path / "site" / "mr").symlink_to(mr, target_is_directory=True)
    with pytest.raises(ModalityMismatch, match=str(tmp_path / "site" / "mr")):
        load_training_set([tmp_path / "site"], modality="ct", crop=32)
    # NIfTI: medrecon records the modality, other writers do not (then accepted)
    write_nifti(Volume(array=image, spacing=(5.0, 1.0, 1.0), modality="MR"),
                tmp_path / "mr.nii.gz")
    with pytest.raises(ModalityMismatch, match="recorded in the NIfTI header"):
        load_training_set([tmp_path / "mr.nii.gz"], modality="ct", crop=32)
    nib.save(nib.Nifti1Image(image.T, np.eye(4)), tmp_path / "plain.nii")
    assert len(load_training_set([tmp_path / "plain.nii"], modality="ct", crop=32).images) == 2


def run(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *args: object, says: str, names: object) -> None:
    code, out, err = run(capsys, "train-prior", *args)
    lines = err.strip().splitlines()
    assert code == EXIT_BAD_INPUT and len(lines) == 1, err
    assert says in lines[0] and str(names) in lines[0], lines[0]
    assert "Traceback" not in err


def test_cli_finetunes_and_resumes(capsys, init_ckpt, site_folder, tmp_path):
    out = tmp_path / "site.pt"
    before = sha256(init_ckpt)
    code, stdout, _ = run(capsys, "train-prior", site_folder, "--modality", "ct", "--init",
                          init_ckpt, "--steps", 3, "--batch-size", 2, "--crop", 16, "-o", out)
    assert code == 0 and f"wrote {out}" in stdout
    assert (tmp_path / "site_loss.png").is_file() and sha256(init_ckpt) == before
    recipe = read_checkpoint(out).metadata["recipe"]
    assert recipe["lr"] == FINETUNE_LR and recipe["images"] == 4
    assert recipe["data"] == [str(site_folder)] and recipe["init"]["sha256"] == before
    code, _, _ = run(capsys, "train-prior", site_folder, "--modality", "ct", "--steps", 5,
                     "--batch-size", 2, "--crop", 16, "--resume", out, "-o", out)
    tuned = read_checkpoint(out)
    assert code == 0 and tuned.step == 5 and len(tuned.losses) == 5
    assert tuned.metadata["recipe"]["lr"] == FINETUNE_LR
    assert tuned.metadata["recipe"]["init"]["sha256"] == before


def test_cli_finetunes_the_shipped_prior(capsys, site_folder, tmp_path):
    out = tmp_path / "ct_site.pt"
    code, _, _ = run(capsys, "train-prior", site_folder, "--modality", "ct", "--init",
                     "default", "--steps", 1, "--batch-size", 1, "--crop", 16, "-o", out)
    assert code == 0
    shipped = read_checkpoint(default_prior_path("ct"))
    tuned = read_checkpoint(out)
    init = tuned.metadata["recipe"]["init"]
    assert init["reference"] == "default" and init["sha256"] == sha256(default_prior_path("ct"))
    assert tuned.metadata["architecture"] == shipped.metadata["architecture"]
    assert tuned.metadata["normalisation"] == shipped.metadata["normalisation"]
    assert max_difference(build_network(out, tuned).state_dict(), shipped.ema) < 1e-3


def test_cli_refuses_bad_input_before_training(capsys, init_ckpt, mri_ckpt, site_folder,
                                               tmp_path):
    out = tmp_path / "x.pt"
    common = ("--steps", 2, "--batch-size", 2, "--crop", 32, "-o", out)
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(capsys, empty, "--modality", "ct", "--init", init_ckpt, *common,
            says="holds no image files", names=empty)
    (empty / "notes.txt").write_text("not an image")
    refused(capsys, empty, "--modality", "ct", "--init", init_ckpt, *common,
            says="no readable CT images: no DICOM image files", names=empty)
    (empty / "scan.nii").write_bytes(b"truncated")
    refused(capsys, empty, "--modality", "ct", "--init", init_ckpt, *common,
            says="2 of 2 skipped as unreadable", names=empty / "notes.txt")
    refused(capsys, site_folder, "--modality", "mri", "--init", mri_ckpt, *common,
            says="CT images; an MRI prior", names=site_folder)
    refused(capsys, site_folder, "--modality", "ct", "--init", mri_ckpt, *common,
            says="cannot be fine-tuned on CT images", names=mri_ckpt)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    refused(capsys, site_folder, "--modality", "ct", "--init", garbage, *common,
            says="not a medrecon prior checkpoint", names=garbage)
    refused(capsys, site_folder, "--modality", "ct", "--init", tmp_path / "missing.pt",
            *common, says="no such file", names=tmp_path / "missing.pt")
    before = sha256(init_ckpt)
    refused(capsys, site_folder, "--modality", "ct", "--init", init_ckpt, "--steps", 2,
            "-o", init_ckpt, says="would overwrite the init prior", names=init_ckpt)
    assert sha256(init_ckpt) == before
    assert not out.exists() and not (tmp_path / "x_loss.png").exists()


def test_cli_help_states_the_finetuning_defaults(capsys):
    code, stdout, _ = run(capsys, "train-prior", "--help")
    text = " ".join(stdout.split())
    assert code == 0 and "--init" in text
    lr = re.search(r"else ([0-9.e-]+), or ([0-9.e-]+) with --init", text)
    assert lr and (float(lr[1]), float(lr[2])) == (DEFAULT_LR, FINETUNE_LR), text
    assert f"{FINETUNE_STEPS} with --init" in text and FINETUNE_LR < DEFAULT_LR
