#!/usr/bin/env bash
# Set up and run the test suite (CPU only; starts real MONAI Label servers on loopback ports).
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -k geos;  the fast unit tests only:  -m "not e2e"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system-deps.sh   # Orthanc + Chromium for the DICOMweb / OHIF tests
exec .venv/bin/python -m pytest tests "$@"
