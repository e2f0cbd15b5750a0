"""A wheel built from the repository installs medrecon.operators and medrecon.data."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, capture_output=True)
    (path,) = out.glob("medrecon-*.whl")
    return path


def test_wheel_holds_the_mapped_packages_and_sample(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("medrecon/__init__.py", "medrecon/operators/base.py",
                     "medrecon/operators/ct.py", "medrecon/data/dicom.py",
                     "medrecon/data/phantom.py", "medrecon/data/samples/ct_sparse_60.h5",
                     "medrecon/data/samples/mri_brain_r4.h5", "medrecon/data/priors/ct.pt",
                     "medrecon/data/priors/mri.pt", "medrecon/protocols/ct-sparse-dds.yaml",
                     "medrecon/solvers/classical.py", "medrecon/priors/network.py"):
        assert required in names, required
    assert not any(n.startswith(("tests/", "bench/", "operators/", "data/")) for n in names)


def test_installed_wheel_imports(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    code = ("import medrecon, medrecon.operators, medrecon.data, medrecon.data.samples as s;"
            "from medrecon.data.priors import default_prior_path as p;"
            "print(medrecon.__file__); print(s.sample_path()); print(p('mri'))")
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True,
                          capture_output=True, text=True)
    module_file, sample, prior = done.stdout.split()
    assert all(path.startswith(str(target)) for path in (module_file, sample, prior))
