"""The ``medrecon`` command line.

Every command validates its inputs before any work starts; a bad input ends with
one line ``medrecon: error: FILE: FIELD: problem`` and exit status 2, and no
output is written. Iterative work shows a progress bar on standard error.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from medrecon import __version__
from medrecon.data.calibration import MIN_CALIBRATION, PREWHITEN
from medrecon.errors import InputError, MedreconError
from medrecon.methods import names
from medrecon.threads import apply_thread_policy

if TYPE_CHECKING:
    from medrecon.data.dicom import StudyIdentity

log = logging.getLogger("medrecon")

METHOD_OPTIONS = [
    click.option("--iterations", type=click.IntRange(min=1), default=None,
                 help="Iterations of an iterative method [default: the method's]."),
    click.option("--weight", "--tv-weight", "weight", type=click.FloatRange(min=0.0),
                 default=None, help="Regularisation weight of tv, cgsense, l1wavelet, "
                 "relative to the data (see README) [default: the method's]."),
    click.option("--steps", type=click.IntRange(min=2), default=None,
                 help="Diffusion methods: noise levels [default: the method's]."),
    click.option("--n-samples", type=click.IntRange(min=1), default=None,
                 help="dds, dps: posterior samples; more than one also writes a standard "
                      "deviation map (OUT_std) [default: 1]."),
    click.option("--prior", default="default", show_default=True,
                 help="Diffusion methods: 'default' (the bundled prior), a checkpoint (.pt), "
                      "or a published one as adm:PATH / ncsnpp:PATH."),
    click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Diffusion methods: random seed."),
    click.option("--dicom", "dicom", multiple=True, metavar="KEY=VALUE",
                 help="DICOM output of a non-DICOM study: study=KEY (the study identity "
                      "its UIDs derive from; default: the input's SHA-256), patient_id=, "
                      "patient_name=; repeatable."),
]


def method_options(command):
    """Add the method parameter options shared by ``recon ct`` and ``recon mri``."""
    for option in reversed(METHOD_OPTIONS):
        command = option(command)
    return command


def dicom_identity(input_file: Path, items: tuple[str, ...], output: Path
                   ) -> StudyIdentity | None:
    """The DICOM study identity from ``--dicom KEY=VALUE`` options
    (:func:`medrecon.outputs.study_identity`); ``None`` unless ``output`` is DICOM (the
    options are checked either way)."""
    from medrecon.outputs import output_format, study_identity

    fields: dict[str, str] = {}
    for entry in items:
        key, sep, value = entry.partition("=")
        if not sep or key not in ("study", "patient_id", "patient_name"):
            raise InputError("--dicom", None, f"expected study=, patient_id= or "
                             f"patient_name=VALUE, got {entry!r}")
        fields[key] = value
    if output_format(output) != "dicom":
        return None
    return study_identity(input_file, **fields)


def recon_study(study, method_name: str, given: dict[str, object], output: Path,
                prior: str, seed: int, device, dicom: tuple[str, ...] = ()) -> None:
    """Reconstruct an open study as ``medrecon run`` does and write ``output`` (and its
    standard deviation map beside it for several samples)."""
    import torch

    from medrecon.methods import method
    from medrecon.outputs import write_reconstruction
    from medrecon.run import load_prior, reconstruct_study

    try:
        record = method(method_name, study.modality)
    except ValueError as exc:
        raise InputError("--method", None, str(exc)) from None
    fields = record.params.model_fields
    for name, value in given.items():
        if value is not None and name not in fields:
            option = "--" + name.replace("_", "-")
            raise InputError(option, None, f"{method_name} takes no {name}; its parameters: "
                             f"{', '.join(fields) or 'none'}")
    identity = dicom_identity(study.path, dicom, output)
    denoiser = load_prior(prior, study.modality, device)[0] if record.needs_prior else None
    result = reconstruct_study(study, method_name, given, prior=denoiser, device=device,
                               generator=torch.Generator(device=device).manual_seed(seed),
                               label=f"{method_name} {study.path.name}")
    write_reconstruction(result.volume, output, method=result.method,
                         reference=result.reference, metrics=result.metrics,
                         identity=identity)
    if result.std is not None:
        suffix = ".nii.gz" if output.name.lower().endswith(".nii.gz") else output.suffix
        std_path = output.with_name(output.name[:len(output.name) - len(suffix)] + "_std" +
                                    suffix)
        write_reconstruction(result.std, std_path, method=f"{result.method} std",
                             identity=identity, parametric=True)
    summary = "".join(f", {k} {v:.4g}" for k, v in result.metrics.items())
    seconds = sum(r.timings.get("total", 0.0) for r in result.records)
    slices = result.volume.shape[0]
    click.echo(f"wrote {output} ({result.method}, {result.records[0].iterations} iterations, "
               f"{slices} slice{'s' if slices != 1 else ''}, {seconds:.2f} s{summary})")


PHANTOM_SIZE = click.option("--size", type=click.IntRange(min=16), default=256,
                            show_default=True,
                            help="Image size when IMAGE is the built-in 'phantom'.")
EXIT_BAD_INPUT = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="medrecon")
@click.option("-v", "--verbose", is_flag=True, help="Log what is done (never patient identity).")
def cli(verbose: bool) -> None:
    """Reconstruct CT and MRI images with physics operators and classical or diffusion solvers."""
    configure_logging(verbose)


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is now (not the one at start)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Libraries(_Stderr):
    """Other libraries' records with ``-v`` (medrecon's have their own handler)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        self.addFilter(lambda record: not record.name.startswith("medrecon"))


def configure_logging(verbose: bool) -> None:
    """medrecon's own messages on standard error (``-v``: INFO and up, else WARNING and up,
    and the progress lines of long work); other libraries' log records (pydicom, PIL and
    plugins log the tracebacks of errors medrecon reports as one line) only with ``-v``."""
    ours = logging.getLogger("medrecon")
    if not any(isinstance(h, _Stderr) for h in ours.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("medrecon: %(message)s"))
        ours.addHandler(handler)
    ours.setLevel(logging.INFO if verbose else logging.WARNING)
    root = logging.getLogger()
    if verbose and not any(isinstance(h, _Libraries) for h in root.handlers):
        root.addHandler(_Libraries())
        root.setLevel(logging.INFO)
    elif not root.handlers:
        root.addHandler(logging.NullHandler())  # no last-resort printing of library records


# -- info -------------------------------------------------------------------------
@cli.command()
@click.argument("file", type=click.Path(path_type=Path))
def info(file: Path) -> None:
    """Say what FILE holds: a DICOM file or series folder, NIfTI, or sinogram.

    Patient names, IDs and birth dates are never printed.
    """
    from medrecon.fileinfo import describe

    for key, value in describe(file).items():
        click.echo(f"{key}: {value}")


# -- simulate -----------------------------------------------------------------------
@cli.group()
def simulate() -> None:
    """Simulate measurements from an image."""


@simulate.command("ct")
@click.argument("image")
@click.option("--views", type=click.IntRange(min=1), required=True, help="Number of views.")
@click.option("--geometry", "beam", type=click.Choice(["parallel", "fan"]), default="parallel",
              show_default=True)
@click.option("--turn", type=click.Choice(["half", "full", "short"]), default=None,
              help="Angular range [default: half for parallel, full for fan]; short: a fan "
                   "beam's short scan (180 deg + the fan angle).")
@click.option("--noise", default="none", show_default=True,
              help="none, poisson:PHOTONS_PER_RAY or gaussian:SIGMA.")
@click.option("--allow-any-modality", is_flag=True,
              help="Project an image whose file says it is not CT (e.g. MR) as if in HU.")
@click.option("--detectors", type=click.IntRange(min=1), default=None,
              help="Detector cells [default: cover the image].")
@click.option("--detector-spacing", type=float, default=None, help="mm at the detector.")
@click.option("--sid", type=float, default=500.0, show_default=True,
              help="Fan beam: source to isocentre (mm).")
@click.option("--idd", type=float, default=500.0, show_default=True,
              help="Fan beam: isocentre to detector (mm).")
@PHANTOM_SIZE
@click.option("--seed", type=int, default=0, show_default=True, help="Noise and phantom seed.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Sinogram file (.h5).")
def simulate_ct(image: str, views: int, beam: str, turn: str | None, noise: str,
                allow_any_modality: bool, detectors: int | None,
                detector_spacing: float | None, sid: float, idd: float,
                size: int, seed: int, output: Path) -> None:
    """Project IMAGE (DICOM file or folder, NIfTI, or the word 'phantom') to a sinogram.

    The image is read in HU and converted to attenuation (1/mm); the sinogram file
    keeps it as the reference for metrics. An image that is not CT (DICOM Modality MR,
    ...) is refused. DICOM padding (PixelPaddingValue) and out-of-field pixels (below
    -1024 HU, touching the border) become air, and metrics are then computed inside
    the field of view (stored with the reference).
    """
    import torch

    from medrecon.data.atomic import check_output_path
    from medrecon.data.dicom_source import dicom_source_of, keeping_dicom_source
    from medrecon.data.sinogram import parse_noise, write_sinogram
    from medrecon.data.sinogram_simulate import simulate_sinogram
    from medrecon.fileinfo import load_ct_image
    from medrecon.operators.ct_geometry import CTGeometry

    if output.suffix.lower() not in (".h5", ".hdf5"):
        raise InputError(output, "output", "a simulated sinogram is written as HDF5 (.h5)")
    check_output_path(output)
    try:
        parse_noise(noise)
    except ValueError as exc:
        raise InputError("--noise", None, str(exc)) from None
    if turn == "short" and beam == "parallel":
        raise InputError("--turn", None, "short is a fan-beam scan (180 deg + the fan "
                         "angle); parallel beam takes half or full")
    try:
        ct = load_ct_image(image, size=size, seed=seed, check_modality=not allow_any_modality)
    except InputError as exc:
        if exc.field not in ("Modality", "descrip"):
            raise
        raise InputError(exc.source, exc.field, f"{exc.problem} (--allow-any-modality "
                         "projects it anyway)") from None
    pixels = ct.hu
    try:
        if beam == "parallel":
            geometry = CTGeometry.parallel(pixels.shape[-2:], views, turn=turn or "half",
                                           n_detectors=detectors, pixel_size=ct.pixel_size,
                                           detector_spacing=detector_spacing)
        else:
            geometry = CTGeometry.fan(pixels.shape[-2:], views, turn=turn or "full",
                                      source_to_isocenter=sid, isocenter_to_detector=idd,
                                      n_detectors=detectors, pixel_size=ct.pixel_size,
                                      detector_spacing=detector_spacing)
    except ValueError as exc:
        raise InputError(image, "geometry", str(exc)) from None
    sinogram = simulate_sinogram(pixels, geometry, noise=noise,
                                 generator=torch.Generator().manual_seed(seed),
                                 field_of_view=ct.field_of_view if ct.masked else None)
    with keeping_dicom_source(output, dicom_source_of(image)) as tmp:  # DICOM identity
        write_sinogram(sinogram, tmp)
    click.echo(f"wrote {output}: {sinogram.data.shape} sinogram, {geometry.beam} beam, "
               f"{geometry.n_views} views, noise {noise}")
    if ct.masked:
        click.echo(f"{ct.masked} pixels outside the field of view (padding or below "
                   f"-1024 HU) set to air; metrics will be computed inside it")


@simulate.command("mri")
@click.argument("image")
@click.option("--coils", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--acceleration", type=click.FloatRange(min=1.0), default=4.0, show_default=True)
@click.option("--center-fraction", type=click.FloatRange(min=0.0, max=1.0, min_open=True),
              default=0.08, show_default=True, help="Fully sampled centre (Cartesian).")
@click.option("--pattern", type=click.Choice(["random", "equispaced", "poisson", "radial",
                                              "spiral"]), default="random", show_default=True)
@click.option("--noise", default="none", show_default=True,
              help="none or gaussian:SIGMA (per real component of k-space).")
@PHANTOM_SIZE
@click.option("--seed", type=int, default=0, show_default=True, help="Mask, noise, phantom.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="k-space file (.h5, fastMRI layout).")
def simulate_mri(image: str, coils: int, acceleration: float, center_fraction: float,
                 pattern: str, noise: str, size: int, seed: int, output: Path) -> None:
    """Simulate multi-coil k-space of IMAGE (DICOM, NIfTI, or 'phantom') in the fastMRI layout.

    The image magnitude (scaled to a maximum of 1) is the reference; the built-in
    phantom also carries a smooth phase. Non-Cartesian patterns store their
    trajectory (radians, dataset /trajectory).
    """
    from medrecon.data.atomic import check_output_path
    from medrecon.data.dicom_source import dicom_source_of, keeping_dicom_source
    from medrecon.data.kspace_simulate import simulate_kspace
    from medrecon.data.kspace_write import write_kspace_file
    from medrecon.fileinfo import load_mr_image

    if output.suffix.lower() not in (".h5", ".hdf5"):
        raise InputError(output, "output", "simulated k-space is written as HDF5 (.h5)")
    check_output_path(output)
    sigma = _gaussian_level(noise)
    pixels = load_mr_image(image, size=size, seed=seed)
    try:
        sim = simulate_kspace(pixels, coils=coils, pattern=pattern, acceleration=acceleration,
                              center_fraction=center_fraction, sigma=sigma, seed=seed)
    except ValueError as exc:
        raise InputError(image, "sampling", str(exc)) from None
    with keeping_dicom_source(output, dicom_source_of(image)) as tmp:  # DICOM identity
        write_kspace_file(tmp, sim.kspace, mask=sim.mask, trajectory=sim.trajectory,
                          reference=sim.reference, image_shape=sim.image_shape,
                          attrs={"acceleration": acceleration, "pattern": pattern})
    click.echo(f"wrote {output}: {sim.kspace.shape} k-space, {coils} coils, {pattern} "
               f"R={acceleration:g}, noise {noise}")


def _gaussian_level(noise: str) -> float:
    from medrecon.data.sinogram import parse_noise

    try:
        kind, level = parse_noise(noise)
    except ValueError as exc:
        raise InputError("--noise", None, str(exc)) from None
    if kind == "poisson":
        raise InputError("--noise", None, "MRI noise is none or gaussian:SIGMA")
    return level if kind == "gaussian" else 0.0


# -- recon ----------------------------------------------------------------------------
@cli.group()
def recon() -> None:
    """Reconstruct images from measurement files."""


def _npy_geometry(beam, image_size, pixel_size, turn, detector_spacing, sid, idd, data_shape):
    from medrecon.operators.ct_geometry import CTGeometry

    views, detectors = data_shape[-2:]
    if image_size is None:
        raise InputError("--image-size", None, "needed for a sinogram without geometry")
    shape = (image_size, image_size)
    if beam == "parallel":
        return CTGeometry.parallel(shape, views, turn=turn or "half", n_detectors=detectors,
                                   pixel_size=pixel_size, detector_spacing=detector_spacing)
    return CTGeometry.fan(shape, views, turn=turn or "full", n_detectors=detectors,
                          pixel_size=pixel_size, detector_spacing=detector_spacing,
                          source_to_isocenter=sid, isocenter_to_detector=idd)


@recon.command("ct")
@click.argument("sinogram", type=click.Path(path_type=Path))
@click.option("--method", type=click.Choice(names("ct")), default="fbp", show_default=True)
@click.option("--filter", "fbp_filter", default=None,
              type=click.Choice(["ram-lak", "shepp-logan", "cosine", "hamming", "hann"]),
              help="FBP filter [default: ram-lak].")
@click.option("--sigma-y", type=click.FloatRange(min=0.0), default=None,
              help="Noise level of the line integrals (cgls stops by the discrepancy "
                   "principle; diffusion methods use it instead of their estimate).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--beam", type=click.Choice(["parallel", "fan"]), default="parallel",
              help="NPY/TIFF input: beam geometry.")
@click.option("--image-size", type=click.IntRange(min=1), default=None,
              help="NPY/TIFF input: image rows = cols.")
@click.option("--pixel-size", type=float, default=1.0, help="NPY/TIFF input: mm.")
@click.option("--detector-spacing", type=float, default=None, help="NPY/TIFF input: mm.")
@click.option("--turn", type=click.Choice(["half", "full", "short"]), default=None,
              help="NPY/TIFF input: angular range (short: fan beam over 180 deg + the fan "
                   "angle).")
@click.option("--units", type=click.Choice(["HU", "1/mm"]), default="HU", show_default=True,
              help="NPY/TIFF input: units of the reconstruction (from mu_water = 0.0192/mm).")
@click.option("--sid", type=float, default=500.0, help="NPY/TIFF fan input: mm.")
@click.option("--idd", type=float, default=500.0, help="NPY/TIFF fan input: mm.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output: .nii/.nii.gz, .h5, .png, or a folder for a DICOM series.")
@method_options
def recon_ct(sinogram: Path, method: str, fbp_filter: str | None, sigma_y: float | None,
             device: str, beam: str, image_size: int | None, pixel_size: float,
             detector_spacing: float | None, turn: str | None, units: str, sid: float,
             idd: float, output: Path, iterations: int | None, weight: float | None,
             steps: int | None, n_samples: int | None, prior: str, seed: int,
             dicom: tuple[str, ...]) -> None:
    """Reconstruct a CT SINOGRAM (.h5 in medrecon's layout, or .npy/.tif with geometry options)."""
    from medrecon.outputs import output_format
    from medrecon.studies import open_study

    output_format(output)
    torch_device = _device(device)
    geometry = None
    if sinogram.suffix.lower() in (".npy", ".tif", ".tiff"):
        from medrecon.data.sinogram import read_sinogram_array

        try:
            geometry = _npy_geometry(beam, image_size, pixel_size, turn, detector_spacing, sid,
                                     idd, read_sinogram_array(sinogram).shape)
        except ValueError as exc:
            raise InputError(sinogram, "geometry", str(exc)) from None
    given = {"filter": fbp_filter, "iterations": iterations, "weight": weight, "steps": steps,
             "n_samples": n_samples}
    with open_study(sinogram, "ct", geometry=geometry, image_units=units,
                    sigma_y=sigma_y) as study:
        recon_study(study, method, given, output, prior, seed, torch_device, dicom)
        from medrecon.studies.ct import METRICS_REGION

        if study.facts.get("metrics_region") == METRICS_REGION:
            click.echo("metrics computed inside the reference's field of view (its padding "
                       "and out-of-field pixels excluded)")


@recon.command("mri")
@click.argument("kspace", type=click.Path(path_type=Path))
@click.option("--method", type=click.Choice(names("mri")), default="cgsense",
              show_default=True)
@click.option("--calibration", type=click.IntRange(min=MIN_CALIBRATION), default=None,
              help="Coil calibration width: ESPIRiT from 6 lines, low-resolution maps below "
                   "[default: the mask's fully sampled centre].")
@click.option("--compress", type=click.IntRange(min=1), default=None,
              help="Coil compression to this many virtual coils (SVD, per slice) "
                   "[default: none].")
@click.option("--prewhiten", type=click.Choice(PREWHITEN), default="auto",
              show_default=True,
              help="Decorrelate the coils with the noise scan: auto (when the file has "
                   "one: ISMRMRD), noise (require one), off.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output: .h5 (fastMRI reconstruction layout), .nii/.nii.gz, .png, or a "
                   "folder for an MR DICOM series.")
@method_options
def recon_mri(kspace: Path, method: str, calibration: int | None, compress: int | None,
              prewhiten: str, device: str, output: Path,
              iterations: int | None, weight: float | None, steps: int | None,
              n_samples: int | None, prior: str, seed: int, dicom: tuple[str, ...]) -> None:
    """Reconstruct a KSPACE file (fastMRI layout or ISMRMRD raw data) slice by slice
    (coil maps + SENSE)."""
    from medrecon.outputs import output_format
    from medrecon.studies import open_study

    output_format(output)
    torch_device = _device(device)
    given = {"iterations": iterations, "weight": weight, "steps": steps,
             "n_samples": n_samples}
    with open_study(kspace, "mri", calibration=calibration, compress=compress,
                    prewhiten=prewhiten) as study:
        recon_study(study, method, given, output, prior, seed, torch_device, dicom)


def _device(name: str):
    import torch

    from medrecon.operators.ct import require_cuda

    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        require_cuda(f"--device {name}")
        return torch.device(name)
    raise InputError("--device", None, f"must be cpu or cuda, got {name!r}")


# -- train-prior ------------------------------------------------------------------------
@cli.command("train-prior")
@click.argument("data", nargs=-1, required=True)
@click.option("--modality", type=click.Choice(["ct", "mri"]), required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Checkpoint file (.pt); the loss curve is written beside it. Never the "
                   "--init file.")
@click.option("--init", "init", default=None, metavar="default|PRIOR.pt",
              help="Fine-tune this prior instead of training from scratch: 'default' (the "
                   "shipped prior of --modality) or a medrecon checkpoint. Its architecture, "
                   "intensity map and sigma_data are kept.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Total steps [default: 20000; 300 with --init].")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--crop", type=click.IntRange(min=16), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Adam learning rate [default: the resumed run's; else 2e-4, or 1e-4 "
                   "with --init].")
@click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=0.999,
              show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--resume", type=click.Path(path_type=Path), default=None,
              help="Continue from this checkpoint (a fine-tuning run too; --init may be "
                   "repeated and must then be the run's).")
@click.option("--log-every", type=click.IntRange(min=1), default=50, show_default=True)
def train_prior(data: tuple[str, ...], modality: str, output: Path, init: str | None,
                steps: int | None, batch_size: int, crop: int, lr: float | None,
                ema_decay: float, seed: int, device: str, resume: Path | None,
                log_every: int) -> None:
    """Train a diffusion prior (EDM, UNet) on DATA: DICOM/NIfTI/fastMRI files or folders,
    or 'phantom:N' (CT: N procedural phantom slices); with --init, fine-tune a prior on
    them (e.g. a site's own scans)."""
    from medrecon.priors.training import train_prior_main

    path = train_prior_main(list(data), modality=modality, output=output, steps=steps,
                            batch_size=batch_size, crop=crop, lr=lr, ema_decay=ema_decay,
                            seed=seed, device=_device(device), resume=resume, init=init,
                            log_every=log_every)
    click.echo(f"wrote {path} (loss curve {path.with_name(path.stem + '_loss.png')})")


# -- demo -------------------------------------------------------------------------------
@cli.command()
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("medrecon-demo"),
              show_default=True, help="Folder for the demo's outputs.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
def demo(output: Path, device: str) -> None:
    """The main job on bundled data: sparse-view CT (TV vs DDS) and accelerated MRI
    (L1-wavelet vs DDS) with the bundled default priors, compared against the truth."""
    from medrecon.demo import run_demo

    run_demo(output, _device(device), echo=click.echo)


# -- run ------------------------------------------------------------------------------
@cli.command()
@click.argument("protocol")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output folder (created if missing).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a protocol field (VALUE in YAML); repeatable.")
@click.option("--overwrite", is_flag=True, help="Redo every study, done or not.")
@click.option("--redo-stale", is_flag=True,
              help="Redo studies whose input, protocol or prior changed since their report.")
@click.option("--shard", metavar="K/N", default=None,
              help="Only the K-th of N shards of the studies (a stable split by name).")
@click.option("--executor", type=click.Choice(["sequential", "dask"]), default="sequential",
              show_default=True, help="Where studies are computed (dask: medrecon[dask]).")
@click.option("--workers", type=int, default=None,
              help="Dask: processes of the local cluster [default: cores, at most 4].")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="Dask: join the cluster at ADDRESS (e.g. tcp://host:8786) instead.")
@click.option("--threads", type=int, default=None,
              help="torch threads per process [default: torch's; 1 per Dask worker].")
@click.option("--claim-timeout", type=float, default=None, metavar="SECONDS",
              help="Heartbeat age at which another run's claim on a study expires "
                   "[default: 120].")
def run(protocol: str, inputs: tuple[str, ...], output: Path, overrides: tuple[str, ...],
        overwrite: bool, redo_stale: bool, shard: str | None, executor: str,
        workers: int | None, scheduler: str | None, threads: int | None,
        claim_timeout: float | None) -> None:
    """Run a site PROTOCOL (shipped name or YAML file) on INPUTS (files, folders, globs).

    Each study gets its reconstruction, a PNG figure and a JSON report in the output
    folder; a failing study is reported and the rest go on (exit status 1 if any
    failed). A study whose report records the same input (path, size, SHA-256),
    protocol and prior is skipped; one where any of them changed is reported stale and
    kept unless --redo-stale. Any number of runs (shards, machines) may share one output
    folder: each study is computed once.
    """
    from medrecon.cohort import CLAIM_TIMEOUT, parse_shard
    from medrecon.protocol import load_protocol
    from medrecon.run import exit_status, run_protocol, sigterm_as_interrupt

    if threads is not None and threads < 1:
        raise InputError(None, "--threads", f"expected at least 1, got {threads}")
    if claim_timeout is not None and not claim_timeout > 0:
        raise InputError(None, "--claim-timeout", f"expected seconds > 0, got {claim_timeout}")
    with sigterm_as_interrupt():  # a stop while the protocol loads exits 130 too
        summary = run_protocol(load_protocol(protocol, overrides), inputs, output,
                               overwrite=overwrite, redo_stale=redo_stale,
                               shard=None if shard is None else parse_shard(shard),
                               executor=executor, workers=workers, scheduler=scheduler,
                               threads=threads if threads is not None else (
                                   1 if executor == "dask" else None),
                               claim_timeout=claim_timeout or CLAIM_TIMEOUT, echo=click.echo)
    if exit_status(summary):
        raise click.exceptions.Exit(exit_status(summary))


# -- protocols ----------------------------------------------------------------------------
SET_OPTION = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a protocol field (VALUE in YAML), e.g. "
                               "solver.params.weight=1e-3 or outputs.formats=[nifti,hdf5]; "
                               "repeatable.")


@cli.group()
def protocols() -> None:
    """List, show and validate site protocols (YAML, schema version 1)."""


@protocols.command("list")
def protocols_list() -> None:
    """List the shipped protocols, by name, with their descriptions."""
    from medrecon.protocol import load_protocol, shipped_protocols

    names = shipped_protocols()
    width = max(len(name) for name in names)
    for name in names:
        click.echo(f"{name:<{width}}  {load_protocol(name).description}")


@protocols.command("show")
@click.argument("protocol")
@SET_OPTION
def protocols_show(protocol: str, overrides: tuple[str, ...]) -> None:
    """Print a protocol resolved, as YAML headed by its hash.

    PROTOCOL is a shipped name (see 'medrecon protocols list') or a YAML file.
    """
    from medrecon.protocol import load_protocol, protocol_yaml

    click.echo(protocol_yaml(load_protocol(protocol, overrides)), nl=False)


@protocols.command("schema")
def protocols_schema() -> None:
    """Print the JSON Schema of protocol files (for editors' YAML language servers)."""
    import json

    from medrecon.protocol import protocol_json_schema

    click.echo(json.dumps(protocol_json_schema(), indent=2))


@protocols.command("validate")
@click.argument("files", nargs=-1, required=True)
@SET_OPTION
def protocols_validate(files: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Check protocol files; exit status 2 if any is invalid.

    Every FILE (or shipped name) is checked; each invalid one is reported on one line.
    """
    from medrecon.protocol import load_protocol

    failures: list[InputError] = []
    for file in files:
        try:
            protocol = load_protocol(file, overrides)
        except InputError as exc:
            failures.append(exc)
            continue
        click.echo(f"{file}: ok ({protocol.name}, {protocol.modality}, {protocol.solver.name})")
    for exc in failures[:-1]:
        click.echo(f"medrecon: error: {exc}", err=True)
    if failures:
        raise failures[-1]  # main() reports it like the others, and exits with status 2


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the command, turning bad input into one line and exit status 2.

    OpenMP's idle threads are told not to spin (:func:`medrecon.threads.apply_thread_policy`)
    unless the user set ``OMP_WAIT_POLICY``; this must happen before torch is imported."""
    apply_thread_policy()
    try:
        status = cli.main(args=argv, prog_name="medrecon", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("medrecon: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except MedreconError as exc:
        click.echo(f"medrecon: error: {exc}", err=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        click.echo("medrecon: interrupted", err=True)
        return 130
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
