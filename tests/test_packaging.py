"""Packaging guards (design §2): models/, exporters/ and runtimes/ sit at the repository root but
must only ever be installed and imported as spikedeploy.models/.exporters/.runtimes.

The full wheel round trip (build, install into a throwaway venv, import everything) is
scripts/check_wheel.sh, run by `make wheel-check` (part of `make test`).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGE_DIRS = SETUPTOOLS["package-dir"]  # e.g. {"spikedeploy.models": "models", ...}
SOURCE_ROOTS = ("spikedeploy", "models", "exporters", "runtimes")


def _package_name(folder: Path) -> str:
    """The installed name of a source folder, following pyproject's package-dir mapping."""
    relative = folder.relative_to(REPO).parts
    for package, directory in sorted(PACKAGE_DIRS.items(), key=lambda kv: -len(kv[1])):
        prefix = Path(directory).parts
        if relative[: len(prefix)] == prefix:
            return ".".join((package, *relative[len(prefix):]))
    raise AssertionError(f"{folder} is not under any package-dir of pyproject.toml")


def _source_folders():
    for root in SOURCE_ROOTS:
        for folder in [REPO / root, *sorted((REPO / root).rglob("*"))]:
            if folder.is_dir() and "__pycache__" not in folder.parts:
                yield folder


def test_package_dirs_map_the_three_root_folders():
    assert PACKAGE_DIRS == {
        "spikedeploy": "spikedeploy",
        "spikedeploy.models": "models",
        "spikedeploy.exporters": "exporters",
        "spikedeploy.runtimes": "runtimes",
    }


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(SETUPTOOLS["packages"])
    found = {_package_name(f) for f in _source_folders() if (f / "__init__.py").is_file()}
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == set(), "listed in pyproject.toml but no folder with __init__.py"


def test_no_python_folder_without_init():
    """A folder of modules without __init__.py would silently be left out of the wheel."""
    orphans = [str(f.relative_to(REPO)) for f in _source_folders()
               if any(f.glob("*.py")) and not (f / "__init__.py").is_file()]
    assert orphans == []


def test_no_conftest_at_repository_root():
    assert not (REPO / "conftest.py").exists()


def test_importing_everything_loads_no_top_level_models_exporters_runtimes(tmp_path):
    """Import every module of the installed spikedeploy in a clean interpreter (isolated mode,
    run from a temporary directory so the source tree is not on sys.path)."""
    result = subprocess.run(
        [sys.executable, "-I", str(REPO / "scripts" / "check_installed.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    for package in ("spikedeploy", "spikedeploy.models", "spikedeploy.exporters",
                    "spikedeploy.runtimes", "spikedeploy.lava_compat"):
        assert package in summary["modules"]
    assert Path(summary["spikedeploy"]).parent == REPO / "spikedeploy"  # the editable install
