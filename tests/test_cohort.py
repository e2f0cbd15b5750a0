"""Cohorts: study identity and stale studies, claims, shards, durable publishing, and
concurrent, sharded and Dask runs into one output folder (small 64 x 64 CT studies)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medrecon import cohort
from medrecon import run as runner
from medrecon.cli import EXIT_BAD_INPUT, main
from medrecon.cohort import Claim, Fingerprint, discover, in_shard, parse_shard
from medrecon.data.digest import file_sha256
from medrecon.errors import InputError
from medrecon.protocol import load_protocol

TV = ["--set", "solver.params.iterations=30"]


def cli(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> list[Path]:
    """Three different 20-view sinograms (phantom seeds 0, 1, 2)."""
    folder = tmp_path_factory.mktemp("scans")
    made = []
    for seed in range(3):
        path = folder / f"s{seed}.h5"
        assert main(["simulate", "ct", "phantom", "--size", "64", "--views", "20", "--seed",
                     str(seed), "--noise", "poisson:1e6", "-o", str(path)]) == 0
        made.append(path)
    return made


def _folder(root: Path, files: dict[str, Path]) -> Path:
    for name, source in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, root / name)
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()
            and p.name != "run_summary.json"}


# ------------------------------------------------------------------------ identity
def test_names_come_from_the_path_under_the_root(tmp_path, scans):
    root = _folder(tmp_path / "site", {"scan1.h5": scans[0], "day2/scan1.h5": scans[1]})
    assert [s.name for s in discover([root], "*.h5")] == ["day2_scan1", "scan1"]
    # another file in the folder renames nothing
    _folder(root, {"a/scan9.h5": scans[2]})
    assert [s.name for s in discover([root], "*.h5")] == ["a_scan9", "day2_scan1", "scan1"]
    # a file given directly is named by itself; a glob from its folder part
    assert [s.name for s in discover([root / "day2" / "scan1.h5"], "*.h5")] == ["scan1"]
    assert [s.name for s in discover([str(root / "*" / "*.h5")], "*.h5")] == [
        "a_scan9", "day2_scan1"]


def test_two_inputs_of_one_name_are_refused_before_any_work(capsys, tmp_path, scans):
    a = _folder(tmp_path / "siteA", {"scan1.h5": scans[0]})
    b = _folder(tmp_path / "siteB", {"scan1.h5": scans[1]})
    with pytest.raises(InputError, match="would be study 'scan1', as is"):
        discover([a, b], "*.h5")
    code, _, err = cli(capsys, "run", "ct-sparse-fbp", a, b, "-o", tmp_path / "out")
    assert code == EXIT_BAD_INPUT and "siteB/scan1.h5" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_second_site_with_the_same_names_is_stale_not_skipped(capsys, tmp_path, scans):
    """The issue: siteB's scan1 was skipped as done because siteA's scan1 had a report."""
    a = _folder(tmp_path / "siteA", {"scan1.h5": scans[0], "scan2.h5": scans[1]})
    b = _folder(tmp_path / "siteB", {"scan1.h5": scans[2]})
    out = tmp_path / "out"
    code, stdout, _ = cli(capsys, "run", "ct-sparse-fbp", a, "-o", out)
    assert code == 0 and "2 done" in stdout
    before = _snapshot(out)
    code, stdout, _ = cli(capsys, "run", "ct-sparse-fbp", b, "-o", out)
    assert code == 0 and "1 study: 0 done, 0 skipped, 1 stale, 0 failed" in stdout
    assert "STALE: input path, input size, input content changed" in stdout
    assert _snapshot(out) == before  # kept as it was
    code, stdout, _ = cli(capsys, "run", "ct-sparse-fbp", b, "-o", out, "--redo-stale")
    assert code == 0 and "1 done" in stdout
    report = json.loads((out / "scan1_fbp.json").read_text())
    assert report["input"]["path"] == str((b / "scan1.h5").resolve())
    assert report["input"]["sha256"] == file_sha256(scans[2])
    # the same input and protocol again: skipped, and nothing rewritten
    after = _snapshot(out)
    code, stdout, _ = cli(capsys, "run", "ct-sparse-fbp", b, "-o", out)
    assert code == 0 and "1 skipped" in stdout and _snapshot(out) == after


def test_a_changed_protocol_or_input_is_stale(capsys, tmp_path, scans):
    root = _folder(tmp_path / "in", {"scan.h5": scans[0]})
    out = tmp_path / "out"
    assert cli(capsys, "run", "ct-sparse-tv", root, "-o", out, *TV)[0] == 0
    code, stdout, _ = cli(capsys, "run", "ct-sparse-tv", root, "-o", out,
                          "--set", "solver.params.iterations=31")
    assert code == 0 and "STALE: protocol changed" in stdout and "1 stale" in stdout
    shutil.copyfile(scans[1], root / "scan.h5")  # same path, other content and size
    code, stdout, _ = cli(capsys, "run", "ct-sparse-tv", root, "-o", out, *TV)
    assert "STALE: input size, input content changed" in stdout
    code, stdout, _ = cli(capsys, "run", "ct-sparse-tv", root, "-o", out, *TV, "--redo-stale")
    assert code == 0 and "1 done" in stdout


def test_fingerprint_names_every_difference(tmp_path, scans):
    fp = Fingerprint.of(scans[0], "p" * 64, "w" * 64)
    report = {"input": fp.record(), "provenance": {"protocol_hash": "p" * 64,
                                                   "prior": {"sha256": "w" * 64}}}
    assert fp.differences(report) == []
    assert Fingerprint.of(scans[0], "p" * 64, "x" * 64).differences(report) == ["prior"]
    assert Fingerprint.of(scans[0], "q" * 64, "w" * 64).differences(report) == ["protocol"]
    assert "input content" in Fingerprint.of(scans[1], "p" * 64, "w" * 64).differences(report)
    assert len(fp.differences({"input": "old/report.h5"})) == 5  # an old report: stale


# ------------------------------------------------------------------------ claims
def test_a_claim_is_exclusive_and_released(tmp_path):
    first = Claim.acquire(tmp_path, "s", "h", timeout=60)
    assert first is not None and first.held()
    assert Claim.acquire(tmp_path, "s", "h", timeout=60) is None
    holder = json.loads(cohort.claim_path(tmp_path, "s").read_text())
    assert (holder["host"], holder["pid"], holder["protocol_hash"]) == (
        socket.gethostname(), os.getpid(), "h")
    first.release()
    assert not cohort.claim_path(tmp_path, "s").exists()
    again = Claim.acquire(tmp_path, "s", "h", timeout=60)
    assert again is not None
    again.release()


def _plant_claim(folder: Path, stem: str, pid: int, *, age: float = 0.0,
                 host: str | None = None) -> Path:
    path = cohort.claim_path(folder, stem)
    path.write_text(json.dumps({"token": "dead0000", "host": host or socket.gethostname(),
                                "pid": pid, "protocol_hash": "h"}))
    staging = cohort.staging_path(folder, stem, "dead0000")
    staging.mkdir()
    (staging / "half.nii.gz").write_bytes(b"partial")
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return staging


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_dead_processs_claim_is_taken_over_and_its_staging_removed(tmp_path):
    staging = _plant_claim(tmp_path, "s", _dead_pid())
    claim = Claim.acquire(tmp_path, "s", "h", timeout=600)
    assert claim is not None and claim.held() and not staging.exists()
    claim.release()


def test_another_hosts_claim_expires_only_by_its_heartbeat(tmp_path):
    _plant_claim(tmp_path, "s", 1, host="elsewhere")
    assert Claim.acquire(tmp_path, "s", "h", timeout=600) is None
    _plant_claim(tmp_path, "t", 1, host="elsewhere", age=30.0)
    assert Claim.acquire(tmp_path, "t", "h", timeout=600) is None
    taken = Claim.acquire(tmp_path, "t", "h", timeout=10)  # heartbeat 30 s old
    assert taken is not None
    taken.release()


def test_the_heartbeat_keeps_a_claim_alive(tmp_path):
    claim = Claim.acquire(tmp_path, "s", "h", timeout=0.4)
    old = time.time() - 100
    os.utime(claim.path, (old, old))
    time.sleep(0.35)  # more than one heartbeat (timeout / 4)
    assert claim.path.stat().st_mtime > old + 50
    claim.release()


def test_a_taken_over_run_does_not_publish(capsys, tmp_path, scans, monkeypatch):
    """A run thought dead (its claim expired and taken) finds out before publishing."""
    real = runner.write_study

    def taken_meanwhile(result, protocol, stem, folder, *where):
        names = real(result, protocol, stem, folder, *where)
        path = cohort.claim_path(folder.parent, stem)
        path.write_text(json.dumps({"token": "other", "host": "x", "pid": 1}))
        return names

    monkeypatch.setattr(runner, "write_study", taken_meanwhile)
    out = tmp_path / "out"
    summary = runner.run_protocol(load_protocol("ct-sparse-fbp"), [scans[0]], out)
    assert [o.status for o in summary.outcomes] == ["skipped"]
    assert "taken over" in summary.outcomes[0].message
    assert sorted(p.name for p in out.iterdir()) == [".s0_fbp.claim", "run_summary.json"]


# ------------------------------------------------------------------------ publishing
def test_files_and_folders_are_synced_before_the_rename(tmp_path, scans, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(cohort.os, "fsync", fsync)
    monkeypatch.setattr(cohort.os, "replace", replace)
    out = tmp_path / "out"
    runner.run_protocol(load_protocol("ct-sparse-fbp", ["outputs.formats=[nifti,dicom]"]),
                        [scans[0]], out)
    out = out.resolve()
    renames = [i for i, (kind, p) in enumerate(events) if kind == "replace"
               and Path(p).parent == out]  # into the output folder (not within staging)
    published = [Path(events[i][1]).name for i in renames]
    assert published == ["s0_fbp.nii.gz", "s0_fbp_dicom", "s0_fbp.png", "s0_fbp.json",
                         "run_summary.json"]  # the report last, the run's summary after it
    synced = [p for kind, p in events[:renames[0]] if kind == "fsync"]
    staged = {Path(p).name for p in synced}
    assert {"s0_fbp.nii.gz", "s0_fbp.png", "s0_fbp.json"} <= staged
    assert any(p.endswith(".dcm") for p in synced)  # inside the DICOM folder
    assert any(Path(p).name.endswith(".partial") for p in synced)  # the staging folder
    assert ("fsync", str(out)) in events[renames[-2]:renames[-1]]  # the folder after it


# ------------------------------------------------------------------------ shards
def test_shards_split_the_studies_stably():
    names = [f"patient{i:03d}_scan" for i in range(200)]
    parts = [[n for n in names if in_shard(n, (k, 3))] for k in (1, 2, 3)]
    assert sorted(sum(parts, [])) == sorted(names)  # every study in exactly one shard
    assert min(map(len, parts)) > 40  # and roughly evenly
    # a study's shard does not depend on the others
    assert [n for n in names[:50] if in_shard(n, (2, 3))] == [n for n in parts[1] if
                                                                n in names[:50]]
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "3", "a/b", "1/0"):
        with pytest.raises(InputError, match="--shard"):
            parse_shard(bad)


def test_bad_cohort_options_are_one_line(capsys, tmp_path, scans):
    for args, message in ((["--shard", "3/2"], "--shard: expected K/N"),
                          (["--workers", "2"], "--workers: is for --executor dask"),
                          (["--threads", "0"], "--threads: expected at least 1"),
                          (["--claim-timeout", "0"], "--claim-timeout")):
        code, _, err = cli(capsys, "run", "ct-sparse-fbp", scans[0], "-o", tmp_path / "o",
                           *args)
        assert code == EXIT_BAD_INPUT and message in err and "Traceback" not in err, err
        assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------ many runs
def _launch(protocol: str, *args: object) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "medrecon.cli", "run", protocol,
                             *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _done_lines(outputs: list[str]) -> list[str]:
    return [m for out in outputs for m in re.findall(r"\] (\S+): done in", out)]


def test_shards_and_an_overlapping_full_run_finish_every_study_once(tmp_path, scans):
    root = _folder(tmp_path / "cohort", {f"p{i}.h5": scans[i % 3] for i in range(8)})
    out = tmp_path / "out"
    runs = [_launch("ct-sparse-tv", root, "-o", out, "--shard", f"{k}/2", *TV)
            for k in (1, 2)]
    runs.append(_launch("ct-sparse-tv", root, "-o", out, *TV))
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], results
    stdout = [r[0] for r in results]
    assert not any("FAILED" in s for s in stdout), stdout
    assert sorted(_done_lines(stdout)) == [f"p{i}" for i in range(8)], stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([*(f"p{i}_tv{x}" for i in range(8) for x in (".json", ".nii.gz",
                                                                         ".png")),
                            "run_summary.json", "run_summary_shard-1-of-2.json",
                            "run_summary_shard-2-of-2.json"])
    shard_one = json.loads((out / "run_summary_shard-1-of-2.json").read_text())
    assert {s["study"] for s in shard_one["studies"]} == {
        f"p{i}" for i in range(8) if in_shard(f"p{i}", (1, 2))}


def test_two_full_runs_at_once_finish_every_study_once(tmp_path, scans):
    """The issue: two runs over the same 8 inputs into one folder finished 1 of 16 attempts."""
    root = _folder(tmp_path / "cohort", {f"p{i}.h5": scans[i % 3] for i in range(8)})
    out = tmp_path / "out"
    runs = [_launch("ct-sparse-tv", root, "-o", out, *TV) for _ in range(2)]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    assert sorted(_done_lines([r[0] for r in results])) == [f"p{i}" for i in range(8)]
    assert not list(out.glob(".*"))  # no claim or staging left


# ------------------------------------------------------------------------ Dask
needs_dask = pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                                reason="medrecon[dask] is not installed")


@needs_dask
def test_dask_and_sequential_outputs_are_byte_identical(capsys, tmp_path, scans):
    root = _folder(tmp_path / "cohort", {f"p{i}.h5": scans[i % 3] for i in range(4)})
    code, seq, _ = cli(capsys, "run", "ct-sparse-tv", root, "-o", tmp_path / "seq", *TV,
                       "--threads", "1")
    assert code == 0
    code, par, _ = cli(capsys, "run", "ct-sparse-tv", root, "-o", tmp_path / "dask", *TV,
                       "--executor", "dask", "--workers", "2")
    assert code == 0, par
    assert sorted(_done_lines([par])) == [f"p{i}" for i in range(4)]
    assert par.splitlines()[-1] == seq.splitlines()[-1] == "4 studies: 4 done, 0 skipped, 0 failed"
    for kind in ("*.nii.gz", "*.png"):
        seq_files = sorted((tmp_path / "seq").glob(kind))
        assert len(seq_files) == 4
        for path in seq_files:
            assert path.read_bytes() == (tmp_path / "dask" / path.name).read_bytes(), path.name
    summary = json.loads((tmp_path / "dask" / "run_summary.json").read_text())
    assert summary["executor"] == {"kind": "dask", "workers": 2, "scheduler": None}
    assert summary["counts"]["done"] == 4


@needs_dask
def test_a_killed_dask_worker_still_gives_every_study_once(tmp_path, scans):
    root = _folder(tmp_path / "cohort", {f"p{i}.h5": scans[i % 3] for i in range(4)})
    out = tmp_path / "out"
    driver = _launch("ct-sparse-tv", root, "-o", out, "--set", "solver.params.iterations=400",
                     "--executor", "dask", "--workers", "2")
    victim = None
    deadline = time.time() + 120
    while victim is None and time.time() < deadline and driver.poll() is None:
        for claim in out.glob(".*.claim") if out.exists() else ():
            try:
                victim = json.loads(claim.read_text())["pid"]
                break
            except (OSError, ValueError, KeyError):
                continue
        time.sleep(0.05)
    assert victim is not None, "no study was claimed"
    os.kill(victim, signal.SIGKILL)  # a worker dies mid-study
    stdout, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 0, (stdout, stderr)
    assert sorted(_done_lines([stdout])) == [f"p{i}" for i in range(4)], stdout
    assert not list(out.glob(".*")), list(out.glob(".*"))  # its claim and staging are gone
