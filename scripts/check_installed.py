"""Check an installed spikedeploy: every module imports, and nothing leaks as a top-level package.

Run it with the interpreter under test, from a directory outside the repository and with
``python -I`` so that neither the source tree nor PYTHONPATH is on sys.path::

    python -I scripts/check_installed.py [--site-packages DIR] [--wheel FILE]

--site-packages  require that ``spikedeploy`` is imported from DIR (i.e. from the installed
                 wheel, not from an editable install or the source tree).
--wheel          also check that the wheel contains only ``spikedeploy/`` and its dist-info,
                 and a package ``__init__.py`` for every sub-package.

Prints a JSON summary on stdout and exits non-zero with a message on the first problem.
Used by tests/test_packaging.py and scripts/check_wheel.sh.
"""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import zipfile
from pathlib import Path

# The packages that live outside spikedeploy/ in the source tree (setuptools package-dir), so a
# walk over spikedeploy.__path__ alone does not see them in an editable install.
ROOTS = ("spikedeploy", "spikedeploy.models", "spikedeploy.exporters", "spikedeploy.runtimes")
FORBIDDEN_TOP_LEVEL = ("models", "exporters", "runtimes")


def fail(message: str) -> None:
    print(f"check_installed: {message}", file=sys.stderr)
    raise SystemExit(1)


def _reraise(name: str) -> None:
    importlib.import_module(name)  # re-raises the real error of a package that failed to import


def import_everything() -> list[str]:
    """Import every module below ROOTS; return their names, sorted."""
    names: set[str] = set()
    for root in ROOTS:
        package = importlib.import_module(root)
        names.add(root)
        for info in pkgutil.walk_packages(package.__path__, root + ".", onerror=_reraise):
            importlib.import_module(info.name)
            names.add(info.name)
    return sorted(names)


def check_wheel(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as wheel:
        files = wheel.namelist()
    outside = sorted({f.split("/")[0] for f in files} - {"spikedeploy"}
                     - {f.split("/")[0] for f in files if f.split("/")[0].endswith(".dist-info")})
    if outside:
        fail(f"{path.name} installs top-level entries other than spikedeploy: {outside}")
    for root in ROOTS:
        init = root.replace(".", "/") + "/__init__.py"
        if init not in files:
            fail(f"{path.name} lacks {init}")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site-packages", type=Path)
    parser.add_argument("--wheel", type=Path)
    args = parser.parse_args(argv)

    wheel_files = check_wheel(args.wheel) if args.wheel else None
    modules = import_everything()
    leaked = [name for name in FORBIDDEN_TOP_LEVEL if name in sys.modules]
    if leaked:
        fail(f"top-level module(s) {leaked} were imported: {[sys.modules[n] for n in leaked]}")
    origin = Path(importlib.import_module("spikedeploy").__file__).resolve()
    if args.site_packages and args.site_packages.resolve() not in origin.parents:
        fail(f"spikedeploy was imported from {origin}, not from {args.site_packages}")
    json.dump({"spikedeploy": str(origin), "modules": modules,
               "wheel_files": len(wheel_files) if wheel_files is not None else None}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
