"""Shutdown: SIGTERM (or Ctrl-C) ends the server within seconds, whatever it is doing, with its jobs.

Uvicorn's graceful shutdown waits without limit for open requests (a synchronous batch pre-label kept
the server up for minutes after SIGTERM), and MONAI Label's job processes are left running. Here the
server's signal handler is chained (uvicorn's still runs first): the running training / batch / scoring
job processes are stopped at once, and if the server has not exited ``grace_s`` seconds later it exits
anyway. Every datastore and checkpoint write is atomic (:mod:`lib.atomic`), so nothing is left half-written.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Callable

logger = logging.getLogger(__name__)

JOB_KINDS = ("train", "batch_infer", "scoring")
_started = threading.Event()


def stop_jobs() -> None:
    """Kill the job processes MONAI Label started (and their children)."""
    from monailabel.utils.async_tasks.utils import stop_background_task

    for kind in JOB_KINDS:
        try:
            stop_background_task(kind)
        except Exception as e:  # noqa: BLE001 - a job that ended meanwhile
            logger.warning(f"stopping the {kind} job: {e}")


def _shutdown(grace_s: float) -> None:
    stop_jobs()
    time.sleep(grace_s)
    logger.warning(f"still running {grace_s:g} s after the stop signal: exiting now")
    logging.shutdown()
    os._exit(0)


def install(grace_s: float = 6.0) -> bool:
    """Chain the stop-signal handlers installed by uvicorn (call from the main thread while it serves)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum, frame, previous: Callable | object = previous) -> None:
            if callable(previous):
                previous(signum, frame)
            if not _started.is_set():
                _started.set()
                threading.Thread(target=_shutdown, args=(grace_s,), name="shutdown", daemon=True).start()

        signal.signal(sig, handler)
    return True
