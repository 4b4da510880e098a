"""Shared fixtures: a real MONAI Label server (subprocess, loopback, free port) and tiny studies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import nibabel as nib
import numpy as np
import pytest
from monailabel.client import MONAILabelClient

REPO_ROOT = Path(__file__).resolve().parents[1]
APP_DIR = REPO_ROOT / "apps" / "oneshot"
sys.path.insert(0, str(REPO_ROOT))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_nifti(array: np.ndarray, path: Path, spacing=(1.5, 1.5, 2.0), dtype=None) -> Path:
    affine = np.diag([*spacing, 1.0])
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype or array.dtype), affine)
    nib.save(img, str(path))
    return path


def sphere_volume(shape=(40, 40, 24), centre=None, radius=7.0, seed=0, spacing=(1.5, 1.5, 2.0)):
    """A bright sphere (~300 HU) in soft tissue (~0 HU) with noise; returns ``(image, mask)`` (I, J, K).

    ``radius`` is in mm; ``spacing`` in mm per axis.
    """
    rng = np.random.default_rng(seed)
    centre = np.array(centre if centre is not None else [s / 2 for s in shape], dtype=float)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(float)
    dist_mm = np.linalg.norm((grid - centre) * np.asarray(spacing), axis=-1)
    mask = dist_mm <= radius
    image = np.where(mask, 300.0, 0.0) + rng.normal(0, 25, shape)
    return image.astype(np.int16), mask


@pytest.fixture
def tiny_studies(tmp_path: Path) -> Path:
    """A studies folder with three small synthetic CT volumes (``case_0..2``)."""
    studies = tmp_path / "studies"
    studies.mkdir()
    for i in range(3):
        image, _ = sphere_volume(seed=i, centre=(18 + i, 20, 12))
        save_nifti(image, studies / f"case_{i}.nii.gz")
    return studies


class Server:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path, tmp: Path):
        self.url, self.proc, self.log, self._tmp = url, proc, log, tmp

    def client(self) -> MONAILabelClient:
        # its own tmpdir: the client saves results under the server's temp-file name (DESIGN.md §2)
        d = self._tmp / f"client-{time.monotonic_ns()}"
        d.mkdir()
        return MONAILabelClient(self.url, tmpdir=str(d))

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def start_server(studies: Path, tmp: Path, conf: dict[str, str] | None = None, timeout: float = 120) -> Server:
    port = free_port()
    args = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP_DIR),
            "--studies", str(studies), "--host", "127.0.0.1", "--port", str(port)]
    for k, v in (conf or {}).items():
        args += ["--conf", k, str(v)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MONAI_LABEL_TRACKING_ENABLED": "false",
           "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false"}
    log = tmp / f"server-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(tmp),
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    server = Server(url, proc, log, tmp)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{url}/info/", timeout=5) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    stop_server(server)
    raise RuntimeError(f"server did not answer /info within {timeout} s:\n{server.log_tail()}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(studies: Path, conf: dict[str, str] | None = None) -> Server:
        s = start_server(studies, tmp_path, conf)
        servers.append(s)
        return s

    yield make
    for s in servers:
        stop_server(s)
