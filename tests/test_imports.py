"""Import directions (import-linter's contract in pyproject.toml) and light start-up imports.

The package is laid out by ``[tool.setuptools] package-dir`` (``medrecon.data`` is
``data/``, ``medrecon.operators`` is ``operators/`` ...), which import-linter cannot
follow from the repository root, so these tests lint a tree of symbolic links laid out
as installed. By hand: ``python tests/test_imports.py`` prints lint-imports' report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def installed_layout(target: Path) -> Path:
    """Link every ``.py`` file of the package into ``target`` as it is installed (real
    folders, linked files, so that a test can add a module without touching the repo)."""
    package_dir = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(package_dir.items()):
        dest = target.joinpath(*package.split("."))
        for source in (ROOT / folder).rglob("*.py"):
            relative = source.relative_to(ROOT / folder)
            if "__pycache__" in relative.parts:
                continue
            link = dest / relative
            if link.exists():
                continue  # a sub-package mapped on its own (medrecon.data in medrecon/)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source)
    return target


def lint_imports(tree: Path, config: Path = PYPROJECT) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    # lint-imports puts its working folder first on sys.path: run it in the linked tree
    return subprocess.run([exe, "--config", str(config), "--no-cache"], cwd=tree,
                          capture_output=True, text=True, timeout=120)


def test_import_contract_is_kept(tmp_path):
    result = lint_imports(installed_layout(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_import_contract_catches_data_importing_the_application(tmp_path):
    tree = installed_layout(tmp_path)
    (tree / "medrecon" / "data" / "_upward.py").write_text("import medrecon.run\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "medrecon.data._upward -> medrecon.run" in result.stdout


def test_contract_orders_the_layers():
    contract = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"][0]
    layers = [layer.replace("(", "").replace(")", "") for layer in contract["layers"]]

    def level(module: str) -> int:
        return next(i for i, layer in enumerate(layers)
                    if module in [m.strip() for m in layer.replace("|", ":").split(":")])

    order = ["medrecon.cli", "medrecon.run", "medrecon.protocol", "medrecon.methods",
             "medrecon.solvers", "medrecon.priors", "medrecon.data", "medrecon.operators",
             "medrecon.errors"]
    assert [level(m) for m in order] == sorted(level(m) for m in order)
    assert level("medrecon.studies") == level("medrecon.methods")
    assert level("medrecon.demo") == level("medrecon.run")
    assert layers[-1] == "medrecon.errors"


HEAVY = ("torch", "astra", "scipy.ndimage")


def test_reading_a_sinograms_metadata_imports_no_torch_astra_or_ndimage(tmp_path):
    from medrecon.data.sinogram import Sinogram, write_sinogram
    from medrecon.operators.ct_geometry import CTGeometry

    geometry = CTGeometry.parallel((16, 16), 8)
    path = write_sinogram(Sinogram(np.zeros((8, geometry.n_detectors), np.float32), geometry,
                                   reference=np.zeros((16, 16), np.float32)),
                          tmp_path / "s.h5")
    code = ("import sys\nfrom medrecon.fileinfo import describe\n"
            f"info = describe({str(path)!r})\nassert info['views'] == 8, info\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported at start-up: {result.stdout.strip()}"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        report = lint_imports(installed_layout(Path(folder)))
    print(report.stdout + report.stderr)
    sys.exit(report.returncode)
