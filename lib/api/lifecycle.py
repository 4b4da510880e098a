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


def _start_watchdog(signum: int, grace_s: float) -> None:
    if not _started.is_set():
        _started.set()
        logger.warning(f"signal {signal.Signals(signum).name}: stopping jobs; exiting within {grace_s:g} s")
        threading.Thread(target=_shutdown, args=(grace_s,), name="shutdown", daemon=True).start()


def install(grace_s: float = 6.0) -> bool:
    """Chain uvicorn's stop-signal handler (the app module is imported before uvicorn captures the signals,
    so its ``Server.handle_exit`` is wrapped); True when uvicorn is there."""
    try:
        from uvicorn.server import Server
    except ImportError:
        return False
    if getattr(Server.handle_exit, "_oneshot_chained", False):
        return True
    original: Callable = Server.handle_exit

    def handle_exit(self, sig, frame) -> None:
        original(self, sig, frame)
        _start_watchdog(sig, grace_s)

    handle_exit._oneshot_chained = True  # type: ignore[attr-defined]
    Server.handle_exit = handle_exit
    return True
