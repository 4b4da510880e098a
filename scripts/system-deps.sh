#!/usr/bin/env bash
# System packages for the OHIF / DICOMweb part (Debian 12): Orthanc with its DICOMweb plugin (the PACS)
# and Chromium (the browser test). Idempotent: installs only what is missing; needs root (or sudo).
set -euo pipefail
need=()
[ -x /usr/sbin/Orthanc ] || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "!! missing system packages (${need[*]}) and no apt-get: install them with your package manager" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "== installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
