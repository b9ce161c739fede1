"""What `pip install .` gives: a wheel built from a clean copy of the checkout holds every file
of the package folders (modules and data), not only those an editable install happens to see.
scripts/check_wheel.sh (CI) installs that wheel alone in a fresh venv and runs the CLI."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what a build ignores from the checkout: environments, outputs and caches
NOT_SOURCE = (".git", ".venv", "node_modules", "build", "dist", "*.egg-info", "runs",
              "__pycache__", "*.pyc", ".*_cache", ".hypothesis")


def package_dir() -> dict[str, str]:
    """setup.py's import name -> folder mapping."""
    spec = importlib.util.spec_from_file_location("blockfl_setup", ROOT / "setup.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PACKAGE_DIR


def source_files() -> set[str]:
    """Every file of the package folders, at its path inside the wheel."""
    found = set()
    for name, folder in package_dir().items():
        base = ROOT / folder
        for path in base.rglob("*"):
            parts = path.relative_to(base).parts
            if path.is_file() and "__pycache__" not in parts and path.suffix != ".pyc":
                found.add("/".join((*name.split("."), *parts)))
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    tmp = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, tmp / "src", ignore=shutil.ignore_patterns(*NOT_SOURCE))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(tmp / "src"),
                    "-w", str(tmp / "out")], check=True, capture_output=True)
    (path,) = (tmp / "out").glob("blockfl-*.whl")
    return zipfile.ZipFile(path)


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_data_file_of_the_package_folders(wheel):
    shipped = {n for n in wheel.namelist() if not n.split("/")[0].endswith(".dist-info")}
    expected = source_files()
    assert "blockfl/aggregation/__init__.py" in expected  # the folders were read
    assert expected - shipped == set()
    assert shipped - expected == set()  # nothing else: no tests/, benchmarks/, examples/
