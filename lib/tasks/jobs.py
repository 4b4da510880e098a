"""Background jobs (training, batch pre-labeling): one at a time, and never outliving the server.

MONAI Label runs each job in a child process (``python -m monailabel.interfaces.utils.app``) and keeps
what it knows of it in the server's memory: after a ``kill -9`` of the server the child ran on as an
orphan, and a restarted server saw no job and started a second one on the same checkpoint.

- :func:`die_with_parent`: the child asks the kernel for SIGTERM when its parent dies (Linux
  ``PR_SET_PDEATHSIG``), so a killed server takes its job with it.
- :class:`JobLock`: an exclusive ``flock`` on ``<model_dir>/.jobs/<kind>.lock`` held for the job's whole
  life, with the holder's PID and start time written in the file. The kernel releases it when the
  process dies, however it dies, so a stale lock cannot block the next job; :func:`running_job` tells a
  (restarted) server whether a job holds it.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import logging
import os
import signal
import sys
import time
from typing import Any, Dict, Optional

from lib.tasks.errors import ClientError

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send ``sig`` to this process when its parent exits (Linux); True if set.

    Exits at once when the parent is already gone (the server died before the job got here)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except OSError:
        return False
    if os.getppid() == 1:
        logger.error("the server that started this job is gone; exiting")
        os._exit(1)
    return True


def lock_path(model_dir: str, kind: str) -> str:
    return os.path.join(model_dir, ".jobs", f"{kind}.lock")


class JobLock:
    """Hold ``<model_dir>/.jobs/<kind>.lock`` exclusively (see the module's docstring).

    ``acquire`` raises a ClientError (409) naming the running job's PID when another process holds it.
    """

    def __init__(self, model_dir: str, kind: str, what: str = ""):
        self.path = lock_path(model_dir, kind)
        self.kind, self.what = kind, what
        self._fd: Optional[int] = None

    def acquire(self) -> "JobLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = running_job(os.path.dirname(os.path.dirname(self.path)), self.kind) or {}
            raise ClientError(f"a {self.kind} job is already running (PID {holder.get('pid', '?')}, {holder.get('what', '')}, "
                              f"since {holder.get('started', '?')}); wait for it or stop it with DELETE /{self.kind}/",
                              status_code=409) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "what": self.what,
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "JobLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def running_job(model_dir: str, kind: str) -> Optional[Dict[str, Any]]:
    """``{"pid", "what", "started"}`` of the process holding the ``kind`` lock, or None when none does."""
    path = lock_path(model_dir, kind)
    if not os.path.exists(path):
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                with open(path) as f:
                    return json.loads(f.read() or "{}")
            except (OSError, ValueError):
                return {"pid": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def in_job_process() -> bool:
    """True in the child process MONAI Label starts for a training / batch job."""
    return os.path.normpath(sys.argv[0] if sys.argv else "").endswith(os.path.join("monailabel", "interfaces", "utils", "app.py"))


def job(model_dir: str, kind: str, what: str = "") -> JobLock:
    """The lock of one ``kind`` job (``with job(...):``); in MONAI Label's job process it also dies with the server."""
    if in_job_process():
        die_with_parent()
    return JobLock(model_dir, kind, what)
