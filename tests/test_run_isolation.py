"""Run isolation (issue 14): a study that crashes its reader, hangs it or raises something
unexpected fails alone, naming the study, the file and what happened; SIGTERM and SIGINT
stop a run in any phase with exit 130 and nothing partial.

The crashing readers are module-level functions of this file put in place of
:func:`medrecon.run.validate_study`, the function each study's child process runs (the
child gets it by reference, from this module), so the real child machinery of
:mod:`medrecon.isolation` is what is tested.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from medrecon import isolation
from medrecon import run as runner
from medrecon.cli import EXIT_BAD_INPUT, main
from medrecon.protocol import load_protocol

logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def sinogram(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("iso") / "ct.h5"
    assert main(["simulate", "ct", "phantom", "--size", "32", "--views", "12", "-o",
                 str(path)]) == 0
    return path.read_bytes()


def studies(folder: Path, sinogram: bytes, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.h5" for name in names]
    for path in paths:
        path.write_bytes(sinogram)
    return paths


# ------------------------------------------------------------------ readers run in the child
def segfault_on_bad(protocol, path: Path) -> None:
    """A reader that segfaults on ``bad.h5`` (a native library on corrupt metadata)."""
    if path.stem == "bad":
        ctypes.string_at(0)
    runner.open_checked(protocol, path).close()


def abort_on_bad(protocol, path: Path) -> None:
    if path.stem == "bad":
        os.abort()
    runner.open_checked(protocol, path).close()


def hang_on_bad(protocol, path: Path) -> None:
    if path.stem == "bad":
        time.sleep(120)
    runner.open_checked(protocol, path).close()


def hang_and_say_so(protocol, path: Path) -> None:
    """Writes its pid next to the study, then hangs: the run is interrupted meanwhile."""
    path.with_suffix(".pid").write_text(str(os.getpid()))
    time.sleep(120)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in "ZX"  # a zombie is dead, waiting for a reaper


# ------------------------------------------------------------------ crashes
@pytest.mark.parametrize(("reader", "number"), [(segfault_on_bad, signal.SIGSEGV),
                                                (abort_on_bad, signal.SIGABRT)])
def test_a_reader_crashing_fails_its_study_and_the_rest_go_on(sinogram, tmp_path, monkeypatch,
                                                              reader, number):
    monkeypatch.setattr(runner, "validate_study", reader)
    inputs = studies(tmp_path / "in", sinogram, "a", "bad", "c")
    out = tmp_path / "out"
    lines: list[str] = []
    summary = runner.run_protocol(load_protocol("ct-sparse-fbp"), inputs, out,
                                  echo=lines.append)
    assert [o.status for o in summary.outcomes] == ["done", "failed", "done"]
    message = summary.outcomes[1].message
    assert message.startswith(f"{inputs[1]}: crashed (signal {int(number)})"), message
    assert signal.Signals(number).name in message
    assert f"  failed: bad: {message}" in lines
    assert "[2/3] bad: FAILED: " in "\n".join(lines)
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(["run_summary.json", *(f"{s}_fbp{x}" for s in ("a", "c")
                                                    for x in (".json", ".nii.gz", ".png"))])
    record = json.loads((out / "run_summary.json").read_text())
    assert record["counts"]["failed"] == 1 and "crashed" in record["studies"][1]["message"]


def test_the_command_line_reports_a_crash_in_one_line(sinogram, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "validate_study", segfault_on_bad)
    inputs = studies(tmp_path / "in", sinogram, "a", "bad")
    code = main(["run", "ct-sparse-fbp", *map(str, inputs), "-o", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert "Traceback" not in out + err
    assert f"  failed: bad: {inputs[1]}: crashed (signal {int(signal.SIGSEGV)})" in out
    # the only study crashing is bad input: one line naming the file, exit status 2
    code = main(["run", "ct-sparse-fbp", str(inputs[1]), "-o", str(tmp_path / "out2")])
    out, err = capsys.readouterr()
    assert code == EXIT_BAD_INPUT and "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medrecon: error: ")
    assert str(inputs[1]) in lines[0] and "crashed (signal" in lines[0]
    assert not (tmp_path / "out2").exists() or not list((tmp_path / "out2").iterdir())


def test_a_hanging_reader_is_stopped_and_fails_its_study(sinogram, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "validate_study", hang_on_bad)
    monkeypatch.setattr(isolation, "TIMEOUT", 1.0)
    inputs = studies(tmp_path / "in", sinogram, "bad", "b")
    start = time.monotonic()
    summary = runner.run_protocol(load_protocol("ct-sparse-fbp"), inputs, tmp_path / "out",
                                  echo=lambda _: None)
    assert time.monotonic() - start < 60  # not the reader's 120 s
    assert [o.status for o in summary.outcomes] == ["failed", "done"]
    assert summary.outcomes[0].message == (f"{inputs[0]}: did not open within 1 s (the reader "
                                           "hangs on this file?); stopped")


def test_a_corrupt_file_is_reported_from_the_child_as_in_process(sinogram, tmp_path):
    """The child's verdict on an ordinary bad file is the reader's own one-line error."""
    (bad,) = studies(tmp_path / "in", sinogram[:3000], "truncated")
    protocol = load_protocol("ct-sparse-fbp")
    child = isolation.in_child(runner.validate_study, protocol, bad, path=bad)
    with pytest.raises(Exception) as raised:
        runner.validate_study(protocol, bad)
    assert not child.ok and not child.crashed
    assert child.message == isolation.failure_line(raised.value, bad)
    assert str(bad) in child.message


def test_isolation_costs_little_per_study(sinogram, tmp_path):
    """Once the opening server runs, a child costs a fork and the read: measured here
    (logged) and bounded generously (this machine is shared)."""
    inputs = studies(tmp_path / "in", sinogram, *"abcdef")
    protocol = load_protocol("ct-sparse-fbp")
    isolation.in_child(os.getpid, path=inputs[0])  # the server is up
    start = time.perf_counter()
    for path in inputs:
        assert isolation.in_child(runner.validate_study, protocol, path, path=path).ok
    child = (time.perf_counter() - start) / len(inputs)
    start = time.perf_counter()
    for path in inputs:
        runner.validate_study(protocol, path)
    direct = (time.perf_counter() - start) / len(inputs)
    logger.info("open and check: %.1f ms in a child, %.1f ms in-process", 1e3 * child,
                1e3 * direct)
    assert child - direct < 1.0


# ------------------------------------------------------------------ unexpected exceptions
def test_an_unexpected_error_outside_reading_and_computing_names_study_file_and_type(
        sinogram, tmp_path, monkeypatch):
    real = runner.Claim.acquire

    def acquire(outdir, stem, *args, **kwargs):
        if stem.startswith("a_"):
            raise PermissionError(13, "Permission denied")
        return real(outdir, stem, *args, **kwargs)

    monkeypatch.setattr(runner.Claim, "acquire", staticmethod(acquire))
    inputs = studies(tmp_path / "in", sinogram, "a", "b")
    lines: list[str] = []
    summary = runner.run_protocol(load_protocol("ct-sparse-fbp"), inputs, tmp_path / "out",
                                  echo=lines.append)
    assert [o.status for o in summary.outcomes] == ["failed", "done"]
    expected = f"{inputs[0]}: unexpected PermissionError: [Errno 13] Permission denied"
    assert summary.outcomes[0].message == expected
    assert f"  failed: a: {expected}" in lines


def test_an_unexpected_error_in_the_child_names_the_file_and_type(sinogram, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setattr(runner, "validate_study", raise_key_error_on_bad)
    inputs = studies(tmp_path / "in", sinogram, "bad", "b")
    summary = runner.run_protocol(load_protocol("ct-sparse-fbp"), inputs, tmp_path / "out",
                                  echo=lambda _: None)
    assert [o.status for o in summary.outcomes] == ["failed", "done"]
    assert summary.outcomes[0].message == f"{inputs[0]}: unexpected KeyError: 'x'"


def raise_key_error_on_bad(protocol, path: Path) -> None:
    if path.stem == "bad":
        raise KeyError("x")
    runner.open_checked(protocol, path).close()


# ------------------------------------------------------------------ signals in every phase
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_a_child_opens_a_study_stops_the_run(sinogram, tmp_path, monkeypatch,
                                                            capsys, number):
    monkeypatch.setattr(runner, "validate_study", hang_and_say_so)
    inputs = studies(tmp_path / "in", sinogram, "a", "b")
    marker = inputs[0].with_suffix(".pid")

    def send_when_opening() -> None:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        os.kill(os.getpid(), number)

    thread = threading.Thread(target=send_when_opening, daemon=True)
    thread.start()
    out = tmp_path / "out"
    code = main(["run", "ct-sparse-fbp", *map(str, inputs), "-o", str(out)])
    thread.join()
    stdout, stderr = capsys.readouterr()
    assert code == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr
    assert not out.exists() or list(out.iterdir()) == []  # nothing partial, no summary
    pid = int(marker.read_text())
    deadline = time.monotonic() + 10
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid), "the child opening the study outlived the run"
    assert not inputs[1].with_suffix(".pid").exists()  # the second study never started


def test_sigterm_before_the_first_study_stops_the_run(sinogram, tmp_path, monkeypatch, capsys):
    """A signal while the run prepares (device, prior) is not lost and does not kill the
    process outright (SIGTERM's default): exit 130, nothing written."""
    real = runner.resolve_device

    def slow_device(protocol):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
        return real(protocol)

    monkeypatch.setattr(runner, "resolve_device", slow_device)
    inputs = studies(tmp_path / "in", sinogram, "a")
    out = tmp_path / "out"
    out.mkdir()
    code = main(["run", "ct-sparse-fbp", str(inputs[0]), "-o", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 130 and "Traceback" not in stdout + stderr
    assert list(out.iterdir()) == []


def test_sigterm_after_the_last_study_leaves_no_partial_summary(sinogram, tmp_path,
                                                                monkeypatch, capsys):
    real = runner.write_json_atomic

    def interrupted_summary(path, *args, **kwargs):
        if path.name.startswith("run_summary"):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
        return real(path, *args, **kwargs)

    monkeypatch.setattr(runner, "write_json_atomic", interrupted_summary)
    inputs = studies(tmp_path / "in", sinogram, "a")
    out = tmp_path / "out"
    code = main(["run", "ct-sparse-fbp", str(inputs[0]), "-o", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 130 and "Traceback" not in stdout + stderr
    # the finished study stays; the summary is not written, not even in part
    assert sorted(p.name for p in out.iterdir()) == ["a_fbp.json", "a_fbp.nii.gz",
                                                     "a_fbp.png"]


def test_without_isolation_no_child_is_used(sinogram, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "validate_study", segfault_on_bad)  # would crash if run here
    monkeypatch.setattr(runner, "in_child", None)  # and is not called
    inputs = studies(tmp_path / "in", sinogram, "a")
    summary = runner.run_protocol(load_protocol("ct-sparse-fbp"), inputs, tmp_path / "out",
                                  isolate=False, echo=lambda _: None)
    assert [o.status for o in summary.outcomes] == ["done"]


def slow_ok(seconds: float) -> None:
    time.sleep(seconds)


def test_threads_of_one_process_take_turns_on_the_server(tmp_path):
    """Review find: threads sharing the server's pipes took each other's replies and hung
    (a Dask worker with several threads)."""
    results: list[isolation.ChildResult] = []

    def work(i: int) -> None:
        for _ in range(3):
            results.append(isolation.in_child(slow_ok, 0.01, path=tmp_path / f"{i}.h5",
                                              timeout=60))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert len(results) == 12 and all(r.ok for r in results), results


def test_the_server_outlives_the_thread_that_started_it(tmp_path):
    """Review find: PR_SET_PDEATHSIG killed the server when the thread that started it
    ended, not when the run's process did."""
    isolation.shut_down()
    starter = threading.Thread(target=isolation.warm_up)
    starter.start()
    starter.join()
    time.sleep(0.5)
    assert isolation._SERVER is not None and isolation._SERVER.alive()
    assert isolation.in_child(slow_ok, 0.0, path=tmp_path / "x.h5", timeout=60).ok
