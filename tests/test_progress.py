"""Progress in terminals, notebooks and logs, and a run that logs instead of printing."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from medrecon import progress
from medrecon.cli import main
from medrecon.progress import LogProgress, ProgressBar, SliceProgress


def test_a_log_gets_periodic_plain_lines(caplog, monkeypatch):
    """Before, ``tqdm(disable=None)`` switched itself off when standard error was no
    terminal, so batch logs showed no progress at all."""
    monkeypatch.setattr(progress, "interactive", lambda: False)
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
    caplog.set_level(logging.INFO, logger="medrecon.progress")
    x = torch.zeros(1)
    with ProgressBar("tv scan.h5") as bar:
        for step in range(1, 4):
            bar(step, 3, x)
    lines = [r.getMessage() for r in caplog.records if r.name == "medrecon.progress"]
    assert [re.sub(r"\(\d+ s\)", "(T)", line) for line in lines] == [
        "tv scan.h5: 1/3 it (T)", "tv scan.h5: 2/3 it (T)", "tv scan.h5: 3/3 it (T)",
        "tv scan.h5: 3/3 it (T)"]  # each update, and the close


def test_short_work_leaves_no_line(caplog, monkeypatch):
    monkeypatch.setattr(progress, "interactive", lambda: False)
    caplog.set_level(logging.INFO, logger="medrecon.progress")
    with SliceProgress("dds scan.h5") as slices:
        for index in range(2):
            slices(index, 2)(1, 1, torch.zeros(1))
    assert not [r for r in caplog.records if r.name == "medrecon.progress"]


def test_a_person_gets_a_tqdm_auto_bar(monkeypatch):
    from tqdm.auto import tqdm

    monkeypatch.setattr(progress, "interactive", lambda: True)
    bar = progress.progress_bar(5, "train-prior", "step", initial=2)
    assert isinstance(bar, tqdm) and bar.n == 2
    bar.close()
    monkeypatch.setattr(progress, "interactive", lambda: False)
    assert isinstance(progress.progress_bar(5, "x", "it"), LogProgress)


@pytest.mark.parametrize("kernel", [True, False])
def test_a_notebook_counts_as_a_person(monkeypatch, kernel):
    import sys

    monkeypatch.setitem(sys.modules, "ipykernel", object()) if kernel else \
        monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys, "stderr", open("/dev/null", "w"))  # noqa: SIM115
    assert progress.interactive() is kernel


def test_the_python_entry_point_of_a_run_logs(caplog, tmp_path, capsys):
    from medrecon.protocol import load_protocol
    from medrecon.run import run_protocol

    scan = tmp_path / "scan.h5"
    assert main(["simulate", "ct", "phantom", "--size", "32", "--views", "10", "-o",
                 str(scan)]) == 0
    capsys.readouterr()
    caplog.set_level(logging.INFO, logger="medrecon.run")
    run_protocol(load_protocol("ct-sparse-fbp"), [scan], tmp_path / "out")
    messages = [r.getMessage() for r in caplog.records if r.name == "medrecon.run"]
    assert any(m.startswith("[1/1] scan: done in") for m in messages), messages
    assert "1 study: 1 done, 0 skipped, 0 failed" in messages
    assert capsys.readouterr().out == ""  # nothing printed
