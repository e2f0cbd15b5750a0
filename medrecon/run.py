"""``medrecon run``: a site protocol over one or many studies.

For each input study (a sinogram file for CT, a k-space file for MRI) the runner
checks the file against the protocol (modality, acquisition), reconstructs it with
the protocol's solver and prior, and writes, under the study's output stem
(``outputs.naming``):

- the reconstruction in every format asked for (``STEM.nii.gz``, ``STEM.h5``,
  ``STEM.npy``, ``STEM_dicom/``) and, for samplers, the standard deviation map
  beside it (``STEM_std.*``);
- ``STEM.png``: reconstruction, reference and error map (when the file has a
  reference), standard deviation map (samplers);
- ``STEM.json``: the report: metrics against the reference, timings, network
  evaluations, final data residual, warnings (a residual or brightness implausible for
  the method, non-finite values, the solver's own; also logged with
  ``logging.warning``), the outputs, and provenance (the protocol as
  resolved and its hash, package versions, seed, device, prior); with
  ``outputs.report: false`` it is kept as the hidden ``.STEM.done`` instead.

Data safety: a study's files are written in a hidden staging folder inside the
output folder and moved into place when all are complete, the report last; the
report marks a study as done, and a later run skips done studies unless asked to
overwrite. Ctrl-C or SIGTERM removes the staging folder of the study under way and
stops, leaving finished studies intact. A failing study is reported and the rest
go on; everything that can be known before the first study (the output folder, the
inputs, the prior, the device) is checked before any work starts.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import platform
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from medrecon import __version__
from medrecon.data.atomic import check_output_path
from medrecon.data.volume import Volume
from medrecon.errors import InputError
from medrecon.figures import Panel, comparison_panels, save_figure
from medrecon.methods import method
from medrecon.outputs import write_reconstruction
from medrecon.protocol import Protocol, prior_reference
from medrecon.studies import Study, StudyResult, open_study

logger = logging.getLogger(__name__)

SUFFIXES = {"nifti": ".nii.gz", "hdf5": ".h5", "npy": ".npy", "dicom": "_dicom"}
VERSIONED_PACKAGES = ("torch", "numpy", "astra-toolbox", "sigpy", "torchkbnufft", "monai",
                      "h5py", "pydicom", "nibabel")


@dataclass(frozen=True)
class StudyOutcome:
    """What happened to one study: ``status`` is ``done``, ``skipped`` or ``failed``."""

    study: str
    input: Path
    status: str
    message: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class RunSummary:
    """The outcome of every study of a run, in input order."""

    outcomes: list[StudyOutcome]

    @property
    def failed(self) -> list[StudyOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def counts(self) -> dict[str, int]:
        return {s: sum(o.status == s for o in self.outcomes) for s in ("done", "skipped",
                                                                        "failed")}


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up runs."""


# -------------------------------------------------------------------------- preparation
def find_inputs(inputs: Sequence[str | os.PathLike[str]], pattern: str) -> list[Path]:
    """Files named by ``inputs``: files, folders (their files matching ``pattern``,
    recursively) and glob patterns; each once, in the order given."""
    if not inputs:
        raise InputError(None, "INPUT", "no input given")
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = sorted(p for p in path.rglob(pattern) if p.is_file() and not any(
                part.startswith(".") for part in p.relative_to(path).parts))
            if not matches:
                raise InputError(path, None, f"no files matching {pattern!r} in this folder")
        else:
            matches = sorted(Path(p) for p in glob.glob(str(item), recursive=True)
                             if Path(p).is_file())
            if not matches:
                raise InputError(item, None, "no such file or folder, and no file matches it")
        found.extend(p for p in matches if p not in found)
    return found


def study_names(paths: Sequence[Path]) -> list[str]:
    """A unique name per input: the file stem (without ``.nii.gz`` and the like), prefixed
    by its parent folders where stems repeat."""
    def stem(path: Path, depth: int) -> str:
        base = path.name.split(".")[0] or path.name
        parents = [p.name for p in path.parents][:depth][::-1]
        return "_".join([*parents, base])

    names = [stem(p, 0) for p in paths]
    for depth in range(1, 16):
        repeated = {n for n in names if names.count(n) > 1}
        if not repeated:
            break
        names = [stem(p, depth) if n in repeated else n for p, n in zip(paths, names)]
    return names


def resolve_device(protocol: Protocol) -> torch.device:
    """``cpu``, ``cuda`` (refused without a GPU) or ``auto`` (a GPU when torch and ASTRA
    both see one)."""
    from medrecon.operators.ct import cuda_available

    if protocol.device == "cpu":
        return torch.device("cpu")
    if cuda_available():
        return torch.device("cuda")
    if protocol.device == "auto":
        return torch.device("cpu")
    raise InputError(protocol.source, "device", "cuda was asked for but no GPU is usable")


def load_prior(reference: str, modality: str, device: torch.device):
    """``(prior, path)`` of a prior reference: ``default`` (the bundled prior of
    ``modality``), a checkpoint path, or ``adm:PATH`` / ``ncsnpp:PATH``."""
    from medrecon.priors.defaults import load_named_prior

    return load_named_prior(reference, modality, device)


def load_protocol_prior(protocol: Protocol, device: torch.device):
    """The protocol's prior and its path (``None`` for methods that take none), loaded
    before any study."""
    reference = prior_reference(protocol)
    return None if reference is None else load_prior(reference, protocol.modality, device)


def prepare_output(outdir: str | os.PathLike[str], *, create: bool = True) -> Path:
    """The output folder, created if missing (unless ``create`` is false); a file of that
    name is refused."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(outdir, "output", "is a file; the runner writes into a folder")
    check_output_path(outdir)
    if create:
        outdir.mkdir(parents=True, exist_ok=True)
    return outdir


# ------------------------------------------------------------------------ one study
def study_options(protocol: Protocol) -> dict[str, object]:
    """What :func:`medrecon.studies.open_study` needs of the protocol."""
    acquisition = protocol.acquisition
    return {} if acquisition.calibration is None else {"calibration": acquisition.calibration}


def open_checked(protocol: Protocol, path: Path) -> Study:
    """The study of ``path``, opened once and checked against the protocol's acquisition
    (closed again if it does not fit)."""
    study = open_study(path, protocol.modality, **study_options(protocol))
    try:
        study.check(protocol.acquisition)
    except BaseException:
        study.close()
        raise
    return study


def reconstruct_study(study: Study, method_name: str, given: Mapping[str, object], *,
                      prior=None, device: torch.device | str = "cpu",
                      generator: torch.Generator | None = None,
                      label: str | None = None) -> StudyResult:
    """Method ``method_name`` with the user's parameters ``given`` (``None`` = default) on
    an open study: the one reconstruction path of ``medrecon run`` and ``medrecon recon``.
    Raises :class:`InputError` for a method or parameter the study's modality refuses."""
    try:
        record = method(method_name, study.modality)
        params = record.parameters(study.modality, given)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise InputError(None, "method", _one_line(exc)) from None
    result = study.reconstruct(record, params, prior=prior, device=device, generator=generator,
                               label=label)
    for warning in result.warnings:
        logger.warning("%s: %s", study.path.name, warning)
    return result


# ------------------------------------------------------------------------ outputs
def write_study(result: StudyResult, protocol: Protocol, stem: str, folder: Path) -> list[str]:
    """Write the reconstruction (and std map) in every format, and the figure, into
    ``folder``; returns the names written."""
    names = []
    method = result.method
    for fmt in protocol.outputs.formats:
        name = f"{stem}{SUFFIXES[fmt]}"
        _write(result.volume, folder / name, fmt, method, result.reference, result.metrics)
        names.append(name)
        if result.std is not None:
            std_name = f"{stem}_std{SUFFIXES[fmt]}"
            _write(result.std, folder / std_name, fmt, f"{method} std", None, {})
            names.append(std_name)
    if protocol.outputs.figure:
        save_figure(folder / f"{stem}.png", study_panels(result, method),
                    suptitle=", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items()))
        names.append(f"{stem}.png")
    return names


def _write(volume: Volume, path: Path, fmt: str, method: str, reference: np.ndarray | None,
           metrics: dict[str, float]) -> None:
    if fmt == "npy":
        np.save(path, volume.array)
        return
    write_reconstruction(volume, path, method=method, reference=reference, metrics=metrics)


def study_panels(result: StudyResult, method: str) -> list[Panel]:
    """Middle slice: reconstruction, reference, error map, and std map for samplers."""
    middle = result.volume.array.shape[0] // 2
    ref = None if result.reference is None else np.asarray(result.reference).reshape(
        result.volume.array.shape)[middle]
    panels = comparison_panels(result.volume.array[middle], method, result.volume.units, ref)
    if result.std is not None:
        std = result.std.array[middle]
        panels.append(Panel("posterior std", std, (0.0, float(np.percentile(std, 99.5)) or 1.0),
                            "magma"))
    return panels


def study_report(result: StudyResult, protocol: Protocol, path: Path, study: str,
                 outputs: list[str], seconds: float, device: torch.device,
                 prior_path: Path | None) -> dict[str, object]:
    """The JSON report of a finished study (see the module docstring)."""
    records = result.records
    return {
        "study": study, "input": str(path), "status": "done",
        "modality": protocol.modality, "solver": result.method,
        "metrics": result.metrics,
        "timings": {"total": seconds,
                    "solver": sum(r.timings.get("total", 0.0) for r in records)},
        "nfe": sum(r.nfe for r in records),
        "iterations": sum(r.iterations for r in records),
        "data_residual": result.data_residual,
        "warnings": list(result.warnings),
        "acquisition": result.facts,
        "outputs": outputs,
        "provenance": provenance(protocol, device, prior_path),
    }


def provenance(protocol: Protocol, device: torch.device,
               prior_path: Path | None) -> dict[str, object]:
    """Protocol as resolved with its hash, package versions, seed, device and prior."""
    versions = {"medrecon": __version__, "python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    prior = None
    if prior_path is not None:
        prior = {"path": str(prior_path), "sha256": _sha256(prior_path)}
    return {"protocol": protocol.to_dict(), "protocol_hash": protocol.hash,
            "protocol_source": None if protocol.source is None else str(protocol.source),
            "versions": versions, "seed": protocol.seed, "device": str(device),
            "platform": platform.platform(), "prior": prior,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def report_name(protocol: Protocol, stem: str) -> str:
    """``STEM.json``; with ``outputs.report: false`` the same record is kept as the hidden
    ``.STEM.done``, which marks the study as done for later runs."""
    return f"{stem}.json" if protocol.outputs.report else f".{stem}.done"


def publish(staging: Path, outdir: Path, names: list[str], report: str) -> None:
    """Move the finished files of a study into ``outdir``, the report last."""
    for name in [*names, report]:
        target = outdir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Interrupted` (main thread only)."""
    def handler(signum, frame):
        raise Interrupted()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------------------ the run
def run_protocol(protocol: Protocol, inputs: Sequence[str | os.PathLike[str]],
                 outdir: str | os.PathLike[str], *, overwrite: bool = False,
                 echo: Callable[[str], None] = print) -> RunSummary:
    """Run ``protocol`` on every study of ``inputs`` into ``outdir`` (module docstring).

    Raises :class:`InputError` before any work for a bad output folder, inputs, prior
    or device; a failing study is recorded in the summary and the run goes on.
    """
    outdir = prepare_output(outdir, create=False)
    paths = find_inputs(inputs, protocol.input.pattern)
    names = study_names(paths)
    device = resolve_device(protocol)
    loaded = load_protocol_prior(protocol, device)
    prior, prior_path = loaded if loaded is not None else (None, None)
    outcomes: list[StudyOutcome] = []
    unfit: dict[Path, str] = {}  # studies whose file or acquisition does not fit
    with sigterm_as_interrupt():
        for index, (path, study) in enumerate(zip(paths, names), start=1):
            label = f"[{index}/{len(paths)}] {study}"
            stem = protocol.outputs.stem(study)
            report = report_name(protocol, stem)
            if (outdir / report).is_file() and not overwrite:
                echo(f"{label}: done before, skipped ({report})")
                outcomes.append(StudyOutcome(study, path, "skipped"))
                continue
            try:
                opened = open_checked(protocol, path)
            except Exception as exc:  # noqa: BLE001 - reported per study
                unfit[path] = _one_line(exc)
                echo(f"{label}: FAILED: {unfit[path]}")
                outcomes.append(StudyOutcome(study, path, "failed", unfit[path]))
                continue
            with opened:
                outcomes.append(_run_study(protocol, opened, study, stem, outdir, prior,
                                           prior_path, device, label, echo))
    if len(unfit) == len(paths):  # nothing could run: bad input, as before any work
        first = unfit[paths[0]]
        raise InputError(None, None, first if len(paths) == 1 else
                         f"none of the {len(paths)} inputs fits protocol {protocol.name!r}; "
                         f"the first: {first}")
    summary = RunSummary(outcomes)
    counts = summary.counts()
    noun = "study" if len(outcomes) == 1 else "studies"
    echo(f"{len(outcomes)} {noun}: {counts['done']} done, {counts['skipped']} skipped, "
         f"{counts['failed']} failed")
    for outcome in summary.failed:
        echo(f"  failed: {outcome.study}: {outcome.message}")
    return summary


def _run_study(protocol: Protocol, study_file: Study, study: str, stem: str, outdir: Path,
               prior, prior_path: Path | None, device: torch.device, label: str,
               echo: Callable[[str], None]) -> StudyOutcome:
    path = study_file.path
    outdir.mkdir(parents=True, exist_ok=True)
    staging = outdir / f".{stem}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    start = time.perf_counter()
    generator = torch.Generator(device=device).manual_seed(protocol.seed)
    try:
        result = reconstruct_study(study_file, protocol.solver.name, protocol.solver.params,
                                   prior=prior, device=device, generator=generator, label=label)
        staging.mkdir()
        names = write_study(result, protocol, stem, staging)
        seconds = time.perf_counter() - start
        report = study_report(result, protocol, path, study, names, seconds, device,
                              prior_path)
        with open(staging / report_name(protocol, stem), "w") as f:
            json.dump(report, f, indent=2, default=_json_default)
        publish(staging, outdir, names, report_name(protocol, stem))
    except KeyboardInterrupt:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except Exception as exc:  # noqa: BLE001 - a failing study must not stop the others
        shutil.rmtree(staging, ignore_errors=True)
        message = _one_line(exc)
        echo(f"{label}: FAILED: {message}")
        logger.debug("study %s failed", study, exc_info=True)
        return StudyOutcome(study, path, "failed", message, time.perf_counter() - start)
    metrics = "".join(f", {k} {v:.4g}" for k, v in result.metrics.items())
    count = len(result.warnings)
    warned = f", {count} warning{'s' * (count != 1)}" if count else ""
    echo(f"{label}: done in {seconds:.1f} s ({result.method}{metrics}){warned}")
    return StudyOutcome(study, path, "done", "", seconds)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _json_default(value: object) -> object:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (Path, torch.device)):
        return str(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    model_dump = getattr(value, "model_dump", None)  # a nested parameter model (pydantic)
    if callable(model_dump):
        return model_dump()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def exit_status(summary: RunSummary) -> int:
    """0 when every study is done or skipped, 1 when any failed."""
    return 1 if summary.failed else 0


