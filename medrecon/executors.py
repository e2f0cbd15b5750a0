"""Where a run's studies are computed: in this process, or as Dask tasks.

A study is a coarse, independent file-in, files-out task of seconds to minutes, so a
run needs no more from a cluster than "run this function on that input somewhere and
retry it if the machine dies". Dask's distributed scheduler gives exactly that, is
light (pure Python, installed with ``pip install "medrecon[dask]"``) and native to the
numpy/torch stack; ``dask-jobqueue`` turns a Slurm, PBS or SGE allocation into the same
kind of cluster, which ``--scheduler ADDRESS`` joins. Exactly-once publishing does not
depend on the executor: it comes from the per-study claims of :mod:`medrecon.cohort`,
so a task that Dask re-runs after its worker died finds the dead worker's claim
expired and takes it over.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from medrecon.cohort import sweep
from medrecon.errors import InputError

logger = logging.getLogger(__name__)

EXECUTORS = ("sequential", "dask")


class Executor(Protocol):
    """Runs ``fn`` on each job; yields ``(index, result)`` as results arrive, with
    ``lost(job, message)`` as the result of a job whose task the executor gave up on."""

    def run(self, fn: Callable[[Any], Any], jobs: Sequence[Any], outdir: Path,
            lost: Callable[[Any, str], Any]) -> Iterator[tuple[int, Any]]: ...

    def describe(self) -> dict[str, object]: ...


class Sequential:
    """Every study in this process, in order."""

    def run(self, fn: Callable[[Any], Any], jobs: Sequence[Any], outdir: Path,
            lost: Callable[[Any, str], Any]) -> Iterator[tuple[int, Any]]:
        for index, job in enumerate(jobs):
            yield index, fn(job)

    def describe(self) -> dict[str, object]:
        return {"kind": "sequential"}


class DaskExecutor:
    """One Dask task per study on a local cluster of ``workers`` processes (one torch
    thread each unless the run sets ``threads``), or on the cluster at ``scheduler``.
    Results are gathered in completion order; a task whose worker died is re-run by
    Dask (up to its ``allowed-failures``, 3 by default), and one that still fails is
    reported as the study's failure."""

    def __init__(self, workers: int | None, scheduler: str | None):
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise InputError(None, "--executor", "dask is not installed: pip install "
                                                 "'medrecon[dask]'") from None
        if workers is not None and workers < 1:
            raise InputError(None, "--workers", f"expected at least 1, got {workers}")
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.scheduler = scheduler

    def run(self, fn: Callable[[Any], Any], jobs: Sequence[Any], outdir: Path,
            lost: Callable[[Any, str], Any]) -> Iterator[tuple[int, Any]]:
        if not jobs:
            return
        from distributed import Client, LocalCluster, as_completed

        for name in ("distributed", "dask"):  # their INFO lines and shutdown chatter
            logging.getLogger(name).setLevel(logging.ERROR)
        cluster = None
        if self.scheduler is None:
            cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                   processes=True, dashboard_address=None,
                                   silence_logs=logging.ERROR)
        try:
            client = Client(cluster if cluster is not None else self.scheduler,
                            set_as_default=False)
        except OSError as exc:
            if cluster is not None:
                cluster.close()
            raise InputError(None, "--scheduler", f"cannot reach {self.scheduler}: {exc}"
                             ) from None
        try:
            futures = client.map(fn, list(jobs), pure=False)
            index = {future.key: k for k, future in enumerate(futures)}
            for future in as_completed(futures, loop=client.loop):
                k = index[future.key]
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - a task Dask gave up on (KilledWorker)
                    result = lost(jobs[k], f"the Dask task failed ({type(exc).__name__}): "
                                           f"{str(exc).splitlines()[0] if str(exc) else ''}")
                yield k, result
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
                sweep(outdir)  # claims and staging of workers stopped mid-study

    def describe(self) -> dict[str, object]:
        return {"kind": "dask", "workers": self.workers if self.scheduler is None else None,
                "scheduler": self.scheduler}


def executor_for(kind: str, *, workers: int | None = None,
                 scheduler: str | None = None) -> Executor:
    """The executor named ``kind`` (:data:`EXECUTORS`); ``workers`` and ``scheduler`` are
    for Dask only."""
    if kind == "sequential":
        if workers is not None or scheduler is not None:
            raise InputError(None, "--workers" if workers is not None else "--scheduler",
                             "is for --executor dask")
        return Sequential()
    if kind == "dask":
        return DaskExecutor(workers, scheduler)
    raise InputError(None, "--executor", f"expected one of {', '.join(EXECUTORS)}, got {kind!r}")


def worker_device(device: torch.device) -> torch.device:
    """``device``, with a GPU pinned per Dask worker (worker ``k`` of a local cluster gets
    GPU ``k`` modulo the count) when it is CUDA."""
    if device.type != "cuda" or device.index is not None:
        return device
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return device
    index = name if isinstance(name, int) else sum(map(ord, str(name)))
    return torch.device("cuda", index % max(1, torch.cuda.device_count()))
