#!/usr/bin/env bash
# Set-up (idempotent): a Python 3.11 virtual environment in .venv with the pinned stack.
# Re-runs only when requirements.txt, pyproject.toml or this script change.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version.split()[0]} ({sys.executable}); set PYTHON=/path/to/python3.11"'

want=$(cat requirements.txt pyproject.toml scripts/setup.sh | sha256sum | cut -c1-64)
stamp=.venv/.setup-done
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

start=$(date +%s)
echo "== setting up .venv (first run only; a few minutes)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
# GeodisTK 0.1.7's setup.py imports numpy and does not build against numpy 2: build it after numpy<2,
# against the venv's numpy.
.venv/bin/python -m pip install --quiet --no-build-isolation GeodisTK==0.1.7
# this checkout's `lib`, editable (pyproject.toml): importable by the app, its train / batch subprocesses,
# the scripts and the tests, with no path manipulation in any module
.venv/bin/python -m pip install --quiet --no-deps -e .
.venv/bin/python -c 'import GeodisTK, monai, monailabel.app, torch, lib.geos; print("monai", monai.__version__, "| monailabel", monailabel.__version__, "| torch", torch.__version__, "| cuda", torch.cuda.is_available())' 2>&1 | tail -1
echo "$want" > "$stamp"
echo "== set-up done in $(( $(date +%s) - start )) s"
