#!/usr/bin/env bash
# Orthanc (Debian packages) + the sample cohort as DICOM + the app on DICOMweb, for OHIF:
#   http://127.0.0.1:${PORT:-8000}/ohif/   (Orthanc's DICOMweb at http://127.0.0.1:${ORTHANC_PORT:-8042}/dicom-web)
# Orthanc keeps its data in ${ORTHANC_STORAGE:-~/orthanc-oneshot} and keeps running after this script
# stops (python -m lib.dicomweb.orthanc stop --storage ... stops it). Extra arguments go to start_server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system-deps.sh
.venv/bin/python sample-data/build_cohort.py
export MONAI_LABEL_TRACKING_ENABLED=${MONAI_LABEL_TRACKING_ENABLED:-false}
PORT=${PORT:-8000}
OPORT=${ORTHANC_PORT:-8042}
STORAGE=${ORTHANC_STORAGE:-$HOME/orthanc-oneshot}
DICOMWEB="http://127.0.0.1:$OPORT/dicom-web"

.venv/bin/python -m lib.dicomweb.orthanc status --port "$OPORT" >/dev/null \
  || .venv/bin/python -m lib.dicomweb.orthanc start --storage "$STORAGE" --port "$OPORT"
.venv/bin/python scripts/load_dicom.py --dicomweb "$DICOMWEB"

.venv/bin/python -m monailabel.main start_server \
  --app apps/oneshot --studies "$DICOMWEB" --host 127.0.0.1 --port "$PORT" \
  --uvicorn_app lib.api.app:app "$@" &
server=$!
trap 'kill $server 2>/dev/null || true' INT TERM EXIT
until curl -sf "http://127.0.0.1:$PORT/info/" >/dev/null; do
  kill -0 $server 2>/dev/null || { echo "!! the server exited" >&2; exit 1; }
  sleep 1
done
# the one-shot support: subject A's scribbles, saved on its series under tag `scribbles` (once)
.venv/bin/python scripts/load_dicom.py --dicomweb "$DICOMWEB" --support-to "http://127.0.0.1:$PORT" --skip-upload
echo "== OHIF: http://127.0.0.1:$PORT/ohif/   (Ctrl-C stops the app; Orthanc keeps running)"
wait $server
