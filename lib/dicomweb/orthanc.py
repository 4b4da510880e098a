"""Start and stop a local Orthanc (Debian packages ``orthanc`` + ``orthanc-dicomweb``) as the app's PACS.

The configuration is written next to the storage, so one folder holds everything of one instance:
``<storage>/orthanc.json``, ``<storage>/db`` (index and DICOM files), ``<storage>/orthanc.log`` and
``<storage>/orthanc.pid``. DICOMweb is served at ``http://127.0.0.1:<port>/dicom-web``.

Loopback only: Orthanc 1.10 (Debian 12) has no bind-address option and listens on every interface,
so ``RemoteAccessAllowed: false`` makes it answer 403 to any client that is not on this host; the
DICOM (DIMSE) server is disabled.

    python -m lib.dicomweb.orthanc start --storage ~/orthanc-oneshot [--port 8042]
    python -m lib.dicomweb.orthanc stop --storage ~/orthanc-oneshot
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
DEBIAN_PACKAGES = ("orthanc", "orthanc-dicomweb")


def orthanc_binary() -> str:
    """Path of the Orthanc executable; RuntimeError naming the packages to install when absent."""
    exe = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None)
    if not exe or not os.path.exists(DICOMWEB_PLUGIN):
        raise RuntimeError(f"Orthanc with its DICOMweb plugin is not installed: apt-get install {' '.join(DEBIAN_PACKAGES)}")
    return exe


def write_config(storage: Path, port: int) -> Path:
    """Write ``storage/orthanc.json`` for an instance on ``port``; returns its path."""
    storage.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "oneshot-orthanc",
        "StorageDirectory": str(storage / "db"),
        "IndexDirectory": str(storage / "db"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "HttpCompressionEnabled": False,
        "HttpThreadsCount": 16,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Host": f"127.0.0.1:{port}",
                     "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
    }
    path = storage / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def dicomweb_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/dicom-web"


def is_up(port: int, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/system", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start(storage: Path, port: int = 8042, wait_s: float = 30.0) -> subprocess.Popen:
    """Start Orthanc in the background (its own session, so it outlives the caller) and wait until it answers."""
    if is_up(port):
        raise RuntimeError(f"port {port} already answers as Orthanc; stop it first or choose --port")
    exe = orthanc_binary()
    config = write_config(storage, port)
    log = open(storage / "orthanc.log", "ab")
    proc = subprocess.Popen([exe, str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    (storage / "orthanc.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with code {proc.returncode}; see {storage / 'orthanc.log'}")
        if is_up(port):
            return proc
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"Orthanc did not answer on port {port} within {wait_s:.0f} s; see {storage / 'orthanc.log'}")


def stop(storage: Path, wait_s: float = 15.0) -> bool:
    """Stop the instance whose pid is in ``storage/orthanc.pid``; False when none was running."""
    pid_file = storage / "orthanc.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


@dataclass
class Orthanc:
    """One local instance: ``storage`` folder and HTTP ``port``."""

    storage: Path
    port: int = 8042

    @property
    def url(self) -> str:
        """The DICOMweb root."""
        return dicomweb_url(self.port)

    def start(self) -> "Orthanc":
        start(self.storage, self.port)
        return self

    def stop(self) -> bool:
        return stop(self.storage)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (reaping it when it is our own child, so it does not linger as a zombie)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:  # not our child
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["start", "stop", "status"])
    ap.add_argument("--storage", type=Path, default=Path.home() / "orthanc-oneshot", help="folder for Orthanc's data")
    ap.add_argument("--port", type=int, default=8042, help="HTTP port (DICOMweb at /dicom-web)")
    args = ap.parse_args(argv)
    storage = args.storage.expanduser().resolve()
    try:
        if args.action == "start":
            proc = start(storage, args.port)
            print(f"Orthanc pid {proc.pid}: DICOMweb at {dicomweb_url(args.port)} (storage {storage})")
        elif args.action == "stop":
            print("stopped" if stop(storage) else "not running")
        else:
            up = is_up(args.port)
            print(f"Orthanc on port {args.port}: {'up' if up else 'down'}")
            return 0 if up else 1
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
