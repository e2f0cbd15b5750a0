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

Data safety and cohorts (:mod:`medrecon.cohort`): a study is named by its path under
the input root it was found in; its report records the input's path, size and SHA-256
and the protocol's and prior's hashes, and a later run skips it only when all match
(otherwise it is *stale*: kept, and recomputed with ``redo_stale`` or ``overwrite``).
A study is claimed before it is computed, so any number of runs (shards, machines,
Dask workers) can share one output folder and each study is computed once; its files
are written in a staging folder of its own inside the output folder, synced, and
moved into place when all are complete, the report last. Ctrl-C or SIGTERM, in any
phase of the run, removes the staging folder of the study under way (and kills the
child opening a study) and stops, leaving finished studies intact.

Isolation (:mod:`medrecon.isolation`): each study's file is first opened and checked in
a child process, so that a native reader crashing on a corrupt file (HDF5 segfaulting
on broken metadata) fails that study, naming the file and the signal, and the run goes
on. A failing study is reported (an unexpected exception with the study, the file and
the exception's type) and the rest go on; everything that can be known before the first
study (the output folder, the inputs and their names, the prior, the device, the
executor) is checked before any work starts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import shutil
import signal
import threading
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
from medrecon.cohort import (
    CLAIM_TIMEOUT,
    Claim,
    Fingerprint,
    StudyInput,
    discover,
    in_shard,
    publish,
    read_json_object,
    staging_path,
    write_json_atomic,
)
from medrecon.data.atomic import check_output_path
from medrecon.data.digest import file_sha256
from medrecon.data.volume import Volume
from medrecon.errors import InputError
from medrecon.executors import executor_for, worker_device
from medrecon.figures import Panel, comparison_panels, save_figure
from medrecon.isolation import failure_line, in_child, one_line, warm_up
from medrecon.methods import method
from medrecon.outputs import study_identity, write_reconstruction
from medrecon.protocol import Protocol, prior_reference
from medrecon.studies import Study, StudyResult, open_study

logger = logging.getLogger(__name__)

SUFFIXES = {"nifti": ".nii.gz", "hdf5": ".h5", "npy": ".npy", "dicom": "_dicom"}
VERSIONED_PACKAGES = ("torch", "numpy", "astra-toolbox", "sigpy", "torchkbnufft", "monai",
                      "h5py", "pydicom", "nibabel")


STATUSES = ("done", "skipped", "stale", "failed")


@dataclass(frozen=True)
class StudyOutcome:
    """What happened to one study: ``status`` is one of :data:`STATUSES` (``busy``, held
    by another live run, only between the two passes of a run); ``line`` is the line the
    run prints for it; ``unfit`` marks a file or acquisition the protocol does not take."""

    study: str
    input: Path
    status: str
    message: str = ""
    seconds: float = 0.0
    line: str = ""
    unfit: bool = False


@dataclass(frozen=True)
class RunSummary:
    """The outcome of every study of a run, in input order."""

    outcomes: list[StudyOutcome]

    @property
    def failed(self) -> list[StudyOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def counts(self) -> dict[str, int]:
        return {s: sum(o.status == s for o in self.outcomes) for s in STATUSES}


@dataclass(frozen=True)
class RunOptions:
    """How a run treats studies found finished and the work of other runs.

    ``overwrite`` recomputes every study; ``redo_stale`` those whose input, protocol or
    prior changed since their report (:class:`medrecon.cohort.Fingerprint`); ``threads``
    sets torch's thread count per process (``None``: torch's default);
    ``claim_timeout`` is the heartbeat age at which another run's claim expires;
    ``isolate`` opens and checks each study in a child process first
    (:mod:`medrecon.isolation`), so that a reader crashing on a corrupt file fails that
    study only."""

    overwrite: bool = False
    redo_stale: bool = False
    threads: int | None = None
    claim_timeout: float = CLAIM_TIMEOUT
    isolate: bool = True


@dataclass(frozen=True)
class StudyJob:
    """Everything one study's computation needs, picklable for a Dask worker."""

    protocol: Protocol
    study: StudyInput
    stem: str
    outdir: Path
    label: str
    device: torch.device
    prior_reference: str | None
    prior_path: Path | None
    prior_sha256: str | None
    options: RunOptions
    wait: bool = False


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up runs."""


# -------------------------------------------------------------------------- preparation
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
    if protocol.modality != "mri":
        return {}
    options = {} if acquisition.calibration is None else {"calibration": acquisition.calibration}
    if acquisition.compress is not None:
        options["compress"] = acquisition.compress
    if acquisition.prewhiten != "auto":
        options["prewhiten"] = acquisition.prewhiten
    return options


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


def validate_study(protocol: Protocol, path: Path) -> None:
    """Open and check ``path`` as :func:`open_checked` does, and close it: what a child
    process does first for each study of a run (:func:`medrecon.isolation.in_child`)."""
    open_checked(protocol, path).close()


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
        raise InputError(None, "method", one_line(exc)) from None
    result = study.reconstruct(record, params, prior=prior, device=device, generator=generator,
                               label=label)
    source = study.dicom_source
    if source is not None:  # the DICOM image it was simulated from: its identity, geometry
        result = dataclasses.replace(result, volume=source.apply(result.volume),
                         std=None if result.std is None else source.apply(result.std))
    for warning in result.warnings:
        logger.warning("%s: %s", study.path.name, warning)
    return result


# ------------------------------------------------------------------------ outputs
def write_study(result: StudyResult, protocol: Protocol, stem: str, folder: Path,
                input_file: Path | None = None, study_name: str | None = None) -> list[str]:
    """Write the reconstruction (and std map) in every format, and the figure, into
    ``folder``; returns the names written. ``input_file`` (the study's file, named
    ``study_name``) gives the DICOM outputs of a study without a DICOM source the study
    identity of ``outputs.dicom`` (:func:`medrecon.outputs.study_identity`)."""
    names = []
    method = result.method
    dicom = protocol.outputs.dicom
    identity = study_identity(input_file, study=dicom.study, patient_id=dicom.patient_id,
                              patient_name=dicom.patient_name, name=study_name) if (
        "dicom" in protocol.outputs.formats and input_file is not None) else None
    where = {"identity": identity}
    for fmt in protocol.outputs.formats:
        name = f"{stem}{SUFFIXES[fmt]}"
        _write(result.volume, folder / name, fmt, method, result.reference, result.metrics,
               **where)
        names.append(name)
        if result.std is not None:
            std_name = f"{stem}_std{SUFFIXES[fmt]}"
            _write(result.std, folder / std_name, fmt, f"{method} std", None, {},
                   parametric=True, **where)
            names.append(std_name)
    if protocol.outputs.figure:
        save_figure(folder / f"{stem}.png", study_panels(result, method),
                    suptitle=", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items()))
        names.append(f"{stem}.png")
    return names


def _write(volume: Volume, path: Path, fmt: str, method: str, reference: np.ndarray | None,
           metrics: dict[str, float], **where) -> None:
    if fmt == "npy":
        np.save(path, volume.array)
        return
    write_reconstruction(volume, path, method=method, reference=reference, metrics=metrics,
                         **where)


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


def study_report(result: StudyResult, job: StudyJob, fingerprint: Fingerprint,
                 outputs: list[str], seconds: float, device: torch.device) -> dict[str, object]:
    """The JSON report of a finished study (see the module docstring)."""
    records = result.records
    return {
        "study": job.study.name, "input": fingerprint.record(), "status": "done",
        "modality": job.protocol.modality, "solver": result.method,
        "metrics": result.metrics,
        "timings": {"total": seconds,
                    "solver": sum(r.timings.get("total", 0.0) for r in records)},
        "nfe": sum(r.nfe for r in records),
        "iterations": sum(r.iterations for r in records),
        "data_residual": result.data_residual,
        "warnings": list(result.warnings),
        "acquisition": result.facts,
        "outputs": outputs,
        "provenance": provenance(job.protocol, device, job.prior_path, job.prior_sha256),
    }


def provenance(protocol: Protocol, device: torch.device, prior_path: Path | None,
               prior_sha256: str | None) -> dict[str, object]:
    """Protocol as resolved with its hash, package versions, seed, device and prior."""
    versions = {"medrecon": __version__, "python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    prior = None if prior_path is None else {"path": str(prior_path), "sha256": prior_sha256}
    return {"protocol": protocol.to_dict(), "protocol_hash": protocol.hash,
            "protocol_source": None if protocol.source is None else str(protocol.source),
            "versions": versions, "seed": protocol.seed, "device": str(device),
            "platform": platform.platform(), "prior": prior,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def report_name(protocol: Protocol, stem: str) -> str:
    """``STEM.json``; with ``outputs.report: false`` the same record is kept as the hidden
    ``.STEM.done``, which marks the study as done for later runs."""
    return f"{stem}.json" if protocol.outputs.report else f".{stem}.done"


def summary_name(shard: tuple[int, int] | None) -> str:
    """``run_summary.json``, or ``run_summary_shard-K-of-N.json`` for a shard."""
    return "run_summary.json" if shard is None else (
        f"run_summary_shard-{shard[0]}-of-{shard[1]}.json")


_STOP = threading.Event()
"""Set by SIGTERM or SIGINT within :func:`sigterm_as_interrupt`: the run stops at the next
safe point even if the raised exception was swallowed (a signal that arrives inside a
weakref callback or ``__del__`` only prints "Exception ignored")."""


_DEPTH = 0
"""How many :func:`sigterm_as_interrupt` blocks of the main thread are open."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Interrupted` and SIGINT KeyboardInterrupt
    (main thread only); both also set :data:`_STOP`, which :func:`check_stop` turns into
    the same exception at the run's safe points (before publishing, between studies)."""
    def handler(signum, frame):
        _STOP.set()
        raise Interrupted() if signum == signal.SIGTERM else KeyboardInterrupt()

    global _DEPTH
    if _DEPTH:  # nested (the command line's, then run_protocol's): one handler, one _STOP
        yield
        return
    _STOP.clear()
    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread
        yield
        return
    _DEPTH += 1
    try:
        yield
    finally:
        _DEPTH -= 1
        for sig, old in previous.items():
            signal.signal(sig, old)


def check_stop() -> None:
    """Raise :class:`Interrupted` if a stop was asked for (see :data:`_STOP`)."""
    if _STOP.is_set():
        raise Interrupted()


# ------------------------------------------------------------------------ the run
def run_protocol(protocol: Protocol, inputs: Sequence[str | os.PathLike[str]],
                 outdir: str | os.PathLike[str], *, overwrite: bool = False,
                 redo_stale: bool = False, shard: tuple[int, int] | None = None,
                 executor: str = "sequential", workers: int | None = None,
                 scheduler: str | None = None, threads: int | None = None,
                 claim_timeout: float = CLAIM_TIMEOUT, isolate: bool = True,
                 echo: Callable[[str], None] = logger.info) -> RunSummary:
    """Run ``protocol`` on every study of ``inputs`` (of shard ``(K, N)`` if given) into
    ``outdir`` (module docstring), in this process or on Dask (``executor="dask"``: a
    local cluster of ``workers`` processes, or the cluster at ``scheduler``). Each study's
    line and the summary go to ``echo`` (logging by default); the summary is also written
    to ``outdir/run_summary.json`` (:func:`summary_name`).

    Raises :class:`InputError` before any work for a bad output folder, inputs (two of
    one study name included), prior, device or executor; a failing study is recorded in
    the summary and the run goes on. With ``isolate`` (the default) each study's file is
    first opened and checked in a child process (:mod:`medrecon.isolation`). SIGTERM and
    SIGINT, whenever they arrive, raise :class:`KeyboardInterrupt` (:class:`Interrupted`)
    with nothing partial left (the summary is written atomically, or not at all).
    """
    with sigterm_as_interrupt():  # from the first step to the last: a stop is never lost
        return _run(protocol, inputs, outdir, overwrite=overwrite, redo_stale=redo_stale,
                    shard=shard, executor=executor, workers=workers, scheduler=scheduler,
                    threads=threads, claim_timeout=claim_timeout, isolate=isolate, echo=echo)


def _run(protocol: Protocol, inputs: Sequence[str | os.PathLike[str]],
         outdir: str | os.PathLike[str], *, overwrite: bool, redo_stale: bool,
         shard: tuple[int, int] | None, executor: str, workers: int | None,
         scheduler: str | None, threads: int | None, claim_timeout: float, isolate: bool,
         echo: Callable[[str], None]) -> RunSummary:
    outdir = prepare_output(outdir, create=False)
    found = discover(inputs, protocol.input.pattern)
    chosen = [study for study in found if in_shard(study.name, shard)]
    if isolate and chosen and executor == "sequential":
        warm_up()  # the opening server imports in the background while the prior loads
    device = resolve_device(protocol)
    pool = executor_for(executor, workers=workers, scheduler=scheduler)
    reference = prior_reference(protocol)
    prior_path = prior_sha256 = None
    if reference is not None:  # refused before any work if it does not load
        prior, prior_path = load_prior(reference, protocol.modality, device)
        _PRIORS[(reference, protocol.modality, str(device))] = prior, prior_path
        prior_sha256 = None if prior_path is None else file_sha256(prior_path)
    options = RunOptions(overwrite, redo_stale, threads, claim_timeout, isolate)
    jobs = [StudyJob(protocol, study, protocol.outputs.stem(study.name, protocol.solver.name),
                     outdir, f"[{index}/{len(chosen)}] {study.name}", device, reference,
                     prior_path, prior_sha256, options)
            for index, study in enumerate(chosen, start=1)]
    if shard is not None:
        echo(f"shard {shard[0]}/{shard[1]}: {len(jobs)} of {len(found)} studies")
    outcomes: dict[int, StudyOutcome] = {}
    # first every study no other run holds; then wait for (or take over) the others
    for first_pass in (True, False):
        todo = [i for i, job in enumerate(jobs) if first_pass or outcomes[i].status == "busy"]
        batch = [dataclasses.replace(jobs[i], wait=not first_pass) for i in todo]
        for k, outcome in pool.run(process_study, batch, outdir, _lost):
            check_stop()
            outcomes[todo[k]] = outcome
            if outcome.status != "busy":
                echo(outcome.line)
    check_stop()
    ordered = [outcomes[i] for i in range(len(jobs))]
    if ordered and all(o.unfit for o in ordered):  # nothing could run: bad input
        first = ordered[0].message
        raise InputError(None, None, first if len(ordered) == 1 else
                         f"none of the {len(ordered)} inputs fits protocol {protocol.name!r}; "
                         f"the first: {first}")
    summary = RunSummary(ordered)
    counts = summary.counts()
    noun = "study" if len(ordered) == 1 else "studies"
    stale = f", {counts['stale']} stale" if counts["stale"] else ""
    echo(f"{len(ordered)} {noun}: {counts['done']} done, {counts['skipped']} skipped{stale}, "
         f"{counts['failed']} failed")
    for outcome in summary.failed:
        echo(f"  failed: {outcome.study}: {outcome.message}")
    if counts["stale"]:
        echo("  stale studies keep their old outputs: --redo-stale recomputes them")
    write_json_atomic(outdir / summary_name(shard), {
        "protocol": protocol.name, "protocol_hash": protocol.hash, "executor": pool.describe(),
        "shard": None if shard is None else f"{shard[0]}/{shard[1]}", "counts": counts,
        "studies": [{"study": o.study, "input": str(o.input), "status": o.status,
                     "message": o.message, "seconds": round(o.seconds, 3)} for o in ordered],
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    check_stop()
    return summary


_PRIORS: dict[tuple[str, str, str], tuple[object, Path | None]] = {}
"""Priors loaded in this process, by (reference, modality, device): once per worker."""

POLL_SECONDS = 0.5
"""How often a run waiting for another run's study looks again."""


def process_study(job: StudyJob) -> StudyOutcome:
    """One study, start to end: skip it if done (same fingerprint), report it stale, or
    claim, compute and publish it; ``busy`` if another live run holds it (with
    ``job.wait``: wait for that run to finish it, or take it over if that run dies). An
    unexpected exception anywhere in it is the study's failure, naming the study (in
    the line), the file and the exception's type; the run goes on."""
    try:
        return _process_study(job)
    except Exception as exc:  # noqa: BLE001 - a failing study must not stop the others
        logger.debug("study %s failed", job.study.name, exc_info=True)
        return _outcome(job, "failed", failure_line(exc, job.study.path))


def _process_study(job: StudyJob) -> StudyOutcome:
    if job.options.threads is not None and torch.get_num_threads() != job.options.threads:
        torch.set_num_threads(job.options.threads)
    try:
        fingerprint = Fingerprint.of(job.study.path, job.protocol.hash, job.prior_sha256)
    except OSError as exc:
        return _outcome(job, "failed", f"{job.study.path}: cannot read: {exc.strerror}",
                        unfit=True)
    report = job.outdir / report_name(job.protocol, job.stem)
    isolated = not job.options.isolate
    while True:
        verdict = _verdict(job, report, fingerprint)
        if verdict is not None:
            return verdict
        if not isolated:  # first in a child, where a crashing reader takes only the child
            child = in_child(validate_study, job.protocol, job.study.path,
                             path=job.study.path)
            check_stop()
            if not child.ok:
                return _outcome(job, "failed", child.message, child.seconds, unfit=True)
            isolated = True
        try:  # a file or acquisition that does not fit fails before the folder is touched
            opened = open_checked(job.protocol, job.study.path)
        except Exception as exc:  # noqa: BLE001 - reported per study
            return _outcome(job, "failed", failure_line(exc, job.study.path), unfit=True)
        with opened:
            job.outdir.mkdir(parents=True, exist_ok=True)
            claim = Claim.acquire(job.outdir, job.stem, job.protocol.hash,
                                  timeout=job.options.claim_timeout)
            if claim is not None:
                with claim:  # done by another run between the check and the claim?
                    return _verdict(job, report, fingerprint) or _compute(
                        job, opened, claim, fingerprint)
        if not job.wait:
            return _outcome(job, "busy", "held by another run")
        time.sleep(POLL_SECONDS)


def _lost(job: StudyJob, message: str) -> StudyOutcome:
    return _outcome(job, "failed", f"{job.study.path}: {message}")


def _verdict(job: StudyJob, report: Path, fingerprint: Fingerprint) -> StudyOutcome | None:
    """The outcome of a study found finished, or ``None`` when it is to be computed."""
    previous = None if job.options.overwrite else read_json_object(report)
    if previous is None:
        return None
    changed = fingerprint.differences(previous)
    if not changed:
        return _outcome(job, "skipped", f"done before ({report.name})")
    if job.options.redo_stale:
        return None
    return _outcome(job, "stale", f"{', '.join(changed)} changed since {report.name}; kept, "
                    "not recomputed")


def _outcome(job: StudyJob, status: str, message: str, seconds: float = 0.0,
             unfit: bool = False) -> StudyOutcome:
    words = {"failed": "FAILED: ", "skipped": "", "stale": "STALE: "}.get(status, "")
    line = f"{job.label}: {words}{message}" if status != "skipped" else (
        f"{job.label}: {message}, skipped")
    return StudyOutcome(job.study.name, job.study.path, status, message, seconds, line, unfit)


def _compute(job: StudyJob, opened: Study, claim: Claim,
             fingerprint: Fingerprint) -> StudyOutcome:
    protocol, outdir, stem = job.protocol, job.outdir, job.stem
    device = worker_device(job.device)
    staging = staging_path(outdir, stem, claim.token)
    start = time.perf_counter()
    generator = torch.Generator(device=device).manual_seed(protocol.seed)
    try:
        prior = None if job.prior_reference is None else _prior(job, device)
        result = reconstruct_study(opened, protocol.solver.name, protocol.solver.params,
                                   prior=prior, device=device, generator=generator,
                                   label=job.label)
        staging.mkdir()
        names = write_study(result, protocol, stem, staging, job.study.path, job.study.name)
        seconds = time.perf_counter() - start
        report = report_name(protocol, stem)
        write_json_atomic(staging / report, study_report(
            result, job, fingerprint, names, seconds, device), default=_json_default)
        check_stop()  # a signal whose exception was lost while writing stops here
        if not claim.held():  # taken over (this run was thought dead): the other one wins
            shutil.rmtree(staging, ignore_errors=True)
            return _outcome(job, "skipped", "taken over by another run")
        publish(staging, outdir, names, report)
    except KeyboardInterrupt:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except Exception as exc:  # noqa: BLE001 - a failing study must not stop the others
        shutil.rmtree(staging, ignore_errors=True)
        logger.debug("study %s failed", job.study.name, exc_info=True)
        return _outcome(job, "failed", failure_line(exc, job.study.path),
                        time.perf_counter() - start)
    metrics = "".join(f", {k} {v:.4g}" for k, v in result.metrics.items())
    count = len(result.warnings)
    warned = f", {count} warning{'s' * (count != 1)}" if count else ""
    outcome = _outcome(job, "done", "", seconds)
    return dataclasses.replace(outcome, line=f"{job.label}: done in {seconds:.1f} s "
                                             f"({result.method}{metrics}){warned}")


def _prior(job: StudyJob, device: torch.device):
    key = (job.prior_reference, job.protocol.modality, str(device))
    if key not in _PRIORS:
        _PRIORS[key] = load_prior(job.prior_reference, job.protocol.modality, device)
    return _PRIORS[key][0]


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


