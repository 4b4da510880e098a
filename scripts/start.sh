#!/usr/bin/env bash
# Set up, build the sample cohort (cached) and start the app on it, on 127.0.0.1:${PORT:-8000}.
# Extra arguments go to `monailabel start_server`, e.g.  bash scripts/start.sh --conf tracking true
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python sample-data/build_cohort.py
export MONAI_LABEL_TRACKING_ENABLED=${MONAI_LABEL_TRACKING_ENABLED:-false}
exec .venv/bin/python -m monailabel.main start_server \
  --app apps/oneshot --studies sample-data/cohort/studies --host 127.0.0.1 --port "${PORT:-8000}" \
  --uvicorn_app lib.api.app:app "$@"
