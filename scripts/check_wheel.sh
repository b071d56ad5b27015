#!/usr/bin/env bash
# Build spikedeploy's wheel from a clean copy of the source tree, install it into a throwaway
# venv and check, from a directory outside the repository, that the INSTALLED WHEEL provides
# spikedeploy and spikedeploy.{models,exporters,runtimes}, that every module imports, and that
# no top-level models/exporters/runtimes package is installed.
#
# To stay fast, the throwaway venv reuses the heavy dependencies (torch, lava, ...) of .venv
# through a .pth line that adds .venv's site-packages to sys.path. A plain path line does not
# execute the .pth files inside that folder, so .venv's editable install of spikedeploy stays
# inert; check_installed.py --site-packages proves spikedeploy came from the wheel.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
vpy=${VPY:-$root/.venv/bin/python}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/spikedeploy-wheel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# 1. A clean copy (no build/, *.egg-info or caches whose stale files could end up in the wheel).
mkdir "$tmp/src"
tar -C "$root" -cf - \
    --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist --exclude=./out \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis . \
  | tar -C "$tmp/src" -xf -

# 2. The wheel. --no-isolation uses .venv's pinned setuptools/wheel: no network, and fast.
"$vpy" -m build --wheel --no-isolation --outdir "$tmp/dist" "$tmp/src" >"$tmp/build.log" 2>&1 \
  || { cat "$tmp/build.log"; echo "check_wheel: building the wheel failed" >&2; exit 1; }
wheel=$(ls "$tmp"/dist/spikedeploy-*.whl)

# 3. A throwaway venv from the base interpreter, seeing .venv's dependencies via a .pth line.
base_python=$("$vpy" -c 'import sys; print(sys._base_executable)')
"$base_python" -m venv --without-pip "$tmp/venv"
site=$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
deps=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Install first, add the .pth after: pip must not see (and try to replace) .venv's editable copy.
"$vpy" -m pip --disable-pip-version-check --python "$tmp/venv/bin/python" install \
    --quiet --no-deps --no-index "$wheel"
echo "$deps" >"$site/_spikedeploy_deps.pth"

# 4. Import everything from outside the repository, in isolated mode.
cd "$tmp"
"$tmp/venv/bin/python" -I "$root/scripts/check_installed.py" --site-packages "$site" --wheel "$wheel" \
  >"$tmp/result.json"
"$tmp/venv/bin/python" -I -c '
import json, sys
r = json.load(open(sys.argv[1]))
print("check_wheel: OK: %s (%d files) imports %d modules from %s"
      % (sys.argv[2], r["wheel_files"], len(r["modules"]), r["spikedeploy"]))
' "$tmp/result.json" "$(basename "$wheel")"
test -x "$tmp/venv/bin/spikedeploy" || { echo "check_wheel: console script spikedeploy missing" >&2; exit 1; }
