"""Cohort bookkeeping for ``medrecon run``: study identity, claims, durable publishing, shards.

Identity
    A study is named by its path relative to the input root it was found under (a
    folder given as input; the folder part of a glob before its first wildcard; the
    parent of a file given directly), folders joined by ``_`` and the suffix dropped:
    ``siteA/day2/scan1.h5`` under ``siteA/`` is ``day2_scan1``. Adding a file to a folder
    never renames another study; two inputs that would get one name are refused before
    any work. A study's :class:`Fingerprint` is its input's resolved path, size and
    SHA-256, the resolved protocol's hash and the prior's SHA-256: a finished study is
    skipped only when its report records the same fingerprint, otherwise it is *stale*.

Claims
    Before it computes a study a run creates ``.STEM.claim`` in the output folder with
    ``O_CREAT | O_EXCL`` (atomic on local file systems and NFS v3 and later); the claim
    holds a random token, the host, the process id and the protocol's hash, and a
    heartbeat thread touches it every ``timeout / 4`` seconds. A claim whose heartbeat is
    older than ``timeout``, or whose process no longer exists on this host, has expired:
    it is renamed away (atomic: one run wins), its owner's staging folder removed, and
    the study claimed anew. A run publishes only while its claim still holds its token.

Staging and durability
    Each attempt writes into its own hidden ``.STEM.TOKEN.partial`` folder inside the
    output folder (so the final rename never crosses file systems). Every file is
    ``fsync``-ed, then the staging folder, before the renames into place (the report
    last), then the output folder.

Shards
    ``K/N`` keeps the studies whose name hashes (SHA-256) to ``K - 1`` modulo ``N``: a split
    that does not depend on which other files exist, so array jobs of a scheduler can each
    take one shard with no coordination.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medrecon.data.digest import file_sha256
from medrecon.errors import InputError

CLAIM_TIMEOUT = 120.0
"""Seconds after its last heartbeat at which another run may take over a claim."""


# ----------------------------------------------------------------------- identity
@dataclass(frozen=True)
class StudyInput:
    """One input file, the root it was found under, and the study name that gives."""

    path: Path
    root: Path
    name: str


def discover(inputs: Sequence[str | os.PathLike[str]], pattern: str) -> list[StudyInput]:
    """The studies named by ``inputs``: files, folders (their files matching ``pattern``,
    recursively, hidden ones left out) and glob patterns, each once in the order given,
    named from their path under their root. Raises :class:`InputError` for an input that
    names no file and for two inputs of one name."""
    if not inputs:
        raise InputError(None, "INPUT", "no input given")
    found: dict[Path, StudyInput] = {}
    for item in inputs:
        path = Path(item)
        if path.is_file():
            matches, root = [path], path.parent
        elif path.is_dir():
            matches, root = sorted(p for p in path.rglob(pattern) if p.is_file() and not any(
                part.startswith(".") for part in p.relative_to(path).parts)), path
            if not matches:
                raise InputError(path, None, f"no files matching {pattern!r} in this folder")
        else:
            matches = sorted(Path(p) for p in glob.glob(str(item), recursive=True)
                             if Path(p).is_file())
            if not matches:
                raise InputError(item, None, "no such file or folder, and no file matches it")
            plain = [part for part in path.parts[:-1]]
            cut = next((i for i, part in enumerate(plain) if glob.has_magic(part)), len(plain))
            root = Path(*plain[:cut]) if cut else Path(".")
        for match in matches:
            key = match.resolve()
            if key not in found:
                found[key] = StudyInput(match, root, study_name(match, root))
    studies = list(found.values())
    first: dict[str, StudyInput] = {}
    for study in studies:
        other = first.setdefault(study.name, study)
        if other is not study:
            raise InputError(study.path, None, f"would be study {study.name!r}, as is "
                             f"{other.path}: run the two in separate output folders or "
                             "rename one")
    return studies


def study_name(path: Path, root: Path) -> str:
    """``path``'s folders under ``root`` and its name without suffixes, joined by ``_``."""
    try:
        parts = path.resolve().relative_to(root.resolve()).parts
    except ValueError:  # a link out of the root: the file's own name
        parts = (path.name,)
    base = parts[-1].split(".")[0] or parts[-1]
    return "_".join([*parts[:-1], base])


@dataclass(frozen=True)
class Fingerprint:
    """What a finished study's outputs were made from (see the module docstring)."""

    path: str
    size: int
    sha256: str
    protocol_hash: str
    prior_sha256: str | None

    @classmethod
    def of(cls, path: Path, protocol_hash: str, prior_sha256: str | None) -> Fingerprint:
        return cls(str(path.resolve()), path.stat().st_size, file_sha256(path), protocol_hash,
                   prior_sha256)

    def record(self) -> dict[str, object]:
        """The report's ``input`` record."""
        return {"path": self.path, "size": self.size, "sha256": self.sha256}

    def differences(self, report: dict) -> list[str]:
        """What differs between this fingerprint and a report's (empty: the same study)."""
        given = report.get("input") if isinstance(report.get("input"), dict) else {}
        provenance = report.get("provenance") if isinstance(report.get("provenance"),
                                                            dict) else {}
        prior = provenance.get("prior") if isinstance(provenance.get("prior"), dict) else {}
        checks = (("input path", given.get("path"), self.path),
                  ("input size", given.get("size"), self.size),
                  ("input content", given.get("sha256"), self.sha256),
                  ("protocol", provenance.get("protocol_hash"), self.protocol_hash),
                  ("prior", prior.get("sha256"), self.prior_sha256))
        return [what for what, before, now in checks if before != now]


def read_json_object(path: Path) -> dict | None:
    """A JSON object from a file (a report, a claim), or ``None`` if it is missing,
    unreadable or not an object (a report then counts as not done)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ----------------------------------------------------------------------- shards
def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``1 <= K <= N``; :class:`InputError` otherwise."""
    k, sep, n = text.partition("/")
    if not (sep and k.strip().isdigit() and n.strip().isdigit()) or not 1 <= int(k) <= int(n):
        raise InputError(None, "--shard", f"expected K/N with 1 <= K <= N, got {text!r}")
    return int(k), int(n)


def in_shard(name: str, shard: tuple[int, int] | None) -> bool:
    """Whether study ``name`` belongs to shard ``(K, N)`` (every study without a shard)."""
    if shard is None:
        return True
    k, n = shard
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % n == k - 1


# ----------------------------------------------------------------------- claims
def claim_path(outdir: Path, stem: str) -> Path:
    return outdir / f".{stem}.claim"


def staging_path(outdir: Path, stem: str, token: str) -> Path:
    return outdir / f".{stem}.{token}.partial"


class Claim:
    """This process's hold on one study of an output folder (module docstring); use
    :meth:`acquire`, then :meth:`held` before publishing and :meth:`release` after."""

    def __init__(self, path: Path, token: str, timeout: float):
        self.path, self.token = path, token
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, args=(timeout / 4,),
                                      name=f"claim {path.name}", daemon=True)
        self._beat.start()

    @classmethod
    def acquire(cls, outdir: Path, stem: str, protocol_hash: str, *,
                timeout: float = CLAIM_TIMEOUT) -> Claim | None:
        """Claim study ``stem`` in ``outdir``; ``None`` while another live run holds it."""
        path = claim_path(outdir, stem)
        for _ in range(8):  # a few rounds of races with other runs, then leave it to them
            token = uuid.uuid4().hex[:16]
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_json_object(path)
                if holder is None and not path.exists():
                    continue  # released meanwhile
                if not _expired(path, holder, timeout):
                    return None
                _take_over(path, holder, outdir, stem)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"token": token, "host": socket.gethostname(), "pid": os.getpid(),
                           "protocol_hash": protocol_hash, "started": time.time()}, f)
                f.flush()
                os.fsync(f.fileno())
            return cls(path, token, timeout)
        return None

    def held(self) -> bool:
        """Whether the claim file still holds this claim's token (not taken over)."""
        holder = read_json_object(self.path)
        return holder is not None and holder.get("token") == self.token

    def release(self) -> None:
        """Stop the heartbeat and remove the claim if it is still this one's."""
        self._stop.set()
        self._beat.join()
        if self.held():
            self.path.unlink(missing_ok=True)

    def _heartbeat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                os.utime(self.path)
            except OSError:
                return

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _expired(path: Path, holder: dict | None, timeout: float) -> bool:
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    if age > timeout:
        return True
    if holder is None or holder.get("host") != socket.gethostname():
        return False  # a claim being written, or another machine's: its heartbeat decides
    return not _alive(holder.get("pid"))


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _take_over(path: Path, holder: dict | None, outdir: Path, stem: str) -> None:
    """Remove an expired claim (and its owner's staging) unless another run got there first."""
    tomb = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.expired")
    try:
        os.rename(path, tomb)
    except FileNotFoundError:
        return
    taken = read_json_object(tomb)
    token = None if holder is None else holder.get("token")
    if taken is not None and taken.get("token") != token:
        # another run replaced the expired claim in between: put its claim back
        try:
            os.link(tomb, path)
        except OSError:
            pass
    elif isinstance(token, str):
        shutil.rmtree(staging_path(outdir, stem, token), ignore_errors=True)
    tomb.unlink(missing_ok=True)


def sweep(outdir: Path) -> None:
    """Remove the claims and staging folders that processes of this host left when they
    died (after a local cluster was shut down)."""
    for path in outdir.glob(".*.claim"):
        holder = read_json_object(path)
        if holder is not None and holder.get("host") == socket.gethostname() and not _alive(
                holder.get("pid")):
            _take_over(path, holder, outdir, path.name[1:-len(".claim")])


# ----------------------------------------------------------------------- publishing
def fsync_tree(path: Path) -> None:
    """``fsync`` a file, or every file of a folder and the folders themselves."""
    if path.is_dir():
        for child in path.iterdir():
            fsync_tree(child)
        _fsync_folder(path)
        return
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_folder(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a platform without folder descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(staging: Path, outdir: Path, names: Sequence[str], report: str) -> None:
    """Make the staged files durable, then move them into ``outdir``, the report last."""
    fsync_tree(staging)
    for name in [*names, report]:
        target = outdir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    _fsync_folder(outdir)
    shutil.rmtree(staging, ignore_errors=True)


def write_json_atomic(path: Path, data: object, **kwargs: object) -> None:
    """Write JSON to ``path`` through a synced temporary file and a rename."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "w") as f:
            json.dump(data, f, indent=2, **kwargs)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_folder(path.parent)
