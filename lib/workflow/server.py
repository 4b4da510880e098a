"""Run the `oneshot` app as a real MONAI Label server subprocess on loopback.

Used by the tests, the benchmarks and any script that drives the app through the REST protocol.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from lib.config import REPO_ROOT

APP_DIR = REPO_ROOT / "apps" / "oneshot"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ASGI_APP = "lib.api.app:app"  # MONAI Label's app + request validation (see lib/api/app.py)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path
    workdir: Path
    started_s: float = 0.0

    def client(self):
        """A ``MONAILabelClient`` with its own temp dir (it saves results under the server's temp-file
        name, which the server deletes when client and server share a temp dir)."""
        from monailabel.client import MONAILabelClient

        d = self.workdir / f"client-{time.monotonic_ns()}"
        d.mkdir(parents=True)
        return MONAILabelClient(self.url, tmpdir=str(d))

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def start_server(studies: Path, workdir: Path, conf: Mapping[str, str] | None = None, timeout: float = 180,
                 env: Mapping[str, str] | None = None, asgi_app: str = ASGI_APP, repo: Path | None = None) -> Server:
    """Start ``monailabel start_server`` for our app on a free loopback port; wait for ``/info``.

    ``env``: more environment variables for the server (e.g. ``MONAI_LABEL_SESSION_PATH``); ``asgi_app``: the entry
    point (``monailabel.app:app`` serves MONAI Label's own, a benchmark's baseline); ``repo``: serve the app of another
    checkout of this repository (a benchmark's "before" column, e.g. a ``git worktree`` of an older commit)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    root = Path(repo).resolve() if repo else REPO_ROOT
    args = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(root / "apps" / "oneshot"),
            "--studies", str(studies), "--host", "127.0.0.1", "--port", str(port), "--uvicorn_app", asgi_app]
    for k, v in (conf or {}).items():
        args += ["--conf", k, str(v)]
    env = {**os.environ, "PYTHONPATH": str(root), "MONAI_LABEL_TRACKING_ENABLED": "false", **(env or {})}
    log = workdir / f"server-{port}.log"
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(workdir),
                                start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", proc, log, workdir)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/info/", timeout=5) as r:
                if r.status == 200:
                    server.started_s = time.perf_counter() - t0
                    return server
        except urllib.error.HTTPError as e:
            if e.code == 401:  # up, and asking for its access token
                server.started_s = time.perf_counter() - t0
                return server
            time.sleep(0.3)
        except OSError:
            time.sleep(0.3)
    stop_server(server)
    raise RuntimeError(f"server did not answer /info within {timeout} s:\n{server.log_tail()}")


def stop_server(server: Server) -> None:
    """Terminate the server's process group (SIGTERM, then SIGKILL after 20 s)."""
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
