"""Training images for network priors, in the prior's normalised space.

Sources (``paths`` of :func:`load_training_set`):

- a DICOM file or a DICOM series folder, a NIfTI file (``.nii`` / ``.nii.gz``): every
  axial slice of the volume is one image;
- a folder: every file and sub-folder in it (recursively: a folder of DICOM files is
  one series; other files are read one by one);
- a fastMRI HDF5 k-space file (``.h5``, MRI only): one complex image per slice,
  coil-combined (see :func:`combine_coils`);
- ``phantom`` or ``phantom:N`` (CT only): ``N`` slices (default 64) of the built-in
  procedural phantom family :func:`medrecon.data.phantom.ct_phantom`, seeds 0..N-1,
  alternating abdomen and thorax, 256 x 256.
- ``ctmix`` or ``ctmix:N`` (CT only): ``N`` slices (default 64) of the mixed procedural
  family :func:`medrecon.data.phantom.ct_mix_phantom`, seeds 0..N-1: abdomen, thorax,
  head and neck in turn, trabecular bone, 0.5 to 1.6 mm pixels, kernel blur and
  CT-like correlated noise, 256 x 256.
- ``mni152`` or ``mni152:N`` (MRI only, needs nilearn): ``N`` augmented complex slices
  (default 64) of the MNI152 T1 template, seeds 0..N-1, 256 x 256
  (:func:`medrecon.data.mni.mni152_slice`).
- ``mrmix`` or ``mrmix:N`` (MRI only, needs nilearn): ``N`` complex slices (default 64)
  of the mixed MR family, seeds 0..N-1, 256 x 256: individual-looking heads (skull,
  scalp, crisp cortex, texture, T1/T2/PD/FLAIR-like contrasts) from template slices and
  MR-like body slices from the mixed CT family (:func:`medrecon.data.mr_mix.mr_mix_slice`).

Normalisation (stored in the checkpoint, ``data = scale * x + offset``):

- CT: ``x = HU / 1000`` (scale 1000, offset 0): air -1, water 0, cortical bone about 1.
  Volumes whose units are not HU are refused.
- MRI: each complex image divided by the 99th percentile of its magnitude (scale 1,
  offset 0, units "relative"); magnitude images (DICOM, NIfTI) enter with zero phase.

A file that cannot be read among several is skipped with a logged warning naming it;
when nothing readable is left, one :class:`InputError` is raised that names the sources,
how many files were skipped and the first reason (no warning is logged then). Constant
slices (padding outside the body) and slices smaller than the training crop are dropped.

Images of the other modality are refused outright (:class:`ModalityMismatch`, naming the
file or series), not skipped: a DICOM series trains a CT prior only when its Modality is
``CT`` (or its values are HU, RescaleType ``HU``) and an MRI prior only when its Modality
is ``MR``; a fastMRI file trains MRI priors only. NIfTI files record no modality: one
written by medrecon carries it in ``descrip`` and is checked like DICOM, any other NIfTI is
accepted as it is (for CT its values must be HU), so make sure such a folder holds images
of the right kind.

>>> data = load_training_set(["phantom:4"], modality="ct", crop=64)  # doctest: +SKIP
>>> len(data.images), data.images[0].shape  # doctest: +SKIP
(4, torch.Size([1, 256, 256]))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medrecon.data.images import is_nifti, read_image
from medrecon.data.kspace import FastMRIFile
from medrecon.data.phantom import REGIONS, ct_mix_phantom, ct_slice
from medrecon.data.volume import Volume
from medrecon.errors import InputError, MedreconError
from medrecon.operators.mri import fft2c, ifft2c

logger = logging.getLogger(__name__)

CT_SCALE = 1000.0
DEFAULT_PHANTOMS = 64
GENERATED = {"phantom": "ct", "ctmix": "ct", "mni152": "mri", "mrmix": "mri"}
PHANTOM_SIZE = 256
LOWRES_LINES = 24


class ModalityMismatch(InputError):
    """Images of the wrong modality for the prior being trained (never skipped)."""


@dataclass(frozen=True)
class TrainingSet:
    """Normalised training images and how they were made.

    Attributes:
        images: float32 ``(C, H, W)`` tensors (C = 1 CT, 2 MRI as real and imaginary).
        modality: ``"ct"`` or ``"mri"``.
        scale, offset, units, method: the normalisation, ``data = scale * x + offset``.
        sources: the sources that gave images, as given (for the recipe).
        skipped: the files skipped as unreadable.
    """

    images: tuple[torch.Tensor, ...]
    modality: str
    scale: float
    offset: float
    units: str
    method: str
    sources: tuple[str, ...]
    skipped: tuple[str, ...]

    @property
    def channels(self) -> int:
        return 2 if self.modality == "mri" else 1


def load_training_set(paths: Sequence[str | os.PathLike[str]], *, modality: str,
                      crop: int) -> TrainingSet:
    """Read every source in ``paths`` (module docstring) into a :class:`TrainingSet`."""
    if modality not in ("ct", "mri"):
        raise InputError(None, "modality", f"must be 'ct' or 'mri', got {modality!r}")
    if not paths:
        raise InputError(None, "data", "no training data given")
    images: list[torch.Tensor] = []
    used: list[str] = []
    problems: list[tuple[str, MedreconError]] = []
    seen = 0
    for source in paths:
        count = len(images)
        for item in _expand(source, modality):
            seen += 1
            try:
                images.extend(_read(item, modality, crop))
            except ModalityMismatch:
                raise
            except MedreconError as exc:
                problems.append((str(item), exc))
        if len(images) > count:
            used.append(str(source))
    if not images:
        where = ", ".join(str(p) for p in paths)
        if not seen:
            raise InputError(where, "data", "holds no image files (DICOM, NIfTI .nii/.nii.gz "
                             "or fastMRI .h5)")
        if len(paths) == 1 and len(problems) == 1 and problems[0][0] == where:
            exc = problems[0][1]
            problem = exc.problem if isinstance(exc, InputError) else str(exc)
            raise InputError(where, "data", f"no readable {modality.upper()} images: {problem}")
        first = ""
        if problems:
            item, exc = problems[0]
            reason = str(exc) if str(exc).startswith(item) else f"{item}: {exc}"
            first = f"; {len(problems)} of {seen} skipped as unreadable, first {reason}"
        raise InputError(where, "data", f"no readable {modality.upper()} images of at least "
                         f"{crop} x {crop} pixels{first}")
    for item, exc in problems:
        logger.warning("skipping %s: %s", item, exc)
    skipped = [item for item, _ in problems]
    logger.info("training set: %d images from %d sources, %d files skipped", len(images),
                len(used), len(skipped))
    if modality == "ct":
        return TrainingSet(tuple(images), "ct", CT_SCALE, 0.0, "HU", "HU / 1000",
                           tuple(used), tuple(skipped))
    return TrainingSet(tuple(images), "mri", 1.0, 0.0, "relative",
                       "complex image / 99th percentile of its magnitude", tuple(used),
                       tuple(skipped))


def _expand(source: str | os.PathLike[str], modality: str) -> Iterator[str | Path]:
    text = str(source)
    for name, needs in GENERATED.items():
        if text == name or text.startswith(f"{name}:"):
            if modality != needs:
                raise InputError(text, "data", f"{name} images train {needs.upper()} priors "
                                 "only")
            _generated_count(text)
            yield text
            return
    path = Path(source)
    if path.is_file():
        yield path
    elif path.is_dir():
        yield from _expand_folder(path)
    else:
        raise InputError(path, None, "no such file or folder")


def _expand_folder(folder: Path) -> Iterator[Path]:
    """A folder of DICOM files is one series; otherwise its entries one by one."""
    entries = sorted(folder.iterdir())
    files = [p for p in entries if p.is_file() and not p.name.startswith(".")]
    if files and all(_kind(p) == "dicom" for p in files):
        yield folder
    else:
        yield from files
    for sub in entries:
        if sub.is_dir() and not sub.name.startswith("."):
            yield from _expand_folder(sub)


def _kind(path: Path) -> str:
    if is_nifti(path):
        return "nifti"
    if path.name.lower().endswith((".h5", ".hdf5")):
        return "hdf5"
    return "dicom"


def _read(item: str | Path, modality: str, crop: int) -> list[torch.Tensor]:
    if isinstance(item, str) and item.startswith(("mni152", "mrmix")):
        from medrecon.data.mni import mni152_slice
        from medrecon.data.mr_mix import mr_mix_slice

        generate = mni152_slice if item.startswith("mni152") else mr_mix_slice
        slices = [torch.from_numpy(generate(s, size=PHANTOM_SIZE))
                  for s in range(_generated_count(item))]
        images = [_mri(s) for s in slices if min(s.shape) >= crop]
        return [im for im in images if im is not None]
    if isinstance(item, str) and item.startswith("ctmix"):
        slices = [torch.from_numpy(ct_mix_phantom(PHANTOM_SIZE, seed=s).image)
                  for s in range(_generated_count(item))]
        return [_ct(s) for s in slices if min(s.shape) >= crop]
    if isinstance(item, str):
        slices = [torch.from_numpy(ct_slice(PHANTOM_SIZE, seed=s, region=REGIONS[s % len(REGIONS)]))
                  for s in range(_generated_count(item))]
        return [_ct(s) for s in slices if min(s.shape) >= crop]
    kind = "dicom" if item.is_dir() else _kind(item)
    if kind == "hdf5":
        if modality != "mri":
            raise ModalityMismatch(item, "data", "a k-space (MRI) file; k-space files train "
                                   "MRI priors only, not CT priors")
        slices = _fastmri(item)
    else:
        volume = read_image(item)
        check_modality(item, volume, modality, dicom=kind == "dicom")
        slices = [torch.from_numpy(np.ascontiguousarray(s, dtype=np.float32))
                  for s in volume.array]
    images = [(_ct(s) if modality == "ct" else _mri(s)) for s in slices
              if min(s.shape) >= crop and float(s.abs().amax() - s.abs().amin()) > 0]
    return [im for im in images if im is not None]


def check_modality(item: str | os.PathLike[str], volume: Volume, modality: str, *,
                   dicom: bool) -> None:
    """Refuse a volume of the other modality with :class:`ModalityMismatch` naming ``item``:
    DICOM by its Modality tag (CT, or HU values, for ``"ct"``; MR for ``"mri"``), NIfTI by
    the modality medrecon records in it (others record none and pass)."""
    found, units = (volume.modality or "OT").upper(), volume.units
    if modality == "ct":
        if dicom and found != "CT" and units != "HU":
            raise ModalityMismatch(item, "Modality", f"{found} images; a CT prior trains on "
                                   "CT images (DICOM Modality CT, values in HU)")
        if not dicom and found not in ("CT", "OT"):
            raise ModalityMismatch(item, "modality", f"{found} images (recorded in the NIfTI "
                                   "header); a CT prior trains on CT images in HU")
        if units not in ("HU", ""):
            raise ModalityMismatch(item, "units", f"a CT prior needs HU, got {units!r}")
    elif dicom and found != "MR":
        raise ModalityMismatch(item, "Modality", f"{found} images; an MRI prior trains on MR "
                               "images (DICOM Modality MR)")
    elif found == "CT" or units == "HU":
        raise ModalityMismatch(item, "modality", "CT images in HU (recorded in the NIfTI "
                               "header); an MRI prior trains on MR images")


def _generated_count(item: str) -> int:
    if ":" not in item:
        return DEFAULT_PHANTOMS
    try:
        count = int(item.split(":", 1)[1])
    except ValueError:
        count = 0
    if count < 1:
        raise InputError(item, "data", f"expected {item.split(':')[0]}:N with a positive "
                         "integer N")
    return count


def _ct(hu: np.ndarray | torch.Tensor) -> torch.Tensor:
    return (torch.as_tensor(hu, dtype=torch.float32) / CT_SCALE).unsqueeze(0)


def _mri(image: torch.Tensor) -> torch.Tensor | None:
    image = image.to(torch.complex64)
    ref = torch.quantile(image.abs().flatten().double(), 0.99).item()
    if not ref > 0:
        return None
    x = image / ref
    return torch.stack([x.real, x.imag]).float()


def _fastmri(path: Path) -> list[torch.Tensor]:
    with FastMRIFile(path) as file:
        if file.trajectory is not None:
            raise InputError(path, "trajectory", "non-Cartesian k-space is not supported for "
                             "training")
        return [combine_coils(ifft2c(file.read_slice(n))) for n in range(file.num_slices)]


def combine_coils(coil_images: torch.Tensor, lowres_lines: int = LOWRES_LINES) -> torch.Tensor:
    """One complex image from ``(coils, H, W)`` coil images, keeping a smooth phase.

    Single coil: the image itself. Several coils: with ``l_c`` the coil images of the
    central ``lowres_lines`` x ``lowres_lines`` k-space square (sensitivity estimates
    times the low-resolution object), the adaptive (Roemer et al. 1990) combination
    ``x = sum_c conj(l_c) x_c / sqrt(sum_c |l_c|^2)`` is ``|S| m exp(-i arg m_low)``;
    multiplying by ``exp(i arg l_r)`` of the strongest coil ``r`` restores the object
    phase plus that coil's smooth phase, as a virtual reference coil does. RSS would
    lose the phase altogether.
    """
    if coil_images.shape[0] == 1:
        return coil_images[0]
    k = fft2c(coil_images)
    h, w = k.shape[-2:]
    window = torch.zeros(h, w, dtype=torch.bool)
    half = lowres_lines // 2
    window[max(h // 2 - half, 0):h // 2 + half, max(w // 2 - half, 0):w // 2 + half] = True
    low = ifft2c(k * window)
    rss = low.abs().square().sum(0).sqrt().clamp_min(1e-12 * float(low.abs().max()))
    combined = (low.conj() * coil_images).sum(0) / rss
    ref = int(low.abs().square().sum((-2, -1)).argmax())
    return combined * torch.exp(1j * low[ref].angle())
